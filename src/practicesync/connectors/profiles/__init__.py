"""PMS profiles: one module per practice-management system, found by name.

Adding a PMS means adding a module here that defines `PROFILE`; nothing else changes.
"""

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

# What a doctor's action asks for, from least to most pressing (DESIGN.md section 3).
IGNORED, AUTOMATIC, MANUAL, URGENT = "ignored", "automatic", "manual", "urgent"
PRIORITY = {IGNORED: 0, AUTOMATIC: 1, MANUAL: 2, URGENT: 3}


@dataclass(frozen=True)
class ActionMeaning:
    key: str      # stable name, e.g. "non_urgent_appointment"; templates are keyed on it
    label: str    # the PMS's wording as staff know it
    kind: str     # IGNORED, AUTOMATIC, MANUAL or URGENT


@dataclass(frozen=True)
class ResultFacts:
    """What a profile needs to know about a result to judge it."""

    action: str
    comment: str
    filed_under: str
    tab: str
    location: str


def words(text: str | None) -> str:
    """Action and category text compared as staff type it: case and spacing ignored."""
    return " ".join((text or "").replace("-", " ").split()).casefold()


@dataclass(frozen=True)
class Profile:
    name: str
    label: str
    country: str
    # The PMS's own practice-list export, mapped row by row to the canonical CSV columns.
    list_export_columns: tuple[str, ...] = ()
    map_list_row: Callable[[dict[str, str]], dict[str, str]] | None = None
    # Results: why a result does not count (None when it does), what an action means, and
    # the Results template each automatic action is allocated to. No rules: no results.
    result_ineligible_reason: Callable[[ResultFacts], str | None] | None = None
    action_meaning: Callable[[ResultFacts], ActionMeaning] | None = None
    result_templates: dict[str, str] = field(default_factory=dict)

    @property
    def carries_results(self) -> bool:
        return self.result_ineligible_reason is not None


def _discover() -> dict[str, Profile]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        profile = module.PROFILE
        found[profile.name] = profile
    return found


PROFILES: dict[str, Profile] = _discover()


def get_profile(name: str) -> Profile:
    return PROFILES[name]
