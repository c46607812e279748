"""The board lease, station side: hold the board's lock for the length of a task.

The lock itself lives on the board (``farm.engine.lease``): an ``flock`` in the
board's cache directory, taken and released on request by a small engine
process the station keeps per board, beside the warm engine (one process, not
one per task: starting Python on a board costs more than a task's overhead).
So the lease holds across processes and hosts — a second head, or a laptop's
embedded ``farm submit`` pointed at the same board, waits for it and is told who
holds it — and it frees itself when its holder dies (the process's stdin ends
with the SSH session, or renewals stop).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from farm.errors import BoardBusy, EngineError, TransportError, TransportTimeout

TTL_S = 60.0
"""A lease not renewed for this long is let go by the board (its holder hung)."""

LOCK_FILE = ".lease"  # the board's ``board_lock`` name + this
# the lock the engine itself holds for each task (farm.engine.measuring), beside the lease
MEASURING_FILE = ".measuring"


_HOST = socket.gethostname()


def holder(task_id: str, job_id: str | None) -> dict[str, Any]:
    """Who asks, as the next farm will be told: host, station pid, job and task."""
    return {"host": _HOST, "pid": os.getpid(), "job": job_id, "task": task_id}


def describe(who: dict[str, Any] | None) -> str:
    """``host h pid 12 (job j, task t) since 07:41:03`` — or why we cannot say."""
    if not who:
        return "another farm (it has not said who)"
    since = who.get("since")
    at = time.strftime(" since %H:%M:%S", time.localtime(since)) if since else ""
    return (
        f"host {who.get('host', '?')} pid {who.get('pid', '?')}"
        f" (job {who.get('job', '?')}, task {who.get('task', '?')}){at}"
    )


class BoardLease:
    """``with BoardLease(...):`` the task runs while this farm holds the board.

    ``channel`` is the board's lease process (started by the caller, kept between
    tasks); ``wait_s`` bounds the wait for another holder (then :class:`BoardBusy`),
    ``reply_s`` each answer of the process; ``log`` hears who holds the board. On
    any error the channel is killed: the caller starts a new one next time.
    """

    def __init__(
        self,
        channel: Any,
        reply_s: float,
        *,
        who: dict[str, Any],
        board: str,
        wait_s: float,
        log: Callable[[str], None],
    ):
        self.channel = channel
        self.who = who
        self.board = board
        self.wait_s = wait_s
        self.reply_s = reply_s
        self.log = log
        self._holding = False
        self._sending = threading.Lock()  # a renewal never interleaves with the release

    def __enter__(self) -> BoardLease:
        try:
            self.channel.send_line(json.dumps({"op": "acquire", "holder": self.who}))
            self._until("held", self.reply_s)
        except BaseException:
            self.channel.kill()
            raise
        self._holding = True
        _renewals.add(self)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        _renewals.discard(self)
        with self._sending:
            self._holding = False
        if isinstance(exc, TransportTimeout):
            # The board stopped answering the task (frozen, or its engine hung): asking it
            # to release would wait out another reply limit for nothing. The lock dies with
            # the process, as it does when the release itself goes unanswered.
            self.channel.kill()
            return
        try:
            self.channel.send_line(json.dumps({"op": "release"}))
            self._until("released", self.reply_s)
        except (TransportError, EngineError):
            self.channel.kill()  # the lock dies with the process, or died with the connection

    def _until(self, word: str, reply_s: float) -> None:
        """Read answers until ``word``; a ``busy`` answer starts the wait for the holder."""
        deadline: float | None = None
        who: dict[str, Any] | None = None
        while True:
            timeout = reply_s if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                line = self.channel.read_line(timeout)
            except TransportTimeout as exc:
                if deadline is None:
                    raise
                raise BoardBusy(
                    self.board, f"in use by {describe(who)} for over {self.wait_s:g} s"
                ) from exc
            if not line:
                tail = (getattr(self.channel, "stderr_tail", "") or "").strip().splitlines()
                raise EngineError(f"lease process ended: {tail[-1] if tail else 'no output'}")
            message = json.loads(line)
            if word in message:
                return
            if "busy" in message:
                who = message["busy"]
                self.log(f"{self.board} is in use by {describe(who)}: waiting")
                if deadline is None:
                    deadline = time.monotonic() + self.wait_s

    def renew(self) -> None:
        """Tell the board we are alive (``_renewals`` calls it while the lease is held)."""
        with self._sending:
            if not self._holding:
                return
            # a dropped connection is for the task's own calls to report
            with contextlib.suppress(TransportError):
                self.channel.send_line(json.dumps({"op": "renew"}))


class _Renewals:
    """Every lease this process holds, renewed by one thread every ``TTL_S / 4``.

    A thread per lease, started and joined for each task, cost more than the rest of
    a short task's lease; one thread for all of them costs nothing per task."""

    def __init__(self) -> None:
        self._held: set[BoardLease] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, lease: BoardLease) -> None:
        with self._lock:
            self._held.add(lease)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="farm-lease", daemon=True)
                self._thread.start()

    def discard(self, lease: BoardLease) -> None:
        with self._lock:
            self._held.discard(lease)

    def _loop(self) -> None:
        while True:
            time.sleep(TTL_S / 4)
            with self._lock:
                held = list(self._held)
            for lease in held:
                lease.renew()


_renewals = _Renewals()
