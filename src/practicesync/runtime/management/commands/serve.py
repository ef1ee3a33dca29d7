import os
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from practicesync.cli import usage_error

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def gunicorn_argv(host: str, port: int, workers: int = 2) -> list[str]:
    # No access log: request lines carry searches and deep links (names, NHS numbers, PMS
    # ids), and PHI never goes to logs. No control socket: it is shared by every instance.
    return [sys.executable, "-m", "gunicorn", "practicesync.wsgi:application",
            "--bind", f"{host}:{port}", "--workers", str(workers),
            "--graceful-timeout", "10", "--no-control-socket"]


class Command(BaseCommand):
    help = "Serve the web app with gunicorn (static files by WhiteNoise, DEBUG off by default)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=2)

    def handle(self, *args, host, port, workers, **_):
        # DEBUG pages show settings and source to anyone who can reach the server (a
        # spoofed Host header gets past ALLOWED_HOSTS, so --host counts too).
        if settings.DEBUG and not {host, *settings.ALLOWED_HOSTS} <= LOOPBACK:
            raise usage_error("DEBUG is on and the server would answer other machines "
                              "(--host or ALLOWED_HOSTS): turn DEBUG off first")
        call_command("collectstatic", interactive=False, verbosity=0)
        self.stdout.write(f"serving on http://{host}:{port}/")
        self.stdout.flush()
        # gunicorn replaces this process, so SIGTERM reaches it directly and it stops cleanly.
        argv = gunicorn_argv(host, port, workers)
        os.execv(argv[0], argv)
