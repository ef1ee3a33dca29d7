"""Medical Director (AU).

Results count only when filed under the Results tab with Location "Result" in the Actioned
List. The Holding File's actions are No Action, Discuss and Return Urgently; practices add
custom actions and notations, which are never automatic.
"""

from . import AUTOMATIC, IGNORED, MANUAL, URGENT, ActionMeaning, Profile, ResultFacts, words

NO_ACTION = ActionMeaning("no_action", "No Action", IGNORED)
DISCUSS = ActionMeaning("discuss", "Discuss", AUTOMATIC)
DISCUSS_WITH_COMMENT = ActionMeaning("discuss_with_comment", "Discuss (with comment)", MANUAL)
RETURN_URGENTLY = ActionMeaning("return_urgently", "Return Urgently", URGENT)
WORDING = {"no action": NO_ACTION, "no action required": NO_ACTION, "discuss": DISCUSS,
           "discussed": DISCUSS, "return urgently": RETURN_URGENTLY,
           "urgent recall": RETURN_URGENTLY}


def result_ineligible_reason(result: ResultFacts) -> str | None:
    if words(result.tab) != "results":
        where = f"the {result.tab!r} tab" if result.tab else "no tab"
        return f"filed under {where}; only the Results tab counts"
    if words(result.location) != "result":
        where = repr(result.location) if result.location else "blank"
        return f"Location {where} in the Actioned List; only Result counts"
    return None


def action_meaning(result: ResultFacts) -> ActionMeaning:
    meaning = WORDING.get(words(result.action))
    if meaning is None:
        return ActionMeaning("custom", result.action.strip(), MANUAL)
    if meaning is DISCUSS and result.comment.strip():
        # A comment is the doctor's note for whoever calls: only a person can pass it on.
        return DISCUSS_WITH_COMMENT
    return meaning


PROFILE = Profile(
    name="medicaldirector", label="Medical Director", country="AU",
    result_ineligible_reason=result_ineligible_reason, action_meaning=action_meaning,
    result_templates={"discuss": "Discuss results"},
)
