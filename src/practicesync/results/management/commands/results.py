from django.core.management.base import BaseCommand

from practicesync.cli import cli_actor, practice_arg, print_json, usage_error
from practicesync.imports import add_import_subcommands, run_import_command
from practicesync.results.actions import (
    NotOnChecklist,
    mark_checklist_done,
    set_template_auto_start,
)
from practicesync.results.importer import sync_results
from practicesync.results.models import ResultGroup, ResultsTemplate
from practicesync.results.polling import poll_pms_results

FORMATS = ("csv: the actioned-results CSV; hl7: ORU^R01 messages in a file or a folder of "
           "*.hl7/*.txt/*.msg files; fhir: DiagnosticReports (with their Patients and Observations) "
           "in FHIR R4 Bundles or resource files, a file or a folder of *.json")


class Command(BaseCommand):
    help = "Import doctor-actioned results and decide each patient's group for the day."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add_import_subcommands(sub, what="actioned results", formats=FORMATS)

        done = sub.add_parser("checklist-done", help="tick a checklist group done (Recalls > "
                                                     "Summary)")
        done.add_argument("--practice", required=True)
        done.add_argument("--group", required=True, type=int)
        done.add_argument("--json", action="store_true")

        template = sub.add_parser("template", help="turn a Results template's auto-start on "
                                                   "or off")
        template.add_argument("--practice", required=True)
        template.add_argument("--action-key", required=True,
                              help="e.g. non_urgent_appointment (BP) or discuss (MD)")
        template.add_argument("--auto-start", required=True, choices=["on", "off"])
        template.add_argument("--json", action="store_true")

    def handle(self, *args, action, **opts):
        getattr(self, action.replace("-", "_"))(**opts)

    def template(self, *, practice, action_key, auto_start, json, **_):
        found = ResultsTemplate.objects.filter(practice=practice_arg(practice),
                                               action_key=action_key).first()
        if found is None:
            raise usage_error(f"no Results template for {action_key!r} at {practice}")
        found = set_template_auto_start(actor=cli_actor(), template=found,
                                        auto_start=auto_start == "on")
        data = {"template": found.name, "action_key": found.action_key,
                "auto_start": found.auto_start}
        if json:
            print_json(self, data)
        else:
            self.stdout.write(f"{found.name}: auto-start {auto_start}")

    def checklist_done(self, *, practice, group, json, **_):
        found = ResultGroup.objects.filter(practice=practice_arg(practice), id=group).first()
        if found is None:
            raise usage_error(f"no result group {group} at {practice}")
        try:
            found = mark_checklist_done(actor=cli_actor(), group=found)
        except NotOnChecklist as e:
            raise usage_error(str(e)) from e
        data = {"group_id": found.id, "checklist_done_by": found.checklist_done_by,
                "checklist_done_at": found.checklist_done_at}
        if json:
            print_json(self, data)
        else:
            self.stdout.write(f"group {found.id} done by {found.checklist_done_by}")

    def sync(self, *, practice, source, json, format="csv", **_):
        run_import_command(self, lambda: sync_results(
            practice=practice_arg(practice), source=source, actor=cli_actor(), fmt=format),
            json=json, nothing="no results", id_field="result_id")

    def poll(self, *, practice, source, json, **_):
        run_import_command(self, lambda: poll_pms_results(
            practice=practice_arg(practice), source=source, actor=cli_actor()),
            json=json, nothing="no results", id_field="result_id")
