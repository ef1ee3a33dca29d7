"""Best Practice (AU).

Results count only when filed under Investigation Report or Correspondence In. The doctor's
action is one of BP's codes 1-7 (INVESTIGATIONS.ACTION / CORRESPONDENCEIN.ACTION), shown to
staff in words; code 7 "Urgent appointment" is what staff call "Return Urgent".
"""

from . import AUTOMATIC, IGNORED, MANUAL, URGENT, ActionMeaning, Profile, ResultFacts, words

COUNTED_FILINGS = {"investigation report", "correspondence in"}

ACTIONS = {
    1: ActionMeaning("no_action", "No action", IGNORED),
    2: ActionMeaning("reception_to_advise", "Reception to advise", MANUAL),
    3: ActionMeaning("nurse_to_advise", "Nurse to advise", MANUAL),
    4: ActionMeaning("doctor_to_advise", "Doctor to advise", MANUAL),
    5: ActionMeaning("send_routine_reminder", "Send routine reminder", MANUAL),
    6: ActionMeaning("non_urgent_appointment", "Non-urgent appointment", AUTOMATIC),
    7: ActionMeaning("urgent_appointment", "Return Urgent", URGENT),
}
# Every way staff and BP write an action, to its code.
WORDING = {words(a.label): code for code, a in ACTIONS.items()} | {
    str(code): code for code in ACTIONS} | {
    "urgent appointment": 7, "urgent": 7, "non urgent appointment": 6,
    "nonurgent appointment": 6}


def result_ineligible_reason(result: ResultFacts) -> str | None:
    if words(result.filed_under) not in COUNTED_FILINGS:
        return (f"filed under {result.filed_under!r}; Best Practice results count only under "
                f"Investigation Report or Correspondence In")
    return None


def action_meaning(result: ResultFacts) -> ActionMeaning:
    code = WORDING.get(words(result.action))
    if code is None:
        # An action we do not know is never sent automatically: staff decide.
        return ActionMeaning("other", result.action.strip(), MANUAL)
    return ACTIONS[code]


PROFILE = Profile(
    name="bestpractice", label="Best Practice", country="AU",
    result_ineligible_reason=result_ineligible_reason, action_meaning=action_meaning,
    result_templates={"non_urgent_appointment": "Non-urgent results"},
)
