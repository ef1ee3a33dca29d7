import asyncio
import signal

from django.core.management.base import BaseCommand

from practicesync.cli import practice_arg, usage_error
from practicesync.connectors.hl7v2.mllp import MAX_FRAME, Inbox, Listener
from practicesync.practices.access import SyncNotPermitted, require_sync_permission


class Command(BaseCommand):
    help = ("Receive HL7 v2 messages (ADT, ORU^R01) over MLLP for one practice. Commit mode "
            "(default) ACKs once the raw message is committed to the inbox and applies it right "
            "after; original mode ACKs after it has been applied (AE with the reason if not). "
            "Stops cleanly on SIGTERM.")

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=2575)
        parser.add_argument("--practice", required=True)
        parser.add_argument("--mode", choices=["commit", "original"], default="commit",
                            help="commit: ACK after commit to the inbox (HL7 enhanced mode "
                                 "commit accept); original: ACK after processing")
        parser.add_argument("--max-frame", type=int, default=MAX_FRAME,
                            help=f"largest frame in bytes (default {MAX_FRAME})")
        parser.add_argument("--no-process", dest="process_here", action="store_false",
                            help="commit mode: only store and acknowledge; `practicesync "
                                 "worker` applies the inbox")

    def handle(self, *args, host, port, practice, mode, max_frame, process_here, **_):
        found = practice_arg(practice)
        try:
            require_sync_permission(found)
        except SyncNotPermitted as e:
            raise usage_error(str(e)) from e
        if mode == "original" and not process_here:
            raise usage_error("--no-process needs --mode commit: original mode processes "
                              "before it answers")
        asyncio.run(self._serve(found, host, port, mode, max_frame, process_here))
        self.stdout.write("mllp stopped")

    async def _serve(self, practice, host, port, mode, max_frame, process_here):
        listener = Listener(Inbox(practice.id), mode=mode, max_frame=max_frame,
                            process_here=process_here)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, listener.stopping.set)

        def ready(addresses):
            for address in addresses:
                self.stdout.write(f"mllp listening on {address[0]}:{address[1]} for "
                                  f"{practice.slug} ({mode} mode)")
            self.stdout.flush()

        await listener.serve(host, port, ready=ready)
