"""The process and the board it runs on: thread and CPU settings, and facts to report.

A warm engine serves many tasks in one process, so a task that names no
thread count or affinity gets the process's *original* settings back rather
than whatever the previous task left.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sys
import time

import torch

from farm.engine import memory

_ORIGINAL_THREADS = torch.get_num_threads()
_ORIGINAL_AFFINITY = (
    tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else None
)


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None: the process default); return the count in force."""
    torch.set_num_threads(threads or _ORIGINAL_THREADS)
    return torch.get_num_threads()


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
        try:
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            tids = []
        for tid in tids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(tid, target)  # unless the thread ended meanwhile
    return sorted(os.sched_getaffinity(0))


def cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe() -> dict:
    """Facts that explain a measurement: versions, CPU, torch back ends."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "system": platform.system(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": cpu_count(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cuda": torch.cuda.is_available(),
        "clock": time.get_clock_info("monotonic").implementation,
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    return info


def ping(path: str | None = None) -> dict:
    """What ``farm inventory check`` asks a board: who are you, what is free."""
    info = describe()
    info["executable"] = sys.executable
    info["engine_file"] = __file__  # tells a zip-shipped engine from an installed one
    info["mem_available_mb"] = memory.mem_available_mb()
    info["disk_free_mb"] = memory.disk_free_mb(path or "~")
    info["path"] = path or "~"
    return info
