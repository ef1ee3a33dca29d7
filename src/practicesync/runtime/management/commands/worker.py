import signal
import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections
from django.utils.crypto import get_random_string
from django_tasks import DEFAULT_TASK_BACKEND_ALIAS, DEFAULT_TASK_QUEUE_NAME, task_backends
from django_tasks_db.management.commands.db_worker import Worker

from practicesync.connectors.hl7v2.inbox import process_all_inboxes
from practicesync.outreach.tasks import enqueue_tick
from practicesync.patients.sync import close_interrupted_runs
from practicesync.patients.tasks import enqueue_due_syncs
from practicesync.practices.tasks import enqueue_due_purges

# How long Redis keeps a finished task's result (RQ's default is 500 seconds); the database
# backend keeps them until pruned.
RESULT_TTL = 7 * 24 * 60 * 60


def _uses_rq() -> bool:
    return type(task_backends[DEFAULT_TASK_BACKEND_ALIAS]).__name__ == "RQBackend"


class Command(BaseCommand):
    help = ("Run background work: queue each practice's nightly sync when due, apply accepted HL7 "
            "messages, send due outreach, and run tasks (queued in the database, or in Redis "
            "when PRACTICESYNC_TASKS_REDIS_URL is set).")

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=5.0,
                            help="seconds between passes when idle (default 5)")
        parser.add_argument("--once", action="store_true",
                            help="one pass: queue what is due, run queued tasks, exit")

    def handle(self, *args, interval, once, **_):
        self.running = True

        def stop(signum, frame):
            self.running = False

        def listen():
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)

        listen()
        worker_id = get_random_string(32)
        drain = self._rq_drain if _uses_rq() else self._db_drain
        self.stdout.write(f"worker {worker_id} started")
        while self.running:
            close_old_connections()
            close_interrupted_runs()  # left "running" by a killed worker or CLI
            queued = enqueue_due_syncs()
            if queued:
                self.stdout.write(f"queued nightly sync for practice ids {queued}")
            process_all_inboxes()  # HL7 messages the MLLP listener accepted
            enqueue_due_purges()  # each practice's daily retention purge
            enqueue_tick()  # due outreach steps and queued messages
            # Drain what is queued, then come back to the schedule; a SIGTERM lets the
            # task in hand finish (its sync commits or rolls back whole).
            if not drain(worker_id):
                self.running = False
            listen()
            if once:
                break
            deadline = time.monotonic() + interval
            while self.running and time.monotonic() < deadline:
                time.sleep(0.2)
        self.stdout.write("worker stopped")

    def _db_drain(self, worker_id: str) -> bool:
        Worker(queue_names=[DEFAULT_TASK_QUEUE_NAME], interval=0, batch=True,
               backend_name=DEFAULT_TASK_BACKEND_ALIAS, startup_delay=False, max_tasks=None,
               worker_id=worker_id, excluded_queue_names=[]).run()
        return True

    def _rq_drain(self, worker_id: str) -> bool:
        """Run what waits in Redis; False if a SIGTERM or SIGINT came meanwhile (RQ's own
        handlers take those while it works, and finish the task in hand first)."""
        import django_rq
        from django_tasks_rq import Job
        from rq import SimpleWorker
        from rq.exceptions import StopRequested

        # In this process, like the database worker: RQ's default worker starts a fresh
        # interpreter per task, which has no Django set up.
        worker = django_rq.get_worker(DEFAULT_TASK_QUEUE_NAME, job_class=Job,
                                      worker_class=SimpleWorker, name=worker_id,
                                      default_result_ttl=RESULT_TTL,
                                      log_job_description=False)  # its arguments
        try:
            worker.work(burst=True, logging_level="WARNING")
        except StopRequested:
            return False
        return worker._shutdown_requested_date is None
