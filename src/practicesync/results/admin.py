from django.contrib import admin

from .models import Result, ResultGroup, ResultsTemplate


@admin.register(ResultsTemplate)
class ResultsTemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "practice", "action_key", "auto_start")
    list_filter = ("practice",)


@admin.register(ResultGroup)
class ResultGroupAdmin(admin.ModelAdmin):
    list_display = ("id", "practice", "patient", "performed_on", "action", "disposition", "state")
    list_filter = ("practice", "disposition", "state")


@admin.register(Result)
class ResultAdmin(admin.ModelAdmin):
    list_display = ("result_id", "practice", "pms_id", "test_name", "action", "eligible")
    list_filter = ("practice", "eligible")
