"""PMS profiles: one module per practice-management system, found by name.

Adding a PMS means adding a module here that defines `PROFILE`; nothing else changes.
"""

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Profile:
    name: str
    label: str
    country: str
    # The PMS's own practice-list export, mapped row by row to the canonical CSV columns.
    list_export_columns: tuple[str, ...] = ()
    map_list_row: Callable[[dict[str, str]], dict[str, str]] | None = None
    notes: str = field(default="")


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
