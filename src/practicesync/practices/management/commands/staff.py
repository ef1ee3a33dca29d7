import sys

from django.core.management.base import BaseCommand, CommandError

from practicesync.accounts.actions import reset_mfa, unlock_login
from practicesync.accounts.mfa import mfa_required
from practicesync.cli import FAILED, cli_actor, practice_arg, print_json, usage_error
from practicesync.practices import actions
from practicesync.practices.models import Membership


class Command(BaseCommand):
    help = ("Give a person a role at a practice, or reset the two-step login of a member who "
            "lost their authenticator.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add")
        add.add_argument("--practice", required=True)
        add.add_argument("--email", required=True)
        add.add_argument("--role", required=True, choices=[r.value for r in Membership.Role])
        add.add_argument("--password-stdin", action="store_true",
                         help="read the password from standard input")
        add.add_argument("--json", action="store_true")
        reset = sub.add_parser(
            "mfa-reset", help="remove a member's authenticator and backup codes; an admin sets "
                              "up a new authenticator at their next login")
        reset.add_argument("--practice", required=True)
        reset.add_argument("--email", required=True)
        reset.add_argument("--json", action="store_true")

    def handle(self, *args, action, **options):
        if action == "mfa-reset":
            self.mfa_reset(**options)
        else:
            self.add(**options)

    def add(self, *, practice, email, role, password_stdin, json, **_):
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

    def mfa_reset(self, *, practice, email, json, **_):
        practice = practice_arg(practice)
        membership = (Membership.objects.select_related("user")
                      .filter(practice=practice, user__username=email.strip().lower()).first())
        if membership is None:
            raise CommandError(f"{email} is not a member of {practice.slug}", returncode=FAILED)
        user = membership.user
        removed = reset_mfa(actor=cli_actor(), user=user,
                            why="reset from the command line (lost authenticator)")
        # Someone who lost their phone has often been locked out trying: let them in now.
        unlocked = unlock_login(actor=cli_actor(), user=user)
        data = {"practice": practice.slug, "email": user.username, "devices_removed": removed,
                "lockouts_cleared": unlocked}
        if json:
            print_json(self, data)
        else:
            self.stdout.write(
                f"Two-step login reset for {user.username}: {removed} device(s) removed"
                + (", login lockout lifted" if unlocked else "") + ". "
                + ("They set up a new authenticator at their next login."
                   if mfa_required(user) else "They can log in with their password."))
