"""What every practicesync command shares: exit codes, JSON output, practice lookup."""

import getpass
import json
import sys

from django.core.management.base import BaseCommand, CommandError

from practicesync.practices.access import UnknownPractice, practice_by_slug

OK, FAILED, USAGE = 0, 1, 2


def usage_error(message: str) -> CommandError:
    return CommandError(message, returncode=USAGE)


def practice_arg(slug: str):
    try:
        return practice_by_slug(slug)
    except UnknownPractice as e:
        raise usage_error(str(e)) from e


def print_json(command: BaseCommand, data) -> None:
    command.stdout.write(json.dumps(data, default=str))


def exit_with(code: int) -> None:
    """Django commands return 0 unless they raise; sync commands need 1 for row errors."""
    if code:
        sys.stdout.flush()
        sys.exit(code)


def cli_actor() -> str:
    return f"cli:{getpass.getuser()}"
