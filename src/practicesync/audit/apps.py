from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "practicesync.audit"
