"""Results of one patient performed on one day form one group (DESIGN.md section 3). Pure."""

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from practicesync.connectors.profiles import PRIORITY

DISPOSITION_BY_PRIORITY = {0: "ignored", 1: "template", 2: "checklist", 3: "checklist"}
NOTIFIED = {"notified", "given", "discussed"}


@dataclass(frozen=True)
class Member:
    """An eligible result as the group sees it."""

    action_key: str
    action_label: str
    kind: str
    notified: bool


@dataclass(frozen=True)
class GroupDecision:
    priority: int
    action_key: str
    action_label: str
    disposition: str
    done: bool


def group_day(performed: dt.date | dt.datetime, tz: ZoneInfo) -> dt.date:
    """The practice-local day a result was performed (collected) on."""
    if isinstance(performed, dt.datetime):
        if performed.tzinfo is None:
            return performed.date()  # already practice-local
        return performed.astimezone(tz).date()
    return performed


def decide_group(members: list[Member], previous: GroupDecision | None = None,
                 *, re_decide: bool = False) -> GroupDecision:
    """The group takes its most pressing action (urgent > manual > automatic > none).

    A result joining the group can only raise it. When a doctor changes an action already in
    the group (`re_decide`), the group is decided afresh from its current actions."""
    strongest = max(members, key=lambda m: PRIORITY[m.kind])
    priority = PRIORITY[strongest.kind]
    key, label = strongest.action_key, strongest.action_label
    if previous is not None and not re_decide and previous.priority > priority:
        priority, key, label = previous.priority, previous.action_key, previous.action_label
    return GroupDecision(priority, key, label, DISPOSITION_BY_PRIORITY[priority],
                         done=all(m.notified for m in members))
