"""Who may be messaged, on which channel, with which wording. Pure.

A results follow-up never ends silently: when the step's channel is not possible it falls
back (push, SMS, email) and, when none is left, becomes a staff call task. Ad-hoc, video and
bulk messages go on the channel staff chose or not at all, with the reason recorded.
"""

from dataclasses import dataclass
from typing import NamedTuple

# The order of fallback when a step's own channel is not possible (DESIGN.md section 4:
# push first where the patient has the app, then SMS, email where there is no mobile).
FALLBACK_ORDER = ("push", "sms", "email")


class Recipient(NamedTuple):
    status: str  # active | left | deceased
    age: int
    mobile: str | None = None
    email: str | None = None
    push: str | None = None  # endpoint of an active push subscription
    opted_out: frozenset = frozenset()  # channels refused at these addresses
    shared_mobile: bool = False  # the mobile is on several patients' records
    booked: bool = False


@dataclass(frozen=True)
class Policy:
    min_age_sms: int = 12
    teen_until: int = 17


class Plan(NamedTuple):
    action: str  # send | task | skip
    channel: str | None = None
    to: str | None = None
    generic: bool = False  # send the generic wording, never a name
    reason: str = ""
    # For a task: every message channel was refused by the patient (STOP/unsubscribe).
    opted_out: bool = False


# The channel first, then the others in FALLBACK_ORDER; a tick plans 100,000 steps.
_CANDIDATES = {channel: (channel, *[c for c in FALLBACK_ORDER if c != channel])
               for channel in FALLBACK_ORDER}
_ADDRESS_FIELD = {"sms": "mobile", "email": "email", "push": "push"}
_NO_ADDRESS = {"sms": "no mobile number", "email": "no email address",
               "push": "no app subscription"}


def _why_not(channel: str, r: Recipient, policy: Policy) -> str | None:
    if not _address(channel, r):
        return _NO_ADDRESS[channel]
    if r.opted_out and channel in r.opted_out:
        return f"opted out of {channel}"
    if channel in ("sms", "push") and r.age < policy.min_age_sms:
        return f"under {policy.min_age_sms}: no {channel}"
    return None


def _address(channel: str, r: Recipient) -> str | None:
    return getattr(r, _ADDRESS_FIELD[channel])


def _generic(channel: str, r: Recipient, policy: Policy) -> bool:
    return channel in ("sms", "push") and (r.age <= policy.teen_until
                                            or (channel == "sms" and r.shared_mobile))


def plan_step(*, channel: str, condition: str, recipient: Recipient, policy: Policy,
              exclude: frozenset = frozenset()) -> Plan:
    """One step of a results follow-up for this patient. `exclude`: channels already tried
    for this step (a permanent provider error)."""
    r = recipient
    if r.status != "active":
        return Plan("skip", reason=f"patient is {r.status}")
    if condition == "not_booked" and r.booked:
        return Plan("skip", reason="patient has already booked")
    if channel in ("call", "letter"):
        return Plan("task", channel=channel, reason="template step")
    reasons = []
    for candidate in _CANDIDATES[channel]:
        if candidate in exclude:
            reasons.append(f"{candidate}: failed")
            continue
        if why := _why_not(candidate, r, policy):
            reasons.append(f"{candidate}: {why}")
            continue
        reason = "" if candidate == channel else "falls back: " + "; ".join(reasons)
        return Plan("send", channel=candidate, to=_address(candidate, r),
                    generic=_generic(candidate, r, policy), reason=reason)
    all_refused = all(c in r.opted_out for c in FALLBACK_ORDER if _address(c, r))
    has_any = any(_address(c, r) for c in FALLBACK_ORDER)
    return Plan("task", channel="call", reason="no channel left: " + "; ".join(reasons),
                opted_out=has_any and all_refused)


def plan_direct(*, channel: str, recipient: Recipient, policy: Policy) -> Plan:
    """An ad-hoc, video or bulk message: the chosen channel or nothing."""
    r = recipient
    if r.status != "active":
        return Plan("skip", reason=f"patient is {r.status}")
    if why := _why_not(channel, r, policy):
        return Plan("skip", reason=why)
    return Plan("send", channel=channel, to=_address(channel, r),
                generic=_generic(channel, r, policy))
