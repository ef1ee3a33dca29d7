"""The Results page and Recalls > Summary (the action checklist) through Django's test client."""

import re

import pytest
from django.test import Client

from practicesync.audit.models import AuditEvent
from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from practicesync.practices.actions import add_staff
from practicesync.results.importer import sync_results
from practicesync.results.models import Result, ResultGroup, ResultsTemplate
from tests.factories import ACTOR, log_in, make_patient, make_practice, write_list

EMAIL = "reception@harbour.example"
DAY1, DAY2, DAY3 = "2026-11-18", "2026-11-19", "2026-11-20"


def result(result_id, pms_id="P1", action="Non-Urgent Appointment", performed=DAY1,
           test_name="FBC", **fields):
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(result_id=result_id, pms_id=pms_id, test_name=test_name, performed_on=performed,
               reported_on=DAY3, actioned_on=DAY3, action=action,
               filed_under="Investigation Report")
    row.update(fields)
    return row


_files = iter(range(10**6))


def sync(practice, tmp_path, *rows):
    path = write_list(tmp_path / f"results-{next(_files)}.csv", rows, RESULT_COLUMNS)
    report = sync_results(practice=practice, source=str(path), actor=ACTOR)
    assert report.errors == []
    return report


def body_rows(html: str, table: str) -> list[str]:
    """The body rows of `<table class="{table}...">`, one string each."""
    found = re.search(rf'<table class="{table}[^"]*">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert found is not None, f"no table {table}"
    return [r for r in re.findall(r"<tr[^>]*>.*?</tr>", found.group(1), re.S)
            if "data-group" in r]


def text(fragment: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", fragment).split())


def group_of(result_id) -> ResultGroup:
    return Result.objects.get(result_id=result_id).group


@pytest.fixture
def bp(au_practice):
    make_patient(au_practice, pms_id="P1", given_name="Ann", family_name="Lee",
                 mobile_phone="+61412345678")
    make_patient(au_practice, pms_id="P2", given_name="Bo", family_name="Tran")
    make_patient(au_practice, pms_id="P3", given_name="Cy", family_name="Ward")
    return au_practice


@pytest.fixture
def staff(bp):
    return add_staff(actor=ACTOR, practice=bp, email=EMAIL, role="reception").user


@pytest.fixture
def client_in(staff):
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def synced(bp, tmp_path):
    sync(bp, tmp_path,
         result("R1", test_name="FBC"), result("R2", test_name="UEC"),          # P1 day 1
         result("R3", performed=DAY2, action="Nurse to Advise", test_name="LFT",
                comment="Low iron: start supplements"),                          # P1 day 2
         result("R4", pms_id="P2", action="No action", test_name="TSH"),        # P2 day 1
         result("R5", pms_id="P2", action="", performed=DAY3, test_name="Unactioned PSA"),
         result("R6", pms_id="P2", performed=DAY3, filed_under="Clinical Photo",
                test_name="Skin photo"),
         result("R7", pms_id="P3", performed=DAY3, action="Urgent appointment",
                test_name="INR"),                                                # P3 day 3
         result("R8", pms_id="P3", performed=DAY3, action="Non-urgent appointment",
                test_name="CRP"))
    return bp


def test_results_page_shows_one_row_per_patient_per_day_newest_first(client_in, synced):
    response = client_in.get(f"/p/{synced.slug}/results/")
    assert response.status_code == 200
    html = response.content.decode()
    rows = body_rows(html, "results")
    assert [" ".join(text(r).split()[:3]) for r in rows] == [
        "WARD, Cy 20/11/2026", "LEE, Ann 19/11/2026", "LEE, Ann 18/11/2026", "TRAN, Bo 18/11/2026"]
    ward, lee2, lee1, tran = rows
    # Several tests on one day are one row; the group takes the most pressing action.
    assert "<li>CRP</li><li>INR</li>" in ward and "Urgent appointment" in ward
    assert "Action checklist" in ward
    assert "<li>FBC</li><li>UEC</li>" in lee1
    assert "Template: Non-urgent results" in lee1 and "Non-Urgent Appointment" in lee1
    assert "To action – Paused" in lee1 and text(lee1).endswith("Open")
    assert "Nurse to Advise" in lee2 and "Action checklist" in lee2
    assert "No action" in text(tran) and "<li>TSH</li>" in tran
    assert f'href="/p/{synced.slug}/patients/P1"' in lee1
    assert "4 result groups" in html


def test_unactioned_and_wrongly_filed_results_never_show(client_in, synced, tmp_path):
    html = client_in.get(f"/p/{synced.slug}/results/").content.decode()
    assert "Unactioned PSA" not in html and "Skin photo" not in html
    assert "20/11/2026" not in "".join(r for r in body_rows(html, "results") if "TRAN" in r)
    # A result the doctor un-actions leaves its day with nothing to show: the row goes.
    sync(synced, tmp_path, result("R4", pms_id="P2", action="", test_name="TSH"))
    html = client_in.get(f"/p/{synced.slug}/results/").content.decode()
    assert "TRAN" not in html and "TSH" not in html


def test_sequence_states_in_the_seeds_words(client_in, bp, tmp_path):
    make_patient(bp, pms_id="P4", given_name="Di", family_name="Young")
    sync(bp, tmp_path, result("R1"), result("R2", pms_id="P2"),
         result("R3", pms_id="P3", test_name="B12"))
    ResultsTemplate.objects.filter(practice=bp).update(auto_start=True)
    sync(bp, tmp_path, result("R4", pms_id="P4"),                        # starts: Active
         result("R2", pms_id="P2", notified="given"),                      # done
         result("R3", pms_id="P3", test_name="B12"),
         result("R5", pms_id="P3", action="Return Urgent", test_name="Ferritin"))  # cancelled
    rows = {text(r).split(",")[0]: r for r in body_rows(
        client_in.get(f"/p/{bp.slug}/results/").content.decode(), "results")}
    assert "To action – Paused" in rows["LEE"]
    assert ">Active<" in rows["YOUNG"]
    assert ">Done<" in rows["TRAN"] and text(rows["TRAN"]).endswith("Done")
    assert ">Cancelled<" in rows["WARD"] and "Action checklist" in rows["WARD"]


def test_a_template_group_of_a_deceased_patient_says_why_nothing_is_sent(client_in, bp,
                                                                        tmp_path):
    make_patient(bp, pms_id="P9", given_name="Edith", family_name="Hale", status="deceased")
    sync(bp, tmp_path, result("R1", pms_id="P9"))
    row = body_rows(client_in.get(f"/p/{bp.slug}/results/").content.decode(), "results")[0]
    assert "Template: Non-urgent results" in row and "Not sent: patient deceased" in row


def test_results_page_filters_by_disposition_and_state(client_in, synced, tmp_path):
    url = f"/p/{synced.slug}/results/"
    html = client_in.get(url, {"disposition": "checklist"}).content.decode()
    rows = body_rows(html, "results")
    assert len(rows) == 2 and all("Action checklist" in r for r in rows)
    assert '<option value="checklist" selected>' in html

    rows = body_rows(client_in.get(url, {"disposition": "ignored"}).content.decode(), "results")
    assert len(rows) == 1 and "TRAN" in rows[0]

    rows = body_rows(client_in.get(url, {"disposition": "template"}).content.decode(), "results")
    assert len(rows) == 1 and "Template: Non-urgent results" in rows[0]

    sync(synced, tmp_path, result("R1", notified="notified"),
         result("R2", test_name="UEC", notified="given"))
    html = client_in.get(url, {"state": "done"}).content.decode()
    rows = body_rows(html, "results")
    assert len(rows) == 1 and "<li>FBC</li><li>UEC</li>" in rows[0]
    assert '<option value="done" selected>' in html
    assert "4 result groups" in html and "1 match the filter." in html
    assert len(body_rows(client_in.get(url, {"state": "open"}).content.decode(), "results")) == 3
    both = client_in.get(url, {"state": "open", "disposition": "template"}).content.decode()
    assert "No results match." in both
    # Junk filter values show everything rather than failing.
    assert len(body_rows(client_in.get(url, {"state": "x", "disposition": "y"})
                         .content.decode(), "results")) == 4


def test_recalls_summary_lists_what_staff_must_action(client_in, bp, tmp_path):
    sync(bp, tmp_path,
         result("R1", action="Nurse to Advise", comment="Low iron: start supplements",
                test_name="Ferritin"),
         result("R2", pms_id="P2", performed=DAY2, action="Urgent appointment",
                test_name="INR"),
         result("R3", pms_id="P3", test_name="FBC"),                          # template
         result("R4", pms_id="P3", performed=DAY2, action="No action",
                test_name="ESR"),                                             # ignored
         result("R5", pms_id="P3", performed=DAY3, action="Doctor to advise",
                test_name="HbA1c", notified="discussed"))                    # done in PMS
    html = client_in.get(f"/p/{bp.slug}/recalls/summary/").content.decode()
    to_do = body_rows(html, "checklist to-do")
    # Most urgent first: BP's "Urgent appointment" is the seed's "Return Urgent".
    assert [text(r).split(" ")[0:3] for r in to_do] == [
        ["Return", "Urgent", "TRAN,"], ["Nurse", "to", "Advise"]]
    nurse = to_do[1]
    assert "LEE, Ann" in nurse and "18/11/2026" in nurse and "<li>Ferritin</li>" in nurse
    assert "Doctor's comment: “Low iron: start supplements”" in nurse
    assert "+61412345678" in nurse  # staff phone the patient from here
    assert all("Mark done" in r for r in to_do)
    done = body_rows(html, "checklist done")
    assert len(done) == 1 and "Doctor to advise" in done[0]
    assert "Marked notified/given/discussed in the PMS" in done[0]
    # Template and No action groups are never on the checklist.
    assert "<li>FBC</li>" not in html and "<li>ESR</li>" not in html


def test_medical_director_discuss_with_a_comment_shows_the_comment(db, tmp_path):
    md = make_practice(pms="medicaldirector", slug="banksia")
    make_patient(md, pms_id="P1", given_name="Ann", family_name="Lee")
    make_patient(md, pms_id="P2", given_name="Bo", family_name="Tran")
    where = {"filed_under": "", "tab": "Results", "location": "Result"}
    sync(md, tmp_path, result("M1", action="Discuss", comment="Cholesterol up: book a review",
                              **where),
         result("M2", pms_id="P2", action="Discuss", test_name="TSH", **where),
         result("M3", pms_id="P2", performed=DAY2, action="Recall 3 months", **where))
    client = Client()
    log_in(client, add_staff(actor=ACTOR, practice=md, email=EMAIL, role="admin").user)
    html = client.get(f"/p/{md.slug}/recalls/summary/").content.decode()
    to_do = body_rows(html, "checklist to-do")
    assert len(to_do) == 2
    lee = next(r for r in to_do if "LEE" in r)
    assert "Discuss (with comment)" in lee and "Cholesterol up: book a review" in lee
    assert any("Recall 3 months" in r for r in to_do)
    results = client.get(f"/p/{md.slug}/results/").content.decode()
    rows = {text(r).split(",")[0]: r for r in body_rows(results, "results")}
    assert "Discuss (with comment)" in rows["LEE"]
    assert "Template: Discuss results" in [r for r in body_rows(results, "results")
                                           if "<li>TSH</li>" in r][0]


def test_mark_done_records_who_and_when_and_moves_the_row(staff, bp, tmp_path):
    sync(bp, tmp_path, result("R1", action="Nurse to Advise", test_name="Ferritin"),
         result("R2", pms_id="P2", action="Reception to advise", test_name="Lipids"))
    group = group_of("R1")
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    url = f"/p/{bp.slug}/recalls/summary/"
    html = client.get(url).content.decode()
    form = re.search(rf'<form method="post" action="({url}{group.id}/done/)">.*?'
                     r'name="csrfmiddlewaretoken" value="([^"]+)"', html, re.S)
    assert form is not None

    # Without the CSRF token the tick is refused.
    assert client.post(form.group(1)).status_code == 403
    group.refresh_from_db()
    assert group.checklist_done_at is None

    response = client.post(form.group(1), {"csrfmiddlewaretoken": form.group(2), "page": "1"})
    assert response.status_code == 302 and response["Location"] == url
    group.refresh_from_db()
    assert group.checklist_done_by == EMAIL and group.checklist_done_at is not None
    event = AuditEvent.objects.get(action="group.checklist_done")
    assert event.actor == EMAIL and event.detail["group_id"] == group.id
    assert event.patient == group.patient

    html = client.get(url).content.decode()
    to_do, done = body_rows(html, "checklist to-do"), body_rows(html, "checklist done")
    assert len(to_do) == 1 and "TRAN" in to_do[0]
    assert len(done) == 1 and "LEE, Ann" in done[0] and EMAIL in done[0]
    local = group.checklist_done_at.astimezone(bp.tz).strftime("%d/%m/%Y %H:%M")
    assert local in done[0]
    assert "Marked done." in html
    results = client.get(f"/p/{bp.slug}/results/").content.decode()
    assert "(ticked done)" in [r for r in body_rows(results, "results") if "LEE" in r][0]

    # Ticking it again keeps the first who/when and audits nothing more.
    first = group.checklist_done_at
    client.post(form.group(1), {"csrfmiddlewaretoken": form.group(2)})
    group.refresh_from_db()
    assert group.checklist_done_at == first
    assert AuditEvent.objects.filter(action="group.checklist_done").count() == 1


def test_a_template_group_cannot_be_marked_done_on_the_checklist(client_in, synced):
    group = group_of("R1")
    response = client_in.post(f"/p/{synced.slug}/recalls/summary/{group.id}/done/")
    assert response.status_code == 400
    assert "not on Recalls &gt; Summary" in response.content.decode()
    group.refresh_from_db()
    assert group.checklist_done_at is None and group.checklist_done_by == ""
    assert not AuditEvent.objects.filter(action="group.checklist_done").exists()


def test_mark_done_is_post_only_and_needs_login(client_in, synced):
    group = group_of("R3")
    url = f"/p/{synced.slug}/recalls/summary/{group.id}/done/"
    assert client_in.get(url).status_code == 405
    response = Client().post(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client_in.post(f"/p/{synced.slug}/recalls/summary/999999/done/").status_code == 404
    group.refresh_from_db()
    assert group.checklist_done_at is None


@pytest.mark.parametrize("path", ["results/", "recalls/summary/"])
def test_anonymous_users_are_sent_to_login(client, synced, path):
    response = client.get(f"/p/{synced.slug}/{path}")
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next=/p/{synced.slug}/{path}"


def test_another_practices_staff_get_404_and_cannot_tick(synced):
    other = make_practice(pms="bestpractice", slug="elsewhere")
    make_patient(other, pms_id="P1", given_name="Zed", family_name="Other")
    outsider = add_staff(actor=ACTOR, practice=other, email="gp@elsewhere.example",
                         role="admin").user
    client = Client()
    log_in(client, outsider)
    group = group_of("R3")  # this practice's checklist group
    for path in ("results/", "recalls/summary/"):
        assert client.get(f"/p/{synced.slug}/{path}").status_code == 404
        assert client.get(f"/p/{other.slug}/{path}").status_code == 200
    # Neither through this practice's address nor by putting the id under their own.
    assert client.post(f"/p/{synced.slug}/recalls/summary/{group.id}/done/").status_code == 404
    assert client.post(f"/p/{other.slug}/recalls/summary/{group.id}/done/").status_code == 404
    group.refresh_from_db()
    assert group.checklist_done_at is None
    assert not AuditEvent.objects.filter(action="group.checklist_done").exists()
    # Their own pages show none of this practice's results.
    html = client.get(f"/p/{other.slug}/results/").content.decode()
    assert "LEE" not in html and "No results yet." in html
    html = client.get(f"/p/{other.slug}/recalls/summary/").content.decode()
    assert "LEE" not in html and "Nothing to action." in html


def test_nav_bar_links_the_practice_pages(client_in, synced):
    html = client_in.get(f"/p/{synced.slug}/results/").content.decode()
    nav = re.search(r'<nav class="sections"[^>]*>(.*?)</nav>', html, re.S).group(1)
    assert f'href="/p/{synced.slug}/patients/">Patients<' in nav
    assert f'href="/p/{synced.slug}/results/" aria-current="page">Results<' in nav
    assert f'href="/p/{synced.slug}/recalls/summary/">Recalls &gt; Summary<' in nav
    html = client_in.get(f"/p/{synced.slug}/patients/").content.decode()
    assert f'href="/p/{synced.slug}/patients/" aria-current="page">Patients<' in html
    login = Client().get("/login/").content.decode()
    assert 'class="sections"' not in login


def test_home_lists_every_practice_of_a_member_of_several(client_in, staff, synced):
    other = make_practice(pms="medicaldirector", slug="banksia")
    add_staff(actor=ACTOR, practice=other, email=EMAIL, role="admin")
    log_in(client_in, staff)  # an admin now: admins pass two-step login
    html = client_in.get("/").content.decode()
    assert f'href="/p/{synced.slug}/patients/"' in html and 'href="/p/banksia/patients/"' in html
    assert 'href="/p/banksia/results/"' in html and 'href="/p/banksia/recalls/summary/"' in html


def test_a_bare_best_practice_action_code_reads_as_its_words(client_in, bp, tmp_path):
    sync(bp, tmp_path, result("R1", action="6"), result("R2", pms_id="P2", action="3"))
    rows = {text(r).split(",")[0]: r for r in body_rows(
        client_in.get(f"/p/{bp.slug}/results/").content.decode(), "results")}
    assert "<td>Non-urgent appointment</td>" in rows["LEE"]
    assert "<td>Nurse to advise</td>" in rows["TRAN"]
    html = client_in.get(f"/p/{bp.slug}/recalls/summary/").content.decode()
    assert '<strong class="action">Nurse to advise</strong>' in html


def test_a_practice_whose_pms_sends_no_results_is_told_so(db):
    gb = make_practice(pms="docman10", slug="riverside")
    client = Client()
    log_in(client, add_staff(actor=ACTOR, practice=gb, email=EMAIL, role="admin").user)
    for path in ("results/", "recalls/summary/"):
        html = client.get(f"/p/riverside/{path}").content.decode()
        assert "Docman 10 does not send results to practicesync" in html
