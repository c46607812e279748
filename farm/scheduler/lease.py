"""The board lease, station side: hold the board's lock for the length of a task.

The lock itself lives on the board (``farm.engine.lease``): an ``flock`` in the
board's cache directory, taken by a small engine process this module starts and
keeps talking to. So the lease holds across processes and hosts — a second head,
or a laptop's embedded ``farm submit`` pointed at the same board, waits for it
and is told who holds it — and it frees itself when its holder dies (the
process's stdin ends with the SSH session, or stops being renewed).
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

LOCK_FILE = "lease"


def holder(task_id: str, job_id: str | None) -> dict[str, Any]:
    """Who asks, as the next farm will be told: host, station pid, job and task."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": job_id, "task": task_id}


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

    ``argv`` starts the board-side holder (``python3 engine.zip lease PATH ...``);
    ``startup_s`` bounds its first answer, ``wait_s`` how long another holder is
    waited for before :class:`BoardBusy`; ``log`` hears who holds the board.
    """

    def __init__(
        self,
        transport: Any,
        argv: list[str],
        *,
        board: str,
        startup_s: float,
        wait_s: float,
        log: Callable[[str], None],
    ):
        self.transport = transport
        self.argv = argv
        self.board = board
        self.startup_s = startup_s
        self.wait_s = wait_s
        self.log = log
        self._channel: Any = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> BoardLease:
        self._channel = self.transport.open_process(self.argv)
        try:
            self._acquire()
        except BaseException:
            self._channel.kill()
            raise
        self._renewer = threading.Thread(target=self._renew, name="farm-lease", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        # stdin ends: the board lets go at once (a dropped connection has let go already)
        with contextlib.suppress(TransportError):
            self._channel.close()

    def _acquire(self) -> None:
        deadline: float | None = None  # the wait for another holder starts when one is seen
        who: dict[str, Any] | None = None
        while True:
            timeout = self.startup_s if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                line = self._channel.read_line(timeout)
            except TransportTimeout as exc:
                if deadline is None:
                    raise TransportTimeout(
                        self.board, f"lease: no answer within {self.startup_s:g} s"
                    ) from exc
                raise BoardBusy(
                    self.board, f"in use by {describe(who)} for over {self.wait_s:g} s"
                ) from exc
            if not line:
                tail = (getattr(self._channel, "stderr_tail", "") or "").strip().splitlines()
                raise EngineError(f"lease process ended: {tail[-1] if tail else 'no output'}")
            message = json.loads(line)
            if "held" in message:
                return
            who = message.get("busy")
            self.log(f"{self.board} is in use by {describe(who)}: waiting")
            if deadline is None:
                deadline = time.monotonic() + self.wait_s

    def _renew(self) -> None:
        while not self._stop.wait(TTL_S / 4):
            try:
                self._channel.send_line("renew")
            except TransportError:
                return  # the connection dropped: the task's own calls will say so
