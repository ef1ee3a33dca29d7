"""Which results count and what the doctor's action asks for (DESIGN.md section 3). Pure."""

from dataclasses import dataclass

from practicesync.connectors.profiles import ActionMeaning, Profile, ResultFacts


@dataclass(frozen=True)
class Judgement:
    eligible: bool
    reason: str | None
    meaning: ActionMeaning | None


def judge(profile: Profile, facts: ResultFacts) -> Judgement:
    """A result enters the dashboard only once a doctor has actioned it, and only when the
    PMS profile counts where it was filed."""
    if not profile.carries_results:
        return Judgement(False, f"{profile.label} does not send results", None)
    if reason := profile.result_ineligible_reason(facts):
        return Judgement(False, reason, None)
    if not facts.action.strip():
        return Judgement(False, "not actioned by a doctor yet", None)
    return Judgement(True, None, profile.action_meaning(facts))
