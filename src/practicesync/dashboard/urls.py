from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:practice>/patients/", views.patients, name="patients"),
    # path, not str: a PMS id may contain "/" and must still get a working link.
    path("p/<slug:practice>/patients/<path:pms_id>", views.patient_by_pms_id, name="patient"),
    path("p/<slug:practice>/results/", views.results, name="results"),
    path("p/<slug:practice>/recalls/summary/", views.recalls_summary, name="recalls_summary"),
    path("p/<slug:practice>/recalls/summary/<int:group_id>/done/", views.mark_done,
         name="mark_done"),
]
