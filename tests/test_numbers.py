import pytest

from practicesync.numbers import is_digits, whole_number


@pytest.mark.parametrize("value, digits, expected", [
    ("7", 9, 7), ("007", 9, 7), ("123456789", 9, 123456789), ("1234567890", 9, None),
    ("", 9, None), ("³", 9, None), ("١٢", 9, None), ("-1", 9, None), (" 1", 9, None),
    ("1.0", 9, None), ("99", 2, 99), ("100", 2, None)])
def test_whole_number_takes_only_a_few_ascii_digits(value, digits, expected):
    assert whole_number(value, digits=digits) == expected


@pytest.mark.parametrize("value, expected", [
    ("0123", True), ("", False), ("²", False), ("٣", False), ("12a", False)])
def test_is_digits_is_ascii_digits_only(value, expected):
    assert is_digits(value) is expected
