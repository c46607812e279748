"""One engine measuring on a board at a time, held by the engine itself.

The board's lease (`farm.engine.lease`) keeps two farms from *sending* tasks to
one board at once, but it is held by a process beside the engine: when a head's
host vanishes without closing its connection, that process stops hearing
renewals and lets the lease go after its time to live, while the engine it left
behind may still be in a long run. A second farm would then take the lease and
measure beside it.

So the engine also holds a lock of its own for exactly the length of each task:
an exclusive ``flock`` on a file in the board's cache directory (the request's
``board_lock``). A run that finds it held waits for it, and its result says how
long and for whom; the kernel drops the lock with the process, so a killed
engine never leaves it held. Standard library only: it runs on the board.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class BoardLockError(RuntimeError):
    """The board's measuring lock cannot be opened (the task fails, saying where)."""


@dataclass
class Waited:
    """How long a run waited for the board, and who held it when it asked (None: nobody)."""

    seconds: float = 0.0
    holder: dict[str, Any] | None = None

    def warning(self) -> str | None:
        if self.holder is None:
            return None
        h = self.holder
        who = f"pid {h.get('pid', '?')}" + (f" task {h['task_id']}" if h.get("task_id") else "")
        return f"waited {self.seconds:.1f} s for another engine measuring on this board ({who})"


@contextlib.contextmanager
def hold(path: str | None, task_id: str | None) -> Iterator[Waited]:
    """Hold the board's measuring lock at ``path`` for the block (nothing if ``None``).

    The wait has no limit of its own: the station that sent the task stops it at the
    task's deadline, and a process that is killed lets go of what it held.
    """
    waited = Waited()
    if path is None:
        yield waited
        return
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise BoardLockError(f"board lock {path}: {e.strerror or e}") from None
    try:
        began = time.monotonic()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waited.holder = _holder(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited.seconds = time.monotonic() - began
        me = json.dumps({"pid": os.getpid(), "task_id": task_id, "since": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode(), 0)
        yield waited
    finally:
        os.close(fd)  # the lock goes with the descriptor


def _holder(fd: int) -> dict[str, Any]:
    """What the holder wrote into the lock file, or what can be said without it."""
    try:
        found = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
