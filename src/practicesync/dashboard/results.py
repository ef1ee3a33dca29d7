"""How result groups read to staff on the Results and Recalls > Summary pages. Pure display:
every decision was made by results sync."""

from dataclasses import dataclass

from django.core.exceptions import ObjectDoesNotExist

from practicesync.connectors.profiles import ResultFacts, get_profile
from practicesync.numbers import is_digits
from practicesync.outreach.models import Sequence
from practicesync.outreach.sequences import TRANSITIONS, Event
from practicesync.patients.models import Patient
from practicesync.results.models import ResultGroup

DISPOSITION_WORDS = {
    ResultGroup.Disposition.TEMPLATE: "Template",
    ResultGroup.Disposition.CHECKLIST: "Action checklist",
    ResultGroup.Disposition.IGNORED: "No action",
}
# What staff call an action where that differs from the PMS's stored wording.
STAFF_ACTION_WORDS = {
    # Best Practice code 7: the seed's "Return Urgent", whatever the PMS row said.
    "urgent_appointment": "Return Urgent",
    # Medical Director stores plain "Discuss"; with a comment it is a job for a person.
    "discuss_with_comment": "Discuss (with comment)",
}

# A template group whose patient cannot be contacted never gets a sequence.
NOT_CONTACTABLE = {Patient.Status.DECEASED: "Not sent: patient deceased",
                   Patient.Status.LEFT: "Not sent: patient left the practice"}


def action_words(group: ResultGroup, practice, *, staff: bool = False) -> str:
    """The group's action in the PMS's wording, as the PMS row spelt it; a bare BP action code
    becomes its words. With `staff`, the Recalls > Summary wording where staff call it
    something else ("Return Urgent")."""
    if group.action_key in STAFF_ACTION_WORDS and (staff or group.action_key ==
                                                   "discuss_with_comment"):
        return STAFF_ACTION_WORDS[group.action_key]
    action = group.action.strip()
    profile = get_profile(practice.pms)
    if is_digits(action) and profile.action_meaning:
        return profile.action_meaning(ResultFacts(action, "", "", "", "")).label
    return action


# The buttons staff may press on a sequence, in the order they are shown. Which of them a
# sequence offers is the state machine's answer (TRANSITIONS), never a list of our own.
STAFF_EVENTS = {Event.START: "Start", Event.PAUSE: "Pause", Event.CANCEL: "Cancel",
                Event.RESTART: "Restart"}
STAFF_EVENT_DONE = {Event.START: "Started", Event.PAUSE: "Paused", Event.CANCEL: "Cancelled",
                    Event.RESTART: "Restarted"}


def sequence_actions(group: ResultGroup) -> list[tuple[str, str]]:
    """(event, button label) for each staff event the group's sequence accepts now. None
    for a group without a sequence, nor once its results are done (notified in the PMS)."""
    if group.state == ResultGroup.State.DONE:
        return []
    try:
        state = group.sequence.state
    except ObjectDoesNotExist:
        return []
    allowed = TRANSITIONS.get(state, {})
    return [(str(event), label) for event, label in STAFF_EVENTS.items() if event in allowed]


def sequence_words(group: ResultGroup) -> str:
    """The seed's words: "To action – Paused", "Active", "Done", "Cancelled"."""
    if group.state == ResultGroup.State.DONE:
        return "Done"
    try:
        sequence = group.sequence
    except ObjectDoesNotExist:
        if (group.disposition == ResultGroup.Disposition.TEMPLATE
                and group.patient.status != Patient.Status.ACTIVE):
            return NOT_CONTACTABLE[group.patient.status]
        return "—"
    return Sequence.State(sequence.state).label


@dataclass
class GroupRow:
    group: ResultGroup
    tests: list[str]
    comments: list[tuple[str, str]]
    action: str
    staff_action: str
    disposition: str
    sequence: str
    badge: str      # CSS class of the sequence badge
    state: str
    actions: list[tuple[str, str]]  # (event, label) of the sequence buttons staff may press

    @classmethod
    def of(cls, group: ResultGroup, practice) -> "GroupRow":
        results = getattr(group, "shown_results", None)
        if results is None:
            results = list(group.results.filter(eligible=True).order_by("test_name", "id"))
        disposition = DISPOSITION_WORDS.get(group.disposition, group.disposition)
        if group.disposition == ResultGroup.Disposition.TEMPLATE and group.template:
            disposition = f"Template: {group.template.name}"
        try:
            badge = group.sequence.state
        except ObjectDoesNotExist:
            badge = "none"
        if group.state == ResultGroup.State.DONE:
            badge = "done"
        return cls(
            group=group,
            tests=[r.test_name or "(unnamed test)" for r in results],
            comments=[(r.test_name, r.comment.strip()) for r in results if r.comment.strip()],
            action=action_words(group, practice),
            staff_action=action_words(group, practice, staff=True),
            disposition=disposition,
            sequence=sequence_words(group),
            badge=badge,
            state=group.get_state_display(),
            actions=sequence_actions(group),
        )
