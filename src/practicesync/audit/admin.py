from django.contrib import admin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("at", "practice", "actor", "action", "why", "patient_id")
    list_filter = ("practice", "action")
