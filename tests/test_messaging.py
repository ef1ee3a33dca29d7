"""Ad-hoc messages, video invites and bulk messages: they reach the outbox through the
dispatcher in the send window; patients who may not get them are refused with the reason on
the record; a bulk is previewed, confirmed once, throttled, and never crosses practices. Bulk
runs on the safety rails of DESIGN.md section 2: saved and scanned templates only, a second
approver for big ones, a first batch before the rest, halt, correction, and no bulk delivery
while the last full patient sync is stale."""

import datetime as dt
import json

import pytest
from django.db.models import Min

from practicesync.audit.models import AuditEvent
from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from practicesync.outreach import dispatch
from practicesync.outreach.actions import change_sequence
from practicesync.outreach.messaging import (
    NeedsApproval,
    Refused,
    bulk_status,
    confirm_bulk,
    create_bulk,
    halt_bulk,
    invite_to_video,
    needs_approval,
    preview_bulk,
    release_refusal,
    save_template,
    send_message,
    tidy_without_name,
)
from practicesync.outreach.models import (
    BulkMessage,
    Message,
    MessageTemplate,
    OptOut,
    OutboxEntry,
    Sequence,
    StaffTask,
)
from practicesync.outreach.sequences import Event
from practicesync.patients.models import Patient, SyncRun
from practicesync.practices.actions import add_staff
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

def record_sync(practice, finished_at, *, status=SyncRun.Status.COMPLETED, kind="patients"):
    """A full patient sync that finished at `finished_at`: bulk delivery is held without one."""
    return SyncRun.objects.create(practice=practice, kind=kind, source="synthetic.csv",
                                  status=status, triggered_by="test",
                                  started_at=finished_at - dt.timedelta(minutes=5),
                                  finished_at=finished_at)


@pytest.fixture
def synced(harbour):
    return record_sync(harbour, MONDAY_10AM - dt.timedelta(hours=1))


def bulk_template(practice, body, *, channel="sms", name="flu", subject=""):
    return save_template(actor="test", practice=practice, name=name, channel=channel, body=body,
                         subject=subject)


@pytest.fixture
def practice_list(harbour, ann, synced):
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
    bulk_template(harbour, BODY)
    return people


BODY = "Hello {first_name}, flu clinics have started at {practice_name}: {booking_link}"


def test_bulk_preview_counts_who_gets_it_and_who_not(harbour, practice_list):
    code, data = run_json("bulk", "preview", "--practice", "harbour", "--template", "flu",
                          "--status", "active", "deceased", "left")
    assert code == 0
    assert data["recipients"] == 3 and data["generic"] == 1  # Ann, Ben; Tia without her name
    assert data["excluded"] == {"deceased": 1, "left": 1, "opted_out": 1, "no_address": 1,
                                "under_age": 1, "sent_today": 0}
    assert data["sample"] == ("Hello Ann, flu clinics have started at harbour: "
                              "https://book.example.org/harbour\nReply STOP to opt out")
    assert data["sample_generic"].startswith("Hello, flu clinics") and "Tia" not in data["sample_generic"]
    assert data["sms"] == {"encoding": "GSM-7", "characters": len(data["sample"]), "segments": 1,
                           "total_segments": 3}
    assert (data["template"], data["channel"], data["approval_needed"], data["first_batch"]) == (
        "flu", "sms", False, 3)
    # By default only active patients are selected; deceased and left are never recipients.
    _, default = run_json("bulk", "preview", "--practice", "harbour", "--template", "flu")
    assert default["recipients"] == 3 and default["excluded"]["deceased"] == 0
    assert Message.objects.count() == 0 and BulkMessage.objects.count() == 0  # reads only
    code, out = run("bulk", "preview", "--practice", "harbour", "--template", "flu")
    assert code == 0 and "3 patients would get this sms" in out and "opted out 1" in out
    code, out = run("bulk", "preview", "--practice", "harbour", "--template", "flu", "--channel",
                    "email")
    assert code == 2 and "template 'flu' is for sms" in out
    code, out = run("bulk", "preview", "--practice", "harbour", "--template", "nope")
    assert code == 2 and "no message template 'nope' at harbour" in out


def test_bulk_filters(harbour, practice_list):
    hi = bulk_template(harbour, "Hi", channel="email", name="hi")

    def recipients(**flt):
        return preview_bulk(practice=harbour, recipient_filter=flt, template=hi).recipients

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
    code, data = run_json("bulk", "preview", "--practice", "harbour", "--template", "hi",
                          "--digital", "no", "--age-min", "30", "--has-email")
    assert code == 0 and data["recipients"] == 2


def test_bulk_send_needs_confirm_and_a_saved_template(harbour, practice_list):
    code, out = run("bulk", "send", "--practice", "harbour", "--template", "flu")
    assert code == 2 and "--confirm" in out and "3 patients would get this sms" in out
    code, data = run_json("bulk", "send", "--practice", "harbour", "--template", "flu")
    assert code == 2 and "--confirm" in data["error"] and data["recipients"] == 3
    assert BulkMessage.objects.count() == 0 and Message.objects.count() == 0
    # Free text is for one patient (message send); a bulk takes a saved template only.
    code, out = run("bulk", "send", "--practice", "harbour", "--confirm", "--body", "Hello")
    assert code != 0 and "required: --template" in out
    code, out = run("bulk", "send", "--practice", "harbour", "--template", "flu", "--confirm",
                    "--body", "Hello")
    assert code != 0 and "unrecognized arguments: --body" in out
    code, out = run("bulk", "template", "save", "--practice", "harbour", "--name", "hba1c",
                    "--channel", "sms", "--body", "Your HbA1c is back")
    assert code == 2 and "hba1c" in out and not MessageTemplate.objects.filter(name="hba1c").exists()
    code, out = run("bulk", "send", "--practice", "harbour", "--template", "hba1c", "--confirm")
    assert code == 2 and "no message template 'hba1c'" in out and Message.objects.count() == 0


def test_bulk_send_queues_one_message_per_recipient_once(harbour, practice_list):
    code, data = run_json("bulk", "send", "--practice", "harbour", "--template", "flu", "--confirm",
                          "--status", "active", "deceased")
    assert code == 0 and data["status"] == "confirmed" and data["by_status"]["queued"] == 3
    assert (data["phase"], data["template"], data["waiting"]) == ("first_batch", "flu", 0)
    bulk = BulkMessage.objects.get(id=data["bulk_id"])
    assert bulk.template.name == "flu" and bulk.body == BODY
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
    code, out = run("bulk", "send", "--practice", "harbour", "--template", "flu", "--confirm",
                    "--status", "active", "deceased")
    assert code == 2 and "--again" in out and Message.objects.count() == 3
    assert AuditEvent.objects.filter(action="bulk.confirmed").count() == 1
    assert AuditEvent.objects.filter(action="bulk.skipped").count() == 4

    code, out = run("bulk", "status", "--practice", "harbour", "--bulk", str(bulk.id))
    assert code == 0 and "queued 3" in out and "P3: patient is deceased" in out
    assert "first_batch" in out


def test_bulk_delivery_is_throttled_by_the_practice_rate_limit(harbour, synced):
    harbour.sends_per_hour = 2
    harbour.save()
    for n in range(5):
        make_patient(harbour, pms_id=f"P{n}", given_name=f"N{n}", email=f"n{n}@example.org")
    template = bulk_template(harbour, "Dear {first_name}, flu clinics have started.",
                             channel="email", subject="Flu clinic")
    bulk = create_bulk(actor="test", practice=harbour, recipient_filter={}, template=template)
    status = confirm_bulk(actor="test", bulk=bulk, now=MONDAY_10AM)
    assert status["by_status"]["queued"] == 5
    report = tick(MONDAY_10AM)
    assert report["sent"] == 2 and report["held_by_rate_limit"] == 3
    assert tick(MONDAY_10AM + dt.timedelta(minutes=30))["sent"] == 0
    assert tick(MONDAY_10AM + dt.timedelta(minutes=61))["sent"] == 2
    status = bulk_status(bulk)
    assert (status["by_status"]["sent"], status["by_status"]["queued"]) == (4, 1)
    assert OutboxEntry.objects.first().body == "Dear N0, flu clinics have started."

    status = halt_bulk(actor="staff:kim", bulk=bulk)
    assert (status["status"], status["phase"]) == ("cancelled", "halted")
    assert status["by_status"]["skipped"] == 1
    assert Message.objects.get(status="skipped").error == "halted by staff:kim"
    assert tick(MONDAY_10AM + dt.timedelta(hours=3))["sent"] == 0
    with pytest.raises(ValueError, match="halted"):
        confirm_bulk(actor="test", bulk=BulkMessage.objects.get(id=bulk.id))


def test_a_bulk_confirmed_after_hours_waits_for_the_window(harbour, ann):
    bulk = create_bulk(actor="test", practice=harbour, recipient_filter={},
                       template=bulk_template(harbour, "Flu clinics have started."))
    saturday = dt.datetime(2026, 11, 28, 11, 0, tzinfo=SYDNEY)
    confirm_bulk(actor="test", bulk=bulk, now=saturday)
    assert Message.objects.get().not_before == MONDAY_10AM.replace(hour=9) + dt.timedelta(days=7)
    assert tick(saturday)["sent"] == 0


def test_a_throttled_bulk_stops_when_the_window_closes(harbour, synced):
    harbour.sends_per_hour = 1
    harbour.save()
    for n in range(2):
        make_patient(harbour, pms_id=f"P{n}", given_name=f"N{n}", email=f"n{n}@example.org")
    bulk = create_bulk(actor="test", practice=harbour, recipient_filter={},
                       template=bulk_template(harbour, "Flu clinics have started.", channel="email"))
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


# --- bulk-send safety rails (DESIGN.md section 2) ---------------------------------------------

def results_message(harbour, tmp_path):
    """A results follow-up for Ann (P1), started: its first step is due at MONDAY_10AM."""
    row = dict.fromkeys(RESULT_COLUMNS, "") | dict(
        result_id="R1", pms_id="P1", test_name="FBC", performed_on="2026-11-20",
        reported_on="2026-11-21", actioned_on="2026-11-22", action="Non-Urgent Appointment",
        filed_under="Investigation Report")
    code, _ = run_json("results", "sync", "--practice", "harbour", "--source",
                       write_list(tmp_path / "r.csv", [row], RESULT_COLUMNS))
    assert code == 0
    change_sequence(actor="test", sequence=Sequence.objects.get(), event=Event.START,
                    now=MONDAY_10AM)


STALE_SYNC = {
    # name: the patient syncs on record (hours before the tick, status, kind); bulk held?
    "no sync ever": ([], True),
    "40 hours old": ([(40, "completed", "patients")], True),
    "37 hours old": ([(37, "completed", "patients")], True),
    "35 hours old": ([(35, "completed", "patients")], False),
    "recent, with row errors": ([(1, "completed_with_errors", "patients")], False),
    "recent but failed": ([(40, "completed", "patients"), (1, "failed", "patients")], True),
    "recent but refused as truncated": ([(1, "refused_truncated", "patients")], True),
    "still running": ([(1, "running", "patients")], True),
    "a results sync is not a patient sync": ([(1, "completed", "results")], True),
    "fresh": ([(1, "completed", "patients")], False),
}


@pytest.mark.parametrize("case", STALE_SYNC)
def test_bulk_is_held_unless_a_recent_full_patient_sync_succeeded(harbour, ann, tmp_path, case):
    runs, held = STALE_SYNC[case]
    for hours, status, kind in runs:
        record_sync(harbour, MONDAY_10AM - dt.timedelta(hours=hours), status=status, kind=kind)
    bulk = create_bulk(actor="test", practice=harbour, recipient_filter={},
                       template=bulk_template(harbour, "Flu clinics have started.", channel="email"))
    confirm_bulk(actor="test", bulk=bulk, now=MONDAY_10AM)
    send_message(actor="test", patient=ann, channel="email", body="Your form is ready.",
                 now=MONDAY_10AM)
    results_message(harbour, tmp_path)
    report = tick(MONDAY_10AM)
    kinds = set(Message.objects.filter(status="sent").values_list("kind", flat=True))
    # Ad-hoc and results messages never wait for a sync: only bulk fails closed.
    assert {"adhoc", "results"} <= kinds
    assert ("bulk" in kinds) is not held
    assert report["held_by_stale_sync"] == (1 if held else 0)
    assert bulk_status(bulk, now=MONDAY_10AM)["held_by_stale_sync"] is held


def test_a_held_bulk_goes_once_a_sync_succeeds(harbour, ann):
    record_sync(harbour, MONDAY_10AM - dt.timedelta(hours=40))
    template = bulk_template(harbour, "Flu clinics have started.", channel="email")
    _, data = run_json("bulk", "preview", "--practice", "harbour", "--template", "flu")
    assert data["held_by_stale_sync"] is True
    bulk = create_bulk(actor="test", practice=harbour, recipient_filter={}, template=template)
    confirm_bulk(actor="test", bulk=bulk, now=MONDAY_10AM)
    assert tick(MONDAY_10AM)["held_by_stale_sync"] == 1
    assert tick(MONDAY_10AM + dt.timedelta(hours=1))["sent"] == 0
    assert Message.objects.get().status == "queued"
    record_sync(harbour, MONDAY_10AM + dt.timedelta(hours=1))
    report = tick(MONDAY_10AM + dt.timedelta(hours=2))
    assert report["sent"] == 1 and report["held_by_stale_sync"] == 0
    assert outbox() == [("email", "ann@example.org", "Flu clinics have started.")]


# Saved templates only, scanned: clinical details (the SMS rules, for email too), identifiers,
# dates and contact details are refused with the reason; the reason never repeats them.
TEMPLATE_REFUSALS = {
    "result in sms": ("sms", "Your cholesterol is 7.1 mmol/L", "", "cholesterol"),
    "a clinical note about a named patient": (
        "email", "Dear patient, the attached note: Mrs Smith has severe depression", "",
        "a person's name"),
    "results are back": ("email", "Your pathology results are back", "", "pathology"),
    "test name in email": ("email", "Your HbA1c is back", "", "bulk text may not give result "
                                                                "details: hba1c"),
    "value in email": ("email", "Your level was 5.2 mmol/L", "", "result values: 5.2 mmol"),
    "outcome in email subject": ("email", "Please call us.", "Abnormal smear", "abnormal"),
    "nhs number, spaced": ("email", "Re patient 999 000 0018", "", "an NHS number"),
    "nhs number, plain": ("sms", "Ref 9990000018", "", "an NHS number"),
    "ihi": ("email", "IHI 8003 6081 6669 0503", "", "an IHI (16 digits)"),
    "medicare number": ("email", "Medicare 2953 16125 1", "", "a Medicare number"),
    "date of birth": ("email", "Born 01/07/1980, please call", "", "a date of birth"),
    "date in words": ("email", "Your visit on 1 July 2026", "", "a date of birth"),
    "iso date": ("sms", "Seen 2026-07-01", "", "a date of birth"),
    "dob": ("email", "Please confirm your DOB", "", "a date of birth"),
    "email address": ("email", "Write to ann.lee@example.org", "", "an email address"),
    "email in the subject": ("email", "Hello", "From dr.x@example.org", "an email address"),
    "mobile": ("sms", "Text Ann on 0412 345 678", "", "a phone number"),
    "international": ("sms", "Call +61 412 345 678", "", "a phone number"),
    "landline": ("email", "Call (02) 9876 5432", "", "a phone number"),
    "long number": ("email", "Quote 1300 123 456", "", "a long number"),
    "unknown placeholder": ("sms", "Hello {name}", "", "unknown placeholder {name}"),
    "empty": ("sms", "  ", "", "the text is empty"),
}


@pytest.mark.parametrize("case", TEMPLATE_REFUSALS)
def test_a_bulk_template_with_clinical_details_or_identifiers_is_refused(harbour, case):
    channel, body, subject, reason = TEMPLATE_REFUSALS[case]
    args = ("--subject", subject) if subject else ()
    code, data = run_json("bulk", "template", "save", "--practice", "harbour", "--name", "t",
                          "--channel", channel, "--body", body, *args)
    assert code == 2 and reason in data["error"], data
    assert not MessageTemplate.objects.exists()
    refused, = AuditEvent.objects.filter(action="message_template.refused")
    assert any(reason in p for p in refused.detail["problems"])
    for number in ("0018", "0503", "16125", "1980", "345 678", "5432", "ann.lee"):
        assert number not in " ".join(refused.detail["problems"])


@pytest.mark.parametrize("body", [
    "Hello {first_name}, flu clinics have started at {practice_name}: {booking_link}",
    "Flu clinics on Saturday 7 March, 9:00-12:30. Book: {booking_link}",
    "We are open 8am to 6pm on weekdays; over 65s can book now.",
    "Dear {first_name}, please call the practice.",
])
def test_an_ordinary_bulk_template_is_saved(harbour, body):
    for channel in ("sms", "email"):
        code, out = run("bulk", "template", "save", "--practice", "harbour", "--name", channel,
                        "--channel", channel, "--body", body)
        assert code == 0 and "saved" in out


def test_templates_are_saved_replaced_and_listed(harbour):
    kim = bulk_template(harbour, "Flu clinics have started.", channel="email", subject="Flu")
    again = save_template(actor="test2", practice=harbour, name="flu", channel="email",
                          body="Flu clinics start Monday.", subject="Flu clinic")
    assert again.id == kim.id and MessageTemplate.objects.get().body == "Flu clinics start Monday."
    assert again.created_by == "test"
    assert list(AuditEvent.objects.filter(action="message_template.saved").order_by("id")
                .values_list("why", "actor")) == [("created", "test"), ("replaced", "test2")]
    code, rows = run_json("bulk", "template", "list", "--practice", "harbour")
    assert code == 0 and [(r["name"], r["channel"], r["subject"]) for r in rows] == [
        ("flu", "email", "Flu clinic")]
    # A bulk keeps the text it was created with, whatever happens to the template later.
    bulk = create_bulk(actor="test", practice=harbour, recipient_filter={}, template=again)
    bulk_template(harbour, "Flu clinics are over.", channel="email")
    assert BulkMessage.objects.get(id=bulk.id).body == "Flu clinics start Monday."
    code, out = run("bulk", "template", "save", "--practice", "harbour", "--name", "x",
                    "--channel", "sms", "--body", "Hi", "--as", "nobody@example.org")
    assert code == 2 and "not a staff member of harbour" in out


@pytest.mark.parametrize("recipients, over, corrects_approved, needed", [
    (50, 50, False, False),
    (51, 50, False, True),
    (0, 0, False, False),
    (1, 0, False, True),
    (8000, 50, True, False),  # a correction of an approved bulk
    (8000, 50, False, True),
])
def test_when_a_second_approval_is_needed(recipients, over, corrects_approved, needed):
    assert needs_approval(recipients=recipients, over=over,
                          corrects_approved=corrects_approved) is needed


@pytest.mark.parametrize("phase, pending, refused", [
    ("draft", 0, "first batch has not been sent"),
    ("approved", 0, "first batch has not been sent"),
    ("first_batch", 2, "2 message(s) of its first batch have not gone yet"),
    ("first_batch", 0, None),
    ("halted", 0, "halted"),
])
def test_when_the_rest_of_a_bulk_may_be_released(phase, pending, refused):
    why = release_refusal(phase=phase, first_batch_pending=pending)
    assert why == refused if refused is None else refused in why


@pytest.fixture
def big_list(harbour, synced, settings):
    """Seven patients with an email; more than 3 need approval and the first batch is 2."""
    settings.PRACTICESYNC_BULK_APPROVAL_OVER = 3
    settings.PRACTICESYNC_BULK_FIRST_BATCH = 2
    add_staff(actor="test", practice=harbour, email="Kim@example.org", role="reception")
    add_staff(actor="test", practice=harbour, email="lou@example.org", role="admin")
    patients = [make_patient(harbour, pms_id=f"P{n}", given_name=f"N{n}", email=f"n{n}@example.org")
                for n in range(7)]
    bulk_template(harbour, "Dear {first_name}, flu clinics have started.", channel="email")
    bulk_template(harbour, "Please ignore our last email about flu clinics.", channel="email",
                  name="sorry")
    bulk_template(harbour, "Please ignore our last message.", name="sorry-sms")
    return patients


def tick_when_due(practice):
    """Tick when the queued messages are due, after that night's full patient sync: the CLI
    queues at the real time, and the window may open days later."""
    due = Message.objects.filter(status="queued").aggregate(at=Min("not_before"))["at"]
    record_sync(practice, due)
    return tick(due)


def bulk_cli(*args, who=None):
    return run_json("bulk", *args, "--practice", "harbour", *(("--as", who) if who else ()))


def test_a_big_bulk_needs_a_second_staff_member(harbour, big_list):
    code, data = bulk_cli("send", "--template", "flu", "--confirm", who="kim@example.org")
    assert code == 0 and (data["phase"], data["status"], data["messages"]) == ("draft", "draft", 0)
    assert (data["recipients"], data["approval_needed"], data["created_by"]) == (
        7, True, "kim@example.org")
    bulk = BulkMessage.objects.get(id=data["bulk_id"])
    with pytest.raises(NeedsApproval):
        confirm_bulk(actor="kim@example.org", bulk=bulk)
    # The creator may not approve their own bulk, nor can someone who is not staff here.
    code, data = bulk_cli("approve", "--bulk", str(bulk.id), who="KIM@example.org")
    assert code == 2 and "another staff member must approve it" in data["error"]
    refused, = AuditEvent.objects.filter(action="bulk.approval_refused")
    assert (refused.actor, refused.detail["bulk_id"]) == ("kim@example.org", bulk.id)
    code, out = run("bulk", "approve", "--practice", "harbour", "--bulk", str(bulk.id),
                    "--as", "stranger@example.org")
    assert code == 2 and "not a staff member" in out
    assert Message.objects.count() == 0
    # A second press while it waits is caught like a repeat of a sent one.
    code, out = run("bulk", "send", "--practice", "harbour", "--template", "flu", "--confirm")
    assert code == 2 and f"bulk {bulk.id}" in out and "waiting for approval" in out

    code, data = bulk_cli("approve", "--bulk", str(bulk.id), who="lou@example.org")
    assert code == 0 and data["phase"] == "first_batch" and data["approved_by"] == "lou@example.org"
    assert (data["by_status"]["queued"], data["waiting"]) == (2, 5)
    approved, = AuditEvent.objects.filter(action="bulk.approved")
    assert (approved.actor, approved.detail["created_by"]) == ("lou@example.org", "kim@example.org")
    code, data = bulk_cli("approve", "--bulk", str(bulk.id), who="lou@example.org")
    assert code == 0 and data["messages"] == 2  # approving twice sends nothing more


def test_a_small_bulk_needs_no_approval_and_approving_it_is_refused(harbour, big_list):
    code, data = bulk_cli("send", "--template", "flu", "--confirm", "--pms-id", "P1", "--pms-id",
                          "P2", "--pms-id", "P3")
    assert code == 0 and data["phase"] == "first_batch" and data["approval_needed"] is False
    code, data = bulk_cli("approve", "--bulk", str(data["bulk_id"]), who="lou@example.org")
    assert code == 2 and "needs no second approval" in data["error"]


def test_only_the_first_batch_goes_until_staff_release_the_rest(harbour, big_list):
    _, data = bulk_cli("send", "--template", "flu", "--confirm", who="kim@example.org")
    bulk_id = str(data["bulk_id"])
    code, data = bulk_cli("release", "--bulk", bulk_id)
    assert code == 2 and "its first batch has not been sent yet" in data["error"]
    _, data = bulk_cli("approve", "--bulk", bulk_id, who="lou@example.org")
    bulk = BulkMessage.objects.get(id=bulk_id)
    assert bulk.first_batch == [big_list[0].id, big_list[1].id] and len(bulk.waiting) == 5
    # Not before staff have seen how the first batch went.
    code, data = bulk_cli("release", "--bulk", bulk_id)
    assert code == 2 and "2 message(s) of its first batch have not gone yet" in data["error"]
    report = tick_when_due(harbour)
    assert report["sent"] == 2 and report["held_by_rate_limit"] == 0
    code, out = run("bulk", "status", "--practice", "harbour", "--bulk", bulk_id)
    assert "first batch: sent 2; 5 wait for bulk release" in out
    # A patient who died since the confirm is decided again at the release.
    Patient.objects.filter(id=big_list[6].id).update(status="deceased")
    code, data = bulk_cli("release", "--bulk", bulk_id, who="kim@example.org")
    assert code == 0 and (data["phase"], data["released_by"], data["waiting"]) == (
        "released", "kim@example.org", 0)
    assert (data["by_status"]["sent"], data["by_status"]["queued"]) == (2, 4)
    assert data["excluded"]["deceased"] == 1
    released, = AuditEvent.objects.filter(action="bulk.released")
    assert released.detail["queued"] == 4 and released.detail["excluded"]["deceased"] == 1
    code, data = bulk_cli("release", "--bulk", bulk_id)  # again: nothing more
    assert code == 0 and data["messages"] == 6
    assert sorted(Message.objects.values_list("idempotency_key", flat=True)) == sorted(
        f"bulk:{bulk_id}:{p.id}" for p in big_list[:6])
    assert tick_when_due(harbour)["sent"] == 4


def test_halt_stops_a_bulk_at_once(harbour, big_list):
    _, data = bulk_cli("send", "--template", "flu", "--confirm", who="kim@example.org")
    bulk_id = str(data["bulk_id"])
    bulk_cli("approve", "--bulk", bulk_id, who="lou@example.org")
    code, data = bulk_cli("halt", "--bulk", bulk_id, who="lou@example.org")
    assert code == 0 and (data["phase"], data["halted_by"]) == ("halted", "lou@example.org")
    assert (data["by_status"]["skipped"], data["by_status"]["queued"], data["waiting"]) == (2, 0, 0)
    assert set(Message.objects.values_list("error", flat=True)) == {"halted by lou@example.org"}
    halted, = AuditEvent.objects.filter(action="bulk.halted")
    assert (halted.detail["stopped"], halted.detail["not_released"]) == (2, 5)
    code, data = bulk_cli("release", "--bulk", bulk_id)
    assert code == 2 and "halted" in data["error"]
    code, data = bulk_cli("halt", "--bulk", bulk_id)  # again: still halted, nothing new
    assert code == 0 and AuditEvent.objects.filter(action="bulk.halted").count() == 1
    # A draft that is halted can no longer be approved.
    _, data = bulk_cli("send", "--template", "flu", "--confirm", "--again", who="kim@example.org")
    bulk_cli("halt", "--bulk", str(data["bulk_id"]))
    code, data = bulk_cli("approve", "--bulk", str(data["bulk_id"]), who="lou@example.org")
    assert code == 2 and "halted" in data["error"] and Message.objects.count() == 2


@pytest.fixture
def sent_bulk(harbour, big_list):
    """The flu bulk approved, its first batch sent, the rest released and sent but for one
    that failed and one delivered: (bulk id, patients)."""
    _, data = bulk_cli("send", "--template", "flu", "--confirm", who="kim@example.org")
    bulk_id = str(data["bulk_id"])
    bulk_cli("approve", "--bulk", bulk_id, who="lou@example.org")
    tick_when_due(harbour)
    bulk_cli("release", "--bulk", bulk_id)
    tick_when_due(harbour)
    Message.objects.filter(patient=big_list[2]).update(status="failed")
    Message.objects.filter(patient=big_list[3]).update(status="delivered")
    Message.objects.filter(patient=big_list[4]).update(status="read")
    return bulk_id, big_list


@pytest.mark.parametrize("batch, who_gets_it", [
    ("first", [0, 1]),
    ("all", [0, 1, 3, 4, 5, 6]),  # everyone it reached: not the one whose message failed
])
def test_a_correction_goes_to_exactly_the_patients_the_bulk_reached(harbour, sent_bulk, batch,
                                                                    who_gets_it):
    bulk_id, patients = sent_bulk
    sent_before = Message.objects.count()
    code, data = bulk_cli("correct", "--bulk", bulk_id, "--template", "sorry", "--batch", batch)
    # The original was approved: the correction needs no second approval, but still goes out
    # a first batch at a time.
    assert code == 0 and data["corrects"] == int(bulk_id) and data["approval_needed"] is False
    assert data["phase"] == "first_batch" and data["template"] == "sorry"
    correction = BulkMessage.objects.get(id=data["bulk_id"])
    assert correction.corrects_id == int(bulk_id) and correction.recipient_ids == sorted(
        patients[i].id for i in who_gets_it)
    assert data["by_status"]["queued"] == 2 and data["waiting"] == len(who_gets_it) - 2
    assert BulkMessage.objects.get(id=bulk_id).corrections.get() == correction
    audit, = AuditEvent.objects.filter(action="bulk.correction")
    assert audit.detail == {"bulk_id": correction.id, "corrects": int(bulk_id), "batch": batch,
                            "patients": len(who_gets_it), "template": "sorry",
                            "approval_needed": False}
    tick_when_due(harbour)
    if data["waiting"]:
        bulk_cli("release", "--bulk", str(correction.id))
        tick_when_due(harbour)
    got = Message.objects.filter(bulk=correction, status="sent")
    assert sorted(got.values_list("patient_id", flat=True)) == sorted(
        patients[i].id for i in who_gets_it)
    assert Message.objects.count() == sent_before + len(who_gets_it)
    assert {body for _, _, body in outbox()} >= {"Please ignore our last email about flu clinics."}
    # A correction of the correction: still no second approval, the chain started approved.
    code, data = bulk_cli("correct", "--bulk", str(correction.id), "--template", "sorry")
    assert code == 0 and data["approval_needed"] is False and data["corrects"] == correction.id
    assert data["recipients"] == len(who_gets_it)


def test_a_correction_is_refused_when_it_cannot_land_next_to_the_bulk(harbour, big_list, sent_bulk):
    bulk_id, _ = sent_bulk
    code, data = bulk_cli("correct", "--bulk", bulk_id, "--template", "sorry-sms")
    assert code == 2 and "went by email; template 'sorry-sms' is for sms" in data["error"]
    _, data = bulk_cli("send", "--template", "flu", "--confirm", "--again", "--pms-id", "P1")
    code, out = run("bulk", "correct", "--practice", "harbour", "--bulk", str(data["bulk_id"]),
                    "--template", "sorry")
    assert code == 2 and "nothing to correct" in out
    assert not BulkMessage.objects.filter(corrects__isnull=False).exists()
    assert not AuditEvent.objects.filter(action="bulk.correction").exists()


def test_a_correction_of_a_bulk_sent_without_approval_needs_one_when_it_is_big(harbour, big_list,
                                                                               settings):
    # Sent without approval while the limit was higher; corrected after it was lowered.
    template = MessageTemplate.objects.get(name="flu")
    settings.PRACTICESYNC_BULK_APPROVAL_OVER = 50
    bulk = create_bulk(actor="kim@example.org", practice=harbour, recipient_filter={},
                       template=template)
    confirm_bulk(actor="kim@example.org", bulk=bulk, now=MONDAY_10AM)
    tick(MONDAY_10AM)
    settings.PRACTICESYNC_BULK_APPROVAL_OVER = 1
    code, data = bulk_cli("correct", "--bulk", str(bulk.id), "--template", "sorry",
                          who="kim@example.org")
    assert code == 0 and (data["phase"], data["approval_needed"], data["messages"]) == (
        "draft", True, 0)
    code, data = bulk_cli("approve", "--bulk", str(data["bulk_id"]), who="lou@example.org")
    assert code == 0 and data["phase"] == "first_batch" and data["by_status"]["queued"] == 2


# --- tenant isolation -------------------------------------------------------------------------

def test_a_patient_of_another_practice_is_never_messaged_through_this_one(harbour, practice):
    make_patient(practice, pms_id="P9", mobile_phone="+447700900009", email="p9@example.org")
    make_patient(harbour, pms_id="P1", mobile_phone="+61412345678")
    for command in (["message", "send", "--body", "Hi"], ["video", "invite"]):
        code, out = run(*command[:2], "--practice", "harbour", "--patient", "P9", "--channel",
                        "sms", *command[2:])
        assert code == 2 and "no patient with PMS id 'P9' at harbour" in out
    assert Message.objects.count() == 0
    hi = bulk_template(harbour, "Hi")
    assert preview_bulk(practice=harbour, recipient_filter={"pms_ids": ["P9"]},
                        template=hi).recipients == 0
    theirs = bulk_template(practice, "Hi")
    with pytest.raises(ValueError, match="no message template 'flu' at harbour"):
        create_bulk(actor="test", practice=harbour, recipient_filter={}, template=theirs)
    other = create_bulk(actor="test", practice=practice, recipient_filter={}, template=theirs)
    confirm_bulk(actor="test", bulk=other)
    for step in ("status", "approve", "release", "halt"):
        code, out = run("bulk", step, "--practice", "harbour", "--bulk", str(other.id))
        assert code == 2 and f"no bulk message {other.id} at harbour" in out
    assert BulkMessage.objects.get(id=other.id).phase == "first_batch"
    add_staff(actor="test", practice=practice, email="rita@example.org", role="admin")
    code, out = run("bulk", "template", "list", "--practice", "harbour", "--json")
    assert [t["body"] for t in json.loads(out)] == ["Hi"]
    code, out = run("bulk", "send", "--practice", "harbour", "--template", "flu", "--confirm",
                    "--as", "rita@example.org")
    assert code == 2 and "rita@example.org is not a staff member of harbour" in out
    code, data = run_json("bulk", "send", "--practice", "harbour", "--template", "flu", "--confirm")
    assert code == 0 and set(Message.objects.filter(bulk_id=data["bulk_id"]).values_list(
        "patient__practice__slug", flat=True)) == {"harbour"}


# --- export -----------------------------------------------------------------------------------

def test_the_export_has_messages_and_staff_tasks(harbour, ann):
    send_message(actor="test", patient=ann, channel="sms", body="Please call us.", now=MONDAY_10AM)
    tick(MONDAY_10AM)
    bulk = create_bulk(actor="test", practice=harbour, recipient_filter={}, template=bulk_template(
        harbour, "Flu clinics have started.", channel="email", subject="Flu"))
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


def test_two_bulks_with_the_same_text_reach_a_patient_once(harbour, practice_list):
    """Overlapping filters (Ann is in both) or a rerun: nobody gets the same text twice in a
    day; the second bulk counts her as sent_today (hazard H-023 (g))."""
    code, first = bulk_cli("send", "--template", "flu", "--pms-id", "P1", "--pms-id", "P2",
                           "--confirm")
    assert code == 0 and first["recipients"] == 2
    _, preview = run_json("bulk", "preview", "--practice", "harbour", "--template", "flu",
                          "--pms-id", "P1", "--pms-id", "P8")
    assert preview["recipients"] == 1 and preview["excluded"]["sent_today"] == 1
    code, second = bulk_cli("send", "--template", "flu", "--pms-id", "P1", "--pms-id", "P8",
                            "--confirm", "--again")
    assert code == 0 and second["recipients"] == 1
    tick_when_due(harbour)
    ann = practice_list["ann"]
    assert Message.objects.filter(patient=ann, kind="bulk").count() == 1
    skipped = AuditEvent.objects.get(action="bulk.skipped", patient=ann)
    assert skipped.why == "had the same text in the last day"
    assert skipped.detail["reason"] == "sent_today"
