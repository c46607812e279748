"""What travels between the scheduler and a station: typed, frozen records.

    scheduler ──TaskPayload──► station        (one task on one board, one attempt)
    station   ──[EngineStarted]──► scheduler
                                              (engines started, in batches: reports.py)
    station   ──Outcome──────► scheduler      (state, result, what the error means)
    scheduler ──Board────────► station ──BoardCheck──► scheduler / CLI (health check)
    head      ──HeadInfo, [NodeInfo]──► client  (ping, nodes)

They cross a Ray actor call as pickles; no ``dict`` is dug into by key on either side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from farm.deploy import BoardProbe
from farm.errors import Failure
from farm.result import EngineResult
from farm.spec import Board, PlannedTask
from farm.states import TaskState

Isolation = Literal["warm", "process"]


@dataclass(frozen=True)
class TaskPayload:
    """One attempt of one task, as the station that reaches ``board`` receives it."""

    task_id: str
    job_id: str
    task: PlannedTask
    board: Board
    attempt: int
    isolation: Isolation = "warm"


@dataclass(frozen=True)
class EngineStarted:
    """The engine started on attempt ``attempt`` of a task at ``at`` (the station's
    clock), after the deploy step pushed ``deploy_bytes`` to the board."""

    task_id: str
    attempt: int
    at: float
    deploy_bytes: int = 0


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to. The station decides what a failure *means*
    (``Failure``: retryable, the board's fault, quarantine now); the scheduler
    decides what to *do*."""

    state: TaskState
    result: EngineResult | None = None
    markers: dict | None = None
    failure: Failure | None = None
    logs: list[tuple[float, str]] = field(default_factory=list)
    trace: bytes | None = None
    running_at: float | None = None  # when the engine started (None: it never did)
    deploy_bytes: int = 0  # what the deploy step pushed to the board

    @property
    def error(self) -> str | None:
        return str(self.failure) if self.failure is not None else None

    def started(self, task_id: str, attempt: int) -> EngineStarted | None:
        """The "engine started" report this outcome repeats (None: it never started)."""
        if self.running_at is None:
            return None
        return EngineStarted(task_id, attempt, self.running_at, self.deploy_bytes)

    @property
    def retryable(self) -> bool:
        return self.failure is not None and self.failure.retryable

    @property
    def board_fault(self) -> bool:
        return self.failure is not None and self.failure.board_fault

    @property
    def quarantine(self) -> bool:
        return self.failure is not None and self.failure.quarantine

    @classmethod
    def lost(cls, exc: BaseException) -> Outcome:
        """A station call that raised (actor died, node lost): retry it elsewhere."""
        failure = Failure(
            type(exc).__name__, f"station call failed: {type(exc).__name__}: {exc}", retryable=True
        )
        return cls(TaskState.FAILED, failure=failure)


@dataclass(frozen=True)
class BoardCheck:
    """A board's health check: reachability, host key, what it runs, engine deployed."""

    board: str
    ok: bool = False
    reachable: bool | None = None
    host_key: str | None = None
    engine_deployed: bool | None = None
    probe: BoardProbe | None = None
    error: str | None = None


@dataclass(frozen=True)
class HeadInfo:
    """A head: its address, its store and the jobs it is running."""

    address: str | None
    db: str
    running: list[str]


@dataclass(frozen=True)
class NodeInfo:
    """A live Ray node of a head's cluster and the stations it serves."""

    address: str
    id: str
    stations: list[str]
