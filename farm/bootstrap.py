"""``farm board bootstrap``: make a fresh board ready, idempotently, with a report per board.

Each step is a small task over the board's connection (fabric, for SSH boards)
that says whether it changed anything, so a second run over a ready board
reports nothing changed and changes nothing:

1. ``connect``  reach the board (and its jump hosts). Host keys stay strict;
   only with ``trust_host_key`` is an unknown key recorded in known_hosts
   (TOFU, once), its fingerprint printed and kept with the facts;
2. ``python``   the board's interpreter is recent enough for the engine;
3. ``torch``    torch imports there, at the head's version (else how to install it);
   a board without torch that has another runtime (onnxruntime) is a torch-free
   board: the step is skipped with the same advice, and the board runs the rest;
4. ``cache``    the cache directory exists;
5. ``engine``   the engine is deployed (content-addressed: pushed once);
6. ``native``   the ExecuTorch C++ runner is built there from the board's executorch
   wheel (``farm.engine.native``, once per source and executorch version); skipped
   where the board has no executorch or no compiler;
7. ``facts``    the board's CPU model, cores, memory, frequency governor and the
   runtimes it can run (from :func:`farm.deploy.probe`), kept in
   ``$FARM_CACHE/boards/<board>.json``.

Nothing secret is stored: facts, and at most a public key's fingerprint.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rich.table import Table

from farm import deploy
from farm.errors import FarmError, TransportError, UserError
from farm.scheduler.cluster import state_root
from farm.transport import Transport, connect

MIN_PYTHON = (3, 10)
"""The oldest interpreter the engine runs on (``requires-python`` in pyproject.toml)."""

FACTS = (
    "machine",
    "cpu_model",
    "cpus",
    "memory_total_mb",
    "governor",
    "python",
    "torch",
    "runtimes",
)
"""What is recorded about a board: what it is, never what it is doing (free memory)."""

OK, CHANGED, FAILED, SKIPPED = "ok", "changed", "failed", "skipped"


@dataclass
class Step:
    name: str
    status: str  # ok | changed | failed | skipped
    detail: str = ""


@dataclass
class BoardReport:
    board: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No step failed (a skipped step is one the board does not need, or one after a
        failure, which is then the reason)."""
        return bool(self.steps) and all(s.status != FAILED for s in self.steps)

    @property
    def changed(self) -> list[str]:
        return [s.name for s in self.steps if s.status == CHANGED]


def head_torch() -> str | None:
    """The torch version the head runs (without a local tag like ``+cpu``)."""
    try:
        return version("torch").split("+")[0]
    except PackageNotFoundError:
        return None


def bootstrap_many(
    inventory: Any, names: list[str], *, trust_host_key: bool, state: Path | None = None
) -> list[BoardReport]:
    """Bootstrap the boards called ``names`` (every board when empty), one after another.

    ``state`` is farm's state directory (``$FARM_CACHE``): the engine is built where
    a station builds it, and facts go to ``<state>/boards``.
    """
    unknown = [n for n in names if inventory.board(n) is None]
    if unknown:
        known = ", ".join(b.name for b in inventory.boards)
        raise UserError(
            f"no board called {', '.join(map(repr, unknown))}; the inventory has {known}"
        )
    boards = [inventory.board(n) for n in names] if names else list(inventory.boards)
    root = state or state_root()
    engine = deploy.build_engine_zip(root / "station" / "engine")
    return [
        bootstrap(b, engine=engine, facts_dir=root / "boards", trust_host_key=trust_host_key)
        for b in boards
    ]


def table(reports: list[BoardReport]) -> Table:
    """One row per board and step: what was found, what was done."""
    colour = {OK: "green", CHANGED: "yellow", FAILED: "red", SKIPPED: "dim"}
    out = Table("board", "step", "result", "detail", header_style="bold", title="bootstrap")
    for report in reports:
        for i, step in enumerate(report.steps):
            status = f"[{colour[step.status]}]{step.status}[/]"
            out.add_row(report.board if i == 0 else "", step.name, status, step.detail)
    return out


def bootstrap(
    board: Any, *, engine: Path, facts_dir: Path, trust_host_key: bool = False
) -> BoardReport:
    """Run every step on one board; a failed step is reported, never raised."""
    report = BoardReport(board.name)
    try:
        transport, step, host_key = _connect(board, trust_host_key)
    except TransportError as e:
        report.steps.append(Step("connect", FAILED, str(e)))
        report.steps += [
            Step(n, SKIPPED) for n in ("python", "torch", "cache", "engine", "native", "facts")
        ]
        return report
    report.steps.append(step)
    try:
        python = _python(transport, board)
        report.steps.append(python)
        report.steps.append(
            _torch(transport, board) if python.status == OK else Step("torch", SKIPPED)
        )
        report.steps.append(_cache(transport, board))
        engine_step = _engine(transport, board, engine)
        report.steps.append(engine_step)
        native_ok = python.status == OK and engine_step.status in (OK, CHANGED)
        report.steps.append(
            _native(transport, board, engine) if native_ok else Step("native", SKIPPED)
        )
        facts = _facts(transport, board, facts_dir, host_key) if python.status == OK else None
        report.steps.append(facts or Step("facts", SKIPPED))
    finally:
        transport.close()
    return report


def _guard(name: str, task) -> Step:
    """Run a step's task; a farm error (the board's, a command's) becomes its failure."""
    try:
        return task()
    except FarmError as e:
        return Step(name, FAILED, str(e))


def _connect(board: Any, trust_host_key: bool) -> tuple[Transport, Step, str | None]:
    """The connection, its step, and the host key to record (only with ``trust_host_key``)."""
    known = Path(os.path.expanduser(getattr(board, "known_hosts", None) or "~/.ssh/known_hosts"))
    before = known.read_bytes() if known.exists() else b""
    if trust_host_key and board.transport == "ssh":
        board = board.model_copy(update={"trust_on_first_use": True})
    transport = connect(board)
    key = transport.host_key()
    if not trust_host_key or key is None:
        return transport, Step("connect", OK, "host key verified" if key else ""), None
    recorded = (known.read_bytes() if known.exists() else b"") != before
    return transport, Step("connect", CHANGED if recorded else OK, key), key


def _python(transport: Transport, board: Any) -> Step:
    def task() -> Step:
        result = transport.run(
            [board.python, "-c", "import sys; print(*sys.version_info[:3])"],
            timeout=deploy.COMMAND_TIMEOUT_S,
            check=False,
        )
        if result.exit_code != 0:
            return Step("python", FAILED, f"{board.python} does not run: {result.stderr.strip()}")
        found = tuple(int(x) for x in result.stdout.split())
        text = ".".join(map(str, found))
        if found[:2] < MIN_PYTHON:
            need = ".".join(map(str, MIN_PYTHON))
            return Step("python", FAILED, f"{board.python} is {text}; the engine needs >= {need}")
        return Step("python", OK, text)

    return _guard("python", task)


def _torch(transport: Transport, board: Any) -> Step:
    def task() -> Step:
        want = head_torch()
        result = transport.run(
            [board.python, "-c", "import torch; print(torch.__version__)"],
            timeout=deploy.COMMAND_TIMEOUT_S,
            check=False,
        )
        got = result.stdout.strip().split("+")[0] if result.exit_code == 0 else None
        if got is not None and got == (want or got):
            return Step("torch", OK, got)
        how = f"install it: {board.python} -m pip install 'torch=={want}'" if want else ""
        problem = f"torch {got}, the head runs {want}" if got else "torch does not import"
        if got is None and _has_onnxruntime(transport, board):
            problem = "no torch: a torch-free board (it runs onnxruntime); for eager"
            return Step("torch", SKIPPED, f"{problem}, {how}".rstrip(", "))
        return Step("torch", FAILED, f"{problem}; {how}".rstrip("; "))

    return _guard("torch", task)


def _has_onnxruntime(transport: Transport, board: Any) -> bool:
    found = transport.run(
        [board.python, "-c", "import importlib.util as u; print(u.find_spec('onnxruntime'))"],
        timeout=deploy.COMMAND_TIMEOUT_S,
        check=False,
    )
    return found.exit_code == 0 and found.stdout.strip() not in ("", "None")


_NATIVE_BUILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from farm.engine import native
why = native.wheel()
if isinstance(why, str):
    print(json.dumps({"status": "skipped", "detail": why})); sys.exit()
try:
    path, built = native.build()
except native.NativeError as e:
    skip = str(e).startswith("no C++ compiler")
    print(json.dumps({"status": "skipped" if skip else "failed", "detail": str(e)})); sys.exit()
print(json.dumps({"status": "changed" if built else "ok", "detail": str(path)}))
"""


def _native(transport: Transport, board: Any, engine: Path) -> Step:
    """Build the ExecuTorch C++ runner on the board, from the deployed engine's source."""

    def task() -> Step:
        zip_path = deploy.remote_path(transport, board, engine)
        result = transport.run(
            [board.python, "-c", _NATIVE_BUILD, zip_path],
            timeout=deploy.COMMAND_TIMEOUT_S + 600,  # a compile on a slow board
            check=False,
        )
        try:
            said = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            return Step("native", FAILED, f"the runner build did not finish: {tail}")
        return Step("native", said["status"], said["detail"])

    return _guard("native", task)


def _cache(transport: Transport, board: Any) -> Step:
    def task() -> Step:
        root = deploy.cache_root(transport, board)
        if transport.stat(root) is not None:
            return Step("cache", OK, root)
        transport.run(["mkdir", "-p", "--", root], timeout=deploy.COMMAND_TIMEOUT_S)
        return Step("cache", CHANGED, f"created {root}")

    return _guard("cache", task)


def _engine(transport: Transport, board: Any, engine: Path) -> Step:
    def task() -> Step:
        pushed = deploy.deploy(transport, board, [engine]).pushed
        where = deploy.remote_path(transport, board, engine)
        return Step("engine", CHANGED if pushed else OK, where)

    return _guard("engine", task)


def _facts(transport: Transport, board: Any, facts_dir: Path, host_key: str | None) -> Step:
    def task() -> Step:
        probed = deploy.probe(transport, board).model_dump()
        facts: dict[str, Any] = {k: probed[k] for k in FACTS}
        if facts["memory_total_mb"] is not None:
            facts["memory_total_mb"] = round(facts["memory_total_mb"])
        path = facts_dir / f"{board.name}.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        if host_key is None and "host_key" in old:
            facts["host_key"] = old["host_key"]  # recorded by an earlier --trust-host-key run
        elif host_key is not None:
            facts["host_key"] = host_key
        summary = f"{facts['cpu_model']}, {facts['cpus']} cores, {facts['memory_total_mb']} MB"
        summary += f", governor {facts['governor'] or 'n/a'}"
        summary += f", runs {', '.join(facts['runtimes']) or 'no runtime'}"
        if facts == old:
            return Step("facts", OK, summary)
        facts_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        tmp.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return Step("facts", CHANGED, f"{summary} → {path}")

    return _guard("facts", task)
