from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "practicesync.api"
    label = "practicesync_api"
