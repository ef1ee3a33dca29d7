"""deploy/: the systemd units and the Procfile run real practicesync commands with options
they accept, the environment file names every setting, and the Redis task queue option
works end to end with `practicesync worker` (a real Redis on 127.0.0.1:6379)."""

import ast
import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from practicesync import settings as settings_module
from practicesync.patients.models import SyncRun
from practicesync.patients.tasks import patient_sync_now
from practicesync.practices import actions
from tests.cli import run
from tests.factories import list_row, write_list
from tests.test_serve import cli, kill_leftovers, start, stop

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
INSTALLED = "/opt/practicesync/venv/bin/practicesync"
REDIS_URL = "redis://127.0.0.1:6379/15"  # a database of its own, emptied by the tests
UTC = dt.UTC


def env_file(name: str) -> dict:
    lines = (DEPLOY / name).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def expand(command: str, env: dict) -> list[str]:
    """A command line as systemd or a Procfile runner runs it: %i, ${VAR}, ${VAR:-default},
    and an unbraced $VAR split into words."""
    command = command.replace("%i", "riverside")
    command = re.sub(r"\$\{(\w+)(?::-([^}]*))?\}",
                     lambda m: env.get(m[1]) or m[2] or "riverside", command)
    return shlex.split(re.sub(r"\$(\w+)", lambda m: env.get(m[1], ""), command))


def parse(argv: list[str]) -> tuple[str, object]:
    """The sub-command and its parsed options; a CommandError for an option it lacks."""
    name, *args = argv
    command = load_command_class(get_commands()[name], name)
    return name, command.create_parser("practicesync", name).parse_args(args)


def unit(path: Path) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys


EXPECTED = {"practicesync-web.service": "serve", "practicesync-worker@.service": "worker",
            "practicesync-mllp@.service": "mllp"}


def test_each_unit_runs_its_practicesync_command_and_restarts_on_failure():
    assert [u.name for u in UNITS] == sorted(EXPECTED)
    env = {**env_file("env.example"), **env_file("mllp.env.example")}
    for path in UNITS:
        keys = unit(path)
        executable, *argv = expand(keys["ExecStart"][0], env)
        assert executable == INSTALLED
        name, options = parse(argv)
        assert name == EXPECTED[path.name]
        assert keys["Restart"] == ["on-failure"] and keys["User"] == ["practicesync"]
        assert keys["EnvironmentFile"][0] == "/etc/practicesync/env"
        if name == "mllp":
            assert (options.practice, options.port) == ("riverside", 2575)
    # The web unit migrates first; only it does, so workers never race a migration.
    assert [unit(p).get("ExecStartPre") for p in UNITS] == [
        None, [f"{INSTALLED} migrate --no-input"], None]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_accepts_the_units(tmp_path):
    """systemd's own parser, on copies whose ExecStart is this checkout's practicesync
    (verify checks the program exists). A warning (unknown key, bad value) fails too."""
    here = Path(sys.executable).parent / "practicesync"
    for path in [*UNITS, DEPLOY / "systemd" / "practicesync.target"]:
        (tmp_path / path.name).write_text(path.read_text().replace(INSTALLED, str(here)))
    # Templates are checked as instances, as `systemctl enable practicesync-worker@1` makes.
    for name, instance in [("practicesync-worker@.service", "practicesync-worker@1.service"),
                           ("practicesync-worker@.service", "practicesync-worker@2.service"),
                           ("practicesync-mllp@.service", "practicesync-mllp@riverside.service")]:
        (tmp_path / instance).symlink_to(tmp_path / name)
    names = ["practicesync-web.service", "practicesync-worker@1.service",
             "practicesync-mllp@riverside.service", "practicesync.target"]
    done = subprocess.run(["systemd-analyze", "verify", *names], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")


def procfile() -> dict[str, str]:
    lines = (DEPLOY / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


def test_the_procfile_runs_web_worker_and_mllp():
    commands = {kind: expand(line, {}) for kind, line in procfile().items()}
    assert {kind: argv[:2] for kind, argv in commands.items()} == {
        "web": ["practicesync", "serve"], "worker": ["practicesync", "worker"],
        "mllp": ["practicesync", "mllp"]}
    for argv in commands.values():
        parse(argv[1:])
    assert parse(commands["web"][1:])[1].port == 8000


@pytest.mark.slow
def test_the_procfile_commands_answer_help():
    for kind, line in procfile().items():
        sub = line.split()[1]
        done = subprocess.run([sys.executable, "-m", "practicesync", sub, "--help"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "usage: practicesync" in done.stdout, (kind, done.stderr)


def setting_names() -> set[str]:
    """Every environment variable settings.py reads."""
    tree = ast.parse(Path(settings_module.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = ast.unparse(node.func)
            if func in ("os.environ.get", "env.get", "_flag"):
                names.add(node.args[0].value)
    # The provider choice is read as PRACTICESYNC_<CHANNEL>_PROVIDER.
    names |= {f"PRACTICESYNC_{c.upper()}_PROVIDER" for c in settings_module._PROVIDER_CLASSES}
    return names


def test_the_environment_file_names_every_setting():
    names = setting_names()
    assert {"SECRET_KEY", "DATABASE_URL", "PRACTICESYNC_TASKS_REDIS_URL",
            "TWILIO_AUTH_TOKEN", "PRACTICESYNC_SMS_PROVIDER"} <= names
    documented = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", (DEPLOY / "env.example").read_text(),
                                re.M))
    assert names - documented == set()
    assert "ANYMAIL_" in (DEPLOY / "env.example").read_text()


def test_redis_is_opt_in_through_the_environment():
    code = ("import django, json; django.setup(); from django.conf import settings as s; "
            "print(json.dumps([s.TASKS['default']['BACKEND'], getattr(s, 'RQ_QUEUES', None), "
            "'django_rq' in s.INSTALLED_APPS]))")
    plain = {k: v for k, v in os.environ.items() if k != "PRACTICESYNC_TASKS_REDIS_URL"}
    assert fresh(code, plain) == ["django_tasks_db.DatabaseBackend", None, False]
    backend, queues, app = fresh(code, {**plain, "PRACTICESYNC_TASKS_REDIS_URL": REDIS_URL})
    assert (backend, queues["default"]["URL"], app) == ("django_tasks_rq.RQBackend", REDIS_URL,
                                                        True)


def fresh(code: str, env: dict):
    import json

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**env, "DJANGO_SETTINGS_MODULE": "practicesync.settings"})
    return json.loads(done.stdout)


@pytest.fixture
def redis_queue(settings):
    """The suite's settings switched to the Redis queue, as PRACTICESYNC_TASKS_REDIS_URL does.
    Without Redis the test is skipped on a developer's machine and fails in CI."""
    import redis

    connection = redis.Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except redis.ConnectionError:
        if os.environ.get("CI"):
            pytest.fail("Redis is not answering on 127.0.0.1:6379")
        pytest.skip("Redis is not answering on 127.0.0.1:6379")
    connection.flushdb()
    settings.TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}}
    settings.RQ_QUEUES = {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600}}
    yield connection
    connection.flushdb()
    connection.close()


@pytest.mark.slow
def test_the_worker_runs_tasks_queued_in_redis(transactional_db, practice, tmp_path,
                                               redis_queue):
    from rq.job import Job
    from rq.registry import FinishedJobRegistry

    path = write_list(tmp_path / "l.csv", [list_row(pms_id="P1"), list_row(pms_id="P2")])
    actions.schedule_nightly_sync(actor="t", practice=practice, source=str(path),
                                  now=dt.datetime(2020, 1, 1, tzinfo=UTC))
    asked = patient_sync_now.enqueue(practice_id=practice.id, actor="staff:test")
    assert redis_queue.llen("rq:queue:default") == 1
    assert run("worker", "--once")[0] == 0
    # "Sync now" and the nightly sync the worker queued itself both ran, through Redis only.
    assert sorted(SyncRun.objects.values_list("triggered_by", "status")) == [
        ("staff:test", "completed"), ("system:nightly", "completed")]
    result = patient_sync_now.get_result(asked.id)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value["run_id"] == SyncRun.objects.get(triggered_by="staff:test").id
    finished = FinishedJobRegistry("default", connection=redis_queue).get_job_ids()
    ran = {Job.fetch(job_id, connection=redis_queue).func_name for job_id in finished}
    assert {"practicesync.patients.tasks.nightly_patient_sync",
            "practicesync.patients.tasks.patient_sync_now",
            "practicesync.outreach.tasks.outreach_tick"} <= ran
    assert not DBTaskResult.objects.exists() and redis_queue.llen("rq:queue:default") == 0


@pytest.mark.slow
def test_the_redis_worker_stops_cleanly_on_sigterm(tmp_path, redis_queue, monkeypatch):
    monkeypatch.setenv("PRACTICESYNC_TASKS_REDIS_URL", REDIS_URL)
    cli(tmp_path, "migrate", "--no-input", "-v", "0")
    proc = start(tmp_path, "worker", "--interval", "0.2", log_name="worker.log")
    log = tmp_path / "worker.log"
    try:
        deadline = time.monotonic() + 30
        while b"started" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"worker did not start:\n{log.read_text()}"
            time.sleep(0.1)
        time.sleep(1.5)  # several passes, each draining Redis
        assert proc.poll() is None, log.read_text()
        code, took = stop(proc, timeout=10)
        assert (code, took < 10) == (0, True), log.read_text()
        assert "worker stopped" in log.read_text()
        # Its passes registered with RQ as workers of the queue, and each ended.
        assert not redis_queue.smembers("rq:workers")
    finally:
        if proc.poll() is None:
            kill_leftovers(proc)


@pytest.mark.slow
def test_with_redis_sync_now_and_the_tick_wait_in_the_queue_once(transactional_db, practice,
                                                                   tmp_path, redis_queue):
    from practicesync.outreach.tasks import enqueue_tick
    from tests.factories import make_practice
    from tests.test_api import Api, token

    path = write_list(tmp_path / "l.csv", [list_row(pms_id="P1")])
    actions.schedule_nightly_sync(actor="t", practice=practice, source=str(path))
    client = Api(token(practice, name="bridge"), practice.slug)
    status, queued, _ = client.post("sync-runs")
    assert status == 202 and client.post("sync-runs")[1]["task_id"] == queued["task_id"]
    assert (enqueue_tick(), enqueue_tick()) == (True, False)
    assert redis_queue.llen("rq:queue:default") == 2  # one sync, one tick
    # The status comes from Redis; another practice's token cannot see the task.
    assert client.call("get", queued["task_url"], raw_url=True)[1]["status"] == "READY"
    other = make_practice()
    assert Api(token(other), other.slug).get(f"sync-tasks/{queued['task_id']}")[0] == 404
    assert run("worker", "--once")[0] == 0
    status, task, _ = client.call("get", queued["task_url"], raw_url=True)
    assert status == 200 and task["status"] == "SUCCESSFUL"
    assert SyncRun.objects.get(id=task["sync_run_id"]).triggered_by == "api:bridge"
    assert client.get("sync-tasks/not-a-task")[0] == 404
    assert not DBTaskResult.objects.exists()
