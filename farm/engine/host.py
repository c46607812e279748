"""Threads and facts about the process that runs the task.

A warm engine serves many tasks in one process, so a task that names no thread
count gets the same default every time: one intra-op thread per CPU the task may
run on (its affinity), whatever the environment said when the process started
(``farm.engine.process`` has already removed inherited thread variables).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import platform
import socket
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import farm
from farm.engine import board, memory, process


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None: one per usable CPU); return the count in force."""
    import torch

    torch.set_num_threads(threads or process.usable_cpus())
    return torch.get_num_threads()


def apply_interop_threads(threads: int | None) -> int:
    """Set torch's inter-op threads where asked; return the count in force.

    Torch fixes the inter-op pool the first time it is used, so a warm engine can
    change it only before its first task: asking for another count afterwards
    is an error, never silently ignored.
    """
    import torch

    if threads is not None and threads != torch.get_num_interop_threads():
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError as exc:
            raise RuntimeError(
                f"inter-op threads are fixed at {torch.get_num_interop_threads()} in this "
                f"engine process and cannot become {threads}: {exc}"
            ) from exc
    return torch.get_num_interop_threads()


def engine_version() -> str:
    """``<farm version>+<sha256 of the engine's sources, 12 hex>``: which engine measured.

    Read through importlib.resources so it works inside the shipped zip too.
    """
    digest = hashlib.sha256()

    def add(folder: Any, prefix: str) -> None:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".py"):
                digest.update(f"{prefix}{entry.name}".encode())
                digest.update(entry.read_bytes())
            elif entry.is_dir() and entry.name != "__pycache__":
                add(entry, f"{prefix}{entry.name}/")  # the runtimes/ subpackage

    add(importlib.resources.files("farm.engine"), "")
    return f"{farm.__version__}+{digest.hexdigest()[:12]}"


_ENGINE_VERSION = engine_version()


def _torch_version() -> str | None:
    """torch's version by its metadata: a task that does not use torch does not import it
    (its memory would count against the runtime measured), and a board may have none."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.__version__
    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def describe() -> dict:
    """Facts that explain a measurement: versions, CPU, torch back ends (when torch is
    imported: a runtime without torch never imports it here)."""
    torch = sys.modules.get("torch")
    info = {
        "python": platform.python_version(),
        "torch": _torch_version(),
        "engine": _ENGINE_VERSION,
        "machine": platform.machine(),
        "system": platform.system(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": process.usable_cpus(),
        "mkldnn": torch.backends.mkldnn.is_available() if torch else None,
        "cuda": torch.cuda.is_available() if torch else None,
        "clock": time.get_clock_info("monotonic").implementation,
    }
    if torch is not None and torch.cuda.is_available():
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
    info["disk_free_mb"] = board.disk_free_mb(path or "~")
    info["path"] = path or "~"
    return info
