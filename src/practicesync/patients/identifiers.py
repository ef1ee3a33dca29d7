"""Identifier and contact-detail checks (DESIGN.md section 2, rule 10). Pure functions.

Each `clean_*` returns (value, error): value is the normalised form or None; error is a
message for the row report, or None. Blank input is simply absent, never an error; a
placeholder ("0000000000", "unknown") is reported and never stored or matched.
"""

import re

import nhs_number
import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from practicesync.numbers import is_digits

PLACEHOLDER_WORDS = {"unknown", "unk", "none", "null", "n/a", "na", "nil", "tbc", "-", "?"}
_SEPARATORS = re.compile(r"[\s\-/.]")


def digits_only(raw: str) -> str:
    return _SEPARATORS.sub("", raw)


def is_placeholder(raw: str) -> bool:
    text = raw.strip().lower()
    if text in PLACEHOLDER_WORDS:
        return True
    digits = digits_only(text)
    return bool(digits) and set(digits) <= {"0"}


def _clean_identifier(raw: str | None, label: str, check) -> tuple[str | None, str | None]:
    if raw is None or not raw.strip():
        return None, None
    if is_placeholder(raw):
        return None, f"{label} {raw.strip()!r} is a placeholder, not an identifier"
    value = digits_only(raw.strip())
    error = check(value)
    if error:
        return None, f"{label} {raw.strip()!r} {error}"
    return value, None


def _nhs_check(value: str) -> str | None:
    if not (is_digits(value) and len(value) == 10):
        return "must be 10 digits"
    if not nhs_number.is_valid(value):
        return "fails the modulus 11 check"
    return None


def medicare_check_digit_ok(value: str) -> bool:
    weights = (1, 3, 7, 9, 1, 3, 7, 9)
    return sum(int(d) * w for d, w in zip(value[:8], weights, strict=True)) % 10 == int(value[8])


def _medicare_check(value: str) -> str | None:
    # 10 digits on the card (8 + check digit + issue number), optionally followed by the
    # individual reference number (IRN) that tells family members on one card apart.
    if not (is_digits(value) and len(value) in (10, 11)):
        return "must be 10 digits, or 11 with the IRN"
    if value[0] not in "23456":
        return "must start with 2-6"
    if not medicare_check_digit_ok(value):
        return "fails the check digit"
    if len(value) == 11 and value[10] == "0":
        return "has IRN 0, which is not issued"
    return None


def luhn_ok(value: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(value)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _ihi_check(value: str) -> str | None:
    if not (is_digits(value) and len(value) == 16):
        return "must be 16 digits"
    if not value.startswith("800360"):
        return "must start with 800360"
    if not luhn_ok(value):
        return "fails the Luhn check"
    return None


def clean_nhs_number(raw):
    return _clean_identifier(raw, "NHS number", _nhs_check)


def clean_medicare_number(raw):
    return _clean_identifier(raw, "Medicare number", _medicare_check)


def clean_ihi(raw):
    return _clean_identifier(raw, "IHI", _ihi_check)


def medicare_card_and_irn(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    return value[:10], (value[10] if len(value) == 11 else None)


def clean_phone(raw: str | None, country: str) -> tuple[str | None, str | None]:
    """E.164 for the practice's country, or an error naming what is wrong."""
    if raw is None or not raw.strip():
        return None, None
    text = raw.strip()
    if is_placeholder(text):
        return None, f"phone {text!r} is a placeholder"
    try:
        number = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException:
        return None, f"phone {text!r} is not a phone number"
    if not phonenumbers.is_valid_number(number):
        return None, f"phone {text!r} is not a valid number for {country}"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


def is_mobile(e164: str) -> bool:
    kind = phonenumbers.number_type(phonenumbers.parse(e164))
    return kind in (phonenumbers.PhoneNumberType.MOBILE,
                    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def clean_email(raw: str | None) -> tuple[str | None, str | None]:
    if raw is None or not raw.strip():
        return None, None
    text = raw.strip()
    try:
        validate_email(text)
    except ValidationError:
        return None, f"email {text!r} is not a valid address"
    # The domain part is case-insensitive; the local part is kept as the patient wrote it.
    local, _, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}", None
