"""Which process owns a piece of work, and whether that process still runs.

A run a process was killed in (kill -9, OOM, power) never finishes its own row. Its owner,
"host:pid:start", says whether it can still be running: on the same host the pid must exist
with the same start time (pids are reused); on another host nobody here can tell.
"""

import functools
import os
import socket

from practicesync.numbers import is_digits


def _start_time(pid: int) -> str | None:
    """The process's start, in clock ticks since boot (/proc/<pid>/stat field 22); None when
    no such process runs. The command name in field 2 may hold spaces and parentheses: the
    fields after it are counted from the last ")"."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: the pid alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    return stat.rsplit(")", 1)[1].split()[19]


def this_process() -> str:
    return _owner(os.getpid())  # by pid: a forked child is another process


@functools.cache
def _owner(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def is_alive(owner: str) -> bool | None:
    """True or False for a process of this host; None for another host's, or no owner."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not is_digits(parts[1]):
        return None
    host, pid, started = parts
    if host != socket.gethostname():
        return None
    now = _start_time(int(pid))
    return now is not None and (now == started or "?" in (now, started))
