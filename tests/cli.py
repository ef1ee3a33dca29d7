"""Running practicesync commands in-process (on the test database) and as a real process."""

import io
import json
import os
import subprocess
import sys

from django.core.management import call_command
from django.core.management.base import CommandError


def run(*args) -> tuple[int, str]:
    """(exit code, stdout) of `practicesync *args` run in this process."""
    out = io.StringIO()
    try:
        call_command(*args, stdout=out)
        code = 0
    except SystemExit as e:
        code = e.code
    except CommandError as e:
        code = e.returncode
        out.write(str(e))
    return code, out.getvalue()


def run_json(*args) -> tuple[int, dict]:
    code, out = run(*args, "--json")
    return code, json.loads(out)


def process(home, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python -m practicesync *args` as its own process, on SQLite in `home`."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PRACTICESYNC_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "practicesync", *map(str, args)],
                          capture_output=True, text=True, env=env, input=stdin, timeout=120)
