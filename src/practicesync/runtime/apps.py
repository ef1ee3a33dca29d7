from django.apps import AppConfig


class RuntimeConfig(AppConfig):
    """The long-running processes: web server, worker, demo."""

    name = "practicesync.runtime"
