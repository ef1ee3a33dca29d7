import json
import secrets
import signal
import subprocess
import sys
from collections import Counter

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.utils import timezone

from practicesync.outreach.dispatch import window_of
from practicesync.outreach.window import next_send_time
from practicesync.practices.models import Practice
from practicesync.runtime.management.commands.serve import gunicorn_argv
from practicesync.simulator.demo import DEMO_STAFF, load_demo


class Command(BaseCommand):
    help = ("Set up the demo: migrate, load a simulated Docman 10 practice and a Best Practice "
            "and a Medical Director practice with actioned results, sync them, then serve on "
            "127.0.0.1:8000 with a worker.")

    def add_arguments(self, parser):
        parser.add_argument("--patients", type=int, default=5000,
                            help="patients in the Docman 10 practice")
        parser.add_argument("--no-serve", action="store_true", help="load and sync, then exit")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, patients, no_serve, port, **_):
        call_command("migrate", interactive=False, verbosity=0)
        password = secrets.token_urlsafe(9)
        for summary in load_demo(patients=patients, staff_password=password):
            sync = summary["sync"]
            line = (f"Demo practice '{summary['practice']}': {sync['created']} created, "
                    f"{sync['updated']} updated, {sync['needs_review']} to review, "
                    f"{len(sync['errors'])} row errors; accounts {json.dumps(summary['accounts'])}")
            if results := summary.get("results"):
                line += (f"; results {results['created']} created, {results['updated']} "
                         f"updated, {results['unchanged']} unchanged, "
                         f"{len(results['errors'])} row errors")
            self.stdout.write(line)
        for note in outreach_notes(timezone.now()):
            self.stdout.write(note)
        self.stdout.write(f"Log in at http://127.0.0.1:{port}/ as {DEMO_STAFF} / {password}")
        self.stdout.write(
            "  That login is an admin of all three practices (Switch practice, in the page "
            "header). Admins must use two-step login: the first login asks you to set it up "
            "with an authenticator app on your phone (the page shows a QR code and the key to "
            "type in).")
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


def outreach_notes(now) -> list[str]:
    """Where each practice's follow-ups stand, and when the worker will send: messages wait
    for the practice's send window, which may be hours away from where the demo runs."""
    notes = []
    for practice in Practice.objects.filter(sequences__isnull=False).distinct().order_by("id"):
        states = Counter(practice.sequences.values_list("state", flat=True))
        opens = next_send_time(now, **window_of(practice)).astimezone(practice.tz)
        when = "now" if opens <= now else f"at {opens:%a %d %b %H:%M} {practice.timezone}"
        notes.append(f"Outreach '{practice.slug}': " + ", ".join(
            f"{n} {state.replace('_', ' ')}" for state, n in sorted(states.items()))
            + f"; the worker sends {when} (the practice's send window). To see the outbox "
            f"now: practicesync outreach tick --now {opens.isoformat(timespec='minutes')}")
    return notes
