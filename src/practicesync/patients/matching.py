"""Which stored patient, if any, a list row is (DESIGN.md section 2, rules 2, 3 and 6). Pure.

Order: PMS id; then NHS number / IHI / Medicare number with IRN; then exact normalised
family + given name + date of birth. A link needs exactly one candidate on each side;
anything less certain becomes a new record plus a review item, never a merge.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from .identifiers import medicare_card_and_irn
from .rows import ListRow, PatientRecord

# A proposal for staff, never a link: same DOB and names this similar.
POSSIBLE_MATCH_SIMILARITY = 0.85


@dataclass(frozen=True)
class Review:
    kind: str
    detail: str
    pms_id: str | None = None
    candidates: tuple[PatientRecord, ...] = ()
    patient_ids: tuple[int, ...] = field(default=())

    @property
    def key(self) -> str:
        ids = sorted({*(c.id for c in self.candidates), *self.patient_ids} - {None})
        return f"{self.kind}:{self.pms_id or ''}:{','.join(map(str, ids))}"


@dataclass(frozen=True)
class Match:
    patient: PatientRecord | None
    reason: str
    review: Review | None = None


NEW = "new"


def _medicare_key(record: PatientRecord):
    card, irn = medicare_card_and_irn(record.medicare_number)
    # A card number is shared by a family: only card + IRN names one person.
    return (card, irn) if card and irn else None


IDENTIFIER_RULES = (
    ("nhs_number", lambda r: r.nhs_number),
    ("ihi", lambda r: r.ihi),
    ("medicare", _medicare_key),
)


def _who(record: PatientRecord) -> str:
    ref = record.pms_id or record.account_id or record.id
    return f"{record.given_name} {record.family_name} ({ref})"


class CandidateIndex:
    """Stored patients by every key a row can match on, and how often each key occurs in the list."""

    def __init__(self, records, rows: list[ListRow], not_same: set[tuple[str, int]] = frozenset()):
        self.not_same = not_same
        self.by_pms_id = {r.pms_id: r for r in records if r.pms_id}
        listed = {row.pms_id for row in rows}
        # Patients linked to a row still on the list are matched by PMS id only.
        pool = [r for r in records if r.pms_id is None or r.pms_id not in listed]
        self.pool_by = {name: defaultdict(list) for name, _ in IDENTIFIER_RULES}
        self.pool_by_name = defaultdict(list)
        self.pool_by_dob = defaultdict(list)
        for record in pool:
            for name, key_of in IDENTIFIER_RULES:
                if (key := key_of(record)) is not None:
                    self.pool_by[name][key].append(record)
            self.pool_by_name[record.name_key].append(record)
            self.pool_by_dob[record.date_of_birth].append(record)
        self.list_counts = {
            name: Counter(k for row in rows if (k := key_of(row.record)) is not None)
            for name, key_of in IDENTIFIER_RULES
        }
        self.list_counts["name"] = Counter(row.record.name_key for row in rows)

    def candidates(self, rule: str, key, pms_id: str) -> list[PatientRecord]:
        pool = self.pool_by_name if rule == "name" else self.pool_by[rule]
        return [c for c in pool.get(key, ()) if (pms_id, c.id) not in self.not_same]


def _ambiguous(row: ListRow, rule: str, candidates) -> Match:
    who = ", ".join(_who(c) for c in candidates) or "another row of the same list"
    detail = (f"List row {row.line} ({_who(row.record)}) matches more than one record by "
              f"{rule.replace('_', ' ')}: {who}. Created as a separate record; link by hand "
              f"if they are the same person.")
    return Match(None, NEW, Review("ambiguous_match", detail, row.pms_id, tuple(candidates)))


def _same_person_facts(a: PatientRecord, b: PatientRecord) -> bool:
    """Name, sex and DOB all agree; a sex missing on either side is not agreement."""
    return a.name_key == b.name_key and bool(a.sex) and a.sex == b.sex


def match_row(row: ListRow, index: CandidateIndex) -> Match:
    record = row.record
    if (linked := index.by_pms_id.get(row.pms_id)) is not None:
        return Match(linked, "pms_id")

    deferred: Review | None = None
    for rule, key_of in IDENTIFIER_RULES:
        key = key_of(record)
        if key is None:
            continue
        candidates = index.candidates(rule, key, row.pms_id)
        if not candidates:
            continue
        if index.list_counts[rule][key] > 1 or len(candidates) > 1:
            return _ambiguous(row, rule, candidates)
        candidate = candidates[0]
        if candidate.date_of_birth != record.date_of_birth:
            detail = (f"List row {row.line} ({_who(record)}, born {record.date_of_birth}) has the "
                      f"same {rule.replace('_', ' ')} as {_who(candidate)}, born "
                      f"{candidate.date_of_birth}. Not linked until someone checks.")
            return Match(None, NEW, Review("dob_conflict", detail, row.pms_id, (candidate,)))
        if rule == "ihi" and not _same_person_facts(record, candidate):
            # An IHI is trusted only with name, sex and DOB agreeing; other rules may still link.
            deferred = Review(
                "ihi_unverified",
                f"List row {row.line} ({_who(record)}) shares an IHI with {_who(candidate)} "
                f"but name or sex differ.", row.pms_id, (candidate,))
            continue
        return Match(candidate, rule)

    key = record.name_key
    candidates = index.candidates("name", key, row.pms_id)
    if candidates:
        if index.list_counts["name"][key] > 1 or len(candidates) > 1:
            return _ambiguous(row, "name_and_date_of_birth", candidates)
        candidate = candidates[0]
        for ident in ("nhs_number", "ihi"):
            ours, theirs = getattr(record, ident), getattr(candidate, ident)
            if ours and theirs and ours != theirs:
                detail = (f"List row {row.line} ({_who(record)}) has the same name and date of "
                          f"birth as {_who(candidate)} but a different {ident.replace('_', ' ')}. "
                          f"Created as a separate record.")
                return Match(None, NEW, Review("identifier_conflict", detail, row.pms_id,
                                               (candidate,)))
        return Match(candidate, "name_dob")

    return Match(None, NEW, deferred or _possible_match(row, index))


def _possible_match(row: ListRow, index: CandidateIndex) -> Review | None:
    record = row.record
    same_dob = index.pool_by_dob.get(record.date_of_birth)
    if not same_dob:
        return None
    family, given, _ = record.name_key
    similar = [
        c for c in same_dob
        if (row.pms_id, c.id) not in index.not_same
        and SequenceMatcher(None, f"{family} {given}", f"{c.name_key[0]} {c.name_key[1]}").ratio()
        >= POSSIBLE_MATCH_SIMILARITY
    ]
    if not similar:
        return None
    who = ", ".join(_who(c) for c in similar)
    return Review("possible_match",
                  f"List row {row.line} ({_who(record)}) may be the same person as {who} "
                  f"(same date of birth, similar name). Not linked: confirm or record "
                  f"'not the same person'.", row.pms_id, tuple(similar))
