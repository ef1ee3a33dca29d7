from django.core.management.base import BaseCommand

from practicesync.cli import USAGE, cli_actor, exit_with, practice_arg, print_json, usage_error
from practicesync.outreach.actions import TextRejected
from practicesync.outreach.messaging import (
    DIRECT_CHANNELS,
    BadFilter,
    BulkNotAllowed,
    bulk_status,
    cancel_bulk,
    confirm_bulk,
    create_bulk,
    preview_bulk,
    same_bulk_recently,
)
from practicesync.outreach.models import BulkMessage
from practicesync.patients.models import Patient


class Command(BaseCommand):
    help = ("Bulk messages: preview who would get one (and who not, and why), send it after "
            "--confirm, see its delivery status, cancel what has not gone yet.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        for name, what in (("preview", "who would get it, who not and why; sends nothing"),
                           ("send", "queue one message per recipient (needs --confirm)")):
            p = sub.add_parser(name, help=what)
            p.add_argument("--practice", required=True)
            p.add_argument("--channel", required=True, choices=DIRECT_CHANNELS)
            p.add_argument("--body", required=True,
                           help="the text; may use {first_name}, {practice_name}, {booking_link}")
            p.add_argument("--subject", default="", help="email subject")
            p.add_argument("--status", nargs="+", choices=Patient.Status.values,
                           help="registration status (default active; deceased and left patients "
                                "are only counted, never messaged)")
            p.add_argument("--digital", choices=("yes", "no"),
                           help="only patients who signed up themselves (yes) or not (no)")
            p.add_argument("--age-min", type=int)
            p.add_argument("--age-max", type=int)
            p.add_argument("--has-mobile", action="store_true", default=None)
            p.add_argument("--has-email", action="store_true", default=None)
            p.add_argument("--pms-id", dest="pms_ids", action="append", metavar="PMS_ID",
                           help="only these patients (repeat the option)")
            p.add_argument("--family-name-prefix")
            p.add_argument("--json", action="store_true")
            if name == "send":
                p.add_argument("--confirm", action="store_true",
                               help="really send (without it: the preview only)")
                p.add_argument("--again", action="store_true",
                               help="send even though the same bulk went out in the last day")
        for name, what in (("status", "messages of a bulk per status, and who was excluded"),
                           ("cancel", "stop the messages of a bulk that have not gone yet")):
            p = sub.add_parser(name, help=what)
            p.add_argument("--practice", required=True)
            p.add_argument("--bulk", required=True, type=int, help="the bulk message's id")
            p.add_argument("--json", action="store_true")

    def handle(self, *args, action, **opts):
        getattr(self, action)(**opts)

    # --- preview and send ---

    def _filter(self, opts) -> dict:
        keys = ("status", "digital", "age_min", "age_max", "has_mobile", "has_email", "pms_ids",
                "family_name_prefix")
        found = {k: opts[k] for k in keys if opts.get(k) is not None}
        if "digital" in found:
            found["digital"] = found["digital"] == "yes"
        return found

    def _preview(self, practice, channel, body, subject, recipient_filter) -> dict:
        try:
            return preview_bulk(practice=practice, recipient_filter=recipient_filter,
                                channel=channel, body=body, subject=subject).as_json()
        except BadFilter as e:
            raise usage_error(str(e)) from e

    def _refuse(self, json, message, data) -> None:
        if json:
            print_json(self, {**data, "error": message})
            exit_with(USAGE)
        self._show_preview(data)
        raise usage_error(message)

    def preview(self, *, practice, channel, body, subject, json, **opts):
        data = self._preview(practice_arg(practice), channel, body, subject, self._filter(opts))
        if data["problems"]:
            return self._refuse(json, "the text would be refused: " + "; ".join(data["problems"]),
                                data)
        if json:
            print_json(self, data)
        else:
            self._show_preview(data)

    def send(self, *, practice, channel, body, subject, json, confirm, again, **opts):
        practice = practice_arg(practice)
        recipient_filter = self._filter(opts)
        data = self._preview(practice, channel, body, subject, recipient_filter)
        if data["problems"]:
            return self._refuse(json, "not sent: the text was refused: " + "; ".join(data["problems"]),
                                data)
        if not confirm:
            return self._refuse(json, f"not sent: {data['recipients']} patients would get this "
                                      f"{channel}; add --confirm to send it", data)
        if not again and (earlier := same_bulk_recently(
                practice=practice, recipient_filter=recipient_filter, channel=channel, body=body,
                subject=subject)):
            return self._refuse(json, f"not sent: bulk {earlier.id} with this text and filter was "
                                      f"confirmed at {earlier.confirmed_at:%Y-%m-%d %H:%M %Z}; add "
                                      f"--again to send it a second time", data)
        actor = cli_actor()
        try:
            bulk = create_bulk(actor=actor, practice=practice, recipient_filter=recipient_filter,
                               channel=channel, body=body, subject=subject)
            status = confirm_bulk(actor=actor, bulk=bulk)
        except (TextRejected, BadFilter, BulkNotAllowed) as e:
            raise usage_error(f"not sent: {e}") from e
        self._show_status(status, json)

    def _show_preview(self, data) -> None:
        excluded = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in data["excluded"].items())
        self.stdout.write(f"{data['recipients']} patients would get this {data['channel']} "
                          f"({data['generic']} with the generic wording, no name); "
                          f"excluded {data['excluded_total']}: {excluded}")
        for label, key in (("subject", "sample_subject"), ("sample", "sample"),
                           ("sample (generic)", "sample_generic")):
            if data[key]:
                self.stdout.write(f"{label}: {data[key]}")
        if sms := data["sms"]:
            self.stdout.write(f"SMS: {sms['encoding']}, up to {sms['characters']} characters, "
                              f"{sms['segments']} segment(s) each, {sms['total_segments']} in all")

    # --- status and cancel ---

    def _bulk(self, practice, bulk_id) -> BulkMessage:
        # Scoped to the practice: another practice's bulk id is unknown here.
        found = BulkMessage.objects.filter(practice=practice_arg(practice), id=bulk_id).first()
        if found is None:
            raise usage_error(f"no bulk message {bulk_id} at {practice}")
        return found

    def status(self, *, practice, bulk, json, **_):
        self._show_status(bulk_status(self._bulk(practice, bulk)), json)

    def cancel(self, *, practice, bulk, json, **_):
        self._show_status(cancel_bulk(actor=cli_actor(), bulk=self._bulk(practice, bulk)), json)

    def _show_status(self, status, json) -> None:
        if json:
            print_json(self, status)
            return
        counts = ", ".join(f"{k} {v}" for k, v in status["by_status"].items() if v) or "no messages"
        excluded = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in status["excluded"].items() if v)
        self.stdout.write(f"bulk {status['bulk_id']} ({status['status']}, {status['channel']}): "
                          f"{counts}" + (f"; excluded: {excluded}" if excluded else ""))
        for s in status["skipped"]:
            self.stdout.write(f"  {s['pms_id'] or 'patient ' + str(s['patient_id'])}: {s['why']}")
