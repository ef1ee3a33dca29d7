import subprocess
import sys


def test_help_lists_the_product_commands():
    out = subprocess.run([sys.executable, "-m", "practicesync", "help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("practice", "patients", "accounts", "sync", "export", "worker", "serve",
                    "demo", "staff"):
        assert command in out
