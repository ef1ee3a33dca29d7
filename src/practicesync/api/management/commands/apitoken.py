from django.core.management.base import BaseCommand

from practicesync.api import actions
from practicesync.cli import cli_actor, practice_arg, print_json, usage_error
from practicesync.practices.models import Membership


def _row(token) -> dict:
    return {"practice": token.practice.slug, "name": token.name, "prefix": token.prefix,
            "role": token.role, "created_by": token.created_by, "created_at": token.created_at,
            "last_used_at": token.last_used_at, "revoked_at": token.revoked_at}


class Command(BaseCommand):
    help = "REST API tokens of a practice: create (the secret is shown once), list, revoke."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="make a token; prints its secret once")
        create.add_argument("--practice", required=True)
        create.add_argument("--name", required=True, help="who uses it; the audit log's actor")
        create.add_argument("--role", required=True, choices=Membership.Role.values,
                            help="what it may do, as a staff member of that role")
        create.add_argument("--json", action="store_true")
        listing = sub.add_parser("list", help="the practice's tokens (never their secrets)")
        listing.add_argument("--practice", required=True)
        listing.add_argument("--json", action="store_true")
        revoke = sub.add_parser("revoke", help="stop a token working, at once")
        revoke.add_argument("--practice", required=True)
        revoke.add_argument("--prefix", required=True)
        revoke.add_argument("--json", action="store_true")

    def handle(self, *args, action, practice, json, **opts):
        practice = practice_arg(practice)
        try:
            getattr(self, action)(practice=practice, json=json, **opts)
        except actions.TokenError as e:
            raise usage_error(str(e)) from e

    def create(self, *, practice, name, role, json, **_):
        token, secret = actions.create_token(actor=cli_actor(), practice=practice, name=name,
                                             role=role)
        if json:
            print_json(self, _row(token) | {"token": secret})
        else:
            self.stdout.write(f"{token.name} ({token.role}) at {practice.slug}, prefix "
                              f"{token.prefix}.\nToken (shown once; keep it secret):\n{secret}")

    def list(self, *, practice, json, **_):
        rows = [_row(t) for t in actions.list_tokens(actor=cli_actor(), practice=practice)]
        if json:
            print_json(self, {"practice": practice.slug, "tokens": rows})
            return
        for r in rows:
            state = f"revoked {r['revoked_at']:%Y-%m-%d}" if r["revoked_at"] else "live"
            used = f"{r['last_used_at']:%Y-%m-%d %H:%M}" if r["last_used_at"] else "never"
            self.stdout.write(f"{r['prefix']}  {r['name']}  {r['role']}  {state}  last used {used}")
        if not rows:
            self.stdout.write(f"{practice.slug} has no API tokens")

    def revoke(self, *, practice, prefix, json, **_):
        token = actions.revoke_token(actor=cli_actor(), practice=practice, prefix=prefix)
        if json:
            print_json(self, _row(token))
        else:
            self.stdout.write(f"revoked {token.prefix} ({token.name}) at {practice.slug}")
