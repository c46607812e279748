"""The board lease, board side: one measurement per board, whoever asks.

Two farms (two heads, a laptop and a head, two embedded ``farm submit``, two lab
members under their own accounts) may point at one board; each scheduler
believes it owns it. So the lock lives on the board itself: an exclusive
``flock`` on a board-wide file (``farm.engine.measuring.resolve``: a bare name
in ``/run/lock``, or an absolute path; every account opens the same file),
taken for the length of each task by ``python3 engine.zip lease PATH``, a small
process (stdlib only, no torch) the station keeps beside the warm engine.

It speaks JSON lines. Requests on stdin:

- ``{"op": "acquire", "holder": {...}}``: take the lock. While another holds it
  the answer is ``{"busy": HOLDER}`` (again whenever the holder changes), so the
  farm that waits can say whom it waits for; then ``{"held": HOLDER}``, where
  ``HOLDER`` is what the station said about itself plus this process's pid and
  the time, also written into the lock file for the next one to read;
- any line while the lock is held renews it; ``{"op": "release"}`` lets it go
  (answer ``{"released": true}``).

The lock ends with its holder: at end of input (the station released it, or its
SSH session closed), when renewals stop for ``ttl`` seconds (the holder hung), or
when this process is killed — the kernel drops a ``flock`` with its last
descriptor, so a dead holder never leaves a board locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import time
from typing import IO, Any

from farm.engine.measuring import open_shared, resolve

POLL_S = 0.1


class _Silent(Exception):
    """No line arrived within the time allowed."""


class _Lines:
    """Lines from a file descriptor, with a timeout (``select`` + ``os.read``)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = b""
        self.ended = False

    def next(self, timeout: float | None) -> str | None:
        """The next line; ``None`` at end of input; :class:`_Silent` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if self.ended:
                return None
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.fd], [], [], left)[0]:
                raise _Silent
            chunk = os.read(self.fd, 4096)
            self.ended = not chunk
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace")


def serve(path: str, ttl_s: float, out: IO[str], stdin_fd: int = 0) -> int:
    """Answer lease requests on ``stdin_fd`` for the lock file ``path``; exit code."""
    path = resolve(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = open_shared(path)
    lines = _Lines(stdin_fd)
    try:
        while True:
            line = lines.next(None)  # idle: nothing is held, nothing to renew
            if line is None:
                return 0
            if not line.strip():
                continue
            request = _request(line)
            if request.get("op") != "acquire":
                continue  # a late renewal or release: nothing is held
            if not _acquire(fd, request.get("holder") or {}, lines, out):
                return 0  # the farm that waited went away
            if not _hold(fd, lines, ttl_s):
                return 0
            _say(out, {"released": True})
    finally:
        os.close(fd)  # releases the flock


def _acquire(fd: int, holder: dict[str, Any], lines: _Lines, out: IO[str]) -> bool:
    told: Any = object()
    while not _try_lock(fd):
        current = _read_holder(fd)
        if current != told:
            _say(out, {"busy": current})
            told = current
        try:
            if lines.next(POLL_S) is None:
                return False
        except _Silent:
            pass
    me = {**holder, "board_pid": os.getpid(), "since": time.time()}
    with contextlib.suppress(
        OSError
    ):  # read-only: another account's, locked down; held all the same
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
    _say(out, {"held": me})
    return True


def _hold(fd: int, lines: _Lines, ttl_s: float) -> bool:
    """Keep the lock until released (True) or the holder is gone or silent (False)."""
    try:
        while True:
            line = lines.next(ttl_s)
            if line is None:
                return False
            if _request(line).get("op") == "release":
                return True
    except _Silent:
        return False
    finally:
        with contextlib.suppress(OSError):  # read-only: another account's, locked down
            os.ftruncate(fd, 0)  # still ours: the next holder never reads a stale name
        fcntl.flock(fd, fcntl.LOCK_UN)


def _request(line: str) -> dict[str, Any]:
    """A request line as a mapping; anything else counts as a renewal."""
    try:
        request = json.loads(line)
    except ValueError:
        return {}
    return request if isinstance(request, dict) else {}


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
