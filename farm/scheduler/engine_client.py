"""The board's engine as the station talks to it, and what the station keeps per board.

``EngineClient`` speaks the engine's protocol over a board's transport
(docs/internals.md, Engine): the warm engine (``python ENGINE.zip serve``, one
long-lived process answering JSON lines: ``run``, ``clock``), a fresh process
per task (``run``, for ``isolation: process``), and the argv of the board-side
lease process. A channel that closes becomes the error that says why (the board
gone, or the engine killed, with its exit status); a reply that never comes
within its limit kills the engine. A second runtime that speaks the same
protocol plugs in here.

``BoardLink`` is the per-board value a station keeps between tasks: the board's
connection, its ``EngineClient``, its lease process, what its probe found (the
runtimes it can run), the lock that keeps it to one task at a time, and which
task runs on it now.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from farm import deploy
from farm.errors import BoardUnreachable, EngineError, FarmError, TransportError, TransportTimeout
from farm.spec import Board
from farm.transport import connect

log = logging.getLogger(__name__)


class EngineClient:
    """One board's engine, reached over ``transport``; ``engine`` is the engine zip
    (the board's copy of it is run)."""

    def __init__(self, board: Board, transport: Any, engine: Path):
        self.board = board
        self.transport = transport
        self.engine = engine
        self.channel: Any = None  # the warm engine's process, while it runs
        self.request_id = 0

    @property
    def running(self) -> bool:
        return self.channel is not None

    def argv(self, mode: str) -> list[str]:
        """``python <the board's engine zip> mode``."""
        remote = deploy.remote_path(self.transport, self.board, self.engine)
        return [self.board.python, remote, mode]

    def start(self, startup_s: float, runtime: str = "eager") -> None:
        """Start the warm engine if it is not running, wait for its first answer, and have
        it import ``runtime``'s library (torch for eager: minutes on a slow board), each
        within the start-up limit, not the task's."""
        try:
            if self.channel is None or not self.channel.alive:
                self.call({"op": "clock"}, startup_s)
            self.call({"op": "prepare", "runtime": runtime}, startup_s)
        except TransportTimeout as exc:
            raise TransportTimeout(
                self.board.name,
                f"engine did not start within {startup_s:g} s (startup_timeout_s)",
            ) from exc

    def run(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One task on the warm engine: its raw result."""
        return self.call({"op": "run", "request": request}, timeout)

    def clock_exchange(self) -> tuple[int, int, int]:
        """One request/response clock exchange: (host send ns, board ns, host receive ns)."""
        sent = time.monotonic_ns()
        reply = self.call({"op": "clock"}, self.board.command_timeout_s)
        return sent, int(reply["t_ns"]), time.monotonic_ns()

    def call(self, message: dict[str, Any], timeout: float) -> Any:
        """Send ``message`` to the warm engine (started if need be) and return its
        answer's result; an answer that says no is an ``EngineError``."""
        if self.channel is None or not self.channel.alive:
            self.channel = self.transport.open_process(self.argv("serve"))
        self.request_id += 1
        message = {"id": self.request_id, **message}
        self.channel.send_line(json.dumps(message))
        while True:
            try:
                line = self.channel.read_line(timeout)
            except TransportTimeout:
                self.channel.kill()
                self.channel = None
                raise
            if line is None or line == "":
                raise self._died()
            reply = json.loads(line)
            if reply.get("id") == self.request_id:
                break
        if not reply.get("ok"):
            raise EngineError(reply.get("error", "engine refused the request"))
        return reply["result"]

    def run_process(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One task in a fresh engine process (``isolation: process``)."""
        result = self.transport.run(
            self.argv("run"), timeout=timeout, stdin=json.dumps(request).encode(), check=False
        )
        if result.exit_code != 0:
            raise EngineError(
                f"engine process exited: {exit_reason(result.exit_code)}: "
                + (result.stderr.strip().splitlines() or [""])[-1]
            )
        return json.loads(result.stdout.strip().splitlines()[-1])

    def kill(self) -> None:
        """Stop the warm engine now (its task's job was cancelled)."""
        if self.channel is not None:
            self.channel.kill()

    def close(self) -> None:
        if self.channel is not None:
            channel, self.channel = self.channel, None
            channel.close()

    def _died(self) -> FarmError:
        """The warm engine's stdout closed: say why, as precisely as the channel knows."""
        channel, self.channel = self.channel, None
        status = getattr(channel, "exit_status", None)
        stderr = (getattr(channel, "stderr_tail", "") or "").strip().splitlines()[-1:]
        if status is None:
            try:  # no exit status: is it the board that went away, or only the engine?
                self.transport.run(["true"], timeout=self.board.connect_timeout_s)
            except TransportError:
                return BoardUnreachable(self.board.name, "engine channel closed (connection lost)")
            return EngineError("engine process vanished without an exit status (killed?)")
        why = exit_reason(status)
        tail = stderr[0] if stderr else ""
        return EngineError(f"engine process exited: {why}{': ' + tail if tail else ''}")


def exit_reason(status: int) -> str:
    if status in (137, -9):
        return f"status {status} (killed by SIGKILL — out of memory?)"
    if status > 128:
        return f"status {status} (signal {status - 128})"
    if status < 0:
        return f"killed by signal {-status}"
    return f"status {status}"


class BoardLink:
    """What the station keeps per board: its connection, its engine, its lease process."""

    def __init__(self, board: Board):
        self.board = board
        self.lock = threading.Lock()
        self.transport: Any = None
        self.engine: EngineClient | None = None
        self.leaser: Any = None  # the board-side lease process, kept between tasks
        self.task: str | None = None  # the task running on the board now
        self.probe: deploy.BoardProbe | None = None  # what this connection found the board runs

    def connected(self) -> Any:
        """The board's transport, connected on first use (and after a ``drop``)."""
        if self.transport is None:
            self.transport = connect(self.board)
        return self.transport

    def client(self, engine: Path) -> EngineClient:
        """The board's engine client (made on first use over the current connection)."""
        if self.engine is None:
            self.engine = EngineClient(self.board, self.connected(), engine)
        return self.engine

    def drop(self) -> None:
        """Forget the connection and engine after an error: the next task starts clean."""
        for closer in (self.engine, self.leaser, self.transport):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # already broken: closing is best effort
                    log.debug("%s: close failed", self.board.name, exc_info=True)
        self.engine = None
        self.leaser = None
        self.transport = None
        self.probe = None
