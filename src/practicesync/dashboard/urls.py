from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:practice>/patients/", views.patients, name="patients"),
    path("p/<slug:practice>/patients/<str:pms_id>", views.patient_by_pms_id, name="patient"),
]
