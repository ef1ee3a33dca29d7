from django.urls import path

from . import views

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("account/mfa/", views.manage, name="mfa"),
    path("account/mfa/enrol/", views.enrol, name="mfa_enrol"),
    path("account/mfa/verify/", views.verify, name="mfa_verify"),
    path("account/mfa/disable/", views.disable, name="mfa_disable"),
]
