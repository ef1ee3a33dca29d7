"""Message text: placeholders, the safety check on save, SMS length and segments. Pure."""

import re
import string
from typing import NamedTuple

PLACEHOLDERS = ("first_name", "practice_name", "booking_link")

# What a generic message says when the phone may not be the patient's own (a family's shared
# mobile, a teenager's number that is often a parent's): no name, nothing but "a message".
GENERIC_SMS = ("{practice_name} has a message for you. Please contact the practice or book an "
               "appointment: {booking_link}")
DEFAULT_SUBJECT = "A message from {practice_name}"
NO_BOOKING_LINK = "call the practice"

# Result details must never be in an SMS or push (they show on lock screens and shared
# phones): test names, values with units, and words that give the outcome away.
_TEST_WORDS = (
    "fbc", "full blood count", "hba1c", "cholesterol", "lipid", "ldl", "hdl", "triglyceride",
    "glucose", "tsh", "thyroid", "ferritin", "iron", "b12", "folate", "vitamin d", "psa",
    "egfr", "creatinine", "urea", "electrolyte", "liver function", "lft", "inr", "esr", "crp",
    "haemoglobin", "hemoglobin", "platelet", "white cell", "pap", "cervical", "smear", "hpv",
    "chlamydia", "gonorrh", "syphilis", "hiv", "hepatitis", "pregnan", "hcg", "biopsy",
    "histology", "cytology", "mammogra", "x-ray", "xray", "ultrasound", "ct scan", "mri",
    "ecg", "urine", "msu", "culture", "swab", "covid", "pcr", "stool", "faecal", "fobt",
    "cancer", "tumour", "tumor", "malignan", "diabet", "potassium", "sodium", "calcium",
    "magnesium", "phosphate", "vitamin", "testosterone", "oestrogen", "estrogen", "hormone",
    "sti", "std", "herpes", "sexual health", "pathology", "radiology", "result", "diagnos",
    "depress", "anxiety", "mental health", "psychiatr", "bipolar", "schizo", "dementia",
    "miscarriage", "termination", "abortion", "ivf", "fertility", "infection", "lump", "test",
    "blood", "scan", "level",
)
_OUTCOME_WORDS = ("positive", "negative", "abnormal", "normal range", "elevated", "high level",
                  "low level", "detected")
_VALUE = re.compile(r"\b\d+(?:[.,]\d+)?\s*(?:mmol|mg|g/l|µmol|umol|iu|u/l|%|mu/l|x10|ng|pg|nmol)"
                    # a bare decimal is a value too ("potassium 6.1"), a time ("9.30am") is not
                    r"|\b\d+\.\d+\b(?!\s*(?:am|pm|a\.m|p\.m))", re.IGNORECASE)
# Short abbreviations only as whole words ("STI" but not "still"); the rest also as the
# start of a word ("result" in "results", "diagnos" in "diagnosis").
_WHOLE = {w for w in _TEST_WORDS if len(w) <= 3}
_WORDS = re.compile(r"\b(?:(?:" + "|".join(re.escape(w) for w in sorted(_WHOLE)) + r")\b|"
                    + "|".join(re.escape(w) for w in _TEST_WORDS + _OUTCOME_WORDS
                               if w not in _WHOLE) + r")", re.IGNORECASE)

# GSM 03.38: the basic set costs one septet a character, the extension set two.
_GSM_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
                 "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM_EXTENDED = set("^{}\\[~]|€\f")


class SmsLength(NamedTuple):
    encoding: str  # GSM-7 or UCS-2
    characters: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


def sms_length(text: str) -> SmsLength:
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text):
        units = sum(2 if c in _GSM_EXTENDED else 1 for c in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    segments = 1 if units <= single else -(-units // multi)
    return SmsLength(encoding, units, segments)


def placeholders_in(text: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as e:
        raise ValueError(f"braces do not pair up: {e}") from None


def _braced(names) -> str:
    return ", ".join("{" + n + "}" for n in names)


def text_problems(channel: str, body: str, subject: str = "") -> list[str]:
    """What is wrong with a step's or message's text; empty when it may be saved."""
    problems = []
    if not body.strip() and channel in ("sms", "push", "email"):
        problems.append("the text is empty")
    try:
        unknown = [p for p in placeholders_in(body + subject) if p not in PLACEHOLDERS]
    except ValueError as e:
        return [*problems, str(e)]
    if unknown:
        problems.append(f"unknown placeholder {_braced(unknown)}; use {_braced(PLACEHOLDERS)}")
    if channel in ("sms", "push"):
        if found := sorted({m.group(0).lower() for m in _WORDS.finditer(body)}):
            problems.append(f"{channel} text may not give result details: " + ", ".join(found))
        if found := [m.group(0) for m in _VALUE.finditer(body)]:
            problems.append(f"{channel} text may not contain result values: " + ", ".join(found))
    return problems


def render(text: str, *, first_name: str, practice_name: str, booking_link: str) -> str:
    return text.format(first_name=first_name, practice_name=practice_name,
                       booking_link=booking_link or NO_BOOKING_LINK)
