import asyncio
import signal

from django.core.management.base import BaseCommand
from django.db import connection

from practicesync.cli import practice_arg, usage_error
from practicesync.connectors.hl7v2.mllp import MAX_FRAME, Inbox, Listener, tls_context
from practicesync.practices.access import SyncNotPermitted, require_sync_permission


class Command(BaseCommand):
    help = ("Receive HL7 v2 messages (ADT, ORU^R01, SIU) over MLLP for one practice. Commit mode "
            "ACKs once the raw message is committed to the inbox and applies it right after; "
            "original mode ACKs after it has been applied (AE with the reason if not). The mode "
            "is the practice's setting (`practice hl7 --ack-mode`) unless --mode is given. "
            "Stops cleanly on SIGTERM.")

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=2575)
        parser.add_argument("--practice", required=True)
        parser.add_argument("--mode", choices=["commit", "original"],
                            help="commit: ACK after commit to the inbox (HL7 enhanced mode "
                                 "commit accept); original: ACK after processing (default: the "
                                 "practice's setting, commit unless changed)")
        parser.add_argument("--max-frame", type=int, default=MAX_FRAME,
                            help=f"largest frame in bytes (default {MAX_FRAME})")
        parser.add_argument("--no-process", dest="process_here", action="store_false",
                            help="commit mode: only store and acknowledge; `practicesync "
                                 "worker` applies the inbox")
        parser.add_argument("--tls-cert", help="PEM certificate (chain): speak MLLP over TLS "
                                               "1.2+ only")
        parser.add_argument("--tls-key", help="PEM private key of --tls-cert")

    def handle(self, *args, host, port, practice, mode, max_frame, process_here, tls_cert,
               tls_key, **_):
        found = practice_arg(practice)
        try:
            require_sync_permission(found)
        except SyncNotPermitted as e:
            raise usage_error(str(e)) from e
        mode = mode or found.hl7_ack_mode
        if mode == "original" and not process_here:
            raise usage_error("--no-process needs commit mode: original mode processes "
                              "before it answers")
        if bool(tls_cert) != bool(tls_key):
            raise usage_error("--tls-cert and --tls-key go together")
        try:
            tls = tls_context(tls_cert, tls_key) if tls_cert else None
        except (OSError, ValueError) as e:
            raise usage_error(f"TLS certificate or key not usable: {e}") from e
        asyncio.run(self._serve(found, host, port, mode, max_frame, process_here, tls))
        self.stdout.write("mllp stopped")

    async def _serve(self, practice, host, port, mode, max_frame, process_here, tls):
        # SQLite has one writer: a second transaction in flight would only wait on its lock.
        listener = Listener(Inbox(practice.id), mode=mode, max_frame=max_frame,
                            process_here=process_here, tls=tls,
                            committers=1 if connection.vendor == "sqlite" else 2)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, listener.stopping.set)

        def ready(addresses):
            for address in addresses:
                self.stdout.write(f"mllp listening on {address[0]}:{address[1]} for "
                                  f"{practice.slug} ({mode} mode{', TLS' if tls else ''})")
            self.stdout.flush()

        await listener.serve(host, port, ready=ready)
