import datetime as dt

from django.core.management.base import BaseCommand
from django.utils import timezone

from practicesync.cli import cli_actor, practice_arg, print_json, usage_error
from practicesync.practices import actions


class Command(BaseCommand):
    help = ("How long raw inbound messages and message texts are kept, and purging what is "
            "older (the worker does it daily).")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        set_ = sub.add_parser("set", help="set the practice's retention periods")
        set_.add_argument("--practice", required=True)
        set_.add_argument("--raw-days", type=int, help="raw inbound HL7/FHIR messages "
                                                       "(unresolved dead letters: twice this)")
        set_.add_argument("--bodies-days", type=int,
                          help="texts of outreach messages; the messages' status and times stay")
        set_.add_argument("--json", action="store_true")

        purge = sub.add_parser("purge", help="purge what the practice no longer keeps, now")
        purge.add_argument("--practice", required=True)
        purge.add_argument("--now", help="ISO 8601: purge as if it were that time")
        purge.add_argument("--json", action="store_true")

    def handle(self, *args, action, **opts):
        {"set": self.set_periods, "purge": self.purge}[action](**opts)

    def set_periods(self, *, practice, raw_days, bodies_days, json, **_):
        if raw_days is None and bodies_days is None:
            raise usage_error("give --raw-days, --bodies-days or both")
        try:
            practice = actions.set_retention(actor=cli_actor(), practice=practice_arg(practice),
                                             raw_days=raw_days, bodies_days=bodies_days)
        except ValueError as e:
            raise usage_error(str(e)) from e
        data = {"slug": practice.slug, "raw_days": practice.retain_raw_messages_days,
                "bodies_days": practice.retain_message_bodies_days}
        if json:
            print_json(self, data)
        else:
            self.stdout.write(f"{practice.slug}: raw messages kept {data['raw_days']} days, "
                              f"message texts {data['bodies_days']} days")

    def purge(self, *, practice, now, json, **_):
        practice = practice_arg(practice)
        if now:
            try:
                now = dt.datetime.fromisoformat(now)
            except ValueError as e:
                raise usage_error(f"--now {now!r} is not an ISO 8601 time") from e
            if now.tzinfo is None:
                now = now.replace(tzinfo=practice.tz)
            if now > timezone.now():
                # A time to come would purge what the retention period still keeps.
                raise usage_error(f"--now {now.isoformat()} is in the future")
        counts = actions.purge_expired(practice=practice, actor=cli_actor(), now=now)
        if json:
            print_json(self, {"slug": practice.slug, **counts})
        else:
            self.stdout.write(", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
                              + " purged")
