from django.apps import AppConfig


class OutreachConfig(AppConfig):
    name = "practicesync.outreach"

    def ready(self):
        from practicesync import lookups  # noqa: F401 - registers __among
