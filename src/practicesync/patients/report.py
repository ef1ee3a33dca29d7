"""A sync run as people read it on a terminal: the diff, the errors, the counts."""

from rich.table import Table

from .reconcile import COUNTERS


def print_report(report, console, *, dry_run: bool) -> None:
    if report.failure:
        console.print(f"[bold red]Sync failed:[/] {report.failure}")
    plan = report.plan
    if plan is not None:
        for create in plan.creates:
            r = create.record
            console.print(f"+ {r.pms_id} {r.given_name} {r.family_name} (new, non-digital"
                          f"{', ' + r.status if r.status != 'active' else ''})")
        for update in plan.updates:
            who = update.record.pms_id or update.record.account_id or f"#{update.record.id}"
            for c in update.changes:
                console.print(f"~ {who} {c.field}: {c.old!s} -> {c.new!s} ({c.rule})")
        if plan.refused:
            console.print(f"[bold red]Refused:[/] {plan.refused.detail}")
        for review in plan.reviews:
            console.print(f"? {review.kind}: {review.detail}")
    for e in report.errors:
        console.print(f"! row {e['row']} ({e['pms_id'] or 'no pms_id'}) {e['field']}: "
                      f"{e['message']}")
    table = Table(title="Dry run: nothing written" if dry_run else f"Run {report.run_id}: "
                  f"{report.status}")
    for name in COUNTERS:
        table.add_column(name.replace("_", " "), justify="right")
    table.add_row(*(str(report.summary[name]) for name in COUNTERS))
    console.print(table)
    console.print(f"errors: {len(report.errors)}")
