import sys

from django.core.management.base import BaseCommand

from practicesync.cli import cli_actor, practice_arg, print_json, usage_error
from practicesync.practices import actions
from practicesync.practices.models import Membership


class Command(BaseCommand):
    help = "Give a person a role at a practice."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add")
        add.add_argument("--practice", required=True)
        add.add_argument("--email", required=True)
        add.add_argument("--role", required=True, choices=[r.value for r in Membership.Role])
        add.add_argument("--password-stdin", action="store_true",
                         help="read the password from standard input")
        add.add_argument("--json", action="store_true")

    def handle(self, *args, action, practice, email, role, password_stdin, json, **_):
        password = sys.stdin.readline().rstrip("\n") if password_stdin else None
        if password_stdin and not password:
            raise usage_error("no password on standard input")
        membership = actions.add_staff(actor=cli_actor(), practice=practice_arg(practice),
                                       email=email, role=role, password=password)
        data = {"practice": membership.practice.slug, "email": membership.user.email,
                "role": membership.role}
        if json:
            print_json(self, data)
        else:
            self.stdout.write(f"{data['email']} is {role} at {data['practice']}")
