"""A station runs tasks on the boards it physically reaches.

One ``Station`` per Ray node (not per board: an actor is a ~100 MB process, and a
head must drive hundreds of boards). It is threaded: each task blocks one thread
on its board's engine, and a per-board lock keeps a board to one measurement at a
time even if the scheduler were to double-book it.

For one task the station:

1. exports the model artifact into its own cache (deterministic bytes, so every
   station gets the same sha256) — once per artifact, under a lock;
2. deploys the engine zip and the artifact to the board's cache (skipped when
   the board already holds them, verified by sha256 when pushed);
3. takes the board's lease (``farm.scheduler.lease``: a lock on the board
   itself, so another farm pointed at the same board waits) and, holding it,
   runs the engine — the board's warm engine (one long-lived process speaking
   JSON lines, whose start-up, a torch import, has its own limit) or a fresh
   process for ``isolation: process`` — with the task's timeout, while the
   board's power monitor (if any) records (the engine's protocol, and what the
   station keeps per board between tasks, are ``farm.scheduler.engine_client``:
   ``EngineClient``, ``BoardLink``);
4. validates the engine's result (``farm.result.parse_engine_result``) and
   returns an :class:`~farm.scheduler.messages.Outcome`: the state, the typed
   result, the error and whether it is worth retrying (the transport error's
   own ``retryable``), and the task's log lines. Errors never escape as
   exceptions: the scheduler decides what to do about them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm import deploy
from farm.engine.pulse import PulseSpec
from farm.engine.request import Request
from farm.errors import (
    BoardBusy,
    CannotLower,
    CommandFailed,
    EngineError,
    Failure,
    FarmError,
    HostKeyError,
    TransportError,
    without_board,
)
from farm.result import EngineResult, parse_engine_result
from farm.scheduler.engine_client import BoardLink, EngineClient
from farm.scheduler.lease import LOCK_FILE, MEASURING_FILE, TTL_S, BoardLease, holder
from farm.scheduler.messages import BoardCheck, EngineStarted, Outcome, TaskPayload
from farm.spec import Board, PlannedTask, knob
from farm.states import TaskState

log = logging.getLogger(__name__)

Running = Callable[[EngineStarted], None]
"""``running(EngineStarted(...))``: tell the scheduler the engine started."""


class _TaskLog:
    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []

    def __call__(self, line: str) -> None:
        self.lines.append((time.time(), line))


class Station:
    def __init__(
        self,
        name: str,
        *,
        cache_dir: str | Path = "~/.cache/farm/station",
        running: Running | None = None,
        monitor: Callable[[str], Any] | None = None,
    ):
        self.name = name
        self.cache_dir = Path(cache_dir).expanduser()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._running = running or (lambda report: None)
        self._monitor = monitor
        self._links: dict[str, BoardLink] = {}
        self._links_lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._artifacts: dict[str, Any] = {}
        self._engine_file: Path | None = None

    # -- public ---------------------------------------------------------------------

    def run_task(self, payload: TaskPayload) -> Outcome:
        tlog = _TaskLog()
        board = payload.board
        tlog(f"station {self.name}: attempt {payload.attempt} on {board.name}")
        link = self._link(board)
        started = _Started()
        with link.lock:
            link.task = payload.task_id
            try:
                result, markers, trace = self._run(link, payload, tlog, started)
            except TransportError as exc:
                link.drop()
                tlog(f"transport error: {exc}")
                # The board failed, not the task. Whether the task may simply run
                # again is the error's to say: a lost connection yes, a command that
                # failed or a host key refused no. A host key that cannot be trusted
                # takes its board out of service at once.
                # A board busy with another farm's task is not at fault either.
                failure = Failure.of(
                    exc,
                    board_fault=not isinstance(exc, BoardBusy),
                    quarantine=isinstance(exc, HostKeyError),
                )
                return _outcome(TaskState.FAILED, tlog, started, failure=failure)
            except CannotLower as exc:  # the runtime cannot take this model: its reason
                tlog(f"does not fit: {exc}")
                return _outcome(TaskState.DOES_NOT_FIT, tlog, started, failure=Failure.of(exc))
            except EngineError as exc:
                link.drop()
                tlog(f"engine error: {exc}")
                return _outcome(TaskState.FAILED, tlog, started, failure=Failure.of(exc))
            except FarmError as exc:
                tlog(f"error: {exc}")
                return _outcome(TaskState.FAILED, tlog, started, failure=Failure.of(exc))
            except Exception as exc:  # a bug or an unexpected library error: record it whole
                log.exception("task %s failed unexpectedly", payload.task_id)
                link.drop()
                tlog(f"unexpected error: {exc!r}")
                return _outcome(TaskState.FAILED, tlog, started, failure=Failure.of(exc))
            finally:
                link.task = None
        if result.status == "does_not_fit":
            mem, why = result.memory, None
            if mem.required_mb is None and result.error:
                tlog(f"does not fit: {result.error}")
                # the runtime's or the board's reason, kept as the task's error (the tables')
                why = Failure("engine", result.error)
            else:
                tlog(
                    f"does not fit: needs {mem.required_mb or 0:.1f} MB,"
                    f" {mem.available_mb or 0:.1f} MB available"
                )
            return _outcome(TaskState.DOES_NOT_FIT, tlog, started, result=result, markers=markers,
                            failure=why)  # fmt: skip
        if result.status != "ok":
            tlog(f"engine reported: {result.error}")
            return _outcome(
                TaskState.FAILED, tlog, started, result=result, markers=markers,
                failure=Failure("engine", result.error or "no error given"),
            )  # fmt: skip
        return _outcome(TaskState.DONE, tlog, started, result=result, markers=markers, trace=trace)

    def abort(self, task_ids: list[str]) -> int:
        """Stop the engines running ``task_ids`` now (their job was cancelled): each task's
        run ends in an error its scheduler records as cancelled. Returns how many."""
        with self._links_lock:
            links = [link for link in self._links.values() if link.task in task_ids]
        for link in links:
            engine = link.engine
            if engine is not None and engine.running:
                log.info("%s: stopping the engine of cancelled task %s", link.board.name, link.task)
                engine.kill()
        return len(links)

    def check_board(self, board: Board) -> BoardCheck:
        """Reachability, host key, versions, free disk and memory, engine deployed."""
        link = self._link(board)
        with link.lock:
            try:
                transport = link.connected()
                engine = self._engine_zip()
                deployed = deploy.is_present(transport, board, [engine])
                try:
                    found = deploy.probe(transport, board)
                except CommandFailed as exc:  # reached, but its python could not answer
                    return BoardCheck(
                        board.name, reachable=True, host_key="ok", engine_deployed=deployed,
                        error=_probe_failed(board, exc),
                    )  # fmt: skip
                return BoardCheck(
                    board=board.name,
                    ok=True,
                    reachable=True,
                    host_key="ok",
                    engine_deployed=deployed,
                    probe=found,
                )
            except HostKeyError as exc:
                link.drop()
                return BoardCheck(
                    board.name, reachable=True, host_key="refused", error=without_board(exc)
                )
            except TransportError as exc:
                link.drop()
                return BoardCheck(board.name, reachable=False, error=without_board(exc))

    def close(self) -> None:
        with self._links_lock:
            for link in self._links.values():
                link.drop()

    # -- the steps ------------------------------------------------------------------

    def _run(
        self, link: BoardLink, payload: TaskPayload, tlog: _TaskLog, started: _Started
    ) -> tuple[EngineResult, dict | None, bytes | None]:
        board, task = link.board, payload.task
        transport = link.connected()
        refusal = self._cannot_run(link, transport, task)
        if refusal is not None:  # before anything is exported or deployed for it
            return (
                EngineResult(status="does_not_fit", error=refusal, task_id=payload.task_id),
                None,
                None,
            )
        engine_zip = self._engine_zip()
        engine = link.client(engine_zip)
        artifact = self._artifact(task)
        if artifact.target is not None:  # a compiled library: only for the board it was built for
            from farm.export.aoti import mismatch

            why = mismatch(artifact.target, link.probe.machine, link.probe.torch)
            if why is not None:
                raise CannotLower(f"{board.name} cannot load it: {why}")
        began = time.time()
        report = deploy.deploy(
            transport, link.board, [engine_zip, Path(artifact.path), *artifact.companions]
        )
        started.deploy_bytes = report.bytes_pushed
        if report.pushed:
            names = ", ".join(Path(p).name for p in report.pushed)
            tlog(f"deployed {names} ({report.bytes_pushed} bytes) in {time.time() - began:.2f}s")
        request = self._request(link, task, artifact, payload.task_id)
        wire = request.to_json()
        monitor = self._monitor(board.power.monitor) if board.power and self._monitor else None
        timeout = float(task.measure.timeout_s)
        startup = float(task.measure.startup_timeout_s or board.startup_timeout_s)
        if payload.isolation == "process":
            # a fresh process pays the start-up (a torch import) inside its own run
            runner = lambda: engine.run_process(wire, startup + timeout)  # noqa: E731
        else:
            runner = lambda: engine.run(wire, timeout)  # noqa: E731
        with BoardLease(
            *self._leaser(link, engine, startup),
            who=holder(payload.task_id, payload.job_id),
            board=board.name,
            wait_s=timeout,
            log=tlog,
        ):
            started.at = time.time()
            self._running(
                EngineStarted(payload.task_id, payload.attempt, started.at, started.deploy_bytes)
            )
            if payload.isolation != "process":
                engine.start(startup, request.runtime)
            if monitor is None:
                raw = runner()
                trace = None
            else:
                from farm.scheduler.energy import measure_with_monitor

                raw, trace = measure_with_monitor(
                    monitor,
                    board,
                    runner,
                    engine.clock_exchange,
                    tlog,
                )
        for line in raw.get("log", None) or []:
            tlog(f"engine: {line}")
        raw["artifact"] = artifact.record()
        raw.setdefault("warnings", []).extend(_agreement_warnings(artifact.record()))
        return parse_engine_result(raw), raw.get("markers"), trace

    def _cannot_run(self, link: BoardLink, transport, task: PlannedTask) -> str | None:
        """Why the board cannot run the cell's runtime (the board probe's reason, e.g.
        "torch is not installed in ..."), or None. Probed once per connection."""
        runtime = knob(task.variant, "runtime")
        if link.probe is None:
            link.probe = deploy.probe(transport, link.board)
        if runtime in link.probe.runtimes:
            return None
        why = link.probe.unavailable.get(runtime, "the board's probe does not list it")
        return f"{link.board.name} cannot run {runtime}: {why}"

    def _link(self, board: Board) -> BoardLink:
        with self._links_lock:
            link = self._links.get(board.name)
            if link is None or link.board != board:
                if link is not None:
                    link.drop()
                link = self._links[board.name] = BoardLink(board)
            return link

    def _transport(self, link: BoardLink):
        return link.connected()

    def _engine_zip(self) -> Path:
        if self._engine_file is None:
            self._engine_file = deploy.build_engine_zip(self.cache_dir / "engine")
        return self._engine_file

    def _artifact(self, task: PlannedTask):
        """The cell's artifact (`farm.export`: eager, or lowered for its runtime and
        precision), made once per station; `CannotLower` (remembered too) when the
        runtime cannot take the model."""
        from farm import export  # torch: imported only by stations that run tasks

        variant = task.variant
        activation, runtime, precision = (
            knob(variant, name) for name in ("activation", "runtime", "precision")
        )
        # an exported program has static shapes: a runtime's artifact is made per batch
        batch = 1 if runtime == "eager" else variant.get("batch") or 1
        key = json.dumps(
            [task.model.model_dump(mode="json"), activation, runtime, precision, batch],
            sort_keys=True,
        )
        found = self._artifacts.get(key)  # exported before: no lock (a thousand boards wait on it)
        if found is None:
            with self._export_lock:
                if key not in self._artifacts:
                    try:
                        ref = export.export(
                            task.model, runtime=runtime, precision=precision,
                            activation=activation, batch=batch,
                            cache_dir=self.cache_dir / "artifacts",
                        )  # fmt: skip
                    except CannotLower as exc:
                        ref = exc
                    if task.model.module:  # the user's code may change: package it every time
                        found = ref
                    else:
                        self._artifacts[key] = ref
                found = found if found is not None else self._artifacts[key]
        if isinstance(found, CannotLower):
            raise found
        return found

    def _request(self, link: BoardLink, task: PlannedTask, artifact, task_id: str) -> Request:
        """The engine's request (``farm.engine.request.Request``, sent as its
        ``to_json()``) from the typed task."""
        board = link.board
        proc = board.processor(task.processor)
        if proc is None:
            raise FarmError(f"{board.name} has no processor {task.processor!r}")
        variant, measure = task.variant, task.measure
        return Request(
            task_id=task_id,
            artifact=deploy.remote_path(link.transport, board, Path(artifact.path)),
            device=proc.device,
            threads=variant.get("threads") or proc.threads,
            affinity=tuple(proc.affinity) if proc.affinity is not None else None,
            memory_mb=proc.memory_mb,
            # a runtime's artifact has its batch built in (static shapes)
            batch=(variant.get("batch") or 1) if artifact.runtime == "eager" else 1,
            iterations=measure.iterations,
            warmup=measure.warmup,
            layers=measure.layers,
            layer_iterations=measure.layer_iterations,
            memory=measure.memory,
            sync_pulse=PulseSpec(chips=16, chip_ms=20, seed=1)
            if board.power and self._monitor
            else None,
            board_lock=board.board_lock + MEASURING_FILE,  # board-wide: any account
            runtime=artifact.runtime,
            precision=artifact.precision,
        )

    def _leaser(self, link: BoardLink, engine: EngineClient, startup_s: float) -> tuple[Any, float]:
        """The board's lease process (started if need be), and how long its next answer
        may take: a fresh one starts Python first."""
        if link.leaser is not None and link.leaser.alive:
            return link.leaser, link.board.command_timeout_s
        path = link.board.board_lock + LOCK_FILE  # board-wide: any account, any cache_dir
        argv = [*engine.argv("lease"), path, f"--ttl={TTL_S:g}"]
        link.leaser = link.connected().open_process(argv)
        return link.leaser, startup_s


def _agreement_warnings(record: dict[str, Any]) -> list[str]:
    """An int8 cell whose top-1 class disagrees with eager on more than 1% of the
    seeded inputs says so beside its time."""
    agreement = record.get("agreement") or {}
    top1 = agreement.get("top1")
    if record.get("precision") != "int8" or top1 is None:
        return []
    from farm.export.agree import TOP1_WARN  # the threshold lives with the check

    if top1 >= TOP1_WARN:
        return []
    return [
        f"{record['runtime']} int8 agrees with eager on top-1 for {top1:.1%} of "
        f"{agreement.get('n')} seeded inputs (< {TOP1_WARN:.0%}); max abs diff "
        f"{agreement.get('max_abs_diff'):.2g}"
    ]


@dataclass
class _Started:
    """How far an attempt got: when its engine started (None: it never did), and what
    its deploy step pushed."""

    at: float | None = None
    deploy_bytes: int = 0


def _outcome(state: TaskState, tlog: _TaskLog, started: _Started, **fields: Any) -> Outcome:
    """The attempt's outcome, with its log lines and when the engine started (if it did)."""
    return Outcome(
        state,
        logs=tlog.lines,
        running_at=started.at,
        deploy_bytes=started.deploy_bytes,
        **fields,
    )


def _probe_failed(board: Board, exc: CommandFailed) -> str:
    """One line for a board that answered but whose ``python:`` could not run the probe
    (not the probe script itself, which the command's text would repeat)."""
    result = exc.result
    said = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
    if result.exit_code in (126, 127) or "not found" in said[0]:
        return (
            f"the board is reachable, but its python {board.python!r} was not found there"
            " (the inventory's `python:`)"
        )
    return (
        f"the board is reachable, but the probe run with {board.python!r} exited"
        f" {result.exit_code}: {said[0]}"
    )
