import signal
import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections
from django.utils.crypto import get_random_string
from django_tasks import DEFAULT_TASK_BACKEND_ALIAS, DEFAULT_TASK_QUEUE_NAME
from django_tasks_db.management.commands.db_worker import Worker

from practicesync.connectors.hl7v2.inbox import process_all_inboxes
from practicesync.outreach.tasks import enqueue_tick
from practicesync.patients.tasks import enqueue_due_syncs


class Command(BaseCommand):
    help = ("Run background work: queue each practice's nightly sync when due, apply accepted HL7 "
            "messages, send due outreach, and run tasks.")

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=5.0,
                            help="seconds between passes when idle (default 5)")
        parser.add_argument("--once", action="store_true",
                            help="one pass: queue what is due, run queued tasks, exit")

    def handle(self, *args, interval, once, **_):
        self.running = True

        def stop(signum, frame):
            self.running = False

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        worker_id = get_random_string(32)
        self.stdout.write(f"worker {worker_id} started")
        while self.running:
            close_old_connections()
            queued = enqueue_due_syncs()
            if queued:
                self.stdout.write(f"queued nightly sync for practice ids {queued}")
            process_all_inboxes()  # HL7 messages the MLLP listener accepted
            enqueue_tick()  # due outreach steps and queued messages
            # Drain what is queued, then come back to the schedule; a SIGTERM lets the
            # task in hand finish (its sync commits or rolls back whole).
            Worker(queue_names=[DEFAULT_TASK_QUEUE_NAME], interval=0, batch=True,
                   backend_name=DEFAULT_TASK_BACKEND_ALIAS, startup_delay=False, max_tasks=None,
                   worker_id=worker_id, excluded_queue_names=[]).run()
            if once:
                break
            deadline = time.monotonic() + interval
            while self.running and time.monotonic() < deadline:
                time.sleep(0.2)
        self.stdout.write("worker stopped")
