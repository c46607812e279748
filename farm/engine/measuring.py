"""One engine measuring on a board at a time, held by the engine itself.

The board's lease (`farm.engine.lease`) keeps two farms from *sending* tasks to
one board at once, but it is held by a process beside the engine: when a head's
host vanishes without closing its connection, that process stops hearing
renewals and lets the lease go after its time to live, while the engine it left
behind may still be in a long run. A second farm would then take the lease and
measure beside it.

So the engine also holds a lock of its own for exactly the length of each task:
an exclusive ``flock`` on a board-wide file (the request's ``board_lock``). A
run that finds it held waits for it, and its result says how long and for
whom; the kernel drops the lock with the process, so a killed engine never
leaves it held. Standard library only: it runs on the board.

The lock is the *board's*, not an account's: two lab members with their own
accounts (their own cache directories) exclude each other. Its name comes from
the inventory's ``board_lock``: a bare name lives in the first of
``LOCK_DIRS`` the board has (world-writable and sticky on any Linux), an
absolute path is used as it is (its directory must let every account create
and open the file). ``open_shared`` creates it readable and writable by all,
and opens an existing one without ``O_CREAT``: with ``fs.protected_regular``
on, a sticky directory refuses ``O_CREAT`` of another user's file even where
its mode would allow it.
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

LOCK_DIRS = ("/run/lock", "/dev/shm", "/tmp")
"""Where a bare ``board_lock`` name lives: the first of these the board has."""


class BoardLockError(RuntimeError):
    """The board's measuring lock cannot be opened (the task fails, saying where)."""


def resolve(name: str) -> str:
    """The board-wide lock file for ``name``: an absolute path as it is, a bare name in
    the first of ``LOCK_DIRS`` that exists (every farm on the board finds the same)."""
    if os.path.isabs(name):
        return name
    for folder in LOCK_DIRS:
        if os.path.isdir(folder):
            return os.path.join(folder, name)
    raise BoardLockError(f"board lock {name}: none of {', '.join(LOCK_DIRS)} exists")


def open_shared(path: str) -> int:
    """A descriptor on the lock file at ``path``, created readable and writable by every
    account; an existing file (maybe another account's) is opened without ``O_CREAT``,
    read-only where its mode allows no more (a ``flock`` needs no write access)."""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            pass
        else:
            os.fchmod(fd, 0o666)  # the umask must not shut other accounts out
            return fd
        for mode in (os.O_RDWR, os.O_RDONLY):
            try:
                return os.open(path, mode)
            except FileNotFoundError:
                break  # removed between the two opens: create it again
            except PermissionError:
                if mode == os.O_RDONLY:
                    raise
    raise FileNotFoundError(path)


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
        path = resolve(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = open_shared(path)
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
        with contextlib.suppress(OSError):  # read-only (another account's, locked down)
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
