"""Results rules as data: every action of both vocabularies, eligibility, grouping. Pure."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from practicesync.connectors.profiles import ResultFacts, get_profile
from practicesync.results.eligibility import judge
from practicesync.results.grouping import GroupDecision, Member, decide_group, group_day

BP = dict(filed_under="Investigation Report", tab="", location="")
MD = dict(filed_under="", tab="Results", location="Result")


def facts(action, comment="", **where):
    return ResultFacts(action=action, comment=comment, **where)


@pytest.mark.parametrize("pms, action, comment, kind, key", [
    ("bestpractice", "No action", "", "ignored", "no_action"),
    ("bestpractice", "1", "", "ignored", "no_action"),
    ("bestpractice", "Reception to advise", "", "manual", "reception_to_advise"),
    ("bestpractice", "Nurse to Advise", "", "manual", "nurse_to_advise"),
    ("bestpractice", "Doctor to advise", "", "manual", "doctor_to_advise"),
    ("bestpractice", "Send routine reminder", "", "manual", "send_routine_reminder"),
    ("bestpractice", "Non-Urgent Appointment", "", "automatic", "non_urgent_appointment"),
    ("bestpractice", "non urgent  appointment", "", "automatic", "non_urgent_appointment"),
    ("bestpractice", "6", "", "automatic", "non_urgent_appointment"),
    ("bestpractice", "Non-Urgent Appointment", "bring your diary", "automatic",
     "non_urgent_appointment"),
    ("bestpractice", "Urgent appointment", "", "urgent", "urgent_appointment"),
    ("bestpractice", "Return Urgent", "", "urgent", "urgent_appointment"),
    ("bestpractice", "7", "", "urgent", "urgent_appointment"),
    ("bestpractice", "Call the patient", "", "manual", "other"),
    ("medicaldirector", "Discuss", "", "automatic", "discuss"),
    ("medicaldirector", "discuss", "   ", "automatic", "discuss"),
    ("medicaldirector", "Discuss", "repeat in 3 months", "manual", "discuss_with_comment"),
    ("medicaldirector", "Return Urgently", "", "urgent", "return_urgently"),
    ("medicaldirector", "No Action", "", "ignored", "no_action"),
    ("medicaldirector", "Recall 6 months", "", "manual", "custom"),
    ("medicaldirector", "Non-Urgent Appointment", "", "manual", "custom"),
])
def test_every_action_means_what_the_seed_says(pms, action, comment, kind, key):
    where = BP if pms == "bestpractice" else MD
    judgement = judge(get_profile(pms), facts(action, comment, **where))
    assert judgement.eligible and judgement.reason is None
    assert (judgement.meaning.kind, judgement.meaning.key) == (kind, key)


@pytest.mark.parametrize("pms, where, eligible, reason", [
    ("bestpractice", dict(filed_under="Investigation Report"), True, None),
    ("bestpractice", dict(filed_under="Correspondence In"), True, None),
    ("bestpractice", dict(filed_under="correspondence  in"), True, None),
    ("bestpractice", dict(filed_under="Clinical Photo"), False, "Investigation Report"),
    ("bestpractice", dict(filed_under=""), False, "Investigation Report"),
    ("medicaldirector", dict(tab="Results", location="Result"), True, None),
    ("medicaldirector", dict(tab="Documents", location="Result"), False, "Results tab"),
    ("medicaldirector", dict(tab="Results", location="Letter"), False, "only Result counts"),
    ("medicaldirector", dict(tab="Results", location=""), False, "only Result counts"),
    ("docman10", dict(filed_under="Investigation Report"), False, "does not send results"),
])
def test_eligibility_by_category_tab_and_location(pms, where, eligible, reason):
    full = {"filed_under": "", "tab": "", "location": ""} | where
    judgement = judge(get_profile(pms), facts("Discuss" if pms == "medicaldirector"
                                              else "Non-Urgent Appointment", **full))
    assert judgement.eligible is eligible
    if reason:
        assert reason in judgement.reason


@pytest.mark.parametrize("pms, where", [("bestpractice", BP), ("medicaldirector", MD)])
def test_a_result_no_doctor_has_actioned_does_not_count(pms, where):
    judgement = judge(get_profile(pms), facts("  ", **where))
    assert not judgement.eligible and judgement.reason == "not actioned by a doctor yet"


AUTO = Member("non_urgent_appointment", "Non-urgent appointment", "automatic", False)
NURSE = Member("nurse_to_advise", "Nurse to advise", "manual", False)
URGENT = Member("urgent_appointment", "Urgent appointment", "urgent", False)
NONE = Member("no_action", "No action", "ignored", False)


@pytest.mark.parametrize("members, disposition, action", [
    ([AUTO], "template", "Non-urgent appointment"),
    ([NONE], "ignored", "No action"),
    ([NONE, AUTO], "template", "Non-urgent appointment"),
    ([AUTO, NURSE], "checklist", "Nurse to advise"),
    ([NURSE, URGENT, AUTO], "checklist", "Urgent appointment"),
])
def test_a_group_takes_its_most_pressing_action(members, disposition, action):
    decision = decide_group(members)
    assert (decision.disposition, decision.action_label) == (disposition, action)


def test_a_late_result_raises_a_group_but_never_lowers_it():
    auto = decide_group([AUTO])
    assert decide_group([AUTO, NURSE], auto).disposition == "checklist"
    checklist = decide_group([NURSE])
    assert decide_group([NURSE, AUTO], checklist).disposition == "checklist"
    assert decide_group([AUTO], checklist).disposition == "checklist"


def test_a_changed_action_re_decides_the_group_from_its_current_actions():
    checklist = GroupDecision(2, "nurse_to_advise", "Nurse to advise", "checklist", False)
    assert decide_group([AUTO, NONE], checklist, re_decide=True).disposition == "template"


def test_a_group_is_done_only_when_every_result_is_notified():
    told = Member(AUTO.action_key, AUTO.action_label, AUTO.kind, True)
    assert decide_group([told]).done
    assert not decide_group([told, NURSE]).done


SYDNEY = ZoneInfo("Australia/Sydney")


@pytest.mark.parametrize("performed, day", [
    (dt.date(2026, 11, 20), dt.date(2026, 11, 20)),
    (dt.datetime(2026, 11, 20, 8, 0), dt.date(2026, 11, 20)),          # practice-local
    (dt.datetime(2026, 11, 20, 23, 59), dt.date(2026, 11, 20)),
    # 12:59 UTC is 23:59 in Sydney (AEDT, UTC+11); 13:00 UTC is already the next day there.
    (dt.datetime(2026, 11, 20, 12, 59, tzinfo=dt.UTC), dt.date(2026, 11, 20)),
    (dt.datetime(2026, 11, 20, 13, 0, tzinfo=dt.UTC), dt.date(2026, 11, 21)),
    (dt.datetime.fromisoformat("2026-11-21T00:30:00+11:00"), dt.date(2026, 11, 21)),
])
def test_results_group_by_the_practice_local_day(performed, day):
    assert group_day(performed, SYDNEY) == day
