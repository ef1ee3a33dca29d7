from django.contrib import admin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read only: audit events are written by actions and never changed (docs/adr/0016)."""

    list_display = ("at", "practice", "actor", "action", "why", "patient_id")
    list_filter = ("practice", "action")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
