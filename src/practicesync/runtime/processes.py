"""Which process owns a piece of work, and whether that process still runs.

A run a process was killed in (kill -9, OOM, power) never finishes its own row. Its owner,
"machine:pid:start", says whether it can still be running. "machine" is the host name, and
on Linux also the boot and the pid namespace, since containers may share a host name while
each has pids of its own. On the same machine the pid must exist with the same start time
(pids are reused); on another nobody here can tell.
"""

import functools
import os
import socket

from practicesync.numbers import is_digits

_PROC = os.path.exists("/proc/self/stat")


def _start_time(pid: int) -> str | None:
    """The process's start, in clock ticks since boot (/proc/<pid>/stat field 22); "?" when
    it runs but its start cannot be read; None when no such process runs. The command name
    in field 2 may hold spaces and parentheses: the fields after it are counted from the
    last ")"."""
    if _PROC:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[19]
        except FileNotFoundError:
            return None
        except OSError:
            pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?"


@functools.cache
def _machine() -> str:
    parts = [socket.gethostname()]
    if _PROC:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                parts.append(f.read().strip())
            parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
        except OSError:
            pass
    return "/".join(parts)


def this_process() -> str:
    return _owner(os.getpid())  # by pid: a forked child is another process


@functools.cache
def _owner(pid: int) -> str:
    return f"{_machine()}:{pid}:{_start_time(pid)}"


def is_alive(owner: str) -> bool | None:
    """True or False for a process of this machine; None for another machine's, or no
    owner."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not is_digits(parts[1]):
        return None
    machine, pid, started = parts
    if machine != _machine():
        return None
    now = _start_time(int(pid))
    return now is not None and (now == started or "?" in (now, started))
