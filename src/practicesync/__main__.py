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

    argv = list(sys.argv if argv is None else argv)
    execute_from_command_line(["practicesync", *argv[1:]])


if __name__ == "__main__":
    main()
