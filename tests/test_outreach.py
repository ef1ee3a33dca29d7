"""The outreach engine end to end: an automatic results group reaches the patient through the
outbox with the template's steps and delays, pauses on a booking, resumes on a cancellation,
completes when notified; every send and skip is on the record."""

import datetime as dt

import pytest
from django.test import override_settings

from practicesync.appointments.models import Appointment
from practicesync.audit.models import AuditEvent
from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from practicesync.outreach import dispatch
from practicesync.outreach.actions import change_sequence, refresh_bookings
from practicesync.outreach.channels import PermanentError, Provider, TransientError, UncertainError
from practicesync.outreach.models import Message, OptOut, OutboxEntry, Sequence, StaffTask
from practicesync.outreach.sequences import Event
from practicesync.practices.models import Practice
from practicesync.results.actions import set_template_auto_start
from tests.cli import run, run_json
from tests.factories import make_patient, make_practice, write_list

SYDNEY = dt.timezone(dt.timedelta(hours=11))  # AEDT, the harbour practice's time in November
MONDAY_10AM = dt.datetime(2026, 11, 23, 10, 0, tzinfo=SYDNEY)
DAY = dt.timedelta(days=1)
# Past the lease of a claim made at MONDAY_10AM (a pass that took under a minute).
LEASE_GONE = dispatch.LEASE + dt.timedelta(minutes=1)


def result_row(result_id="R1", pms_id="P1", **fields):
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(result_id=result_id, pms_id=pms_id, test_name="FBC", performed_on="2026-11-20",
               reported_on="2026-11-21", actioned_on="2026-11-22",
               action="Non-Urgent Appointment", filed_under="Investigation Report")
    return row | fields


def import_results(practice, tmp_path, *rows):
    code, data = run_json("results", "sync", "--practice", practice.slug, "--source",
                          write_list(tmp_path / f"r{len(rows)}.csv", rows, RESULT_COLUMNS))
    assert code == 0, data
    return data


@pytest.fixture
def harbour(au_practice):
    au_practice.booking_url = "https://book.example.org/harbour"
    au_practice.save()
    set_template_auto_start(actor="test", template=au_practice.results_templates.get(),
                            auto_start=True)
    return au_practice


@pytest.fixture
def ann(harbour):
    return make_patient(harbour, pms_id="P1", given_name="Ann", mobile_phone="+61412345678",
                        email="ann@example.org")


def started(harbour, ann, tmp_path, at=MONDAY_10AM) -> Sequence:
    import_results(harbour, tmp_path, result_row())
    sequence = Sequence.objects.get(group__patient=ann)
    assert sequence.state == "active"
    # The import ran "now"; the story below runs on a fixed calendar.
    Sequence.objects.filter(id=sequence.id).update(started_at=at, due_at=at)
    sequence.refresh_from_db()
    return sequence


def tick(at):
    return dispatch.tick(now=at).as_json()


def tick_without_sending(practice, at):
    """A pass that records the due steps and sends nothing yet: the hour's budget is spent."""
    sends_per_hour = Practice.objects.get(id=practice.id).sends_per_hour
    Practice.objects.filter(id=practice.id).update(sends_per_hour=0)
    tick(at)
    Practice.objects.filter(id=practice.id).update(sends_per_hour=sends_per_hour)


def sent():
    return list(OutboxEntry.objects.values_list("channel", "to", "idempotency_key"))


def test_an_automatic_group_gets_every_step_at_its_time(harbour, ann, tmp_path):
    sequence = started(harbour, ann, tmp_path)
    report = tick(MONDAY_10AM)
    assert report["messages_queued"] == 1 and report["sent"] == 1
    assert sent() == [("sms", "+61412345678", f"results:{sequence.id}:1")]
    first = OutboxEntry.objects.get()
    assert first.body.startswith("Hello Ann, this is ") and "book.example.org/harbour" in first.body
    assert "FBC" not in first.body  # never the test in an SMS

    assert tick(MONDAY_10AM + 2 * DAY)["sent"] == 0  # step 2 is three days on
    assert tick(MONDAY_10AM + 3 * DAY)["sent"] == 1
    assert tick(MONDAY_10AM + 7 * DAY)["sent"] == 1
    email = OutboxEntry.objects.last()
    assert (email.channel, email.to) == ("email", "ann@example.org")
    assert email.subject.startswith("Please book an appointment with")
    report = tick(MONDAY_10AM + 10 * DAY)
    assert report["tasks_created"] == 1 and report["sequences_completed"] == 1
    task = StaffTask.objects.get()
    assert (task.kind, task.patient, task.status) == ("call", ann, "open")
    sequence.refresh_from_db()
    assert sequence.state == "completed" and sequence.due_at is None
    assert list(Message.objects.values_list("step", "status")) == [
        (1, "sent"), (2, "sent"), (3, "sent")]
    actions = list(AuditEvent.objects.filter(patient=ann, actor="system:worker")
                   .order_by("id").values_list("action", flat=True))
    assert actions.count("message.queued") == 3 and actions.count("message.sent") == 3
    assert "task.created" in actions and actions[-1] == "sequence.completed"


def test_ticking_twice_at_the_same_time_sends_once(harbour, ann, tmp_path):
    started(harbour, ann, tmp_path)
    tick(MONDAY_10AM)
    tick(MONDAY_10AM)
    assert len(sent()) == 1


def test_a_booking_pauses_a_cancellation_resumes_attending_completes(harbour, ann, tmp_path):
    sequence = started(harbour, ann, tmp_path)
    tick(MONDAY_10AM)
    booking = Appointment.objects.create(practice=harbour, appointment_id="A1", pms_id="P1",
                                         patient=ann, starts_at=MONDAY_10AM + 5 * DAY,
                                         status="booked", source="csv")
    assert refresh_bookings(practice=harbour, patient_ids=[ann.id], actor="test",
                            now=MONDAY_10AM + DAY) == 1
    sequence.refresh_from_db()
    assert sequence.state == "paused_booking"
    assert tick(MONDAY_10AM + 4 * DAY)["sent"] == 0  # step 2 was due: the booking holds it

    booking.status = "cancelled"
    booking.save()
    refresh_bookings(practice=harbour, patient_ids=[ann.id], actor="test",
                     now=MONDAY_10AM + 4 * DAY)
    sequence.refresh_from_db()
    assert sequence.state == "active"
    assert tick(MONDAY_10AM + 4 * DAY)["sent"] == 1  # the step that was due goes now

    Appointment.objects.create(practice=harbour, appointment_id="A2", pms_id="P1", patient=ann,
                               starts_at=MONDAY_10AM + 5 * DAY, status="attended", source="csv")
    refresh_bookings(practice=harbour, patient_ids=[ann.id], actor="test",
                     now=MONDAY_10AM + 5 * DAY)
    sequence.refresh_from_db()
    assert sequence.state == "completed" and "attended" in sequence.state_reason
    assert tick(MONDAY_10AM + 20 * DAY)["sent"] == 0


def test_without_pause_on_booking_a_booking_changes_nothing(harbour, ann, tmp_path):
    harbour.results_templates.update(pause_on_booking=False)
    sequence = started(harbour, ann, tmp_path)
    Appointment.objects.create(practice=harbour, appointment_id="A1", pms_id="P1", patient=ann,
                               starts_at=MONDAY_10AM + 5 * DAY, status="booked", source="csv")
    assert refresh_bookings(practice=harbour, patient_ids=[ann.id], actor="test",
                            now=MONDAY_10AM) == 0
    sequence.refresh_from_db()
    assert sequence.state == "active"


def test_the_not_yet_booked_steps_are_skipped_for_a_booked_patient(harbour, ann, tmp_path):
    harbour.results_templates.update(pause_on_booking=False)
    started(harbour, ann, tmp_path)
    tick(MONDAY_10AM)
    Appointment.objects.create(practice=harbour, appointment_id="A1", pms_id="P1", patient=ann,
                               starts_at=MONDAY_10AM + 5 * DAY, status="booked", source="csv")
    report = tick(MONDAY_10AM + 3 * DAY)
    assert report["skipped"] == 1 and report["sent"] == 0
    skip = AuditEvent.objects.get(action="message.skipped")
    assert skip.why == "patient has already booked" and skip.patient == ann


def test_notified_in_the_pms_completes_and_nothing_more_goes(harbour, ann, tmp_path):
    sequence = started(harbour, ann, tmp_path)
    tick(MONDAY_10AM)
    import_results(harbour, tmp_path, result_row(notified="notified"))
    sequence.refresh_from_db()
    assert sequence.state == "completed"
    assert tick(MONDAY_10AM + 30 * DAY)["sent"] == 0
    assert len(sent()) == 1


def test_nothing_goes_out_in_quiet_hours_or_at_weekends(harbour, ann, tmp_path):
    evening = MONDAY_10AM.replace(hour=21)
    started(harbour, ann, tmp_path, at=evening)
    report = tick(evening)
    assert report["sent"] == 0 and report["held_by_window"] == 1
    saturday = dt.datetime(2026, 11, 28, 11, 0, tzinfo=SYDNEY)
    assert tick(saturday)["sent"] == 0
    assert tick(MONDAY_10AM + DAY)["sent"] == 1  # Tuesday 10:00


def test_stop_on_sms_moves_a_results_follow_up_to_email(harbour, ann, tmp_path):
    started(harbour, ann, tmp_path)
    OptOut.objects.create(practice=harbour, channel="sms", address=ann.mobile_phone,
                          source="twilio STOP")
    tick(MONDAY_10AM)
    assert [c for c, _, _ in sent()] == ["email"]
    queued = AuditEvent.objects.get(action="message.queued")
    assert "sms: opted out of sms" in queued.why


def test_every_channel_refused_ends_in_a_call_task_never_silence(harbour, ann, tmp_path):
    sequence = started(harbour, ann, tmp_path)
    for channel, address in (("sms", ann.mobile_phone), ("email", ann.email)):
        OptOut.objects.create(practice=harbour, channel=channel, address=address, source="test")
    report = tick(MONDAY_10AM)
    assert report["sent"] == 0 and report["tasks_created"] == 1
    sequence.refresh_from_db()
    assert sequence.state == "opted_out"
    assert StaffTask.objects.get().kind == "call"


def test_no_contact_details_is_a_failed_sequence_with_a_call_task(harbour, tmp_path):
    nobody = make_patient(harbour, pms_id="P1", given_name="Ann")
    sequence = started(harbour, nobody, tmp_path)
    tick(MONDAY_10AM)
    sequence.refresh_from_db()
    assert sequence.state == "failed" and StaffTask.objects.get().patient == nobody


def test_a_shared_family_mobile_gets_the_generic_message(harbour, ann, tmp_path):
    make_patient(harbour, pms_id="P2", given_name="Bob", mobile_phone=ann.mobile_phone)
    started(harbour, ann, tmp_path)
    tick(MONDAY_10AM)
    body = OutboxEntry.objects.get().body
    assert "Ann" not in body and "has a message for you" in body


def test_a_deceased_patient_is_never_messaged(harbour, ann, tmp_path):
    sequence = started(harbour, ann, tmp_path)
    # Belt and braces: even if a sequence were left running, the step is skipped.
    ann.status = "deceased"
    ann.save()
    report = tick(MONDAY_10AM)
    assert report["sent"] == 0 and report["skipped"] == 1
    assert AuditEvent.objects.get(action="message.skipped").why == "patient is deceased"
    sequence.refresh_from_db()
    assert sequence.next_position == 2


def test_stop_all_holds_everything(harbour, ann, tmp_path):
    started(harbour, ann, tmp_path)
    harbour.stop_all = True
    harbour.save()
    assert tick(MONDAY_10AM)["sent"] == 0 and Message.objects.count() == 0


def test_the_rate_limit_holds_the_rest_for_later(harbour, tmp_path):
    harbour.sends_per_hour = 2
    harbour.save()
    for n in range(5):
        make_patient(harbour, pms_id=f"P{n}", given_name=f"N{n}", email=f"n{n}@example.org")
    import_results(harbour, tmp_path, *[result_row(f"R{n}", f"P{n}") for n in range(5)])
    Sequence.objects.update(due_at=MONDAY_10AM)
    report = tick(MONDAY_10AM)
    assert report["sent"] == 2 and report["held_by_rate_limit"] == 3
    assert tick(MONDAY_10AM + dt.timedelta(minutes=61))["sent"] == 2


class Flaky(Provider):
    """Fails the first `failures` calls the way a provider reports a timeout or 5xx."""
    name = "flaky"
    calls = 0
    failures = 1
    error = TransientError

    def send(self, message):
        type(self).calls += 1
        if type(self).calls <= type(self).failures:
            raise type(self).error("provider said 503")
        return f"flaky:{message.id}"


@pytest.fixture
def flaky(settings):
    Flaky.calls, Flaky.failures, Flaky.error = 0, 1, TransientError
    # Through pytest-django's `settings`, like every other change in these tests: mixing it
    # with override_settings restores them out of order and leaks the provider.
    settings.PRACTICESYNC_PROVIDERS = {"sms": "tests.test_outreach.Flaky"}
    return Flaky


def test_a_transient_error_is_retried_with_backoff(harbour, ann, tmp_path, flaky):
    started(harbour, ann, tmp_path)
    report = tick(MONDAY_10AM)
    assert report["retried"] == 1 and report["sent"] == 0
    message = Message.objects.get()
    assert message.status == "queued" and message.not_before == MONDAY_10AM + dt.timedelta(minutes=1)
    assert tick(MONDAY_10AM + dt.timedelta(seconds=30))["sent"] == 0
    assert tick(MONDAY_10AM + dt.timedelta(minutes=1))["sent"] == 1
    message.refresh_from_db()
    assert (message.status, message.attempts, message.provider_ref) == (
        "sent", 2, f"flaky:{message.id}")


def test_giving_up_on_sms_falls_back_to_email(harbour, ann, tmp_path, flaky):
    flaky.failures, flaky.error = 99, PermanentError
    started(harbour, ann, tmp_path)
    report = tick(MONDAY_10AM)
    assert report["failed"] == 1 and report["fallbacks"] == 1 and report["sent"] == 1
    failed, email = Message.objects.order_by("id")
    assert (failed.channel, failed.status, failed.error) == ("sms", "failed", "provider said 503")
    assert (email.channel, email.status, email.step) == ("email", "sent", 1)
    assert OutboxEntry.objects.get().channel == "email"


def test_retries_run_out_into_the_fallback(harbour, ann, tmp_path, flaky):
    flaky.failures = 99
    started(harbour, ann, tmp_path)
    at = MONDAY_10AM
    for attempt in range(1, dispatch.MAX_ATTEMPTS + 1):
        tick(at)
        at += dispatch.backoff(attempt)  # 1, 4, 16, 64 minutes: all inside the window
    assert Message.objects.filter(channel="sms").get().status == "failed"
    assert Message.objects.filter(channel="email").get().status == "sent"


def test_the_last_channel_failing_becomes_a_call_task(harbour, tmp_path, flaky):
    flaky.failures, flaky.error = 99, PermanentError
    only_sms = make_patient(harbour, pms_id="P1", mobile_phone="+61412345678")
    started(harbour, only_sms, tmp_path)
    tick(MONDAY_10AM)
    task = StaffTask.objects.get()
    assert task.kind == "call" and "sms failed" in task.reason


def test_an_interrupted_send_the_provider_has_is_not_sent_again(harbour, ann, tmp_path,
                                                              monkeypatch):
    started(harbour, ann, tmp_path)

    def killed(*args, **kwargs):
        raise SystemExit("kill -9 after the provider took it")

    monkeypatch.setattr(dispatch, "_apply_outcomes", killed)
    with pytest.raises(SystemExit):
        tick(MONDAY_10AM)
    monkeypatch.undo()
    assert Message.objects.get().status == "sending" and len(sent()) == 1
    assert tick(MONDAY_10AM + dt.timedelta(minutes=2))["recovered_sent"] == 0  # lease still on
    report = tick(MONDAY_10AM + LEASE_GONE)
    assert report["recovered_sent"] == 1 and report["sent"] == 0
    assert len(sent()) == 1 and Message.objects.get().status == "sent"


def test_an_interrupted_send_the_provider_never_got_goes_once(harbour, ann, tmp_path,
                                                            monkeypatch):
    started(harbour, ann, tmp_path)
    monkeypatch.setattr(dispatch, "_deliver", lambda *a, **k: None)  # killed before the call
    tick(MONDAY_10AM)
    monkeypatch.undo()
    report = tick(MONDAY_10AM + LEASE_GONE)
    assert report["recovered_requeued"] == 1 and report["sent"] == 1
    assert len(sent()) == 1


class Blind(Flaky):
    """A provider that cannot look up what it has (as Twilio)."""
    failures = 0


def test_an_interrupted_send_nobody_can_check_goes_to_staff_not_out_again(harbour, ann, tmp_path,
                                                                        monkeypatch):
    started(harbour, ann, tmp_path)
    monkeypatch.setattr(dispatch, "_deliver", lambda *a, **k: None)
    with override_settings(PRACTICESYNC_PROVIDERS={"sms": "tests.test_outreach.Blind"}):
        tick(MONDAY_10AM)
        monkeypatch.undo()
        report = tick(MONDAY_10AM + LEASE_GONE)
    assert report["recovered_unknown"] == 1 and report["sent"] == 0
    assert Message.objects.get().status == "unknown"
    assert StaffTask.objects.get().kind == "check_send"


def test_a_claim_late_in_a_long_pass_gets_a_whole_lease(harbour, ann, tmp_path, monkeypatch):
    """A pass's `now` is fixed when it starts; a lease runs from the claim. Otherwise a
    claim ten minutes into a pass would start run out, and another worker would recover
    (send again, or hand to staff) what this one is about to send."""
    started(harbour, ann, tmp_path)
    tick_without_sending(harbour, MONDAY_10AM)
    monkeypatch.setattr(dispatch, "_deliver", lambda *a, **k: None)  # killed after the claim
    ten_minutes_in = dispatch.TickReport(started=dispatch.time.monotonic() - 600)
    dispatch.deliver_queued(now=MONDAY_10AM, report=ten_minutes_in, practices=[harbour])
    monkeypatch.undo()
    message = Message.objects.get()
    assert message.status == "sending"
    assert message.not_before >= MONDAY_10AM + dt.timedelta(minutes=10) + dispatch.LEASE
    assert tick(MONDAY_10AM + LEASE_GONE)["recovered_requeued"] == 0  # still this claim's
    report = tick(MONDAY_10AM + dt.timedelta(minutes=10) + LEASE_GONE)
    assert (report["recovered_requeued"], report["sent"]) == (1, 1)
    assert len(sent()) == 1


class Slow(Provider):
    """A provider that takes a minute a message (by the pass's clock) and records, for each
    call, the moment and the lease of the claim the message was sent under."""
    name = "slow"
    clock = None
    calls = []

    def send(self, message):
        lease = Message.objects.get(id=message.id).not_before
        type(self).calls.append((message.id, self.clock.now, lease))
        self.clock.now += 60
        return f"slow:{message.id}"


class Clock:
    def __init__(self, now: float):
        self.now = now

    def monotonic(self) -> float:
        return self.now


def test_no_provider_is_called_on_a_claim_older_than_half_its_lease(harbour, tmp_path,
                                                                      monkeypatch, settings):
    """What a slow provider has not taken within SEND_WITHIN goes back to the queue and is
    claimed again, with a lease of its own."""
    for n in range(5):
        make_patient(harbour, pms_id=f"P{n}", given_name=f"N{n}", mobile_phone=f"+6141234567{n}")
    import_results(harbour, tmp_path, *[result_row(f"R{n}", f"P{n}") for n in range(5)])
    Sequence.objects.update(due_at=MONDAY_10AM)
    clock = Slow.clock = Clock(1000.0)
    Slow.calls = []
    monkeypatch.setattr(dispatch, "time", clock)
    settings.PRACTICESYNC_PROVIDERS = {"sms": "tests.test_outreach.Slow"}

    report = tick(MONDAY_10AM)

    assert report["sent"] == 5 and Message.objects.filter(status="sent").count() == 5
    assert len({message_id for message_id, _, _ in Slow.calls}) == len(Slow.calls) == 5
    for _, at, lease in Slow.calls:
        # When the claim was made, on the pass's clock: a lease's `until` says.
        claimed_at = 1000.0 + (lease - MONDAY_10AM - dispatch.LEASE).total_seconds()
        assert at - claimed_at < dispatch.SEND_WITHIN.total_seconds(), Slow.calls
    # Three went under the first claim (0, 60, 120 s); the last two were claimed again.
    leases = [lease - MONDAY_10AM for _, _, lease in Slow.calls]
    assert leases == [dispatch.LEASE] * 3 + [dispatch.LEASE + dt.timedelta(seconds=180)] * 2
    assert Message.objects.filter(attempts=1).count() == 5  # the return was not an attempt


def test_a_claim_that_runs_out_before_any_send_ends_the_pass_and_waits(harbour, ann, tmp_path,
                                                                       monkeypatch):
    """Claim, then a last look slower than SEND_WITHIN: nothing is sent on the stale claim,
    the messages go back to the queue and the pass stops (no claim-return loop); the next
    pass sends them."""
    started(harbour, ann, tmp_path)
    tick_without_sending(harbour, MONDAY_10AM)
    clock = Clock(1000.0)
    monkeypatch.setattr(dispatch, "time", clock)
    look = dispatch._checked_before_sending

    def slow_look(*args, **kwargs):
        clock.now += dispatch.SEND_WITHIN.total_seconds() + 1
        return look(*args, **kwargs)

    monkeypatch.setattr(dispatch, "_checked_before_sending", slow_look)
    report = tick(MONDAY_10AM)
    assert report["sent"] == 0 and len(sent()) == 0
    message = Message.objects.get()
    assert (message.status, message.attempts) == ("queued", 0)
    monkeypatch.undo()
    assert tick(MONDAY_10AM)["sent"] == 1 and len(sent()) == 1


def test_staff_start_pause_cancel_restart(au_practice, tmp_path):
    patient = make_patient(au_practice, pms_id="P1", mobile_phone="+61412345678")
    import_results(au_practice, tmp_path, result_row())
    sequence = Sequence.objects.get(group__patient=patient)
    assert sequence.state == "to_action_paused" and sequence.due_at is None
    group = str(sequence.group_id)
    code, data = run_json("outreach", "start", "--practice", "harbour", "--group", group)
    assert code == 0 and data["state"] == "active" and data["next_step"] == 1
    assert data["due_at"] is not None
    code, data = run_json("outreach", "pause", "--practice", "harbour", "--group", group)
    assert data["state"] == "to_action_paused"
    code, data = run_json("outreach", "cancel", "--practice", "harbour", "--group", group)
    assert data["state"] == "cancelled"
    code, out = run("outreach", "pause", "--practice", "harbour", "--group", group)
    assert code == 2 and "cannot pause a sequence that is cancelled" in out
    code, data = run_json("outreach", "restart", "--practice", "harbour", "--group", group)
    assert data["state"] == "active"
    assert [e.detail["event"] for e in AuditEvent.objects.filter(
        action__startswith="sequence.", detail__has_key="event").order_by("id")] == [
        "start", "pause", "cancel", "restart"]


def test_a_resumed_sequence_keeps_its_place(harbour, ann, tmp_path):
    sequence = started(harbour, ann, tmp_path)
    tick(MONDAY_10AM)
    sequence.refresh_from_db()
    change_sequence(actor="test", sequence=sequence, event=Event.PAUSE, now=MONDAY_10AM + DAY)
    change_sequence(actor="test", sequence=sequence, event=Event.START, now=MONDAY_10AM + 5 * DAY)
    sequence.refresh_from_db()
    assert sequence.next_position == 2 and sequence.due_at == MONDAY_10AM + 5 * DAY


def test_tick_from_the_cli(harbour, ann, tmp_path):
    started(harbour, ann, tmp_path)
    code, data = run_json("outreach", "tick", "--now", MONDAY_10AM.isoformat())
    assert code == 0 and data["sent"] == 1 and data["messages_queued"] == 1
    code, out = run("outreach", "tick", "--now", "yesterday")
    assert code == 2 and "ISO 8601" in out


def test_steps_are_shown_with_sms_size_and_checked_on_save(au_practice):
    code, data = run_json("outreach", "steps", "--practice", "harbour", "--action-key",
                          "non_urgent_appointment")
    assert [s["channel"] for s in data["steps"]] == ["sms", "sms", "email", "call"]
    assert [s["delay_days"] for s in data["steps"]] == [0, 3, 4, 3]
    assert data["steps"][0]["sms"]["segments"] == 1
    code, out = run("outreach", "step", "--practice", "harbour", "--action-key",
                    "non_urgent_appointment", "--position", "2", "--channel", "sms",
                    "--delay-days", "2", "--body", "Your cholesterol is 7.1 mmol/L")
    assert code == 2 and "cholesterol" in out and "7.1 mmol" in out
    code, data = run_json("outreach", "step", "--practice", "harbour", "--action-key",
                          "non_urgent_appointment", "--position", "5", "--channel", "letter",
                          "--delay-days", "7", "--body", "Remind by post")
    assert code == 0 and data["position"] == 5
    assert AuditEvent.objects.filter(action="template.step_added").count() == 1


def test_a_send_the_provider_may_have_taken_is_never_sent_again(harbour, ann, tmp_path, flaky):
    flaky.failures, flaky.error = 1, UncertainError  # a read timeout after the request went
    started(harbour, ann, tmp_path)
    report = tick(MONDAY_10AM)
    assert report["uncertain"] == 1 and report["sent"] == 0
    assert tick(MONDAY_10AM + dt.timedelta(hours=1))["sent"] == 0
    message = Message.objects.get()
    assert message.status == "unknown" and flaky.calls == 1
    task = StaffTask.objects.get()
    assert task.kind == "check_send" and task.message == message


def test_the_last_look_before_sending_catches_a_death_or_a_stop(harbour, ann, tmp_path,
                                                                monkeypatch):
    sequence = started(harbour, ann, tmp_path)
    tick_without_sending(harbour, MONDAY_10AM)
    OptOut.objects.create(practice=harbour, channel="sms", address=ann.mobile_phone, source="test")
    report = tick(MONDAY_10AM + dt.timedelta(minutes=1))
    assert report["skipped_before_send"] == 1 and report["sent"] == 1  # the email instead
    sms, email = Message.objects.order_by("id")
    assert (sms.status, email.channel, email.status) == ("skipped", "email", "sent")
    assert "opted out of sms" in sms.error

    sequence.refresh_from_db()
    Sequence.objects.filter(id=sequence.id).update(due_at=MONDAY_10AM + 3 * DAY)
    tick_without_sending(harbour, MONDAY_10AM + 3 * DAY)
    ann.status = "deceased"
    ann.save()
    report = tick(MONDAY_10AM + 3 * DAY + dt.timedelta(minutes=1))
    assert report["skipped_before_send"] == 1 and report["sent"] == 0
    assert Message.objects.order_by("id").last().error == "patient is deceased (checked before sending)"
    assert [e.channel for e in OutboxEntry.objects.all()] == ["email"]


def test_staff_see_their_tasks_and_tick_them_done(harbour, tmp_path):
    nobody = make_patient(harbour, pms_id="P1")
    started(harbour, nobody, tmp_path)
    tick(MONDAY_10AM)
    code, data = run_json("outreach", "tasks", "--practice", "harbour")
    assert code == 0 and [(t["pms_id"], t["kind"], t["status"]) for t in data["tasks"]] == [
        ("P1", "call", "open")]
    task_id = str(data["tasks"][0]["id"])
    code, data = run_json("outreach", "task-done", "--practice", "harbour", "--task", task_id,
                          "--note", "left a voicemail")
    assert code == 0 and data["status"] == "done"
    assert run_json("outreach", "tasks", "--practice", "harbour")[1]["tasks"] == []
    assert AuditEvent.objects.get(action="task.done").why == "left a voicemail"
    make_practice(slug="elsewhere")
    # Another practice's staff can never tick (or see) this practice's task.
    assert run("outreach", "task-done", "--practice", "elsewhere", "--task", task_id)[0] == 2
    assert run_json("outreach", "tasks", "--practice", "elsewhere", "--all")[1]["tasks"] == []


def test_the_practice_sets_its_window_and_limits_but_never_the_quiet_hours(harbour):
    code, data = run_json("outreach", "policy", "--practice", "harbour", "--send-days", "123456",
                          "--send-from", "08:30", "--send-until", "19:30", "--sends-per-hour", "50",
                          "--stop-all", "on")
    assert code == 0 and data["send_days"] == "123456" and data["stop_all"] is True
    assert (data["send_from"], data["sends_per_hour"]) == ("08:30:00", 50)
    event = AuditEvent.objects.get(action="practice.outreach_policy_changed")
    assert event.detail["send_until"] == {"old": "18:00:00", "new": "19:30:00"}
    code, out = run("outreach", "policy", "--practice", "harbour", "--send-until", "21:00")
    assert code == 2 and "quiet hours" in out
    code, out = run("outreach", "policy", "--practice", "harbour", "--send-days", "89")
    assert code == 2 and "weekday" in out
    harbour.refresh_from_db()
    assert harbour.send_until == dt.time(19, 30)  # the refused change left nothing behind


def test_a_patient_who_asks_staff_to_stop_texts_gets_email_instead(harbour, ann, tmp_path):
    code, data = run_json("outreach", "opt-out", "--practice", "harbour", "--patient", "P1",
                          "--channel", "sms")
    assert code == 0 and data["opted_out"] is True
    assert AuditEvent.objects.get(action="patient.opted_out").patient == ann
    started(harbour, ann, tmp_path)
    tick(MONDAY_10AM)
    assert [c for c, _, _ in sent()] == ["email"]
    run_json("outreach", "opt-out", "--practice", "harbour", "--patient", "P1", "--channel", "sms",
             "--undo")
    assert not OptOut.objects.exists()
    assert run("outreach", "opt-out", "--practice", "harbour", "--patient", "P404",
               "--channel", "sms")[0] == 2


def test_a_restarted_sequence_sends_its_steps_again_under_new_keys(harbour, ann, tmp_path):
    sequence = started(harbour, ann, tmp_path)
    for days in (0, 3, 7, 10):
        tick(MONDAY_10AM + days * DAY)
    sequence.refresh_from_db()
    assert sequence.state == "completed"
    restarted = change_sequence(actor="test", sequence=sequence, event=Event.RESTART,
                                now=MONDAY_10AM + 11 * DAY)
    assert restarted.round == 2
    report = tick(MONDAY_10AM + 11 * DAY)
    assert report["sent"] == 1 and report["practices_failed"] == 0
    assert sent()[-1][2] == f"results:{sequence.id}:1:r2"


def test_one_practice_failing_stops_nothing_at_the_others(harbour, ann, tmp_path, monkeypatch):
    from practicesync.patients.models import ReviewItem

    started(harbour, ann, tmp_path)
    other = make_practice(slug="elsewhere", pms="bestpractice")
    real = dispatch.take_due_steps

    def broken_at_harbour(practice, **kw):
        if practice.id == harbour.id:
            raise RuntimeError("a bad row")
        return real(practice, **kw)

    monkeypatch.setattr(dispatch, "take_due_steps", broken_at_harbour)
    patient = make_patient(other, pms_id="X1", email="x@example.org")
    Message.objects.create(practice=other, patient=patient, kind="adhoc", channel="email",
                           to="x@example.org", body="hello", idempotency_key="adhoc:x",
                           not_before=MONDAY_10AM, created_by="test")
    report = tick(MONDAY_10AM)
    assert report["practices_failed"] == 1 and report["sent"] == 1  # the other practice's
    item = ReviewItem.objects.get(practice=harbour)
    assert item.kind == "outreach_failed" and "RuntimeError" in item.detail
    code, _ = run("outreach", "tick", "--now", MONDAY_10AM.isoformat())
    assert code == 1  # scripts see that a practice failed


def test_a_follow_up_paused_on_a_booking_that_never_resolves_resumes(harbour, ann, tmp_path):
    sequence = started(harbour, ann, tmp_path)
    tick(MONDAY_10AM)
    Appointment.objects.create(practice=harbour, appointment_id="A1", pms_id="P1", patient=ann,
                               starts_at=MONDAY_10AM + DAY, status="booked", source="csv")
    refresh_bookings(practice=harbour, patient_ids=[ann.id], actor="test", now=MONDAY_10AM)
    sequence.refresh_from_db()
    assert sequence.state == "paused_booking"
    assert tick(MONDAY_10AM + 2 * DAY)["sent"] == 0  # the booking is only just past
    # Never marked attended, cancelled or DNA: after a day more, the follow-up resumes.
    report = tick(MONDAY_10AM + 3 * DAY)
    assert report["bookings_rechecked"] == 1 and report["sent"] == 1


def test_a_patient_already_booked_when_a_step_comes_due_is_paused_not_messaged(harbour, ann,
                                                                               tmp_path):
    sequence = started(harbour, ann, tmp_path)
    Appointment.objects.create(practice=harbour, appointment_id="A1", pms_id="P1", patient=ann,
                               starts_at=MONDAY_10AM + 2 * DAY, status="booked", source="csv")
    report = tick(MONDAY_10AM)
    assert report["sent"] == 0 and report["sequences_paused_booking"] == 1
    sequence.refresh_from_db()
    assert (sequence.state, sequence.next_position) == ("paused_booking", 1)


def test_a_queued_follow_up_message_is_not_sent_once_the_results_are_notified(harbour, ann,
                                                                              tmp_path, monkeypatch):
    started(harbour, ann, tmp_path)
    tick_without_sending(harbour, MONDAY_10AM)
    import_results(harbour, tmp_path, result_row(notified="notified"))
    report = tick(MONDAY_10AM + dt.timedelta(minutes=1))
    assert report["sent"] == 0 and report["skipped_before_send"] == 1
    assert Message.objects.get().status == "skipped" and not OutboxEntry.objects.exists()


def test_an_email_step_falling_back_to_sms_sends_only_the_generic_words(harbour, tmp_path):
    only_mobile = make_patient(harbour, pms_id="P1", given_name="Ann", mobile_phone="+61412345678")
    sequence = started(harbour, only_mobile, tmp_path)
    Sequence.objects.filter(id=sequence.id).update(next_position=3)  # the email step
    tick(MONDAY_10AM)
    entry = OutboxEntry.objects.get()
    assert entry.channel == "sms" and "results" not in entry.body and "Ann" not in entry.body
    assert "has a message for you" in entry.body


def test_two_workers_share_one_hourly_budget(harbour, tmp_path, monkeypatch):
    harbour.sends_per_hour = 3
    harbour.save()
    for n in range(5):
        make_patient(harbour, pms_id=f"P{n}", given_name=f"N{n}", email=f"n{n}@example.org")
    import_results(harbour, tmp_path, *[result_row(f"R{n}", f"P{n}") for n in range(5)])
    Sequence.objects.update(due_at=MONDAY_10AM)
    # A second worker takes the due steps, claiming as many as the hour allows, and has
    # not sent them yet.
    monkeypatch.setattr(dispatch, "_deliver", lambda *a, **k: None)
    dispatch.take_due_steps(harbour, now=MONDAY_10AM, report=dispatch.TickReport())
    monkeypatch.undo()
    assert Message.objects.filter(status="sending").count() == 3
    report = tick(MONDAY_10AM)  # 3 an hour, all 3 in the other worker's hands
    assert (report["sent"], report["held_by_rate_limit"]) == (0, 2)
    assert len(dispatch._claim(harbour, MONDAY_10AM, 5, dispatch.TickReport().lease(MONDAY_10AM))) == 0


def test_a_pass_with_nothing_due_writes_nothing(harbour, ann, tmp_path):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    import_results(harbour, tmp_path, result_row("R1", ann.pms_id))
    Sequence.objects.update(due_at=MONDAY_10AM + dt.timedelta(days=1))
    with CaptureQueriesContext(connection) as queries:
        assert tick(MONDAY_10AM)["steps_taken"] == 0
    writes = [q["sql"] for q in queries if q["sql"].split()[0] in ("INSERT", "UPDATE", "DELETE")]
    assert writes == []


@pytest.fixture
def five_due_in_batches_of_two(transactional_db, harbour, tmp_path, monkeypatch):
    """Five due follow-ups, taken two at a time, on PostgreSQL outside any test transaction
    (where a second thread sends each batch)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: with one writer, SQLite sends each batch in line")
    for n in range(5):
        make_patient(harbour, pms_id=f"P{n}", given_name=f"N{n}", email=f"n{n}@example.org")
    import_results(harbour, tmp_path, *[result_row(f"R{n}", f"P{n}") for n in range(5)])
    Sequence.objects.update(due_at=MONDAY_10AM)
    monkeypatch.setattr(dispatch, "BATCH", 2)


def test_on_postgresql_a_batch_goes_out_while_the_next_is_decided(five_due_in_batches_of_two,
                                                                   monkeypatch):
    import threading

    senders, deliver = [], dispatch._deliver

    def recording(practice, messages, lease, **kwargs):
        senders.append((threading.current_thread().name, len(messages)))
        deliver(practice, messages, lease, **kwargs)

    monkeypatch.setattr(dispatch, "_deliver", recording)
    report = tick(MONDAY_10AM)
    assert (report["steps_taken"], report["sent"]) == (5, 5)
    assert [n for _, n in senders] == [2, 2, 1]
    assert all(name.startswith("tick-send") for name, _ in senders), senders
    assert sorted(OutboxEntry.objects.values_list("idempotency_key", flat=True)) == sorted(
        f"results:{s}:1" for s in Sequence.objects.values_list("id", flat=True))


def test_a_batch_that_fails_to_go_stops_the_pass_and_nothing_waits_unsent(
        five_due_in_batches_of_two, monkeypatch):
    from collections import Counter

    deliver = dispatch._deliver

    def first_fails(practice, messages, lease, **kwargs):
        if not first_fails.failed:
            first_fails.failed = True
            raise RuntimeError("the database went away")
        deliver(practice, messages, lease, **kwargs)

    first_fails.failed = False
    monkeypatch.setattr(dispatch, "_deliver", first_fails)
    assert tick(MONDAY_10AM)["practices_failed"] == 1
    statuses = Counter(Message.objects.values_list("status", flat=True))
    # The failed batch waits for its lease (recovery asks the provider); a batch claimed
    # after it was never handed over and is queued again, not left "sending".
    assert statuses["sending"] == 2 and set(statuses) <= {"sending", "queued"}, statuses
    later = MONDAY_10AM + LEASE_GONE
    assert tick(later)["practices_failed"] == 0
    assert Message.objects.filter(status="sent").count() == 5
    keys = list(OutboxEntry.objects.values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys)) == 5


def signed_receipt(settings, message, status):
    from django.test import Client
    from twilio.request_validator import RequestValidator

    settings.TWILIO_AUTH_TOKEN = "t0ken"
    data = {"MessageSid": message.provider_ref, "MessageStatus": status, "ErrorCode": "30003",
            "AccountSid": "AC" + "0" * 32, "To": message.to, "From": "+15005550006"}
    path = f"/webhooks/twilio/status?m={message.id}"
    signature = RequestValidator("t0ken").compute_signature(f"http://testserver{path}", data)
    return Client().post(path, data, HTTP_X_TWILIO_SIGNATURE=signature)


def test_an_undelivered_receipt_moves_the_step_to_the_next_channel(harbour, ann, tmp_path,
                                                                   settings):
    started(harbour, ann, tmp_path)
    tick(MONDAY_10AM)
    sms = Message.objects.get()
    Message.objects.filter(id=sms.id).update(provider="twilio", provider_ref="SM" + "a" * 32)
    sms.refresh_from_db()
    assert signed_receipt(settings, sms, "undelivered").status_code == 204
    email = Message.objects.get(channel="email")
    assert (email.step, email.status) == (1, "queued")  # the same step, on the next channel


def test_a_receipt_for_a_send_staff_were_checking_closes_their_task(harbour, ann, tmp_path,
                                                                    settings, flaky):
    flaky.failures, flaky.error = 1, UncertainError
    started(harbour, ann, tmp_path)
    tick(MONDAY_10AM)
    sms = Message.objects.get()
    assert sms.status == "unknown" and StaffTask.objects.get().status == "open"
    Message.objects.filter(id=sms.id).update(provider_ref="")
    sms.provider_ref = "SM" + "d" * 32
    assert signed_receipt(settings, sms, "delivered").status_code == 204
    sms.refresh_from_db()
    task = StaffTask.objects.get()
    assert sms.status == "delivered" and (task.status, task.done_by) == ("done", "twilio")


def test_a_message_queued_before_a_pause_waits_and_goes_when_the_follow_up_resumes(
        harbour, ann, tmp_path, monkeypatch):
    sequence = started(harbour, ann, tmp_path)
    tick_without_sending(harbour, MONDAY_10AM)
    sequence = change_sequence(actor="test", sequence=sequence, event=Event.PAUSE,
                               now=MONDAY_10AM + dt.timedelta(minutes=1))
    report = tick(MONDAY_10AM + dt.timedelta(minutes=2))
    assert report["held_by_pause"] == 1 and report["sent"] == 0
    assert Message.objects.get().status == "queued"
    change_sequence(actor="test", sequence=sequence, event=Event.START,
                    now=MONDAY_10AM + dt.timedelta(minutes=3))
    assert tick(MONDAY_10AM + dt.timedelta(minutes=20))["sent"] == 1
    assert Message.objects.get().status == "sent"


def test_after_cancel_and_restart_only_the_new_round_goes(harbour, ann, tmp_path, monkeypatch):
    sequence = started(harbour, ann, tmp_path)
    tick_without_sending(harbour, MONDAY_10AM)
    sequence = change_sequence(actor="test", sequence=sequence, event=Event.CANCEL,
                               now=MONDAY_10AM + dt.timedelta(minutes=1))
    change_sequence(actor="test", sequence=sequence, event=Event.RESTART,
                    now=MONDAY_10AM + dt.timedelta(minutes=2))
    report = tick(MONDAY_10AM + dt.timedelta(minutes=3))
    assert report["sent"] == 1 and report["skipped_before_send"] == 1
    assert [key for _, _, key in sent()] == [f"results:{sequence.id}:1:r2"]


def test_staff_cannot_lift_a_stop_the_patient_sent(harbour, ann):
    OptOut.objects.create(practice=harbour, channel="sms", address=ann.mobile_phone,
                          source="twilio STOP")
    code, out = run("outreach", "opt-out", "--practice", "harbour", "--patient", "P1",
                    "--channel", "sms", "--undo")
    assert code == 2 and "START" in out and OptOut.objects.exists()
