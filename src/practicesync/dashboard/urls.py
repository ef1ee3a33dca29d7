from django.urls import path

from . import outreach, views

urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:practice>/patients/", views.patients, name="patients"),
    # Before the deep link below, whose path converter would take "P1/message/" as a PMS id.
    path("p/<slug:practice>/patients/<path:pms_id>/message/", outreach.patient_message,
         name="patient_message"),
    # path, not str: a PMS id may contain "/" and must still get a working link.
    path("p/<slug:practice>/patients/<path:pms_id>", views.patient_by_pms_id, name="patient"),
    path("p/<slug:practice>/results/", views.results, name="results"),
    path("p/<slug:practice>/results/<int:group_id>/sequence/<str:event>/",
         outreach.sequence_action, name="sequence_action"),
    path("p/<slug:practice>/recalls/summary/", views.recalls_summary, name="recalls_summary"),
    path("p/<slug:practice>/recalls/summary/<int:group_id>/done/", views.mark_done,
         name="mark_done"),
    path("p/<slug:practice>/tasks/", outreach.tasks, name="tasks"),
    path("p/<slug:practice>/tasks/<int:task_id>/done/", outreach.task_done, name="task_done"),
    path("p/<slug:practice>/messages/", outreach.message_list, name="messages"),
    path("p/<slug:practice>/outbox/", outreach.outbox, name="outbox"),
]
