import re

from django import forms
from django.contrib.auth.forms import AuthenticationForm

TOTP_CODE = re.compile(r"\d{6}")
# django-otp's backup codes: 8 characters of lower-case base32.
BACKUP_CODE = re.compile(r"[a-z2-7]{8}")


class EmailAuthenticationForm(AuthenticationForm):
    """Staff log in with their email; usernames are the lower-cased email (add_staff)."""

    def clean_username(self):
        return self.cleaned_data["username"].strip().lower()


class CodeForm(forms.Form):
    code = forms.CharField(max_length=20, strip=True)

    def __init__(self, *args, allow_backup: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.allow_backup = allow_backup

    def clean_code(self):
        # Apps show "123 456" and backup codes are easier to read aloud in parts.
        code = re.sub(r"[\s-]", "", self.cleaned_data["code"]).lower()
        if TOTP_CODE.fullmatch(code) or (self.allow_backup and BACKUP_CODE.fullmatch(code)):
            return code
        raise forms.ValidationError(
            "Enter the 6-digit code from your authenticator app, or one of your backup codes."
            if self.allow_backup else "Enter the 6-digit code from your authenticator app.")
