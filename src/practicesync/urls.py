from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from practicesync.outreach import webhooks

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(template_name="dashboard/login.html"),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("webhooks/twilio/status", webhooks.twilio_status, name="twilio-status"),
    path("webhooks/twilio/inbound", webhooks.twilio_inbound, name="twilio-inbound"),
    path("", include("practicesync.dashboard.urls")),
]
