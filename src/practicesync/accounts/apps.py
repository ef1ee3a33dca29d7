from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Staff login: email and password, two-step login (TOTP), lockout, practice switcher."""

    name = "practicesync.accounts"

    def ready(self):
        from axes.signals import user_locked_out

        from .actions import record_lockout

        def audit_lockout(sender, *, username, ip_address, **kwargs):
            record_lockout(username=username, ip_address=ip_address)

        user_locked_out.connect(audit_lockout, weak=False, dispatch_uid="practicesync-lockout")
