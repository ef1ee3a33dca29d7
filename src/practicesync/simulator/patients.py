"""A synthetic practice list and digital accounts. Never real people: names are drawn from
small lists, NHS numbers from the 999 test range, Medicare/IHI numbers made up with valid
check digits, phones random within the country's mobile ranges."""

import csv
import datetime as dt
import random
from pathlib import Path

import nhs_number

from practicesync.connectors.profiles.docman10 import COLUMNS as DOCMAN_COLUMNS
from practicesync.patients.identifiers import clean_phone, luhn_ok
from practicesync.patients.names import normalise_name
from practicesync.patients.rows import CANONICAL_COLUMNS

GIVEN = ["Olivia", "Amelia", "Isla", "Ava", "Mia", "Zoë", "Siân", "Chloé", "Aoife", "Priya",
         "Noah", "Oliver", "Leo", "Jack", "Arthur", "Seán", "José", "Mohammed", "Wei", "Tomasz",
         "Grace", "Freya", "Ruby", "Evie", "Harry", "George", "Oscar", "Charlie", "Jacob",
         "Thomas", "Emily", "Sophie", "Lily", "Ella", "Ivy", "Aarav", "Kai", "Finn", "Niamh",
         "Rhys"]
FAMILY = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Evans", "Thomas",
          "Roberts", "Walker", "O'Brien", "O’Neill", "Smith-Jones", "Nguyen", "Patel", "Khan",
          "Murphy", "Kowalski", "Müller", "García", "Lewis", "Hughes", "Edwards", "Green",
          "Hall", "Wood", "Clarke", "Jackson", "White", "Harris", "Martin", "Cooper", "Ward",
          "Morris", "King", "Wright", "Baker", "MacDonald", "D'Souza", "Lee"]
STREETS = ["High Street", "Station Road", "Church Lane", "Mill Road", "Park Avenue",
           "Victoria Road", "Queen Street", "King Street"]
TOWNS = {"GB": ["Leeds", "Halifax", "Wakefield", "Bradford", "Harrogate"],
         "AU": ["Newtown", "Parramatta", "Glebe", "Manly", "Penrith"]}


def _ascii(name: str) -> str:
    return normalise_name(name).replace(" ", "")


def synthetic_nhs_number(rng: random.Random, used: set[str]) -> str:
    """A valid number from the 999 test range, never one already in `used`."""
    while True:
        stem = "999" + "".join(rng.choice("0123456789") for _ in range(6))
        check = nhs_number.calculate_checksum(stem)
        if check != 10 and (number := stem + str(check)) not in used:
            used.add(number)
            return number


def synthetic_medicare_number(rng: random.Random, irn: int) -> str:
    stem = str(rng.randint(2, 6)) + "".join(rng.choice("0123456789") for _ in range(7))
    check = sum(int(d) * w for d, w in zip(stem, (1, 3, 7, 9, 1, 3, 7, 9), strict=True)) % 10
    return f"{stem}{check}{rng.randint(1, 9)}{irn}"


def synthetic_ihi(rng: random.Random) -> str:
    stem = "800360" + "".join(rng.choice("0123456789") for _ in range(9))
    return next(stem + d for d in "0123456789" if luhn_ok(stem + d))


def _accepted(rng: random.Random, country: str, make) -> str:
    """Draw until the phone check accepts it: not every allocated-looking range is valid."""
    while True:
        number = make(rng)
        if clean_phone(number, country)[0]:
            return number


def synthetic_mobile(rng: random.Random, country: str) -> str:
    if country == "GB":
        return _accepted(rng, country, lambda r: f"07{r.choice('45789')}{r.randint(0, 99):02d} "
                                                 f"{r.randint(0, 999999):06d}")
    return _accepted(rng, country, lambda r: f"04{r.randint(10, 99)} {r.randint(0, 999):03d} "
                                             f"{r.randint(0, 999):03d}")


def synthetic_landline(rng: random.Random, country: str) -> str:
    if country == "GB":
        return _accepted(rng, country, lambda r: f"0113 {r.randint(200, 499)} "
                                                 f"{r.randint(0, 9999):04d}")
    return _accepted(rng, country, lambda r: f"02 9{r.randint(100, 999)} {r.randint(0, 9999):04d}")


def generate_practice_list(n: int, *, seed: int = 1, country: str = "GB") -> list[dict]:
    """`n` canonical list rows. About 1 in 100 is deceased; families share a mobile."""
    rng = random.Random(seed)
    rows = []
    used_nhs_numbers: set[str] = set()
    today = dt.date(2026, 11, 1)
    for i in range(n):
        dob = today - dt.timedelta(days=rng.randint(0, 95 * 365))
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        deceased = rng.random() < 0.01
        row = dict.fromkeys(CANONICAL_COLUMNS, "")
        row.update(
            pms_id=f"P{i + 1:06d}", title=rng.choice(["", "Mr", "Mrs", "Ms", "Miss", "Dr"]),
            given_name=given, family_name=family, date_of_birth=dob.isoformat(),
            sex=rng.choice("MF"),
            mobile_phone=synthetic_mobile(rng, country) if rng.random() < 0.85 else "",
            home_phone=synthetic_landline(rng, country) if rng.random() < 0.3 else "",
            email=(f"{_ascii(given)}.{_ascii(family)}{i}@example.org"
                   if rng.random() < 0.5 else ""),
            address_line1=f"{rng.randint(1, 200)} {rng.choice(STREETS)}",
            locality=rng.choice(TOWNS[country]),
            postcode=(f"LS{rng.randint(1, 29)} {rng.randint(1, 9)}AB" if country == "GB"
                      else str(rng.randint(2000, 2999))),
            registration_status="deceased" if deceased else "active",
            date_of_death=(today - dt.timedelta(days=rng.randint(1, 300))).isoformat()
            if deceased else "",
        )
        if country == "GB":
            row["nhs_number"] = synthetic_nhs_number(rng, used_nhs_numbers)
        else:
            row["medicare_number"] = synthetic_medicare_number(rng, irn=rng.randint(1, 5))
            row["ihi"] = synthetic_ihi(rng) if rng.random() < 0.7 else ""
        if rows and rng.random() < 0.05:
            row["mobile_phone"] = rows[-1]["mobile_phone"]  # a family sharing one mobile
        rows.append(row)
    return rows


def generate_accounts(rows: list[dict], *, seed: int = 2, share: float = 0.08,
                      extra: int = 50, country: str = "GB") -> list[dict]:
    """Digital accounts: `share` of the listed patients signed up (some without a phone,
    some with their NHS number), plus `extra` people not on the list."""
    rng = random.Random(seed)
    accounts = []
    for n, row in enumerate(r for r in rows if r["registration_status"] == "active"):
        if rng.random() >= share:
            continue
        accounts.append({
            "account_id": f"A{n + 1:06d}", "given_name": row["given_name"],
            "family_name": row["family_name"].upper() if rng.random() < 0.2 else row["family_name"],
            "date_of_birth": row["date_of_birth"],
            "email": f"{_ascii(row['given_name'])}{n}@example.net",
            "mobile_phone": synthetic_mobile(rng, country) if rng.random() < 0.6 else "",
            "nhs_number": row["nhs_number"] if rng.random() < 0.3 else "",
        })
    accounts += _accounts_staff_must_review(rows, rng)
    for n in range(extra):
        accounts.append({
            "account_id": f"X{n + 1:05d}", "given_name": rng.choice(GIVEN),
            "family_name": rng.choice(FAMILY) + "son",
            "date_of_birth": (dt.date(1950, 1, 1) + dt.timedelta(days=rng.randint(0, 25000)))
            .isoformat(),
            "email": f"x{n}@example.net", "mobile_phone": synthetic_mobile(rng, country),
            "nhs_number": "",
        })
    return accounts


def _accounts_staff_must_review(rows: list[dict], rng: random.Random) -> list[dict]:
    """Sign-ups that Patient Sync must not link by itself: same name and DOB as a listed
    patient but another NHS number, and a near-miss name with the same DOB."""
    active = [r for r in rows if r["registration_status"] == "active" and r["nhs_number"]]
    if len(active) < 2:
        return []
    conflict, near = rng.sample(active, 2)
    other_nhs = synthetic_nhs_number(rng, {r["nhs_number"] for r in rows})
    return [
        {"account_id": "R00001", "given_name": conflict["given_name"],
         "family_name": conflict["family_name"], "date_of_birth": conflict["date_of_birth"],
         "email": "r1@example.net", "mobile_phone": "", "nhs_number": other_nhs},
        {"account_id": "R00002", "given_name": near["given_name"] + "a",
         "family_name": near["family_name"], "date_of_birth": near["date_of_birth"],
         "email": "r2@example.net", "mobile_phone": "", "nhs_number": ""},
    ]


def change_some(rows: list[dict], *, share: float, seed: int = 3) -> list[dict]:
    """A later night's list: `share` of the rows have a new mobile, email or address."""
    rng = random.Random(seed)
    out = [dict(r) for r in rows]
    for row in rng.sample(out, int(len(out) * share)):
        field = rng.choice(["mobile_phone", "email", "address_line1"])
        if field == "mobile_phone":
            row[field] = synthetic_mobile(rng, "GB" if row["nhs_number"] else "AU")
        elif field == "email":
            row[field] = f"new{rng.randint(0, 10**6)}@example.org"
        else:
            row[field] = f"{rng.randint(1, 300)} {rng.choice(STREETS)}"
    return out


def write_csv(path: Path, columns, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_canonical_list(path: Path, rows) -> Path:
    return write_csv(path, CANONICAL_COLUMNS, rows)


def write_accounts(path: Path, accounts) -> Path:
    return write_csv(path, ("account_id", "given_name", "family_name", "date_of_birth", "email",
                            "mobile_phone", "nhs_number"), accounts)


def _uk(iso: str) -> str:
    return dt.date.fromisoformat(iso).strftime("%d/%m/%Y") if iso else ""


def write_docman_export(path: Path, rows) -> Path:
    """The same patients as a Docman 10 practice list export (UK dates, words for codes)."""
    status = {"active": "Registered", "left": "Deregistered", "deceased": "Deceased"}
    sex = {"M": "Male", "F": "Female", "": ""}
    reverse = {canonical: column for column, canonical in DOCMAN_COLUMNS.items()}
    out = []
    for row in rows:
        mapped = {reverse[k]: v for k, v in row.items() if k in reverse}
        mapped["Date of Birth"] = _uk(row["date_of_birth"])
        mapped["Date of Death"] = _uk(row["date_of_death"])
        mapped["Registration Status"] = status[row["registration_status"] or "active"]
        mapped["Gender"] = sex.get(row["sex"], row["sex"])
        out.append(mapped)
    return write_csv(path, DOCMAN_COLUMNS, out)
