"""Processes on this machine: who is below whom, and whether one is still the same.

Killing "everything something started" needs the process tree: Ray's agents and
sshd's sessions retitle themselves or call ``setsid``, so neither their process
group, their command line nor (after ``setproctitle`` rewrites it) the
environment block ``/proc`` shows says whom they belong to. Their parent does.
"""

from __future__ import annotations

import psutil


def descendants(*pids: int) -> list[int]:
    """Every live process below ``pids`` (not ``pids`` themselves)."""
    found: list[int] = []
    for pid in pids:
        try:
            found += [child.pid for child in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return found


def started(pid: int) -> float | None:
    """When the process started (seconds since the epoch); None if it is gone or a zombie.

    A pid with the same start time is the same process: one that died and whose pid
    went to another process is not mistaken for it.
    """
    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
