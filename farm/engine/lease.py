"""The board lease, board side: one measurement per board, whoever asks.

Two farms (two heads, a laptop and a head, two embedded ``farm submit``) may
point at one board; each scheduler believes it owns it. So the lock lives on the
board itself: before a task, the station runs ``python3 engine.zip lease PATH``
there, a small process (stdlib only, no torch: it starts in a blink even on a
slow board) that takes an exclusive ``flock`` on ``PATH`` in the board's cache
directory and keeps it for the length of the task.

The protocol is JSON lines on stdout:

- ``{"busy": HOLDER}`` while another holds the lock (again whenever the holder
  changes), so the farm that waits can say whom it waits for;
- ``{"held": HOLDER}`` once this process holds it; ``HOLDER`` (what the station
  said about itself, plus the board-side pid and the time) is written into the
  lock file for the next one to read.

The lock ends with this process: when its stdin ends (the station released it,
or its SSH session closed), when the station stops renewing it (any line on
stdin renews it; silence for ``ttl`` seconds means its holder hung), or when it
is killed — the kernel drops a ``flock`` with its last descriptor, so a dead
holder never leaves a board locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import time
from typing import IO, Any

POLL_S = 0.1


def hold(path: str, holder: dict[str, Any], ttl_s: float, out: IO[str], stdin_fd: int = 0) -> int:
    """Take the lock on ``path`` (waiting while another holds it) and keep it; exit code."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        told: Any = object()
        while not _try_lock(fd):
            current = _read_holder(fd)
            if current != told:
                _say(out, {"busy": current})
                told = current
            if _stdin_ended(stdin_fd, POLL_S):
                return 0  # the farm that waited went away
        me = {**holder, "board_pid": os.getpid(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        _say(out, {"held": me})
        while _renewed(stdin_fd, ttl_s):
            pass
        os.ftruncate(fd, 0)  # still ours: the next holder never reads a stale name
        return 0
    finally:
        os.close(fd)  # releases the flock


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode())
    except ValueError:  # empty (being written, or just released) or foreign bytes
        return None


def _say(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _stdin_ended(fd: int, timeout: float) -> bool:
    """Wait up to ``timeout`` for input; True at end of input (lines are renewals)."""
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready) and not os.read(fd, 4096)


def _renewed(fd: int, ttl_s: float) -> bool:
    """True when the holder renewed within ``ttl_s``; False at end of input or silence."""
    ready, _, _ = select.select([fd], [], [], ttl_s)
    return bool(ready) and bool(os.read(fd, 4096))
