"""The outreach decisions, table-driven: state machine, Pause on Booking, channel choice,
send windows, wording. No database."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from practicesync.outreach.recipients import Policy, Recipient, plan_direct, plan_step
from practicesync.outreach.sequences import (
    TRANSITIONS,
    Event,
    booking_event,
    ending_problem,
    sequence_change,
    transition,
)
from practicesync.outreach.window import BadWindow, check_window, in_window, next_send_time
from practicesync.outreach.wording import render, sms_length, text_problems

P, A, B = "to_action_paused", "active", "paused_booking"
C, X, OPT, F = "completed", "cancelled", "opted_out", "failed"
E = Event

# Every (state, event) pair: the state it leads to, or None when the event changes nothing.
EXPECTED = {
    P: {E.START: A, E.NOTIFIED: C, E.MANUAL: X, E.NOT_CONTACTABLE: X, E.CANCEL: X},
    A: {E.PAUSE: P, E.BOOKED: B, E.ATTENDED: C, E.STEPS_DONE: C, E.OPTED_OUT: OPT,
        E.UNREACHABLE: F, E.NOTIFIED: C, E.MANUAL: X, E.NOT_CONTACTABLE: X, E.CANCEL: X},
    B: {E.PAUSE: P, E.UNBOOKED: A, E.ATTENDED: C, E.NOTIFIED: C, E.MANUAL: X,
        E.NOT_CONTACTABLE: X, E.CANCEL: X},
    C: {E.RESTART: A}, X: {E.RESTART: A}, OPT: {E.RESTART: A}, F: {E.RESTART: A},
}


@pytest.mark.parametrize("state", list(EXPECTED))
@pytest.mark.parametrize("event", list(Event))
def test_every_transition(state, event):
    new, why = transition(state, event)
    assert new == EXPECTED[state].get(event)
    assert bool(why) == (new is not None)


def test_the_table_has_every_state():
    assert set(TRANSITIONS) == set(EXPECTED)


@pytest.mark.parametrize("current, disposition, done, auto, contactable, expected", [
    (None, "template", False, True, True, A),
    (None, "template", False, False, True, P),
    (None, "template", True, True, True, None),  # already notified: nothing to send
    (None, "template", False, True, False, None),  # deceased or left: never starts
    (None, "checklist", False, True, True, None),  # a checklist group never has a sequence
    (A, "template", True, True, True, C),
    (B, "template", False, True, False, X),
    (P, "checklist", False, True, True, X),
    (A, "ignored", False, True, True, X),
    (X, "template", False, True, True, None),  # cancelled is never restarted without staff
    (C, "template", False, True, True, None),
    (A, "template", False, True, True, None),
])
def test_results_sync_drives_sequences(current, disposition, done, auto, contactable, expected):
    new, _ = sequence_change(current=current, disposition=disposition, done=done,
                             auto_start=auto, contactable=contactable)
    assert new == expected


NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
SINCE = NOW - 5 * DAY


@pytest.mark.parametrize("appointments, expected", [
    ([], E.UNBOOKED),
    ([(NOW + 2 * DAY, "booked")], E.BOOKED),
    ([(NOW + 2 * DAY, "cancelled")], E.UNBOOKED),
    ([(NOW - 2 * DAY, "dna")], E.UNBOOKED),
    ([(NOW - 2 * DAY, "attended")], E.ATTENDED),
    ([(SINCE - DAY, "attended")], E.UNBOOKED),  # seen before the follow-up began: not this
    ([(NOW + DAY, "cancelled"), (NOW + 3 * DAY, "booked")], E.BOOKED),  # one of two cancelled
    ([(NOW - 3 * DAY, "booked")], E.UNBOOKED),  # long past and never marked: stops pausing
    ([(NOW - dt.timedelta(hours=3), "booked")], E.BOOKED),  # today's, not marked yet
])
def test_pause_on_booking_reads_the_appointments_as_a_whole(appointments, expected):
    assert booking_event(appointments, since=SINCE, now=NOW, stale_after=DAY) == expected


POLICY = Policy(min_age_sms=12, teen_until=17)
MOBILE, MAIL, PUSH = "+61412345678", "ann@example.org", "https://push.example.org/s/1"


def who(**kw):
    values = {"status": "active", "age": 40, "mobile": MOBILE, "email": MAIL}
    return Recipient(**(values | kw))


@pytest.mark.parametrize("channel, recipient, exclude, action, to, generic, fell_back", [
    ("sms", who(), (), "send", MOBILE, False, False),
    ("sms", who(mobile=None), (), "send", MAIL, False, True),
    ("sms", who(opted_out=frozenset({"sms"})), (), "send", MAIL, False, True),  # STOP: falls back
    ("sms", who(push=PUSH), (), "send", MOBILE, False, False),  # the step's own channel first
    ("email", who(push=PUSH, email=None), (), "send", PUSH, False, True),  # then push, SMS
    ("sms", who(), ("sms",), "send", MAIL, False, True),  # the SMS failed for good
    ("sms", who(age=10), (), "send", MAIL, False, True),  # a child: no SMS
    ("sms", who(age=15), (), "send", MOBILE, True, False),  # a teenager: generic wording
    ("sms", who(shared_mobile=True), (), "send", MOBILE, True, False),  # a family's mobile
    ("email", who(shared_mobile=True), (), "send", MAIL, False, False),
    ("push", who(push=PUSH, age=15), (), "send", PUSH, True, False),
    ("sms", who(mobile=None, email=None), (), "task", None, False, True),  # call the patient
    ("call", who(), (), "task", None, False, False),
    ("letter", who(), (), "task", None, False, False),
    ("sms", who(status="deceased"), (), "skip", None, False, False),
    ("sms", who(status="left"), (), "skip", None, False, False),
])
def test_a_results_step_finds_a_channel_or_staff(channel, recipient, exclude, action, to, generic,
                                                 fell_back):
    plan = plan_step(channel=channel, condition="", recipient=recipient, policy=POLICY,
                     exclude=frozenset(exclude))
    assert (plan.action, plan.to, plan.generic) == (action, to, generic)
    if action == "send":
        assert bool(plan.reason) == fell_back


def test_a_step_for_the_not_yet_booked_is_skipped_once_booked():
    plan = plan_step(channel="sms", condition="not_booked", recipient=who(booked=True),
                     policy=POLICY)
    assert plan.action == "skip" and "booked" in plan.reason


def test_every_channel_refused_is_an_opt_out_with_a_call_task():
    refused = who(push=PUSH, opted_out=frozenset({"sms", "email", "push"}))
    plan = plan_step(channel="sms", condition="", recipient=refused, policy=POLICY)
    assert plan.action == "task" and plan.channel == "call" and plan.opted_out
    nothing = plan_step(channel="sms", condition="", recipient=who(mobile=None, email=None),
                        policy=POLICY)
    assert nothing.action == "task" and not nothing.opted_out


@pytest.mark.parametrize("channel, recipient, action", [
    ("sms", who(), "send"),
    ("sms", who(opted_out=frozenset({"sms"})), "skip"),  # STOP stops bulk: no fallback
    ("sms", who(mobile=None), "skip"),
    ("email", who(), "send"),
    ("sms", who(status="deceased"), "skip"),
    ("sms", who(age=8), "skip"),
])
def test_a_direct_message_goes_on_the_chosen_channel_or_not_at_all(channel, recipient, action):
    assert plan_direct(channel=channel, recipient=recipient, policy=POLICY).action == action


SYDNEY = ZoneInfo("Australia/Sydney")
WEEKDAYS = {"tz": SYDNEY, "days": "12345", "start": dt.time(9), "end": dt.time(18)}


def local(*args):
    return dt.datetime(*args, tzinfo=SYDNEY)


@pytest.mark.parametrize("now, expected", [
    (local(2026, 11, 23, 10, 0), local(2026, 11, 23, 10, 0)),  # Monday morning: now
    (local(2026, 11, 23, 7, 0), local(2026, 11, 23, 9, 0)),  # too early: 9:00
    (local(2026, 11, 23, 18, 0), local(2026, 11, 24, 9, 0)),  # closed: tomorrow 9:00
    (local(2026, 11, 27, 19, 0), local(2026, 11, 30, 9, 0)),  # Friday evening: Monday
    (local(2026, 11, 28, 12, 0), local(2026, 11, 30, 9, 0)),  # Saturday: Monday
])
def test_sends_wait_for_the_practice_window(now, expected):
    assert next_send_time(now.astimezone(dt.UTC), **WEEKDAYS) == expected


def test_the_window_follows_daylight_saving():
    # Sydney moves to AEDT on 4 October 2026: 9:00 local is 23:00 UTC the day before.
    assert next_send_time(local(2026, 10, 5, 6, 0), **WEEKDAYS) == dt.datetime(
        2026, 10, 4, 22, 0, tzinfo=dt.UTC)
    assert in_window(local(2026, 10, 5, 9, 30), **WEEKDAYS)


def test_quiet_hours_hold_even_if_the_window_says_otherwise():
    wide = {**WEEKDAYS, "start": dt.time(6), "end": dt.time(23), "days": "1234567"}
    assert next_send_time(local(2026, 11, 23, 21, 0), **wide) == local(2026, 11, 24, 8, 0)
    with pytest.raises(BadWindow):
        check_window("1234567", dt.time(6), dt.time(23))
    with pytest.raises(BadWindow):
        check_window("", dt.time(9), dt.time(18))
    check_window("12345", dt.time(9), dt.time(18))


@pytest.mark.parametrize("channel, body, problem", [
    ("sms", "Hello {first_name}, please book: {booking_link}", None),
    ("sms", "Your FBC is back", "fbc"),
    ("sms", "Your cholesterol was 6.2 mmol/L", "6.2 mmol"),
    ("push", "Your HbA1c is high", "hba1c"),
    ("sms", "Your test was abnormal", "abnormal"),
    ("sms", "STI screen done", "sti"),
    ("sms", "We still need to see you", None),  # "sti" only as a word
    ("sms", "Your liver tests are back", "test"),
    ("sms", "Your level was 6", "level"),
    ("sms", "Your potassium is 6.1", "6.1"),  # a bare decimal is a value
    ("sms", "Flu clinic Saturday 9.30am", None),  # a time is not
    ("sms", "Your results are back", "result"),  # an SMS only says there is a message
    ("email", "Your cholesterol results are ready to discuss", None),  # email may say more
    ("sms", "Hello {name}", "unknown placeholder {name}"),
    ("sms", "Hello {first_name", "braces"),
    ("sms", "  ", "empty"),
])
def test_template_text_is_checked_on_save(channel, body, problem):
    problems = text_problems(channel, body)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


@pytest.mark.parametrize("text, encoding, characters, segments", [
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("a" * 306, "GSM-7", 306, 2),
    ("a" * 307, "GSM-7", 307, 3),
    ("€" * 80, "GSM-7", 160, 1),  # the euro sign takes two septets
    ("Renée's" + "a" * 60, "GSM-7", 67, 1),  # é is in the GSM set
    ("Zoë", "UCS-2", 3, 1),  # ë is not
    ("Hello Łucja", "UCS-2", 11, 1),
    ("ł" * 71, "UCS-2", 71, 2),
    ("🙂" * 35, "UCS-2", 70, 1),  # an emoji is two UTF-16 units
])
def test_sms_length_and_segments(text, encoding, characters, segments):
    assert sms_length(text) == (encoding, characters, segments)


def test_render_fills_placeholders_and_says_what_to_do_without_a_booking_link():
    text = render("Hi {first_name}, {practice_name}: {booking_link}", first_name="Ann",
                  practice_name="Harbour", booking_link="")
    assert text == "Hi Ann, Harbour: call the practice"


@pytest.mark.parametrize("channels, ok", [
    (["sms", "sms", "email", "call"], True),
    (["sms", "letter"], True),
    (["call"], True),
    (["sms", "call", "email"], False),  # a message after the call: the follow-up ends unseen
    (["sms"], False),
    ([], False),
])
def test_a_results_template_ends_with_a_staff_step(channels, ok):
    assert (ending_problem(channels) is None) == ok
