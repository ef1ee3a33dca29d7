"""The staff web pages through Django's test client: login, the Patients page, the deep link."""

import datetime as dt
import re

import pytest
from django.test import Client

from practicesync.patients.models import Patient, SyncRun
from practicesync.practices.actions import add_staff
from tests.factories import ACTOR, make_account, make_patient

PASSWORD = "correct horse battery"
TICK = re.compile(r'<span class="tick (digital|non-digital)"[^>]*>.*?</span>', re.S)


def rows(html: str) -> list[str]:
    """The body rows of the patients table, one string each."""
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr[^>]*>.*?</tr>", body, re.S)


def row_for(html: str, family_name: str) -> str:
    found = [r for r in rows(html) if family_name.upper() in r]
    assert len(found) == 1, f"{family_name} listed {len(found)} times"
    return found[0]


@pytest.fixture
def staff(practice):
    return add_staff(actor=ACTOR, practice=practice, email="Reception@Riverside.example",
                     role="reception", password=PASSWORD).user


@pytest.fixture
def client_in(staff):
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def people(practice):
    return {
        "non_digital": make_patient(practice, pms_id="P1", given_name="Nora",
                                    family_name="Greyling", mobile_phone="+447700900001"),
        "digital": make_account(practice, pms_id="P2", given_name="Dan",
                                family_name="Greenfield", mobile_phone="+447700900002"),
        "deceased": make_patient(practice, pms_id="P3", given_name="Edith", family_name="Hale",
                                 status=Patient.Status.DECEASED,
                                 date_of_death=dt.date(2026, 3, 4)),
    }


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/p/riverside/patients/", "/p/riverside/patients/P1"])
def test_anonymous_users_are_sent_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


def test_staff_see_their_practice_patients_with_digital_and_grey_ticks(client_in, practice,
                                                                       people):
    response = client_in.get(f"/p/{practice.slug}/patients/")
    assert response.status_code == 200
    html = response.content.decode()
    assert practice.name in html
    assert len(rows(html)) == 3
    grey = row_for(html, "Greyling")
    green = row_for(html, "Greenfield")
    assert 'class="tick non-digital"' in grey and 'class="tick digital"' not in grey
    assert 'class="tick digital"' in green and 'class="tick non-digital"' not in green
    assert "+447700900001" in grey
    assert f'href="/p/{practice.slug}/patients/P1"' in grey
    assert [m.group(1) for m in TICK.finditer(html.split("<tbody>", 1)[1])].count(
        "non-digital") == 2
    assert "3 patients, 1 digital." in html


def test_search_by_name_pms_id_and_nhs_number(client_in, practice, people):
    make_patient(practice, pms_id="P4", given_name="Greta", family_name="Olsen",
                 nhs_number="9990000018")
    url = f"/p/{practice.slug}/patients/"

    html = client_in.get(url, {"q": "greyl"}).content.decode()
    assert len(rows(html)) == 1 and "GREYLING, Nora" in html
    assert 'value="greyl"' in html  # the search box keeps what was typed

    html = client_in.get(url, {"q": "Gre"}).content.decode()  # family or given name
    assert len(rows(html)) == 3
    assert "GREYLING" in html and "GREENFIELD" in html and "OLSEN" in html
    assert "HALE" not in html

    html = client_in.get(url, {"q": "P3"}).content.decode()
    assert len(rows(html)) == 1 and "HALE, Edith" in html

    html = client_in.get(url, {"q": "999 000 0018"}).content.decode()
    assert len(rows(html)) == 1 and "OLSEN, Greta" in html

    html = client_in.get(url, {"q": "nobody-like-this"}).content.decode()
    assert "No patients match." in html


def test_filter_digital_yes_and_no(client_in, practice, people):
    url = f"/p/{practice.slug}/patients/"
    html = client_in.get(url, {"digital": "yes"}).content.decode()
    assert len(rows(html)) == 1 and "GREENFIELD" in html and "GREYLING" not in html
    assert '<option value="yes" selected>' in html

    html = client_in.get(url, {"digital": "no"}).content.decode()
    assert len(rows(html)) == 2 and "GREENFIELD" not in html
    assert "GREYLING" in html and "HALE" in html
    assert 'class="tick digital"' not in html.split("<tbody>", 1)[1]

    html = client_in.get(url, {"digital": "no", "q": "hale"}).content.decode()
    assert len(rows(html)) == 1 and "HALE" in html

    html = client_in.get(url, {"digital": "bogus"}).content.decode()
    assert len(rows(html)) == 3


def test_pagination(client_in, practice):
    Patient.objects.bulk_create(
        Patient(practice=practice, pms_id=f"P{i:03}", given_name="Pat", family_name=f"Fam{i:03}",
                date_of_birth=dt.date(1970, 1, 1), digital=i % 2 == 0)
        for i in range(120))
    url = f"/p/{practice.slug}/patients/"

    first = client_in.get(url).content.decode()
    assert len(rows(first)) == 50
    assert "FAM000" in first and "FAM049" in first and "FAM050" not in first
    assert "Page 1 of 3" in first
    assert 'href="?page=2"' in first and "Previous" not in first

    last = client_in.get(url, {"page": 3}).content.decode()
    assert len(rows(last)) == 20 and "FAM100" in last and "FAM119" in last
    assert "Page 3 of 3" in last and 'href="?page=2"' in last and ">Next<" not in last

    # Out-of-range and junk page numbers fall back rather than erroring.
    assert "Page 3 of 3" in client_in.get(url, {"page": 99}).content.decode()
    assert "Page 1 of 3" in client_in.get(url, {"page": "x"}).content.decode()

    # Links keep the filter: 60 digital patients make two pages.
    digital = client_in.get(url, {"digital": "yes", "q": "Fam"}).content.decode()
    assert "Page 1 of 2" in digital
    assert "?digital=yes&amp;q=Fam&amp;page=2" in digital
    page2 = client_in.get(url, {"digital": "yes", "q": "Fam", "page": 2}).content.decode()
    assert len(rows(page2)) == 10
    assert all('class="tick digital"' in r for r in rows(page2))


def test_deep_link_shows_the_patient(client_in, practice, people):
    response = client_in.get(f"/p/{practice.slug}/patients/P1")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Nora GREYLING" in html
    assert 'class="tick non-digital"' in html
    assert "+447700900001" in html
    assert "02/01/1980" in html
    assert "no messages are sent" not in html
    assert "<dt>Address</dt><dd>—</dd>" in html  # no address on record: a dash, not a gap

    html = client_in.get(f"/p/{practice.slug}/patients/P2").content.decode()
    assert "Dan GREENFIELD" in html and 'class="tick digital"' in html


def test_deep_link_warns_that_a_deceased_patient_gets_no_messages(client_in, practice, people):
    html = client_in.get(f"/p/{practice.slug}/patients/P3").content.decode()
    assert "Edith HALE" in html
    warning = re.search(r'<p class="warning">(.*?)</p>', html, re.S)
    assert warning is not None
    assert "Deceased" in warning.group(1) and "04/03/2026" in warning.group(1)
    assert "no messages are sent to this patient" in warning.group(1)


def test_deep_link_to_an_unknown_pms_id_is_404(client_in, practice, people):
    assert client_in.get(f"/p/{practice.slug}/patients/P999").status_code == 404


def test_home_takes_a_single_practice_member_to_its_patients(client_in, practice):
    response = client_in.get("/")
    assert response.status_code == 302
    assert response["Location"] == f"/p/{practice.slug}/patients/"


@pytest.mark.django_db
def test_login_by_post(staff, practice, people):
    client = Client(enforce_csrf_checks=True)
    form = client.get("/login/")
    assert form.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.content.decode())
    assert token is not None

    bad = client.post("/login/", {"username": "reception@riverside.example",
                                  "password": "wrong", "csrfmiddlewaretoken": token.group(1)})
    assert bad.status_code == 200
    assert "Email or password not recognised." in bad.content.decode()

    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', bad.content.decode())
    response = client.post("/login/", {"username": "reception@riverside.example",
                                       "password": PASSWORD,
                                       "csrfmiddlewaretoken": token.group(1),
                                       "next": f"/p/{practice.slug}/patients/"},
                           follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == f"/p/{practice.slug}/patients/"
    html = response.content.decode()
    assert "GREYLING, Nora" in html
    assert "reception@riverside.example" in html  # the header shows who is logged in


@pytest.mark.django_db
def test_login_post_without_csrf_token_is_refused(staff):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login/", {"username": "reception@riverside.example",
                                       "password": PASSWORD})
    assert response.status_code == 403


def test_last_sync_time_is_shown_in_the_practice_timezone(au_practice):
    user = add_staff(actor=ACTOR, practice=au_practice, email="gp@harbour.example",
                     role="clinician").user
    client = Client()
    client.force_login(user)
    url = f"/p/{au_practice.slug}/patients/"
    assert "Not synced yet." in client.get(url).content.decode()
    SyncRun.objects.create(practice=au_practice, source="list.csv", triggered_by="test",
                           status=SyncRun.Status.COMPLETED,
                           started_at=dt.datetime(2026, 11, 23, 1, 30, tzinfo=dt.UTC))
    html = client.get(url).content.decode()
    # 01:30 UTC is 12:30 in Sydney (AEDT, UTC+11) the same day.
    assert "Last sync 23 Nov 2026 12:30: Completed." in html


def test_a_pms_id_with_a_slash_gets_a_working_deep_link(client_in, practice):
    make_patient(practice, pms_id="12/345 #2", given_name="Ola", family_name="Slash")
    html = client_in.get(f"/p/{practice.slug}/patients/").content.decode()
    link = re.search(r'href="([^"]+)">SLASH, Ola', html)
    assert link is not None and link.group(1) == f"/p/{practice.slug}/patients/12/345%20%232"
    page = client_in.get(link.group(1))
    assert page.status_code == 200 and "Ola SLASH" in page.content.decode()
