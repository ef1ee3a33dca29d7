"""What the practice's retention policy lets go, and when (docs/adr/0017). Pure.

Two kinds of data age out: raw inbound HL7/FHIR messages (the MLLP inbox and its dead
letters) and the texts of outreach messages (Message subject/body, the local outbox's copy).
The message row itself stays: status, channel and times are the contact ledger.
"""

import datetime as dt
from dataclasses import dataclass

# Put in place of a purged subject/body, so the ledger and the export say what happened.
PURGED = "[text removed: the practice's retention period is over]"
# Messages whose outcome is not settled keep their text: a queued one still has to go, and
# staff must check a sending/unknown one against the provider (it may be sent again).
IN_FLIGHT = frozenset({"queued", "sending", "unknown"})
# Inbox rows a worker has not finished with are never touched.
INBOX_PENDING = frozenset({"accepted", "processing"})
# Unresolved dead letters are kept twice as long: they are what a fix is re-run on.
DEAD_LETTER_FACTOR = 2
# The daily run, practice-local: after the nightly sync (02:00 by default) has had its hour.
PURGE_AT = dt.time(3, 30)


@dataclass(frozen=True)
class PurgePlan:
    bodies_before: dt.datetime
    raw_before: dt.datetime
    dead_before: dt.datetime

    def message_due(self, status: str, created_at: dt.datetime) -> bool:
        return status not in IN_FLIGHT and created_at < self.bodies_before

    def inbound_due(self, state: str, received_at: dt.datetime) -> bool:
        if state in INBOX_PENDING:
            return False
        if state == "dead":
            return received_at < self.dead_before
        return received_at < self.raw_before


def purge_plan(*, now: dt.datetime, raw_days: int, bodies_days: int) -> PurgePlan:
    raw = dt.timedelta(days=raw_days)
    return PurgePlan(bodies_before=now - dt.timedelta(days=bodies_days), raw_before=now - raw,
                     dead_before=now - DEAD_LETTER_FACTOR * raw)
