import pytest

from practicesync.patients.identifiers import (
    clean_email,
    clean_ihi,
    clean_medicare_number,
    clean_nhs_number,
    clean_phone,
)
from practicesync.patients.names import normalise_name


@pytest.mark.parametrize("raw, value, error", [
    ("", None, None),
    ("  ", None, None),
    ("9990000018", "9990000018", None),
    ("999 000 0018", "9990000018", None),
    ("999-000-0018", "9990000018", None),
    ("9990000017", None, "fails the modulus 11 check"),
    ("999000001", None, "must be 10 digits"),
    ("0000000000", None, "placeholder"),
    ("000 000 0000", None, "placeholder"),
    ("unknown", None, "placeholder"),
    ("N/A", None, "placeholder"),
    ("99900000AB", None, "must be 10 digits"),
])
def test_nhs_number(raw, value, error):
    got, message = clean_nhs_number(raw)
    assert got == value
    assert (message is None) == (error is None)
    if error:
        assert error in message and "NHS number" in message


@pytest.mark.parametrize("raw, value, error", [
    ("2953161251", "2953161251", None),          # card number with issue number
    ("29531612511", "29531612511", None),        # ... and the IRN
    ("2953 16125 1", "2953161251", None),
    ("2953161261", None, "check digit"),
    ("1953161251", None, "start with 2-6"),
    ("29531612510", None, "IRN 0"),
    ("295316125", None, "10 digits"),
    ("0000000000", None, "placeholder"),
])
def test_medicare_number(raw, value, error):
    got, message = clean_medicare_number(raw)
    assert got == value
    assert (message is None) == (error is None)
    if error:
        assert error in message


@pytest.mark.parametrize("raw, value, error", [
    ("8003608166690503", "8003608166690503", None),
    ("8003 6081 6669 0503", "8003608166690503", None),
    ("8003608166690504", None, "Luhn"),
    ("8003618166690502", None, "800360"),
    ("800360816669050", None, "16 digits"),
    ("0000000000000000", None, "placeholder"),
])
def test_ihi(raw, value, error):
    got, message = clean_ihi(raw)
    assert got == value
    assert (message is None) == (error is None)
    if error:
        assert error in message


@pytest.mark.parametrize("raw, country, value, error", [
    ("07912 345678", "GB", "+447912345678", None),
    ("+44 7912 345678", "GB", "+447912345678", None),
    ("0113 496 0000", "GB", "+441134960000", None),
    ("0412 345 678", "AU", "+61412345678", None),
    ("(02) 9374 4000", "AU", "+61293744000", None),
    ("0412 345 678", "GB", None, "not a valid number for GB"),
    ("07612 345678", "GB", None, "not a valid number"),   # pager range
    ("call reception", "GB", None, "not a phone number"),
    ("", "GB", None, None),
    ("0000000000", "GB", None, "placeholder"),
])
def test_phone_is_e164_for_the_practice_country(raw, country, value, error):
    got, message = clean_phone(raw, country)
    assert got == value
    assert (message is None) == (error is None)
    if error:
        assert error in message


@pytest.mark.parametrize("raw, value, ok", [
    ("Zoe@Example.ORG", "Zoe@example.org", True),
    ("not-an-email", None, False),
    ("", None, True),
])
def test_email(raw, value, ok):
    got, message = clean_email(raw)
    assert got == value
    assert (message is None) == ok


@pytest.mark.parametrize("a, b", [
    ("O'Brien", "obrien"),
    ("O’Brien", "OBRIEN"),
    ("Zoë", "Zoe"),
    ("  Smith   Jones ", "smith jones"),
    ("Smith-Jones", "Smith Jones"),
    ("Siân", "SIAN"),
    ("Müller", "muller"),
])
def test_name_normalisation_makes_equal(a, b):
    assert normalise_name(a) == normalise_name(b)


@pytest.mark.parametrize("a, b", [("Ann", "Anne"), ("Lee", "Li"), ("Smith Jones", "Smithjones")])
def test_name_normalisation_keeps_different_names_apart(a, b):
    assert normalise_name(a) != normalise_name(b)
