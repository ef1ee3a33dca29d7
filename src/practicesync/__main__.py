"""The `practicesync` command: Django's management commands under the product's own name.

Multi-word commands in the design (`practice create`, `patients sync`, `sync now`) are
sub-commands of one Django command each, so `practicesync practice create ...` is
`manage.py practice create ...`.
"""

import os
import sys


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "practicesync.settings")
    from django.core.management import execute_from_command_line
    from django.db import DatabaseError, connection

    argv = list(sys.argv if argv is None else argv)
    try:
        execute_from_command_line(["practicesync", *argv[1:]])
    except DatabaseError as e:
        # A full disk, a read-only file or a dropped connection: one line for the operator
        # (the run itself is already recorded as failed where it could be). The error's text
        # is the database's, never row values.
        first_line = (str(e).splitlines() or [type(e).__name__])[0]
        print(f"practicesync: database error ({connection.settings_dict.get('NAME')}): "
              f"{first_line}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
