from django.contrib import admin
from django.urls import include, path

from practicesync.api.endpoints import api
from practicesync.outreach import webhooks

urlpatterns = [
    path("admin/", admin.site.urls),
    # login/, logout/ and the two-step login pages under account/mfa/.
    path("", include("practicesync.accounts.urls")),
    path("api/", api.urls),
    path("webhooks/twilio/status", webhooks.twilio_status, name="twilio-status"),
    path("webhooks/twilio/inbound", webhooks.twilio_inbound, name="twilio-inbound"),
    path("", include("practicesync.dashboard.urls")),
]
