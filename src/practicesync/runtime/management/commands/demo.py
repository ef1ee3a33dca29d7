import json
import secrets
import signal
import subprocess
import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand

from practicesync.runtime.management.commands.serve import gunicorn_argv
from practicesync.simulator.demo import DEMO_STAFF, load_demo_practice


class Command(BaseCommand):
    help = ("Set up the demo: migrate, load a simulated Docman 10 practice, sync it, then serve "
            "on 127.0.0.1:8000 with a worker.")

    def add_arguments(self, parser):
        parser.add_argument("--patients", type=int, default=5000)
        parser.add_argument("--no-serve", action="store_true", help="load and sync, then exit")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, patients, no_serve, port, **_):
        call_command("migrate", interactive=False, verbosity=0)
        password = secrets.token_urlsafe(9)
        summary = load_demo_practice(patients=patients, staff_password=password)
        sync = summary["sync"]
        self.stdout.write(
            f"Demo practice '{summary['practice']}': {sync['created']} created, "
            f"{sync['updated']} updated, {sync['needs_review']} to review, "
            f"{len(sync['errors'])} row errors; accounts {json.dumps(summary['accounts'])}")
        self.stdout.write(f"Log in at http://127.0.0.1:{port}/ as {DEMO_STAFF} / {password}")
        if no_serve:
            return
        call_command("collectstatic", interactive=False, verbosity=0)
        children = [subprocess.Popen([sys.executable, "-m", "practicesync", "worker"]),
                    subprocess.Popen(gunicorn_argv("127.0.0.1", port))]

        def stop(signum, frame):
            for child in children:
                child.terminate()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        for child in children:
            child.wait()
