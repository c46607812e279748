"""``transport: local`` — the board is this machine; commands are plain subprocesses.

No shell is involved anywhere (``subprocess`` with an argv list), so there is
nothing to quote. Useful for the embedded default (measure the laptop you sit
at) and as the reference the SSH transport is tested against.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal

from farm.errors import BoardUnreachable, CommandFailed, CommandResult, TransportTimeout
from farm.spec.inventory import Board
from farm.transport.base import CLOSE_GRACE_S, Channel, Transport, register, shell_command

_STDERR_TAIL_BYTES = 8192


class LocalBoard(Board):
    """``transport: local``: this machine. Nothing to say about reaching it."""

    transport: Literal["local"] = "local"


def run_here(
    name: str, argv: list[str], timeout: float, stdin: bytes | None, shown: str
) -> CommandResult:
    """Run ``argv`` on this machine for board ``name``, at most ``timeout`` seconds
    (``shown`` names it in messages). An ``OSError`` (no such program) is the caller's."""
    try:
        done = subprocess.run(
            argv, input=stdin if stdin is not None else b"", capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:  # subprocess.run has already killed it
        raise TransportTimeout(name, f"`{shown}` did not finish within {timeout:g} s") from e
    return CommandResult(
        command=shown,
        exit_code=done.returncode,
        stdout=done.stdout.decode(errors="replace"),
        stderr=done.stderr.decode(errors="replace"),
    )


@register("local", board=LocalBoard)
class LocalTransport(Transport):
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> CommandResult:
        command = shell_command(argv)
        try:
            result = run_here(self.name, [str(a) for a in argv], timeout, stdin, command)
        except OSError as e:  # not found, not executable: what a shell reports as 127
            result = CommandResult(command, 127, "", f"{argv[0]}: {e}")
        return self._check(result, check)

    def put(self, local: Path, remote: str) -> None:
        target = self.expand(remote)
        try:
            shutil.copyfile(local, target)
        except OSError as e:
            result = CommandResult(f"put {local} {target}", 1, "", str(e))
            raise CommandFailed(self.name, result) from e

    def stat(self, remote: str) -> tuple[int, int] | None:
        try:
            st = os.stat(self.expand(remote))
        except OSError:
            return None
        return st.st_size, int(st.st_mtime)

    def open_process(self, argv: Sequence[str]) -> Channel:
        try:
            proc = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # kill() takes the process group, children too
            )
        except OSError as e:
            raise BoardUnreachable(self.name, f"cannot start {argv[0]}: {e}") from e
        return LocalChannel(self.name, proc)

    def home(self) -> str:
        return str(Path.home())


class LocalChannel(Channel):
    """A subprocess's pipes as lines. Reader threads keep both pipes drained."""

    def __init__(self, board: str, proc: subprocess.Popen[bytes]):
        self.board = board
        self.proc = proc
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._lock = threading.Lock()
        self._eof = False
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    def _pump_stdout(self) -> None:
        out: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        for raw in out:
            line = raw.decode(errors="replace").rstrip("\r\n")
            if line:  # blank lines carry nothing in a JSON-lines protocol; "" means EOF
                self._lines.put(line)
        self._lines.put(None)  # end of output

    def _pump_stderr(self) -> None:
        err: IO[bytes] = self.proc.stderr  # type: ignore[assignment]
        while chunk := err.read1(65536):  # type: ignore[attr-defined]
            with self._lock:
                self._stderr.append(chunk)
                self._stderr_size += len(chunk)
                while self._stderr_size - len(self._stderr[0]) >= _STDERR_TAIL_BYTES:
                    self._stderr_size -= len(self._stderr.popleft())

    def send_line(self, line: str) -> None:
        try:
            self.proc.stdin.write(line.encode() + b"\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError, OSError) as e:
            raise BoardUnreachable(self.board, f"process has exited: {e}") from e

    def read_line(self, timeout: float) -> str:
        if self._eof:
            return ""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty as e:
            raise TransportTimeout(self.board, f"no answer within {timeout:g} s") from e
        if line is None:
            self._eof = True
            self._reap()
            return ""
        return line

    def _reap(self) -> None:
        try:
            self.exit_status = self.proc.wait(timeout=CLOSE_GRACE_S)
        except subprocess.TimeoutExpired:
            self.exit_status = None

    @property
    def alive(self) -> bool:
        return not self._eof and self.proc.poll() is None

    @property
    def stderr_tail(self) -> str:
        with self._lock:
            return b"".join(self._stderr).decode(errors="replace")[-_STDERR_TAIL_BYTES:]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.exit_status = self.proc.wait(timeout=CLOSE_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.exit_status = self.proc.wait()
