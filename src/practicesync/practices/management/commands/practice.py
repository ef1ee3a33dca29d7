import datetime as dt
import zoneinfo

from django.core.management.base import BaseCommand

from practicesync.cli import cli_actor, practice_arg, print_json, usage_error
from practicesync.connectors.profiles import PROFILES
from practicesync.practices import actions
from practicesync.practices.models import Practice


class Command(BaseCommand):
    help = "Create practices, record their Patient Sync permission, schedule the nightly sync."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a practice (a tenant)")
        create.add_argument("--name", required=True)
        create.add_argument("--pms", required=True, choices=sorted(PROFILES))
        create.add_argument("--country", choices=[c.value for c in Practice.Country],
                            help="default: the PMS's country (docman10 GB, others AU)")
        create.add_argument("--timezone", help="IANA name; default from the country")
        create.add_argument("--slug", help="default: from the name")
        create.add_argument("--json", action="store_true")

        permit = sub.add_parser("permit", help="record the practice's permission and DPIA")
        permit.add_argument("--practice", required=True)
        permit.add_argument("--granted-by", required=True)
        permit.add_argument("--dpia-ref", required=True)
        permit.add_argument("--json", action="store_true")

        schedule = sub.add_parser("schedule", help="where and when the nightly sync reads")
        schedule.add_argument("--practice", required=True)
        schedule.add_argument("--source", required=True, help="path or URL of the list")
        schedule.add_argument("--at", help="practice-local time HH:MM (default 02:00)")
        schedule.add_argument("--format", dest="fmt", choices=["csv", "hl7", "fhir"],
                              default="csv", help="how the list is read (as patients sync)")
        schedule.add_argument("--json", action="store_true")

        hl7 = sub.add_parser("hl7", help="HL7 v2 / FHIR feed settings: when `mllp` answers, "
                                         "which identifier system is the PMS record number")
        hl7.add_argument("--practice", required=True)
        hl7.add_argument("--ack-mode", choices=Practice.Hl7AckMode.values,
                         help="commit: ACK once stored (default); original: ACK once applied "
                              "(`mllp --mode` still overrides)")
        hl7.add_argument("--pms-id-system",
                         help="PID-3 assigning authority (or OID) / FHIR identifier system of "
                              "the PMS record number; '' for the default (type PI, then MR)")
        hl7.add_argument("--json", action="store_true")

    def handle(self, *args, action, **opts):
        practice = getattr(self, action)(**opts)
        data = {"slug": practice.slug, "name": practice.name, "pms": practice.pms,
                "country": practice.country, "timezone": practice.timezone,
                "sync_permitted": practice.sync_permitted,
                "permission_granted_by": practice.permission_granted_by or None,
                "dpia_ref": practice.dpia_ref or None,
                "list_source": practice.list_source or None,
                "next_sync_due": practice.next_sync_due,
                "hl7_ack_mode": practice.hl7_ack_mode,
                "pms_id_system": practice.pms_id_system or None}
        if opts["json"]:
            print_json(self, data)
        else:
            self.stdout.write(f"{action}: {practice.slug} ({practice.name})")

    def create(self, *, name, pms, country, timezone, slug, **_):
        if timezone:
            try:
                zoneinfo.ZoneInfo(timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
                raise usage_error(f"--timezone {timezone!r} is not an IANA time zone") from e
        return actions.create_practice(actor=cli_actor(), name=name, pms=pms, country=country,
                                       timezone_name=timezone, slug=slug)

    def permit(self, *, practice, granted_by, dpia_ref, **_):
        if not granted_by.strip() or not dpia_ref.strip():
            raise usage_error("--granted-by and --dpia-ref must not be blank")
        return actions.permit_sync(actor=cli_actor(), practice=practice_arg(practice),
                                   granted_by=granted_by.strip(), dpia_ref=dpia_ref.strip())

    def schedule(self, *, practice, source, at, fmt, **_):
        try:
            at_time = dt.time.fromisoformat(at) if at else None
        except ValueError as e:
            raise usage_error(f"--at {at!r} is not a time (HH:MM)") from e
        return actions.schedule_nightly_sync(actor=cli_actor(), practice=practice_arg(practice),
                                             source=source, fmt=fmt, at=at_time)

    def hl7(self, *, practice, ack_mode, pms_id_system, **_):
        if ack_mode is None and pms_id_system is None:
            raise usage_error("give --ack-mode and/or --pms-id-system")
        return actions.set_hl7_settings(actor=cli_actor(), practice=practice_arg(practice),
                                        ack_mode=ack_mode, pms_id_system=pms_id_system)
