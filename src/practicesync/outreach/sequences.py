"""The sequence state machine of DESIGN.md section 4. Pure: a state and an event in, the new
state (or None: the event does not apply) and why out. Actions apply it and audit it.

    to_action_paused → active → paused_booking ⇄ active → completed | cancelled | opted_out | failed
"""

from enum import StrEnum

from .models import Sequence

State = Sequence.State


class Event(StrEnum):
    START = "start"  # staff press Start, or the template starts by itself
    PAUSE = "pause"  # staff pause: back to "To action – Paused"
    CANCEL = "cancel"  # staff cancel
    RESTART = "restart"  # staff restart a finished sequence from its first step
    BOOKED = "booked"  # an appointment is booked (Pause on Booking)
    UNBOOKED = "unbooked"  # the booking was cancelled or the patient did not attend
    ATTENDED = "attended"  # the patient came: the follow-up has done its job
    NOTIFIED = "notified"  # results marked notified/given/discussed in the PMS
    MANUAL = "manual"  # the doctor's action now needs staff (checklist)
    NOT_CONTACTABLE = "not_contactable"  # deceased or left the practice
    STEPS_DONE = "steps_done"  # every step of the template has been taken
    OPTED_OUT = "opted_out"  # every channel refused by the patient; a call task was made
    UNREACHABLE = "unreachable"  # no channel at all; a call task was made


_LIVE_ENDINGS = {
    Event.NOTIFIED: (State.COMPLETED, "results marked notified/given/discussed in the PMS"),
    Event.MANUAL: (State.CANCELLED, "the doctor's action now needs staff"),
    Event.NOT_CONTACTABLE: (State.CANCELLED, "patient is deceased or has left the practice"),
    Event.CANCEL: (State.CANCELLED, "cancelled by staff"),
}
_FINISHED = {Event.RESTART: (State.ACTIVE, "restarted by staff from the first step")}

TRANSITIONS: dict[str, dict[Event, tuple[str, str]]] = {
    State.TO_ACTION_PAUSED: {
        Event.START: (State.ACTIVE, "started"),
        **_LIVE_ENDINGS,
    },
    State.ACTIVE: {
        Event.PAUSE: (State.TO_ACTION_PAUSED, "paused by staff"),
        Event.BOOKED: (State.PAUSED_BOOKING, "patient booked an appointment (Pause on Booking)"),
        Event.ATTENDED: (State.COMPLETED, "patient attended an appointment"),
        Event.STEPS_DONE: (State.COMPLETED, "every step of the template has been taken"),
        Event.OPTED_OUT: (State.OPTED_OUT, "patient opted out of every channel; staff call task"),
        Event.UNREACHABLE: (State.FAILED, "no way to message the patient; staff call task"),
        **_LIVE_ENDINGS,
    },
    State.PAUSED_BOOKING: {
        Event.PAUSE: (State.TO_ACTION_PAUSED, "paused by staff"),
        Event.UNBOOKED: (State.ACTIVE, "booking cancelled or not attended: follow-up resumes"),
        Event.ATTENDED: (State.COMPLETED, "patient attended an appointment"),
        **_LIVE_ENDINGS,
    },
    State.COMPLETED: _FINISHED,
    State.CANCELLED: _FINISHED,
    State.OPTED_OUT: _FINISHED,
    State.FAILED: _FINISHED,
}


STEPS_DONE_REASON = TRANSITIONS[State.ACTIVE][Event.STEPS_DONE][1]


def message_verdict(state: str, reason: str, *, group_done: bool, message_round: int,
                    sequence_round: int) -> str:
    """Whether a queued results message of this sequence goes now ("go"), waits while the
    follow-up is paused ("hold"), or never goes ("stop"): not once the results are marked
    notified, nor for an earlier round than the sequence's (a restart), nor once it was
    cancelled or completed by a booking; but a sequence that only "completed" because its
    last step was queued still sends it."""
    if group_done or message_round != sequence_round:
        return "stop"
    if state in (State.TO_ACTION_PAUSED, State.PAUSED_BOOKING):
        return "hold"
    if state == State.ACTIVE or (state == State.COMPLETED and reason == STEPS_DONE_REASON):
        return "go"
    return "stop"


def transition(state: str, event: Event) -> tuple[str | None, str]:
    """(new state, why), or (None, "") when the event changes nothing in this state."""
    return TRANSITIONS.get(state, {}).get(event, (None, ""))


def sequence_change(*, current: str | None, disposition: str, done: bool, auto_start: bool,
                    contactable: bool) -> tuple[str | None, str]:
    """What results sync does to a group's sequence when it (re-)decides the group."""
    if current is None:
        if disposition == "template" and not done and contactable:
            if auto_start:
                return State.ACTIVE, "template starts automatically"
            return State.TO_ACTION_PAUSED, "template waits for staff to press Start"
        return None, ""
    if current not in Sequence.LIVE:
        return None, ""  # a finished or cancelled sequence is never restarted without staff
    if done:
        return transition(current, Event.NOTIFIED)
    if not contactable:
        return transition(current, Event.NOT_CONTACTABLE)
    if disposition != "template":
        return transition(current, Event.MANUAL)[0], f"group now needs staff ({disposition})"
    return None, ""


def booking_event(appointments, *, since, now, stale_after) -> Event:
    """What a patient's appointments, taken as a whole, mean for a sequence started at `since`:
    attended one since then → ATTENDED; a booking still to come (or just past and not yet
    marked attended, up to `stale_after`) → BOOKED; otherwise UNBOOKED.
    `appointments`: (starts_at, status) pairs with status booked|cancelled|dna|attended."""
    if any(status == "attended" and starts_at >= since for starts_at, status in appointments):
        return Event.ATTENDED
    if any(status == "booked" and starts_at >= now - stale_after for starts_at, status in appointments):
        return Event.BOOKED
    return Event.UNBOOKED


STAFF_STEPS = ("call", "letter")


def ending_problem(channels: list[str]) -> str | None:
    """A Results template's steps, in order, must end with a staff step (call or letter):
    a patient who answers no message then reaches a person, never a silent end."""
    if not channels or channels[-1] not in STAFF_STEPS:
        return "the last step must be a staff call or letter, so a patient who answers no " \
               "message reaches a person"
    return None
