"""Synthetic doctor-actioned results for a Best Practice or Medical Director practice, as the
canonical actioned-results CSV (DESIGN.md section 5). Deterministic by seed; never real people.

Every way a result can arrive is covered, in the PMS's own vocabulary: automatic actions,
every manual and urgent action (the action checklist), No action, not yet actioned, filed
where results do not count, several tests on one day for one patient, results already marked
notified/given/discussed, and the same patient on different days.

Two snapshots: `earlier` is what the PMS showed a few nights ago and `final` what it shows now
(a late result raising a day to the checklist, a doctor changing an action, results marked
notified since), so importing both in turn leaves sequences waiting, cancelled and completed.
`final` holds every result with its current values: re-importing it changes nothing.
"""

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

from practicesync.connectors.csvfile.results import RESULT_COLUMNS

from .patients import write_csv

END = dt.date(2026, 11, 20)  # the newest performed day; all dates fixed for re-runs
DAYS = 42
TESTS = ["FBC", "EUC", "LFT", "HbA1c", "Lipids", "TSH", "Iron studies", "Vitamin D", "CRP",
         "ESR", "Urine MCS", "PSA", "B12 and folate", "INR", "Fasting glucose", "Ferritin",
         "Chest X-ray", "Pelvic ultrasound", "Cervical screening", "ECG"]
COMMENTS = ["Cholesterol up: please book to discuss a statin.",
            "Low iron: start supplements, repeat in 3 months.",
            "Please arrange a repeat in 2 weeks, fasting.",
            "TSH high: needs a review of the thyroxine dose.",
            "Mildly raised: discuss at the next visit, no rush."]


@dataclass(frozen=True)
class Vocabulary:
    """How one PMS writes actions and where it files results."""

    automatic: tuple[tuple[str, str], ...]   # (action, comment) that start a template
    manual: tuple[tuple[str, str], ...]      # every manual and urgent action, each used
    no_action: tuple[str, ...]
    counted: tuple[dict, ...]                # filings that count
    not_counted: tuple[dict, ...]            # filings that never count


VOCABULARIES = {
    "bestpractice": Vocabulary(
        automatic=(("Non-urgent appointment", ""), ("Non-Urgent Appointment", ""), ("6", "")),
        manual=(("Urgent appointment", ""), ("Return Urgent", "Please see today."),
                ("Reception to advise", ""), ("Nurse to Advise", COMMENTS[1]),
                ("Doctor to advise", ""), ("Send routine reminder", ""), ("3", "")),
        no_action=("No action", "1"),
        counted=({"filed_under": "Investigation Report"}, {"filed_under": "Correspondence In"}),
        not_counted=({"filed_under": "Clinical Photo"}, {"filed_under": "Letter"},
                     {"filed_under": "Referral"}),
    ),
    "medicaldirector": Vocabulary(
        automatic=(("Discuss", ""),),
        manual=(("Return Urgently", ""), ("Discuss", COMMENTS[0]), ("Discuss", COMMENTS[3]),
                ("Recall 3 months", ""), ("Book nurse appointment", COMMENTS[2]),
                ("Notation: see at next visit", "")),
        no_action=("No Action", "No action required"),
        counted=({"tab": "Results", "location": "Result"},),
        not_counted=({"tab": "Documents", "location": "Result"},
                     {"tab": "Results", "location": "Letter"},
                     {"tab": "Correspondence", "location": "Document"}),
    ),
}


@dataclass
class Snapshots:
    earlier: list[dict]
    final: list[dict]


class _Builder:
    def __init__(self, rows: list[dict], vocabulary: Vocabulary, seed: int, prefix: str):
        self.rng = random.Random(seed)
        self.v = vocabulary
        self.prefix = prefix
        self.active = [r["pms_id"] for r in rows if r["registration_status"] == "active"]
        self.deceased = [r["pms_id"] for r in rows if r["registration_status"] == "deceased"]
        self.rng.shuffle(self.active)
        self.next_patient = 0
        self.days: dict[str, set[dt.date]] = {}
        self.n = 0
        self.final: list[dict] = []
        self.earlier: dict[str, dict] = {}   # result_id -> row as the earlier snapshot had it

    def patient(self) -> str:
        pms_id = self.active[self.next_patient % len(self.active)]
        self.next_patient += 1
        return pms_id

    def day_for(self, pms_id: str) -> dt.date:
        """A performed day this patient has no results on yet."""
        taken = self.days.setdefault(pms_id, set())
        free = [d for d in (END - dt.timedelta(days=n) for n in range(DAYS + 1)) if d not in taken]
        if not free:
            raise ValueError(f"{pms_id} already has results on every day: list too small")
        day = self.rng.choice(free)
        taken.add(day)
        return day

    def result(self, pms_id: str, day: dt.date, action: str, comment: str = "", *,
               filing: dict | None = None, notified: str = "", test: str | None = None,
               earlier: dict | None = None, late: bool = False) -> dict:
        """One result; `earlier` holds the values that differ in the earlier snapshot, and a
        `late` result is not in it at all."""
        self.n += 1
        reported = day + dt.timedelta(days=self.rng.randint(1, 3))
        actioned = min(reported + dt.timedelta(days=self.rng.randint(0, 2)), END)
        performed = day.isoformat()
        if self.rng.random() < 0.2:  # a collection time, as some labs send it (AEDT)
            minute = self.rng.choice(("05", "20", "40"))
            performed = f"{performed}T{self.rng.randint(7, 17):02d}:{minute}:00+11:00"
        row = dict.fromkeys(RESULT_COLUMNS, "")
        row.update(result_id=f"{self.prefix}{self.n:05d}", pms_id=pms_id,
                   test_name=test or self.rng.choice(TESTS), performed_on=performed,
                   reported_on=reported.isoformat(),
                   actioned_on=actioned.isoformat() if action else "", action=action,
                   comment=comment, notified=notified,
                   **(filing or self.rng.choice(self.v.counted)))
        self.final.append(row)
        if not late:
            self.earlier[row["result_id"]] = {**row, **(earlier or {})}
        return row

    def tests(self, k: int) -> list[str]:
        return self.rng.sample(TESTS, k)

    def auto(self) -> tuple[str, str]:
        return self.rng.choice(self.v.automatic)

    # One patient-day each ------------------------------------------------------------------

    def automatic_day(self, pms_id=None, k=None):
        pms_id = pms_id or self.patient()
        day = self.day_for(pms_id)
        for test in self.tests(k or self.rng.choice((1, 1, 2, 3))):
            self.result(pms_id, day, *self.auto(), test=test)

    def checklist_day(self, action: str, comment: str):
        """The manual action, sometimes with an automatic test the same day that it outranks."""
        pms_id = self.patient()
        day = self.day_for(pms_id)
        tests = self.tests(self.rng.choice((1, 2, 2, 3)))
        self.result(pms_id, day, action, comment, test=tests[0])
        for test in tests[1:]:
            self.result(pms_id, day, *self.auto(), test=test)

    def no_action_day(self):
        pms_id = self.patient()
        day = self.day_for(pms_id)
        for test in self.tests(self.rng.choice((1, 2))):
            self.result(pms_id, day, self.rng.choice(self.v.no_action), test=test)

    def mixed_day(self):
        """Urgent, automatic and No action on one day: the group takes the urgent one."""
        pms_id = self.patient()
        day = self.day_for(pms_id)
        urgent, auto, none = self.tests(3)
        self.result(pms_id, day, *self.auto(), test=auto)
        self.result(pms_id, day, self.rng.choice(self.v.no_action), test=none)
        self.result(pms_id, day, self.v.manual[0][0], test=urgent)

    def automatic_with_no_action_day(self):
        pms_id = self.patient()
        day = self.day_for(pms_id)
        auto, none = self.tests(2)
        self.result(pms_id, day, *self.auto(), test=auto)
        self.result(pms_id, day, self.rng.choice(self.v.no_action), test=none)

    def unactioned_day(self, with_actioned: bool = False):
        pms_id = self.patient()
        day = self.day_for(pms_id)
        waiting, actioned = self.tests(2)
        self.result(pms_id, day, "", test=waiting)
        if with_actioned:
            self.result(pms_id, day, *self.auto(), test=actioned)

    def wrongly_filed_day(self):
        pms_id = self.patient()
        day = self.day_for(pms_id)
        self.result(pms_id, day, *self.auto(), filing=self.rng.choice(self.v.not_counted))

    def notified_day(self, *, since_earlier: bool, checklist: bool = False):
        """Every result marked notified/given/discussed: the group is done. `since_earlier`:
        it was still open a few nights ago (its sequence then completes)."""
        pms_id = self.patient()
        day = self.day_for(pms_id)
        for test in self.tests(self.rng.choice((1, 2))):
            action, comment = self.rng.choice(self.v.manual) if checklist else self.auto()
            self.result(pms_id, day, action, comment, test=test,
                        notified=self.rng.choice(("notified", "given", "discussed")),
                        earlier={"notified": ""} if since_earlier else None)

    def partly_notified_day(self):
        pms_id = self.patient()
        day = self.day_for(pms_id)
        told, not_yet = self.tests(2)
        self.result(pms_id, day, *self.auto(), test=told, notified="given")
        self.result(pms_id, day, *self.auto(), test=not_yet)

    def late_raise_day(self):
        """Automatic a few nights ago; a late result now needs staff (sequence cancelled)."""
        pms_id = self.patient()
        day = self.day_for(pms_id)
        first, late = self.tests(2)
        self.result(pms_id, day, *self.auto(), test=first)
        self.result(pms_id, day, *self.rng.choice(self.v.manual[:2]), test=late, late=True)

    def late_join_day(self):
        pms_id = self.patient()
        day = self.day_for(pms_id)
        first, late = self.tests(2)
        self.result(pms_id, day, *self.auto(), test=first)
        self.result(pms_id, day, *self.auto(), test=late, late=True)

    def action_changed_day(self):
        """The doctor changed an automatic action to No action (sequence cancelled)."""
        pms_id = self.patient()
        day = self.day_for(pms_id)
        action, comment = self.auto()
        self.result(pms_id, day, self.v.no_action[0], test=self.tests(1)[0],
                    earlier={"action": action, "comment": comment})

    def deceased_day(self):
        if self.deceased:
            pms_id = self.deceased[0]
            self.result(pms_id, self.day_for(pms_id), *self.auto())

    def second_day(self):
        """A patient who already has results has more on another day: another group."""
        pms_id = self.rng.choice(self.active[:max(1, self.next_patient)])
        day = self.day_for(pms_id)
        action, comment = self.rng.choice(self.v.automatic + self.v.manual[:2])
        self.result(pms_id, day, action, comment)


def generate_results(rows: list[dict], *, pms: str, seed: int = 1,
                     prefix: str = "R") -> Snapshots:
    """Results for the listed patients `rows` (canonical list rows) of a `pms` practice."""
    b = _Builder(rows, VOCABULARIES[pms], seed, prefix)
    for _ in range(20):
        b.automatic_day()
    for action, comment in b.v.manual:
        for _ in range(3):
            b.checklist_day(action, comment)
    for _ in range(6):
        b.no_action_day()
    for _ in range(4):
        b.mixed_day()
        b.automatic_with_no_action_day()
        b.unactioned_day()
        b.wrongly_filed_day()
        b.notified_day(since_earlier=True)
    for _ in range(2):
        b.unactioned_day(with_actioned=True)
        b.notified_day(since_earlier=False)
        b.notified_day(since_earlier=True, checklist=True)
        b.partly_notified_day()
        b.late_join_day()
        b.action_changed_day()
    for _ in range(3):
        b.late_raise_day()
    b.deceased_day()
    for _ in range(8):
        b.second_day()
    final = sorted(b.final, key=lambda r: r["result_id"])
    earlier = [b.earlier[r["result_id"]] for r in final if r["result_id"] in b.earlier]
    return Snapshots(earlier=earlier, final=final)


def write_results(path: Path, rows: list[dict]) -> Path:
    return write_csv(path, RESULT_COLUMNS, rows)
