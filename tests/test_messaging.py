"""Ad-hoc messages, video invites and bulk messages: they reach the outbox through the
dispatcher in the send window; patients who may not get them are refused with the reason on
the record; a bulk is previewed, confirmed once, throttled, and never crosses practices."""

import datetime as dt
import json

import pytest

from practicesync.audit.models import AuditEvent
from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from practicesync.outreach import dispatch
from practicesync.outreach.actions import change_sequence
from practicesync.outreach.messaging import (
    Refused,
    bulk_status,
    cancel_bulk,
    confirm_bulk,
    create_bulk,
    invite_to_video,
    preview_bulk,
    send_message,
    tidy_without_name,
)
from practicesync.outreach.models import (
    BulkMessage,
    Message,
    OptOut,
    OutboxEntry,
    Sequence,
    StaffTask,
)
from practicesync.outreach.sequences import Event
from tests.cli import run, run_json
from tests.factories import make_patient, write_list

SYDNEY = dt.timezone(dt.timedelta(hours=11))  # AEDT, the harbour practice's time in November
MONDAY_10AM = dt.datetime(2026, 11, 23, 10, 0, tzinfo=SYDNEY)
TODAY = dt.date.today()


def born(years_ago: int) -> dt.date:
    # Mid-year birthdays keep the age the same whatever day the suite runs.
    return dt.date(TODAY.year - years_ago - 1, 7, 1) if TODAY < dt.date(TODAY.year, 7, 1) \
        else dt.date(TODAY.year - years_ago, 7, 1)


@pytest.fixture
def harbour(au_practice):
    au_practice.booking_url = "https://book.example.org/harbour"
    au_practice.save()
    return au_practice


@pytest.fixture
def ann(harbour):
    return make_patient(harbour, pms_id="P1", given_name="Ann", mobile_phone="+61412345678",
                        email="ann@example.org")


def tick(at):
    return dispatch.tick(now=at).as_json()


def outbox():
    return list(OutboxEntry.objects.values_list("channel", "to", "body"))


def refusals(patient):
    return list(AuditEvent.objects.filter(action="message.refused", patient=patient)
                .values_list("why", flat=True))


# --- ad-hoc messages ------------------------------------------------------------------------

def test_an_adhoc_sms_and_email_reach_the_outbox(harbour, ann):
    sms = send_message(actor="test", patient=ann, channel="sms",
                       body="Hello {first_name}, please call {practice_name}.", now=MONDAY_10AM)
    send_message(actor="test", patient=ann, channel="email", subject="Your form",
                 body="Dear {first_name}, your form is ready.", now=MONDAY_10AM)
    assert (sms.kind, sms.status, sms.not_before) == ("adhoc", "queued", MONDAY_10AM)
    assert sms.idempotency_key.startswith("adhoc:") and sms.created_by == "test"
    assert tick(MONDAY_10AM)["sent"] == 2
    assert outbox() == [("sms", "+61412345678", "Hello Ann, please call harbour."),
                        ("email", "ann@example.org", "Dear Ann, your form is ready.")]
    assert OutboxEntry.objects.get(channel="email").subject == "Your form"
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    actions = list(AuditEvent.objects.filter(patient=ann).values_list("action", flat=True))
    assert actions.count("message.queued") == 2 and actions.count("message.sent") == 2


def test_a_message_sent_after_hours_waits_for_the_window(harbour, ann):
    evening = MONDAY_10AM.replace(hour=21)
    message = send_message(actor="test", patient=ann, channel="sms", body="Please call us.",
                           now=evening)
    assert message.not_before == MONDAY_10AM.replace(hour=9) + dt.timedelta(days=1)
    assert tick(evening)["sent"] == 0
    assert tick(message.not_before)["sent"] == 1


def test_message_send_from_the_cli(harbour, ann):
    code, data = run_json("message", "send", "--practice", "harbour", "--patient", "P1",
                          "--channel", "email", "--subject", "Hi", "--body", "Hello {first_name}")
    assert code == 0 and data["sent"] is True and data["channel"] == "email"
    message = Message.objects.get(id=data["message_id"])
    assert message.created_by.startswith("cli:")
    tick(message.not_before)  # the next opening of the window, whenever the suite runs
    assert outbox() == [("email", "ann@example.org", "Hello Ann")]
    code, out = run("message", "send", "--practice", "harbour", "--patient", "P1", "--channel",
                    "sms", "--body", "See you soon")
    assert code == 0 and "queued" in out


REFUSALS = {
    "deceased": (dict(status="deceased"), "sms", "patient is deceased"),
    "left": (dict(status="left"), "sms", "patient has left the practice"),
    "no mobile": (dict(mobile_phone=None), "sms", "no mobile number"),
    "no email": (dict(email=None), "email", "no email address"),
    "child": (dict(date_of_birth=born(8)), "sms", "under 12: no sms"),
    "teenager": (dict(date_of_birth=born(15)), "sms", "the mobile may not be the patient's own"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_patient_who_may_not_get_it_is_refused_with_the_reason(harbour, case):
    fields, channel, reason = REFUSALS[case]
    patient = make_patient(harbour, pms_id="P7", given_name="Kim", **{
        "mobile_phone": "+61412345670", "email": "kim@example.org", **fields})
    code, out = run("message", "send", "--practice", "harbour", "--patient", "P7", "--channel",
                    channel, "--body", "Please call the practice.")
    assert code == 2 and reason in out
    assert Message.objects.count() == 0
    assert len(refusals(patient)) == 1 and reason in refusals(patient)[0]


def test_opted_out_sms_is_refused_but_email_goes(harbour, ann):
    OptOut.objects.create(practice=harbour, channel="sms", address=ann.mobile_phone, source="STOP")
    code, data = run_json("message", "send", "--practice", "harbour", "--patient", "P1",
                          "--channel", "sms", "--body", "Please call us.")
    assert code == 2 and data["sent"] is False and data["code"] == "opted_out"
    assert "opted out of sms" in data["error"]
    assert refusals(ann) == ["opted out of sms"]
    code, data = run_json("message", "send", "--practice", "harbour", "--patient", "P1",
                          "--channel", "email", "--body", "Please call us.")
    assert code == 0 and Message.objects.get().channel == "email"


def test_a_shared_family_mobile_gets_no_staff_sms_but_email_goes(harbour, ann):
    make_patient(harbour, pms_id="P2", given_name="Bob", mobile_phone=ann.mobile_phone)
    with pytest.raises(Refused) as refused:
        send_message(actor="test", patient=ann, channel="sms", body="Hi Ann", now=MONDAY_10AM)
    assert refused.value.code == "not_own_mobile" and "use email or call" in refused.value.reason
    assert AuditEvent.objects.get(action="message.refused").patient == ann
    assert send_message(actor="test", patient=ann, channel="email", body="Hi {first_name}",
                        now=MONDAY_10AM).to == "ann@example.org"


def test_a_teenager_may_get_an_email(harbour):
    teen = make_patient(harbour, pms_id="P3", date_of_birth=born(15), mobile_phone="+61412345679",
                        email="teen@example.org")
    assert send_message(actor="test", patient=teen, channel="email", body="Hi",
                        now=MONDAY_10AM).status == "queued"


def test_result_details_are_refused_in_an_sms_only(harbour, ann):
    body = "Your cholesterol is 7.1 mmol/L"
    code, out = run("message", "send", "--practice", "harbour", "--patient", "P1", "--channel",
                    "sms", "--body", body)
    assert code == 2 and "cholesterol" in out and "7.1 mmol" in out
    assert refusals(ann)[0].startswith("the text was refused")
    code, _ = run("message", "send", "--practice", "harbour", "--patient", "P1", "--channel",
                  "email", "--body", body)
    assert code == 0
    code, out = run("message", "send", "--practice", "harbour", "--patient", "P1", "--channel",
                    "email", "--body", "Hello {name}")
    assert code == 2 and "unknown placeholder {name}" in out


# --- video invites ----------------------------------------------------------------------------

def test_every_video_invite_has_its_own_room_link(harbour, ann):
    first = invite_to_video(actor="test", patient=ann, channel="sms", now=MONDAY_10AM)
    second = invite_to_video(actor="test", patient=ann, channel="email", now=MONDAY_10AM)
    links = [m.body.rsplit(" ", 1)[-1] for m in (first, second)]
    assert links[0] != links[1]
    assert all(link.startswith(harbour.video_base_url) and len(link) > len(harbour.video_base_url) + 16
               for link in links)
    assert first.body == f"harbour invites you to a video consultation: {links[0]}"
    assert (first.kind, second.subject) == ("video", "Video consultation with harbour")
    tick(MONDAY_10AM)
    assert [body for _, _, body in outbox()] == [first.body, second.body]


def test_video_invite_from_the_cli_and_its_refusals(harbour, ann):
    code, data = run_json("video", "invite", "--practice", "harbour", "--patient", "P1",
                          "--channel", "sms")
    assert code == 0 and data["link"].startswith("https://video.example.org/room/")
    assert data["kind"] == "video" and data["link"] in Message.objects.get().body
    make_patient(harbour, pms_id="P2", given_name="Bob", mobile_phone=ann.mobile_phone)
    code, out = run("video", "invite", "--practice", "harbour", "--patient", "P1", "--channel", "sms")
    assert code == 2 and "may not be the patient's own" in out
    assert Message.objects.count() == 1 and len(refusals(ann)) == 1


# --- bulk -------------------------------------------------------------------------------------

@pytest.fixture
def practice_list(harbour, ann):
    """Ann (adult) plus one patient for every way of getting a bulk SMS or not."""
    people = {
        "ann": ann,
        "ben": make_patient(harbour, pms_id="P2", given_name="Ben", family_name="Black",
                            mobile_phone="+61412000002", email="ben@example.org", digital=True),
        "dead": make_patient(harbour, pms_id="P3", status="deceased", mobile_phone="+61412000003"),
        "gone": make_patient(harbour, pms_id="P4", status="left", mobile_phone="+61412000004"),
        "stop": make_patient(harbour, pms_id="P5", mobile_phone="+61412000005"),
        "none": make_patient(harbour, pms_id="P6", email="none@example.org"),
        "kid": make_patient(harbour, pms_id="P7", date_of_birth=born(6), mobile_phone="+61412000007"),
        "teen": make_patient(harbour, pms_id="P8", given_name="Tia", date_of_birth=born(15),
                             mobile_phone="+61412000008"),
    }
    OptOut.objects.create(practice=harbour, channel="sms", address="+61412000005", source="STOP")
    return people


BODY = "Hello {first_name}, flu clinics have started at {practice_name}: {booking_link}"


def test_bulk_preview_counts_who_gets_it_and_who_not(harbour, practice_list):
    code, data = run_json("bulk", "preview", "--practice", "harbour", "--channel", "sms",
                          "--body", BODY, "--status", "active", "deceased", "left")
    assert code == 0
    assert data["recipients"] == 3 and data["generic"] == 1  # Ann, Ben; Tia without her name
    assert data["excluded"] == {"deceased": 1, "left": 1, "opted_out": 1, "no_address": 1,
                                "under_age": 1}
    assert data["sample"] == ("Hello Ann, flu clinics have started at harbour: "
                              "https://book.example.org/harbour")
    assert data["sample_generic"].startswith("Hello, flu clinics") and "Tia" not in data["sample_generic"]
    assert data["sms"] == {"encoding": "GSM-7", "characters": len(data["sample"]), "segments": 1,
                           "total_segments": 3}
    # By default only active patients are selected; deceased and left are never recipients.
    _, default = run_json("bulk", "preview", "--practice", "harbour", "--channel", "sms",
                          "--body", BODY)
    assert default["recipients"] == 3 and default["excluded"]["deceased"] == 0
    assert Message.objects.count() == 0 and BulkMessage.objects.count() == 0  # reads only
    code, out = run("bulk", "preview", "--practice", "harbour", "--channel", "sms", "--body", BODY)
    assert code == 0 and "3 patients would get this sms" in out and "opted out 1" in out


def test_bulk_filters(harbour, practice_list):
    def recipients(**flt):
        return preview_bulk(practice=harbour, recipient_filter=flt, channel="email",
                            body="Hi").recipients

    assert recipients() == 3  # Ann, Ben, the one with only an email
    assert recipients(digital=True) == 1
    assert recipients(digital=False, has_mobile=True) == 1  # Ann (the others have no email)
    assert recipients(has_mobile=False) == 1
    assert recipients(age_min=18) == 3 and recipients(age_max=17) == 0
    assert recipients(pms_ids=["P1", "P2"]) == 2
    assert recipients(family_name_prefix="bla") == 1
    assert recipients(status=["deceased"]) == 0  # counted, never messaged
    with pytest.raises(ValueError, match="unknown filter"):
        recipients(postcode="2000")
    code, data = run_json("bulk", "preview", "--practice", "harbour", "--channel", "email",
                          "--body", "Hi", "--digital", "no", "--age-min", "30", "--has-email")
    assert code == 0 and data["recipients"] == 2


def test_bulk_send_needs_confirm(harbour, practice_list):
    code, out = run("bulk", "send", "--practice", "harbour", "--channel", "sms", "--body", BODY)
    assert code == 2 and "--confirm" in out and "3 patients would get this sms" in out
    code, data = run_json("bulk", "send", "--practice", "harbour", "--channel", "sms", "--body", BODY)
    assert code == 2 and "--confirm" in data["error"] and data["recipients"] == 3
    assert BulkMessage.objects.count() == 0 and Message.objects.count() == 0
    code, out = run("bulk", "send", "--practice", "harbour", "--channel", "sms", "--confirm",
                    "--body", "Your HbA1c is back")
    assert code == 2 and "hba1c" in out and Message.objects.count() == 0


def test_bulk_send_queues_one_message_per_recipient_once(harbour, practice_list):
    code, data = run_json("bulk", "send", "--practice", "harbour", "--channel", "sms", "--confirm",
                          "--body", BODY, "--status", "active", "deceased")
    assert code == 0 and data["status"] == "confirmed" and data["by_status"]["queued"] == 3
    bulk = BulkMessage.objects.get(id=data["bulk_id"])
    keys = set(Message.objects.values_list("idempotency_key", flat=True))
    assert keys == {f"bulk:{bulk.id}:{p.id}" for p in (practice_list["ann"], practice_list["ben"],
                                                       practice_list["teen"])}
    assert set(Message.objects.values_list("kind", "bulk_id")) == {("bulk", bulk.id)}
    assert Message.objects.get(patient=practice_list["teen"]).body.startswith("Hello, flu clinics")
    assert {s["pms_id"]: s["reason"] for s in data["skipped"]} == {
        "P3": "deceased", "P5": "opted_out", "P6": "no_address", "P7": "under_age"}
    assert data["excluded"]["deceased"] == 1 and data["excluded"]["left"] == 0

    again = confirm_bulk(actor="test", bulk=bulk)  # a second press: nothing more
    assert again["messages"] == 3 and Message.objects.count() == 3
    code, out = run("bulk", "send", "--practice", "harbour", "--channel", "sms", "--confirm",
                    "--body", BODY, "--status", "active", "deceased")
    assert code == 2 and "--again" in out and Message.objects.count() == 3
    assert AuditEvent.objects.filter(action="bulk.confirmed").count() == 1
    assert AuditEvent.objects.filter(action="bulk.skipped").count() == 4

    code, out = run("bulk", "status", "--practice", "harbour", "--bulk", str(bulk.id))
    assert code == 0 and "queued 3" in out and "P3: patient is deceased" in out


def test_bulk_delivery_is_throttled_by_the_practice_rate_limit(harbour):
    harbour.sends_per_hour = 2
    harbour.save()
    for n in range(5):
        make_patient(harbour, pms_id=f"P{n}", given_name=f"N{n}", email=f"n{n}@example.org")
    bulk = create_bulk(actor="test", practice=harbour, recipient_filter={}, channel="email",
                       subject="Flu clinic", body="Dear {first_name}, flu clinics have started.")
    status = confirm_bulk(actor="test", bulk=bulk, now=MONDAY_10AM)
    assert status["by_status"]["queued"] == 5
    report = tick(MONDAY_10AM)
    assert report["sent"] == 2 and report["held_by_rate_limit"] == 3
    assert tick(MONDAY_10AM + dt.timedelta(minutes=30))["sent"] == 0
    assert tick(MONDAY_10AM + dt.timedelta(minutes=61))["sent"] == 2
    status = bulk_status(bulk)
    assert (status["by_status"]["sent"], status["by_status"]["queued"]) == (4, 1)
    assert OutboxEntry.objects.first().body == "Dear N0, flu clinics have started."

    status = cancel_bulk(actor="staff:kim", bulk=bulk)
    assert status["status"] == "cancelled" and status["by_status"]["failed"] == 1
    assert Message.objects.get(status="failed").error == "bulk cancelled by staff:kim"
    assert tick(MONDAY_10AM + dt.timedelta(hours=3))["sent"] == 0
    with pytest.raises(ValueError, match="cancelled"):
        confirm_bulk(actor="test", bulk=BulkMessage.objects.get(id=bulk.id))


def test_a_bulk_confirmed_after_hours_waits_for_the_window(harbour, ann):
    bulk = create_bulk(actor="test", practice=harbour, recipient_filter={}, channel="sms",
                       body="Flu clinics have started.")
    saturday = dt.datetime(2026, 11, 28, 11, 0, tzinfo=SYDNEY)
    confirm_bulk(actor="test", bulk=bulk, now=saturday)
    assert Message.objects.get().not_before == MONDAY_10AM.replace(hour=9) + dt.timedelta(days=7)
    assert tick(saturday)["sent"] == 0


def test_a_throttled_bulk_stops_when_the_window_closes(harbour):
    harbour.sends_per_hour = 1
    harbour.save()
    for n in range(2):
        make_patient(harbour, pms_id=f"P{n}", given_name=f"N{n}", email=f"n{n}@example.org")
    bulk = create_bulk(actor="test", practice=harbour, recipient_filter={}, channel="email",
                       body="Flu clinics have started.")
    half_past_five = MONDAY_10AM.replace(hour=17, minute=30)
    confirm_bulk(actor="test", bulk=bulk, now=half_past_five)
    assert tick(half_past_five)["sent"] == 1
    assert tick(MONDAY_10AM.replace(hour=19))["sent"] == 0  # after 18:00: held till the morning


@pytest.mark.parametrize("text, tidy", [
    ("Hello \x00, flu clinic", "Hello, flu clinic"),
    ("Hi \x00!", "Hi!"),
    ("\x00, your flu jab", "your flu jab"),
    ("Dear \x00\nFlu clinics", "Dear\nFlu clinics"),
    ("Hello \x00 see you", "Hello see you"),
])
def test_a_left_out_name_leaves_no_gap(text, tidy):
    assert tidy_without_name(text) == tidy


# --- tenant isolation -------------------------------------------------------------------------

def test_a_patient_of_another_practice_is_never_messaged_through_this_one(harbour, practice):
    make_patient(practice, pms_id="P9", mobile_phone="+447700900009", email="p9@example.org")
    make_patient(harbour, pms_id="P1", mobile_phone="+61412345678")
    for command in (["message", "send", "--body", "Hi"], ["video", "invite"]):
        code, out = run(*command[:2], "--practice", "harbour", "--patient", "P9", "--channel",
                        "sms", *command[2:])
        assert code == 2 and "no patient with PMS id 'P9' at harbour" in out
    assert Message.objects.count() == 0
    assert preview_bulk(practice=harbour, recipient_filter={"pms_ids": ["P9"]}, channel="sms",
                        body="Hi").recipients == 0
    other = create_bulk(actor="test", practice=practice, recipient_filter={}, channel="sms",
                        body="Hi")
    code, out = run("bulk", "status", "--practice", "harbour", "--bulk", str(other.id))
    assert code == 2 and f"no bulk message {other.id}" in out
    code, data = run_json("bulk", "send", "--practice", "harbour", "--channel", "sms", "--confirm",
                          "--body", "Hi")
    assert code == 0 and set(Message.objects.values_list("patient__practice__slug", flat=True)) == {
        "harbour"}


# --- export -----------------------------------------------------------------------------------

def test_the_export_has_messages_and_staff_tasks(harbour, ann):
    send_message(actor="test", patient=ann, channel="sms", body="Please call us.", now=MONDAY_10AM)
    tick(MONDAY_10AM)
    bulk = create_bulk(actor="test", practice=harbour, recipient_filter={}, channel="email",
                       subject="Flu", body="Flu clinics have started.")
    confirm_bulk(actor="test", bulk=bulk, now=MONDAY_10AM)
    StaffTask.objects.create(practice=harbour, patient=ann, kind="call", reason="no channel left",
                             idempotency_key="test:1")
    code, out = run("export", "--practice", "harbour")
    data = json.loads(out)
    assert code == 0 and list(data)[-2:] == ["messages", "staff_tasks"]
    sms, email = data["messages"]
    assert set(sms) >= {"id", "pms_id", "group_id", "step", "channel", "to", "body", "status",
                        "created_at", "sent_at", "kind", "subject", "delivered_at", "error",
                        "bulk_id", "sequence_id"}
    assert (sms["pms_id"], sms["channel"], sms["to"], sms["status"], sms["kind"]) == (
        "P1", "sms", "+61412345678", "sent", "adhoc")
    assert sms["sent_at"] and dt.datetime.fromisoformat(sms["sent_at"]) == MONDAY_10AM
    assert (email["kind"], email["bulk_id"], email["subject"], email["status"]) == (
        "bulk", bulk.id, "Flu", "queued")
    task, = data["staff_tasks"]
    assert task == {"id": task["id"], "pms_id": "P1", "group_id": None, "kind": "call",
                    "reason": "no channel left", "status": "open",
                    "created_at": task["created_at"], "done_by": None, "done_at": None,
                    "sequence_id": None, "message_id": None}


def test_the_export_shows_where_each_sequence_is(harbour, ann, tmp_path):
    row = dict.fromkeys(RESULT_COLUMNS, "") | dict(
        result_id="R1", pms_id="P1", test_name="FBC", performed_on="2026-11-20",
        reported_on="2026-11-21", actioned_on="2026-11-22", action="Non-Urgent Appointment",
        filed_under="Investigation Report")
    code, _ = run_json("results", "sync", "--practice", "harbour", "--source",
                       write_list(tmp_path / "r.csv", [row], RESULT_COLUMNS))
    assert code == 0
    group, = json.loads(run("export", "--practice", "harbour")[1])["result_groups"]
    assert (group["sequence_state"], group["sequence_next_step"], group["sequence_due_at"]) == (
        "to_action_paused", 1, None)
    sequence = Sequence.objects.get()
    change_sequence(actor="test", sequence=sequence, event=Event.START, now=MONDAY_10AM)
    group, = json.loads(run("export", "--practice", "harbour")[1])["result_groups"]
    assert group["sequence_state"] == "active" and group["sequence_next_step"] == 1
    assert dt.datetime.fromisoformat(group["sequence_due_at"]) == MONDAY_10AM
    change_sequence(actor="test", sequence=sequence, event=Event.CANCEL, now=MONDAY_10AM)
    group, = json.loads(run("export", "--practice", "harbour")[1])["result_groups"]
    assert (group["sequence_state"], group["sequence_next_step"], group["sequence_due_at"]) == (
        "cancelled", None, None)
