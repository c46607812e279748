"""The engine owns its process: environment, priority and CPUs, whoever started it.

An engine started from a Ray worker inherits ``OMP_NUM_THREADS=1`` (Ray forces it
for workers without CPUs) and the worker's niceness (15); one started over SSH
inherits whatever the login shell set. Measuring under either silently is the
worst kind of wrong number, so:

- ``clean_environment`` runs *before torch is imported* and removes the thread-
  count variables the engine did not set itself; torch's thread pools are then
  sized by the engine's own request, and what was removed is reported;
- ``apply_nice`` sets the niceness the request asks for (0 by default) on every
  thread of the process, and raises :class:`PriorityError` when the OS refuses
  (lowering niceness needs CAP_SYS_NICE): a task never runs at a priority it did
  not ask for;
- ``apply_affinity`` pins every thread to the CPUs asked for (or the original set).

Standard library only: this module is imported before torch.
"""

from __future__ import annotations

import contextlib
import os

# Variables that size a thread pool of torch or a library beneath it. Torch reads
# them at import (OpenMP, MKL, OpenBLAS) and keeps what they said.
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "TORCH_NUM_THREADS",
)

_INHERITED: dict[str, str] = {}
_ORIGINAL_AFFINITY = (
    tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else None
)


class PriorityError(OSError):
    """The OS refused the niceness the task asked for."""


def clean_environment() -> dict[str, str]:
    """Remove inherited thread-count variables; returns (and remembers) what was removed.

    Call it before anything imports torch. Idempotent: a second call removes
    nothing new and still returns what the first removed.
    """
    for name in THREAD_ENV:
        value = os.environ.pop(name, None)
        if value is not None:
            _INHERITED[name] = value
    return dict(_INHERITED)


def inherited_environment() -> dict[str, str]:
    """What ``clean_environment`` removed (empty when it was never called)."""
    return dict(_INHERITED)


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []


def current_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


def apply_nice(nice: int) -> int:
    """Set every thread's niceness to ``nice``; returns the niceness in force.

    On Linux niceness belongs to a thread, and torch's workers already exist in a
    warm engine, so each thread in /proc/self/task is set. Raises
    :class:`PriorityError` when the OS refuses (no privilege to lower it).
    """
    have = current_nice()
    if have == nice:
        return have
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError as exc:
        raise PriorityError(
            f"engine runs at nice {have} and may not change it to {nice} "
            "(lowering niceness needs root or CAP_SYS_NICE; start the engine at the "
            "niceness you ask for, or ask for nice >= its own)"
        ) from exc
    for tid in _threads():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.setpriority(os.PRIO_PROCESS, tid, nice)  # unless the thread ended meanwhile
    return current_nice()


def apply_affinity(cpus: tuple[int, ...] | None) -> list[int] | None:
    """Pin every thread of this process to ``cpus`` (None: the original set).

    ``sched_setaffinity(0, ...)`` moves only the calling thread on Linux, and
    torch's worker threads already exist, so each thread in /proc/self/task
    is moved. Returns the affinity in force, or None where the OS has none.
    """
    if not hasattr(os, "sched_setaffinity"):
        if cpus is not None:
            raise OSError("CPU affinity is not supported on this platform")
        return None
    target = set(cpus if cpus is not None else _ORIGINAL_AFFINITY or ())
    if target:
        os.sched_setaffinity(0, target)
        for tid in _threads():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(tid, target)
    return sorted(os.sched_getaffinity(0))


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
