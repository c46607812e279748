"""``transport: fake`` — in-process boards that answer the engine instantly.

For measuring the scheduler itself (how many tasks a second it can place,
lease and record) without the cost of real measurements. A fake board is
shaped like a real one at the transport interface:

- a small in-memory file system that knows what ``farm.deploy`` runs on boards
  (``sha256sum``, ``mkdir -p``, ``mv``, ``rm -f``, ``find -type f``,
  ``printenv HOME``). Uploads keep only each file's sha256 and size;
- ``<python> <engine.zip> run`` and ``... serve`` answer every request at once
  with a well-formed result of zero-duration inferences (``status: ok``), or
  ``status: error`` when the artifact was never deployed to the board;
- ``<python> <engine.zip> lease PATH ...`` holds the board's lease (a lock per
  fake board) and speaks the lease protocol of ``farm.engine.lease``;
- ``<python> -c CODE`` (the deploy probe) runs for real on this machine;
- any other command exits 127, as a shell would for an unknown command.

Board state lives as long as the process, keyed by board name, so a second
``connect`` sees what the first deployed (like a real board). ``set_down(name)``
makes a board unreachable; ``reset()`` forgets every board.

Importing this module registers ``fake``; farm's own packages never import it. A
Ray driver whose stations reach fake boards passes ``installed`` as its workers'
setup hook (``ray.init(runtime_env={"worker_process_setup_hook": installed})``).
"""

from __future__ import annotations

import collections
import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from farm.errors import BoardUnreachable, CommandFailed, CommandResult, TransportTimeout
from farm.spec.inventory import Board
from farm.transport.base import Channel, Transport, register, shell_command

HOME = "/home/farm"


@dataclass
class FakeFile:
    sha256: str
    size: int
    mtime: int = field(default_factory=lambda: int(time.time()))


@dataclass
class FakeBoard:
    """What one fake board holds."""

    files: dict[str, FakeFile] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/", "/home", HOME})
    down: bool = False
    engine_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    lease: threading.Lock = field(default_factory=threading.Lock)


_boards: dict[str, FakeBoard] = {}


def installed() -> None:
    """Nothing left to do: importing this module registered ``fake``. As a Ray
    worker's setup hook, it makes the worker import it."""


_boards_lock = threading.Lock()


def board_state(name: str) -> FakeBoard:
    """The fake board called ``name`` (created empty on first use)."""
    with _boards_lock:
        return _boards.setdefault(name, FakeBoard())


def set_down(name: str, down: bool = True) -> None:
    """Make a fake board refuse connections (``BoardUnreachable``), or take it back up."""
    board_state(name).down = down


def reset() -> None:
    with _boards_lock:
        _boards.clear()


def _hash_file(path: Path) -> FakeFile:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return FakeFile(h.hexdigest(), size)


class FakeBoardModel(Board):
    """``transport: fake``: an in-process board (nothing to say about reaching it)."""

    transport: Literal["fake"]


@register("fake", board=FakeBoardModel)
class FakeTransport(Transport):
    def __init__(self, board):
        super().__init__(board)
        self.state = board_state(board.name)

    def open(self) -> None:
        if self.state.down:
            raise BoardUnreachable(self.name, "connection refused (fake board is down)")

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> CommandResult:
        self.open()
        argv = [str(a) for a in argv]
        command = shell_command(argv)
        if len(argv) >= 3 and argv[1] == "-c":
            return self._check(self._python_c(argv, timeout, stdin, command), check)
        with self.state.lock:
            code, out, err = self._dispatch(argv, stdin)
        return self._check(CommandResult(command, code, out, err), check)

    def _python_c(self, argv, timeout, stdin, command) -> CommandResult:
        try:
            done = subprocess.run(argv, input=stdin or b"", capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise TransportTimeout(self.name, f"`{command}` did not finish") from e
        except OSError as e:
            return CommandResult(command, 127, "", f"{argv[0]}: {e}")
        return CommandResult(command, done.returncode, done.stdout.decode(), done.stderr.decode())

    def _dispatch(self, argv: list[str], stdin: bytes | None) -> tuple[int, str, str]:
        tool, args = argv[0], [a for a in argv[1:] if a != "--"]
        fs = self.state
        if tool == "printenv" and args == ["HOME"]:
            return 0, HOME + "\n", ""
        if tool == "sha256sum":
            out, err = [], []
            for p in args:
                if p in fs.files:
                    out.append(f"{fs.files[p].sha256}  {p}\n")
                else:
                    err.append(f"sha256sum: {p}: No such file or directory\n")
            return (1 if err else 0), "".join(out), "".join(err)
        if tool == "mkdir" and args[:1] == ["-p"]:
            for d in args[1:]:
                parts = d.rstrip("/").split("/")
                fs.dirs.update("/".join(parts[:i]) or "/" for i in range(1, len(parts) + 1))
            return 0, "", ""
        if tool == "mv" and args[:1] == ["-f"] and len(args) == 3:
            src, dst = args[1:]
            if src not in fs.files:
                return 1, "", f"mv: cannot stat '{src}': No such file or directory\n"
            fs.files[dst] = fs.files.pop(src)
            return 0, "", ""
        if tool == "rm" and args[:1] == ["-f"]:
            for p in args[1:]:
                fs.files.pop(p, None)
            return 0, "", ""
        if tool == "find" and args[-2:] == ["-type", "f"]:
            roots = [r.rstrip("/") + "/" for r in args[:-2]]
            found = sorted(p for p in fs.files if any(p.startswith(r) for r in roots))
            return 0, "".join(f"{p}\n" for p in found), ""
        if self._is_engine(argv, "run"):
            try:
                request = json.loads(stdin or b"")
            except ValueError as e:
                return 2, "", f"farm.engine: unreadable request: {e}\n"
            return 0, json.dumps(self._result(request)) + "\n", ""
        if len(argv) >= 2 and argv[1].endswith(".zip"):
            return 2, "", f"{argv[0]}: can't open file '{argv[1]}'\n"
        return 127, "", f"sh: 1: {tool}: not found\n"

    def _is_engine(self, argv: list[str], mode: str) -> bool:
        return len(argv) >= 3 and argv[-1] == mode and argv[1] in self.state.files

    def _result(self, request: dict) -> dict:
        """A well-formed engine result of ``iterations`` zero-duration inferences."""
        self.state.engine_requests += 1
        artifact = request.get("artifact")
        iterations = max(1, int(request.get("iterations") or 1))
        now = time.monotonic_ns()
        result: dict = {
            "version": 1,  # the engine's RESULT_VERSION
            "task_id": request.get("task_id"),
            "status": "ok",
            "error": None,
            "latency": _zero_latency(iterations),
            "layers": [],
            "layer_pass": None,
            "memory": {},
            "markers": {
                "clock": "monotonic_ns",
                "kinds": ["task_begin", "task_end", "inference_begin", "inference_end"],
                "t_ns": [now, now],
                "kind": [0, 1],
                "iteration": [-1, -1],
                "layer": [-1, -1],
                "layer_names": [],
            },
            "env": {"fake": True, "board": self.name},
        }
        if artifact not in self.state.files:
            result.update(status="error", error=f"artifact not found: {artifact}", latency=None)
        return result

    def put(self, local: Path, remote: str) -> None:
        self.open()
        target = self.expand(remote)
        parent = target.rsplit("/", 1)[0] or "/"
        with self.state.lock:
            if parent not in self.state.dirs:
                result = CommandResult(
                    f"put {local} {target}", 1, "", f"{parent}: no such directory"
                )
                raise CommandFailed(self.name, result)
        entry = _hash_file(Path(local))
        with self.state.lock:
            self.state.files[target] = entry

    def stat(self, remote: str) -> tuple[int, int] | None:
        self.open()
        with self.state.lock:
            entry = self.state.files.get(self.expand(remote))
        return None if entry is None else (entry.size, entry.mtime)

    def open_process(self, argv: Sequence[str]) -> Channel:
        self.open()
        argv = [str(a) for a in argv]
        if len(argv) >= 4 and argv[2] == "lease" and argv[1] in self.state.files:
            return FakeLeaseChannel(self)
        if not self._is_engine(argv, "serve"):
            raise BoardUnreachable(self.name, f"fake board runs only the engine, not {argv}")
        return FakeEngineChannel(self)

    def home(self) -> str:
        return HOME


def _zero_latency(n: int) -> dict:
    """``farm.engine.stats.summarize`` of ``n`` samples of 0 ms (the same keys)."""
    many = n > 1
    return {
        "n": n,
        "mean_ms": 0.0,
        "ci95_low_ms": 0.0 if many else None,
        "ci95_high_ms": 0.0 if many else None,
        "median_ms": 0.0,
        "p90_ms": 0.0,
        "p99_ms": 0.0 if n >= 662 else None,
        "min_ms": 0.0,
        "max_ms": 0.0,
        "stdev_ms": 0.0 if many else None,
        "q1_ms": 0.0,
        "q3_ms": 0.0,
        "iqr_ms": 0.0,
        "outliers": 0,
        "cold_ms": 0.0,
        "cpu_median_ms": 0.0,
    }


class _AnsweringChannel(Channel):
    """A fake board process that answers on a queue: alive until closed, silent stderr."""

    def __init__(self, transport: FakeTransport):
        self.transport = transport
        self._answers: collections.deque[str] = collections.deque()
        self._open = True

    def _no_answer(self, timeout: float) -> TransportTimeout:
        return TransportTimeout(self.transport.name, f"no answer within {timeout:g} s")

    @property
    def alive(self) -> bool:
        return self._open

    @property
    def stderr_tail(self) -> str:
        return ""


class FakeEngineChannel(_AnsweringChannel):
    """The warm engine's protocol, answered synchronously as each line is sent."""

    def send_line(self, line: str) -> None:
        if not self._open:
            raise BoardUnreachable(self.transport.name, "process has exited")
        try:
            msg = json.loads(line)
            op = msg.get("op")
        except (ValueError, AttributeError) as e:
            self._answers.append(json.dumps({"id": None, "ok": False, "error": str(e)}))
            return
        reply: dict = {"id": msg.get("id"), "ok": True}
        if op == "ping":
            reply["result"] = {"fake": True, "board": self.transport.name}
        elif op == "clock":
            reply["result"] = {"t_ns": time.monotonic_ns()}
        elif op == "prepare":  # the runtime's library: the fake engine has them all
            reply["result"] = {"missing": None}
        elif op == "run":
            request = msg.get("request") or {k: v for k, v in msg.items() if k not in ("id", "op")}
            reply["result"] = self.transport._result(request)
        elif op == "shutdown":
            reply["result"] = {}
            self._open = False
            self.exit_status = 0
        else:
            reply = {"id": msg.get("id"), "ok": False, "error": f"unknown op {op!r}"}
        self._answers.append(json.dumps(reply))

    def read_line(self, timeout: float) -> str:
        if self._answers:
            return self._answers.popleft()
        if not self._open:
            return ""
        # every answer is produced at send time: nothing pending means none will come
        raise self._no_answer(timeout)

    def close(self) -> None:
        self._open = False
        self.exit_status = 0

    def kill(self) -> None:
        self._open = False
        self.exit_status = -9


class FakeLeaseChannel(_AnsweringChannel):
    """The board-side lease process: the fake board's lock, taken and released on request."""

    def __init__(self, transport: FakeTransport):
        super().__init__(transport)
        self._held = self._waiting = False

    def send_line(self, line: str) -> None:
        op = json.loads(line).get("op")
        lock = self.transport.state.lease
        if op == "acquire":
            self._held = lock.acquire(blocking=False)
            self._waiting = not self._held
            self._answers.append(json.dumps({"held": {}} if self._held else {"busy": None}))
        elif op == "release" and self._held:
            self._held = False
            lock.release()
            self._answers.append(json.dumps({"released": True}))

    def read_line(self, timeout: float) -> str:
        if self._answers:
            return self._answers.popleft()
        if self._waiting and self.transport.state.lease.acquire(timeout=timeout):
            self._waiting, self._held = False, True
            return json.dumps({"held": {}})
        raise self._no_answer(timeout)

    def close(self) -> None:
        if self._held:
            self._held = False
            self.transport.state.lease.release()
        self._open = False
        self.exit_status = 0

    def kill(self) -> None:
        self.close()
