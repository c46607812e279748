"""Processes on this machine, read from /proc: who is whose child, who is still alive.

Killing "everything something started" needs the process tree: Ray's agents and
sshd's sessions retitle themselves or call ``setsid``, so neither their process
group, their command line nor (after ``setproctitle`` rewrites it) the
environment block ``/proc`` shows says whom they belong to. Their parent does.
"""

from __future__ import annotations

import os


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(*pids: int) -> list[int]:
    """Every process below ``pids`` (not ``pids`` themselves), from one /proc snapshot."""
    children = _children()
    found: list[int] = []
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def started(pid: int) -> int | None:
    """When the process started (clock ticks after boot), None if it is gone or a zombie.

    A pid with the same start time is the same process: one that died and whose pid
    went to another process is not mistaken for it.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    return None if fields[0] == b"Z" else int(fields[19])
