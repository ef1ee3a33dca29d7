from django.contrib import admin

from .models import NotSamePerson, Patient, ReviewItem, SyncRun


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("family_name", "given_name", "date_of_birth", "pms_id", "digital", "status",
                    "practice")
    list_filter = ("practice", "digital", "status")
    search_fields = ("family_name", "given_name", "pms_id", "nhs_number")


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = ("id", "practice", "kind", "status", "started_at", "finished_at")
    list_filter = ("practice", "status")


@admin.register(ReviewItem)
class ReviewItemAdmin(admin.ModelAdmin):
    list_display = ("id", "practice", "kind", "status", "created_at")
    list_filter = ("practice", "kind", "status")


admin.site.register(NotSamePerson)
