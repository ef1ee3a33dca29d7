"""Whole numbers typed or sent by someone else.

`str.isdigit()` also says yes to "³" (then `int()` raises) and to "١٢" (which `int()` reads):
a page parameter or an HL7 field of either would be a server error or a surprise. Only ASCII
digits count here, and few enough for any integer column.
"""


def is_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def whole_number(value: str, *, digits: int = 9) -> int | None:
    """`value` as an int when it is 1 to `digits` ASCII digits; else None."""
    if 0 < len(value) <= digits and is_digits(value):
        return int(value)
    return None
