"""What every part of `make bench` shares: Django set-up, sanity checks, the result row."""

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class InsaneCounts(Exception):
    """A run did not do what the list asked: its timing means nothing."""


# `--scale`: every count of the bench times this (1.0 is the DESIGN.md section 7 size).
SCALE = 1.0


def set_scale(scale: float) -> None:
    global SCALE
    SCALE = scale


def scaled(count: int, least: int = 1) -> int:
    return max(least, round(count * SCALE))


def setup_django(home: Path) -> str:
    """Point practicesync at `home` (its SQLite file lives there) and start Django.
    Returns the database backend: "sqlite" or "postgresql"."""
    os.environ["PRACTICESYNC_HOME"] = str(home)
    os.environ["DJANGO_SETTINGS_MODULE"] = "practicesync.settings"
    import django

    django.setup()
    from django.db import connection

    return connection.vendor


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def peak_rss_mb() -> float:
    """This process's own peak RSS. On Linux that is VmHWM, not ru_maxrss: the kernel starts
    a spawned child's ru_maxrss at the parent's RSS, which here holds 200,000 generated rows."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        kib = 1 / 1024 if sys.platform == "darwin" else 1  # macOS reports bytes
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 1024


def run_one(kind: str, practice_id: int, source: Path | str) -> dict:
    """Run one measurement (bench.run MEASUREMENTS) in a fresh interpreter; its last stdout
    line is the result."""
    print(f"  {kind:<14} {Path(source).name} ...", end=" ", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--one", kind, "--practice", str(practice_id),
         "--source", str(source)],
        cwd=REPO, env=os.environ.copy(), check=True, stdout=subprocess.PIPE, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{result['seconds']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MB")
    return result


def check(ok: bool, what: str, result: dict) -> None:
    if not ok:
        raise InsaneCounts(f"{what}; got {json.dumps(result, default=str)}")


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    unit: str
    backend: str
    baseline: float | None
    target: str
    limit: float  # value must be below this to meet the target (at least this, if `higher`)
    workers: int = 1
    higher: bool = False  # a rate: more is better

    @property
    def ratio(self) -> float | None:
        return round(self.value / self.baseline, 2) if self.baseline else None

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.higher else self.value < self.limit

    def as_json(self) -> dict:
        return {"name": self.name, "value": self.value, "unit": self.unit,
                "backend": self.backend, "workers": self.workers, "baseline": self.baseline,
                "ratio": self.ratio, "target": self.target}
