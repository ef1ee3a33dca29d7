from django.core.management.base import BaseCommand

from practicesync.cli import USAGE, cli_actor, exit_with, practice_arg, print_json, usage_error
from practicesync.outreach.actions import TextRejected
from practicesync.outreach.messaging import (
    CORRECTION_BATCHES,
    DIRECT_CHANNELS,
    BadFilter,
    BulkNotAllowed,
    approve_bulk,
    bulk_status,
    confirm_bulk,
    correct_bulk,
    create_bulk,
    halt_bulk,
    preview_bulk,
    release_bulk,
    same_bulk_recently,
    save_template,
    template_by_name,
)
from practicesync.outreach.models import BulkMessage, MessageTemplate
from practicesync.patients.models import Patient
from practicesync.practices.models import Membership


def actor_arg(practice, email: str | None) -> str:
    """Who acts: a named staff member of this practice (so two people can approve on one
    machine), or the person logged in to it."""
    if email is None:
        return cli_actor()
    if not Membership.objects.filter(practice=practice, user__email__iexact=email.strip()).exists():
        raise usage_error(f"{email} is not a staff member of {practice.slug}")
    return email.strip().lower()


class Command(BaseCommand):
    help = ("Bulk messages from saved templates: preview who would get one (and who not, and "
            "why); send it after --confirm (more than PRACTICESYNC_BULK_APPROVAL_OVER recipients "
            "need a second staff member's approval); the first batch goes, the rest after "
            "release; halt stops it; correct sends a correction to the patients it reached.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        template = sub.add_parser("template", help="save or list the practice's bulk templates")
        template_sub = template.add_subparsers(dest="template_action", required=True)
        save = template_sub.add_parser("save", help="save (or replace) a template; the text is "
                                                    "scanned for clinical details and identifiers")
        save.add_argument("--practice", required=True)
        save.add_argument("--name", required=True)
        save.add_argument("--channel", required=True, choices=DIRECT_CHANNELS)
        save.add_argument("--body", required=True,
                          help="the text; may use {first_name}, {practice_name}, {booking_link}")
        save.add_argument("--subject", default="", help="email subject")
        self._as(save)
        save.add_argument("--json", action="store_true")
        listing = template_sub.add_parser("list", help="the practice's templates")
        listing.add_argument("--practice", required=True)
        listing.add_argument("--json", action="store_true")

        for name, what in (("preview", "who would get it, who not and why; sends nothing"),
                           ("send", "send the first batch (needs --confirm)")):
            p = sub.add_parser(name, help=what)
            p.add_argument("--practice", required=True)
            p.add_argument("--template", required=True, help="a saved template's name")
            p.add_argument("--channel", choices=DIRECT_CHANNELS,
                           help="optional check: the template's channel")
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
                self._as(p)
        for name, what in (("status", "where a bulk is, its messages per status, who was excluded"),
                           ("approve", "approve another staff member's bulk; sends its first batch"),
                           ("release", "send the rest of a bulk once its first batch has gone"),
                           ("halt", "stop a bulk at once: nothing more of it is sent"),
                           ("correct", "send a template to the patients a bulk reached")):
            p = sub.add_parser(name, help=what)
            p.add_argument("--practice", required=True)
            p.add_argument("--bulk", required=True, type=int, help="the bulk message's id")
            if name == "correct":
                p.add_argument("--template", required=True, help="a saved template's name")
                p.add_argument("--batch", choices=CORRECTION_BATCHES, default="all",
                               help="the patients of its first batch only, or everyone it reached")
            if name != "status":
                self._as(p)
            p.add_argument("--json", action="store_true")

    @staticmethod
    def _as(parser) -> None:
        parser.add_argument("--as", dest="as_email", metavar="EMAIL",
                            help="act as this staff member of the practice (default: you, as "
                                 "logged in to this machine)")

    def handle(self, *args, action, **opts):
        getattr(self, action)(**opts)

    def _refused(self, e: Exception, json: bool, prefix: str = "") -> None:
        message = prefix + str(e)
        if json:
            print_json(self, {"error": message, "problems": getattr(e, "problems", [])})
            exit_with(USAGE)
        raise usage_error(message) from e

    # --- templates ---

    def template(self, *, template_action, practice, json, **opts):
        practice = practice_arg(practice)
        if template_action == "list":
            rows = [{"name": t.name, "channel": t.channel, "subject": t.subject, "body": t.body,
                     "created_by": t.created_by, "updated_at": t.updated_at.isoformat()}
                    for t in MessageTemplate.objects.filter(practice=practice)]
            if json:
                return print_json(self, rows)
            for row in rows:
                self.stdout.write(f"{row['name']} ({row['channel']}): {row['body']}")
            return None
        try:
            saved = save_template(actor=actor_arg(practice, opts["as_email"]), practice=practice,
                                  name=opts["name"], channel=opts["channel"], body=opts["body"],
                                  subject=opts["subject"])
        except TextRejected as e:
            return self._refused(e, json, "not saved: the text was refused: ")
        except ValueError as e:
            return self._refused(e, json, "not saved: ")
        if json:
            print_json(self, {"saved": True, "name": saved.name, "channel": saved.channel,
                              "template_id": saved.id})
        else:
            self.stdout.write(f"template {saved.name!r} ({saved.channel}) saved")

    # --- preview and send ---

    def _filter(self, opts) -> dict:
        keys = ("status", "digital", "age_min", "age_max", "has_mobile", "has_email", "pms_ids",
                "family_name_prefix")
        found = {k: opts[k] for k in keys if opts.get(k) is not None}
        if "digital" in found:
            found["digital"] = found["digital"] == "yes"
        return found

    def _template(self, practice, name, channel=None) -> MessageTemplate:
        try:
            template = template_by_name(practice, name)
        except BulkNotAllowed as e:
            raise usage_error(str(e)) from e
        if channel and channel != template.channel:
            raise usage_error(f"template {template.name!r} is for {template.channel}, not {channel}")
        return template

    def _preview(self, practice, template, recipient_filter) -> dict:
        try:
            return preview_bulk(practice=practice, recipient_filter=recipient_filter,
                                template=template).as_json()
        except BadFilter as e:
            raise usage_error(str(e)) from e

    def _refuse(self, json, message, data) -> None:
        if json:
            print_json(self, {**data, "error": message})
            exit_with(USAGE)
        self._show_preview(data)
        raise usage_error(message)

    def preview(self, *, practice, template, channel, json, **opts):
        practice = practice_arg(practice)
        data = self._preview(practice, self._template(practice, template, channel),
                             self._filter(opts))
        if data["problems"]:
            return self._refuse(json, "the text would be refused: " + "; ".join(data["problems"]),
                                data)
        if json:
            print_json(self, data)
        else:
            self._show_preview(data)

    def send(self, *, practice, template, channel, json, confirm, again, as_email, **opts):
        practice = practice_arg(practice)
        template = self._template(practice, template, channel)
        recipient_filter = self._filter(opts)
        data = self._preview(practice, template, recipient_filter)
        if data["problems"]:
            return self._refuse(json, "not sent: the text was refused: " + "; ".join(data["problems"]),
                                data)
        if not confirm:
            return self._refuse(json, f"not sent: {data['recipients']} patients would get this "
                                      f"{data['channel']}; add --confirm to send it", data)
        if not again and (earlier := same_bulk_recently(
                practice=practice, recipient_filter=recipient_filter, template=template)):
            when = ("is waiting for approval" if earlier.status == BulkMessage.Status.DRAFT
                    else f"was confirmed at {earlier.confirmed_at:%Y-%m-%d %H:%M %Z}")
            return self._refuse(json, f"not sent: bulk {earlier.id} with this text and filter "
                                      f"{when}; add --again to send it a second time", data)
        actor = actor_arg(practice, as_email)
        try:
            bulk = create_bulk(actor=actor, practice=practice, recipient_filter=recipient_filter,
                               template=template)
            # More recipients than one person may send to alone: the draft waits for approval.
            status = bulk_status(bulk) if bulk.approval_needed else confirm_bulk(actor=actor,
                                                                                 bulk=bulk)
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
        if data["approval_needed"]:
            self.stdout.write("needs a second staff member's approval before anything is sent")
        if data["recipients"] > data["first_batch"]:
            self.stdout.write(f"the first {data['first_batch']} go out first; the rest after "
                              f"'bulk release'")
        if data["held_by_stale_sync"]:
            self.stdout.write("held: the last full patient sync is too old; nothing goes out "
                              "until a sync succeeds")

    # --- one bulk: status, approve, release, halt, correct ---

    def _bulk(self, practice, bulk_id) -> BulkMessage:
        # Scoped to the practice: another practice's bulk id is unknown here.
        found = BulkMessage.objects.filter(practice=practice, id=bulk_id).first()
        if found is None:
            raise usage_error(f"no bulk message {bulk_id} at {practice.slug}")
        return found

    def status(self, *, practice, bulk, json, **_):
        self._show_status(bulk_status(self._bulk(practice_arg(practice), bulk)), json)

    def _step(self, step, *, practice, bulk, json, as_email, **_):
        practice = practice_arg(practice)
        found = self._bulk(practice, bulk)
        actor = actor_arg(practice, as_email)
        try:
            status = step(actor=actor, bulk=found)
        except (TextRejected, BulkNotAllowed) as e:
            return self._refused(e, json)
        self._show_status(status, json)

    def approve(self, **opts):
        self._step(approve_bulk, **opts)

    def release(self, **opts):
        self._step(release_bulk, **opts)

    def halt(self, **opts):
        self._step(halt_bulk, **opts)

    def correct(self, *, practice, template, batch, **opts):
        found = practice_arg(practice)
        template = self._template(found, template)

        def step(**kwargs):
            return bulk_status(correct_bulk(template=template, batch=batch, **kwargs))

        self._step(step, practice=practice, **opts)

    def _show_status(self, status, json) -> None:
        if json:
            print_json(self, status)
            return
        counts = ", ".join(f"{k} {v}" for k, v in status["by_status"].items() if v) or "no messages"
        excluded = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in status["excluded"].items() if v)
        self.stdout.write(f"bulk {status['bulk_id']} ({status['phase']}, {status['channel']}, "
                          f"template {status['template']!r}): {counts}"
                          + (f"; excluded: {excluded}" if excluded else ""))
        if status["corrects"]:
            self.stdout.write(f"corrects bulk {status['corrects']}")
        if status["phase"] == BulkMessage.Phase.DRAFT and status["approval_needed"]:
            self.stdout.write(f"waiting for a second staff member's approval ({status['recipients']} "
                              f"recipients): bulk approve --bulk {status['bulk_id']} --as EMAIL")
        if status["phase"] == BulkMessage.Phase.FIRST_BATCH:
            first = ", ".join(f"{k} {v}" for k, v in status["first_batch"]["by_status"].items() if v)
            self.stdout.write(f"first batch: {first or 'no messages'}; {status['waiting']} wait for "
                              f"bulk release --bulk {status['bulk_id']}")
        if status["phase"] == BulkMessage.Phase.HALTED:
            self.stdout.write(f"halted by {status['halted_by']}")
        if status["held_by_stale_sync"] and status["by_status"]["queued"]:
            self.stdout.write("held: the last full patient sync is too old; nothing goes out "
                              "until a sync succeeds")
        for s in status["skipped"]:
            self.stdout.write(f"  {s['pms_id'] or 'patient ' + str(s['patient_id'])}: {s['why']}")
