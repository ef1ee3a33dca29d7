"""What happens to a group's sequence when results sync re-decides the group. Pure.

The full state machine (steps, Pause on Booking, opt-out) is the outreach engine's; this
is the part results sync drives: start, stop when notified, cancel when staff must act.
"""

from .models import Sequence

State = Sequence.State


def sequence_change(*, current: str | None, disposition: str, done: bool, auto_start: bool,
                    contactable: bool) -> tuple[str | None, str]:
    """(new state or None for no change, why)."""
    if current is None:
        if disposition == "template" and not done and contactable:
            if auto_start:
                return State.ACTIVE, "template starts automatically"
            return State.TO_ACTION_PAUSED, "template waits for staff to press Start"
        return None, ""
    if current not in Sequence.LIVE:
        return None, ""  # a finished or cancelled sequence is never restarted without staff
    if done:
        return State.COMPLETED, "results marked notified/given/discussed in the PMS"
    if not contactable:
        return State.CANCELLED, "patient is deceased or has left the practice"
    if disposition != "template":
        return State.CANCELLED, f"group now needs staff ({disposition})"
    return None, ""
