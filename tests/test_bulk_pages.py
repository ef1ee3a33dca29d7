"""The Bulk pages through Django's test client, on the rails of DESIGN.md section 2: admins
only, a saved and scanned template, a preview whose count is the filter's, a confirm with
the count typed in, a second and different admin over the threshold, the first batch, then
Release or Halt, each recipient's outcome after the dispatcher's tick, and no way in for
another practice's member."""

import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from practicesync.audit.models import AuditEvent
from practicesync.outreach.messaging import preview_bulk, save_template
from practicesync.outreach.models import BulkMessage, Message, MessageTemplate, OptOut
from practicesync.practices.actions import add_staff
from tests.factories import ACTOR, log_in, make_patient, make_practice
from tests.test_messaging import born, record_sync, tick_when_due
from tests.test_outreach_pages import row_of, text

ADMIN = "admin@harbour.example"
SECOND = "second@harbour.example"
RECEPTION = "reception@harbour.example"
BODY = "Hello {first_name}, flu clinics have started at {practice_name}: {booking_link}"


@pytest.fixture
def harbour(au_practice):
    au_practice.booking_url = "https://book.example.org/harbour"
    au_practice.save()
    record_sync(au_practice, timezone.now())  # a fresh patient sync: bulk is not held
    return au_practice


@pytest.fixture
def people(harbour):
    """Two who get an SMS, and one patient for each reason not to."""
    OptOut.objects.create(practice=harbour, channel="sms", address="+61412000005", source="STOP")
    return {
        "ann": make_patient(harbour, pms_id="P1", given_name="Ann", mobile_phone="+61412000001"),
        "ben": make_patient(harbour, pms_id="P2", given_name="Ben", family_name="Black",
                            mobile_phone="+61412000002", digital=True),
        "dead": make_patient(harbour, pms_id="P3", status="deceased", mobile_phone="+61412000003"),
        "gone": make_patient(harbour, pms_id="P4", status="left", mobile_phone="+61412000004"),
        "stop": make_patient(harbour, pms_id="P5", mobile_phone="+61412000005"),
        "none": make_patient(harbour, pms_id="P6", email="none@example.org"),
        "kid": make_patient(harbour, pms_id="P7", date_of_birth=born(6), mobile_phone="+61412000007"),
    }


@pytest.fixture
def flu(harbour):
    return save_template(actor=ACTOR, practice=harbour, name="flu", channel="sms", body=BODY)


def client_as(practice, email, role):
    return log_in(Client(), add_staff(actor=ACTOR, practice=practice, email=email, role=role).user)


@pytest.fixture
def admin(harbour):
    return client_as(harbour, ADMIN, "admin")


@pytest.fixture
def second(harbour):
    return client_as(harbour, SECOND, "admin")


def url(name, practice, **kwargs):
    return reverse(name, kwargs={"practice": practice.slug, **kwargs})


def confirm(client, practice, template, count, **fields):
    data = {"template": str(template.id), "status": "active", "count": str(count),
            "checked": "on", **fields}
    return client.post(url("bulk_new", practice), data)


def bulk_events(action):
    return AuditEvent.objects.filter(action=action)


# --- who may --------------------------------------------------------------------------------

def test_only_admins_may_use_the_bulk_pages(harbour, people, flu):
    bulk = BulkMessage.objects.create(practice=harbour, channel="sms", body="x", created_by=ADMIN)
    reception = client_as(harbour, RECEPTION, "reception")
    clinician = client_as(harbour, "gp@harbour.example", "clinician")
    for client in (reception, clinician):
        for address in all_urls(harbour, bulk):
            for method in ("get", "post"):
                response = getattr(client, method)(address)
                assert response.status_code == 403, (method, address, response.status_code)
    assert BulkMessage.objects.count() == 1 and not Message.objects.exists()


def all_urls(practice, bulk):
    ids = {"bulk_id": bulk.id}
    return [url("bulk_list", practice), url("bulk_new", practice),
            url("bulk_template_save", practice), url("bulk_detail", practice, **ids),
            url("bulk_progress", practice, **ids), url("bulk_approve", practice, **ids),
            url("bulk_release", practice, **ids), url("bulk_halt", practice, **ids),
            url("bulk_correct", practice, **ids)]


def test_the_bulk_list_and_new_pages_render(admin, harbour, flu):
    html = admin.get(url("bulk_list", harbour)).content.decode()
    assert "No bulk messages yet." in html and 'href="/p/harbour/bulk/new/"' in html
    assert 'href="/p/harbour/bulk/" aria-current="page">Bulk</a>' in html
    html = admin.get(url("bulk_new", harbour)).content.decode()
    assert f'<option value="{flu.id}">flu (SMS)</option>' in html
    assert "<legend>Registration status</legend>" in html and "<legend>Digital</legend>" in html
    assert 'name="age_min"' in html and 'name="family_name_prefix"' in html
    assert "Preview:" not in html  # nothing chosen yet


# --- templates ------------------------------------------------------------------------------

def test_saving_a_bulk_template_scans_the_text(admin, harbour):
    save = url("bulk_template_save", harbour)
    response = admin.post(save, {"name": "hba1c", "channel": "sms", "body": "Your HbA1c is 7.2"})
    assert response.status_code == 400
    html = response.content.decode()
    error = re.search(r'<p class="error" role="alert" id="err-body">([^<]*)</p>', html).group(1)
    assert "Not saved: the text was refused" in error and "hba1c" in error
    assert 'aria-describedby="err-body bulk-rules"' in html and ">Your HbA1c is 7.2</textarea>" in html
    assert not MessageTemplate.objects.exists()
    assert bulk_events("message_template.refused").get().actor == ADMIN
    # Identifiers too: a date of birth in a bulk text is refused.
    response = admin.post(save, {"name": "x", "channel": "email", "body": "Born 01/07/1980"})
    assert response.status_code == 400 and "date of birth" in response.content.decode()

    response = admin.post(save, {"name": "flu", "channel": "sms", "body": BODY})
    saved = MessageTemplate.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/p/harbour/bulk/new/?template={saved.id}"
    assert (saved.name, saved.channel, saved.created_by) == ("flu", "sms", ADMIN)


# --- preview --------------------------------------------------------------------------------

def preview_page(client, practice, template, **query):
    response = client.get(url("bulk_new", practice), {"template": template.id, **query})
    assert response.status_code == 200
    return response.content.decode()


def recipients_shown(html):
    return int(re.search(r'<p class="recipients"><strong>(\d+)</strong>', html).group(1))


def test_the_preview_counts_the_filters_patients_and_excluded_reasons(admin, harbour, people,
                                                                      flu):
    html = preview_page(admin, harbour, flu, status=["active", "deceased", "left"])
    assert recipients_shown(html) == 2
    excluded = {reason: text(row).split()[-1] for reason, row in
                re.findall(r'<tr data-reason="(\w+)">(.*?)</tr>', html, re.S)}
    assert excluded == {"deceased": "1", "left": "1", "opted_out": "1", "no_address": "1",
                        "under_age": "1", "sent_today": "0"}
    assert "Opted out of this channel" in html and "Excluded: 5" in html
    assert ("Hello Ann, flu clinics have started at harbour: https://book.example.org/harbour"
            "<br>Reply STOP to opt out") in html
    assert "SMS: GSM-7" in html and "2 segments in all" in html
    # The confirm form carries exactly the previewed filter.
    form = re.search(r'<form method="post" action="/p/harbour/bulk/new/".*?</form>', html, re.S).group(0)
    assert {v for v in re.findall(r'name="status" value="(\w+)"', form)} == {"active", "deceased",
                                                                             "left"}
    assert "Type the number of patients who will get it (2)" in form

    for query, flt in [({"digital": "yes"}, {"digital": True}),
                       ({"digital": "no", "has_mobile": "yes"}, {"digital": False, "has_mobile": True}),
                       ({"age_min": "18"}, {"age_min": 18}), ({"age_max": "17"}, {"age_max": 17}),
                       ({"pms_ids": "P1, P5 P7"}, {"pms_ids": ["P1", "P5", "P7"]}),
                       ({"family_name_prefix": "bla"}, {"family_name_prefix": "bla"})]:
        expected = preview_bulk(practice=harbour, recipient_filter=flt, template=flu).recipients
        assert recipients_shown(preview_page(admin, harbour, flu, **query)) == expected, query
    assert recipients_shown(preview_page(admin, harbour, flu, digital="yes")) == 1
    html = preview_page(admin, harbour, flu, age_min="x")
    assert 'id="err-age_min"' in html and "Preview:" not in html
    html = preview_page(admin, harbour, flu, age_min="40", age_max="30")
    assert "age_min is above age_max" in html
    assert not BulkMessage.objects.exists() and not Message.objects.exists()  # reads only


# --- confirm --------------------------------------------------------------------------------

def test_confirm_needs_the_count_and_the_tick_then_creates_the_bulk(admin, harbour, people, flu):
    response = confirm(admin, harbour, flu, 3)
    assert response.status_code == 400
    assert 'id="err-count">Type the number of patients who would get it: 2 now.' in (
        response.content.decode())
    response = confirm(admin, harbour, flu, 2, checked="")
    assert response.status_code == 400 and 'id="err-checked"' in response.content.decode()
    assert not BulkMessage.objects.exists()

    response = confirm(admin, harbour, flu, 2)
    bulk = BulkMessage.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/p/harbour/bulk/{bulk.id}/"
    assert (bulk.created_by, bulk.confirmed_by, bulk.phase, bulk.template_id) == (
        ADMIN, ADMIN, "first_batch", flu.id)
    assert set(Message.objects.values_list("patient__pms_id", "status")) == {("P1", "queued"),
                                                                             ("P2", "queued")}
    assert bulk_events("bulk.created").get().actor == ADMIN
    assert bulk_events("bulk.confirmed").get().actor == ADMIN
    html = admin.get(response["Location"]).content.decode()
    assert f"Bulk {bulk.id}: the first batch is queued." in html
    assert "Excluded when decided: 3" in html  # only active patients were selected
    # Everyone fitted in the first batch: nothing waits, so no Release; the filter in words.
    assert "Sent to everyone: the first batch was all of them" in html
    assert url("bulk_release", harbour, bulk_id=bulk.id) not in html
    assert "<dt>Recipient filter</dt><dd>active patients" in html and "[" not in text(
        re.search(r"<dt>Recipient filter</dt><dd>(.*?)</dd>", html).group(1))
    assert {reason: text(row).split()[-1] for reason, row in
            re.findall(r'<tr data-reason="(\w+)">(.*?)</tr>', html, re.S)} == {
        "deceased": "0", "left": "0", "opted_out": "1", "no_address": "1", "under_age": "1",
        "sent_today": "0"}

    # The same text again the same day reaches nobody who had it (H-023 (g)), whatever the
    # filter; "Send it again" cannot change that.
    response = confirm(admin, harbour, flu, 0, again="on")
    html = response.content.decode()
    assert response.status_code == 400 and "Not sent: nobody would get this message." in html
    assert {reason: text(row).split()[-1] for reason, row in
            re.findall(r'<tr data-reason="(\w+)">(.*?)</tr>', html, re.S)}["sent_today"] == "2"
    assert BulkMessage.objects.count() == 1


def test_over_the_threshold_another_admin_must_approve(admin, second, harbour, people, flu,
                                                       settings):
    settings.PRACTICESYNC_BULK_APPROVAL_OVER = 1
    html = preview_page(admin, harbour, flu)
    assert "another admin must approve it" in html
    assert "Create and ask another admin to approve" in html
    confirm(admin, harbour, flu, 2)
    bulk = BulkMessage.objects.get()
    assert (bulk.phase, bulk.approval_needed) == ("draft", True) and not Message.objects.exists()
    detail = url("bulk_detail", harbour, bulk_id=bulk.id)
    html = admin.get(detail).content.decode()
    assert "Waiting for approval by another admin" in html
    assert "You created it, so another admin must approve it." in html
    assert url("bulk_approve", harbour, bulk_id=bulk.id) not in html

    # The creator approving their own bulk is refused, and the refusal is on the record.
    html = admin.post(url("bulk_approve", harbour, bulk_id=bulk.id), follow=True).content.decode()
    assert "another staff member must approve it" in html
    bulk.refresh_from_db()
    assert bulk.phase == "draft" and not Message.objects.exists()
    assert bulk_events("bulk.approval_refused").get().actor == ADMIN

    html = second.get(detail).content.decode()
    assert "Waiting for approval by another admin" in html
    assert f'action="{url("bulk_approve", harbour, bulk_id=bulk.id)}"' in html
    html = second.post(url("bulk_approve", harbour, bulk_id=bulk.id), follow=True).content.decode()
    assert "Approved: the first batch is queued." in html
    bulk.refresh_from_db()
    assert (bulk.phase, bulk.approved_by) == ("first_batch", SECOND)
    assert Message.objects.filter(status="queued").count() == 2


# --- release, halt, outcomes ----------------------------------------------------------------

def test_first_batch_release_halt_and_each_recipients_outcome(admin, harbour, people, flu,
                                                              settings):
    settings.PRACTICESYNC_BULK_FIRST_BATCH = 1
    confirm(admin, harbour, flu, 2)
    bulk = BulkMessage.objects.get()
    detail = url("bulk_detail", harbour, bulk_id=bulk.id)
    html = admin.get(detail).content.decode()
    # Sending: the progress block polls every 5 seconds; the poll gets the block alone.
    progress = url("bulk_progress", harbour, bulk_id=bulk.id)
    assert f'hx-get="{progress}" hx-trigger="every 5s" hx-swap="outerHTML"' in html
    block = admin.get(progress).content.decode()
    assert block.startswith('<div id="bulk-progress"') and "<html" not in block
    assert "1 message of the first batch have not gone yet" in html

    html = admin.post(url("bulk_release", harbour, bulk_id=bulk.id), follow=True).content.decode()
    assert "Not done:" in html and "have not gone yet" in html
    assert bulk_events("bulk.released").count() == 0

    assert tick_when_due(harbour)["sent"] == 1
    html = admin.get(detail).content.decode()
    assert "hx-trigger" not in html  # nothing is going out: no poll
    row = row_of(html, "LEE, Ann")
    assert "Sent" in row and "+61412000001" in row

    html = admin.post(url("bulk_release", harbour, bulk_id=bulk.id), follow=True).content.decode()
    assert "Released: everyone else is queued." in html
    bulk.refresh_from_db()
    assert (bulk.phase, bulk.released_by) == ("released", ADMIN)
    assert "Queued" in row_of(html, "BLACK, Ben")

    html = admin.post(url("bulk_halt", harbour, bulk_id=bulk.id), follow=True).content.decode()
    assert "Halted: nothing more of it is sent." in html
    bulk.refresh_from_db()
    assert (bulk.phase, bulk.halted_by) == ("halted", ADMIN)
    ben = row_of(html, "BLACK, Ben")
    assert "Skipped" in ben and f"halted by {ADMIN}" in ben
    assert "Sent" in row_of(html, "LEE, Ann")
    assert bulk_events("bulk.halted").get().actor == ADMIN
    assert url("bulk_halt", harbour, bulk_id=bulk.id) not in html


def test_the_recipient_table_is_paginated(admin, harbour, flu, settings):
    settings.PRACTICESYNC_BULK_APPROVAL_OVER = 100
    for n in range(51):
        make_patient(harbour, pms_id=f"Q{n}", mobile_phone=f"+614120100{n:02d}")
    confirm(admin, harbour, flu, 51)
    bulk = BulkMessage.objects.get()
    html = admin.get(url("bulk_detail", harbour, bulk_id=bulk.id)).content.decode()
    assert html.count("data-message=") == 10  # the first batch; the rest wait for Release
    Message.objects.bulk_create(Message(
        practice=harbour, patient_id=pid, kind="bulk", bulk=bulk, channel="sms", to="+6140",
        body="x", idempotency_key=f"t:{pid}", not_before=bulk.created_at, created_by=ACTOR)
        for pid in bulk.waiting)
    html = admin.get(url("bulk_detail", harbour, bulk_id=bulk.id)).content.decode()
    assert html.count("data-message=") == 50 and "Page 1 of 2" in html
    html = admin.get(url("bulk_detail", harbour, bulk_id=bulk.id) + "?page=2").content.decode()
    assert html.count("data-message=") == 1


def test_a_correction_goes_to_the_patients_a_bulk_reached(admin, harbour, people, flu):
    sorry = save_template(actor=ACTOR, practice=harbour, name="sorry", channel="sms",
                          body="Please ignore our last message.")
    confirm(admin, harbour, flu, 2)
    bulk = BulkMessage.objects.get()
    detail = url("bulk_detail", harbour, bulk_id=bulk.id)
    assert "Send a correction" not in admin.get(detail).content.decode()  # nothing reached yet
    tick_when_due(harbour)
    html = admin.get(detail).content.decode()
    assert f'<option value="{sorry.id}">sorry</option>' in html
    response = admin.post(url("bulk_correct", harbour, bulk_id=bulk.id),
                          {"template": sorry.id, "batch": "all"})
    correction = BulkMessage.objects.get(corrects=bulk)
    assert response["Location"] == f"/p/harbour/bulk/{correction.id}/"
    assert sorted(correction.recipient_ids) == sorted([people["ann"].id, people["ben"].id])
    assert bulk_events("bulk.correction").get().actor == ADMIN
    html = admin.get(response["Location"]).content.decode()
    assert f'href="{detail}">Bulk {bulk.id}</a>' in html and "Please ignore our last message." in html


# --- another practice -----------------------------------------------------------------------

def test_a_member_of_another_practice_gets_404_on_every_url(harbour, people, flu, admin):
    confirm(admin, harbour, flu, 2)
    bulk = BulkMessage.objects.get()
    other = make_practice(slug="other", pms="bestpractice")
    outsider = client_as(other, "admin@other.example", "admin")
    before = (list(BulkMessage.objects.values_list("id", "phase")),
              list(Message.objects.values_list("id", "status")), AuditEvent.objects.count())
    for address in all_urls(harbour, bulk):
        for method in ("get", "post"):
            response = getattr(outsider, method)(
                address, {"template": str(flu.id), "count": "2", "checked": "on", "name": "x",
                          "channel": "sms", "body": "Hi"} if method == "post" else {})
            assert response.status_code == 404, (method, address, response.status_code)
            assert "flu clinics" not in response.content.decode()
    # Its own slug with harbour's bulk and template ids: nothing of harbour's.
    for address in all_urls(other, bulk)[3:]:
        assert outsider.post(address, {"template": str(flu.id)}).status_code == 404, address
    html = outsider.get(url("bulk_new", other), {"template": flu.id}).content.decode()
    assert "Choose a saved template." in html and "flu clinics" not in html
    assert (list(BulkMessage.objects.values_list("id", "phase")),
            list(Message.objects.values_list("id", "status")),
            AuditEvent.objects.count()) == before


@pytest.mark.parametrize("flt, words", [
    ({"status": ["active"]}, ["active patients"]),
    ({"status": ["active", "left"], "digital": False, "age_min": 65},
     ["active or left patients", "non-digital only", "aged 65 and over"]),
    ({"status": ["active"], "has_mobile": True, "age_min": 12, "age_max": 17,
      "family_name_prefix": "Mc", "pms_ids": ["P1", "P2"]},
     ["active patients", "with a mobile", "aged 12 to 17", "family name starting “Mc”",
      "2 chosen PMS ids"]),
])
def test_a_recipient_filter_reads_in_staff_words(flt, words):
    from practicesync.dashboard.bulk import filter_words

    assert filter_words(flt) == words
