from django.apps import AppConfig


class ResultsConfig(AppConfig):
    name = "practicesync.results"
