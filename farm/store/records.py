"""What the read API returns, and what the writer publishes: typed, frozen records.

Every record is a plain frozen dataclass (picklable, so it crosses Ray to a
client unchanged). Results are :class:`farm.result.EngineResult`, the record the
station validated on arrival; nothing here is a ``dict`` dug into by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from farm.result import EngineResult
from farm.spec import CellKey, PlannedTask, TaskSpec
from farm.states import BoardHealth, JobState, TaskState


@dataclass(frozen=True)
class JobRecord:
    id: str
    name: str
    source: str | None
    spec: dict[str, Any]  # the job as validated (``farm.spec.Job`` dumped to JSON)
    boards: list[dict[str, Any]]  # the board specs it was planned on
    priority: int
    state: JobState
    created: float
    updated: float
    owner: dict[str, Any] | None = None  # the embedded farm that runs it (``farm.owner``)


@dataclass(frozen=True)
class JobProgress:
    """A job's state and how many of its tasks are in each state."""

    job_id: str
    state: JobState
    counts: dict[TaskState, int]

    @property
    def finished(self) -> int:
        return sum(n for s, n in self.counts.items() if s.is_terminal())


@dataclass(frozen=True)
class TaskRecord:
    id: str
    job_id: str
    index: int
    key: str
    model: str
    board: str  # where it runs (or last ran): it may move on a retry
    processor: str
    variant: dict[str, Any]
    state: TaskState
    attempts: int
    error: str | None
    created: float
    updated: float
    spec_json: str = field(repr=False, default="{}")  # the TaskSpec, without candidates
    candidates: list[str] = field(repr=False, default_factory=list)  # shared per job: read-only
    error_kind: str | None = None  # the last failure's kind (farm.errors.Failure.kind)

    @property
    def cell(self) -> CellKey:
        """The task's cell (``farm.spec.CellKey``): what pairs it with other jobs' tasks."""
        return CellKey.of(self.model, self.board, self.processor, self.variant)

    def planned(self) -> PlannedTask:
        """The task as planned: model reference, measure settings, candidate boards."""
        return PlannedTask.of(TaskSpec.model_validate_json(self.spec_json), self.candidates)


class QueuedTask(NamedTuple):
    """A queued task as a scheduler queues it: where it waits and where it may go, not
    its spec (``Reader.task_spec``, read when it is dispatched)."""

    id: str
    index: int
    board: str
    candidates: list[str]  # shared by the job's tasks that have the same list: read-only
    attempts: int


@dataclass(frozen=True)
class Cell:
    """A task with its result (``None`` where it has none: queued, failed early...)."""

    task: TaskRecord
    result: EngineResult | None
    result_at: float | None = None

    @property
    def key(self) -> CellKey:
        return self.task.cell


@dataclass(frozen=True)
class LayerRecord:
    """One stored layer row (the columns reports sort and sum by)."""

    task_id: str
    index: int
    name: str
    type: str
    params: int | None
    time_ms: float | None
    share: float | None
    nonlinear: bool
    resident_bytes: int | None
    energy_mj: float | None


@dataclass(frozen=True)
class LogLine:
    at: float
    line: str


@dataclass(frozen=True)
class BoardRecord:
    name: str
    state: BoardHealth
    failures: int
    last_error: str | None
    updated: float


# -- events: what the writer publishes after each committed change ---------------------


@dataclass(frozen=True)
class TaskEvent:
    """A task moved. ``from_state`` is None for its first event (created queued)."""

    task_id: str
    job_id: str
    board: str | None
    from_state: TaskState | None
    to_state: TaskState
    attempt: int
    at: float
    error: str | None = None
    detail: str | None = None
    deploy_bytes: int = 0  # on deploying → running: what the deploy step pushed to the board
    error_kind: str | None = None  # the failure's kind, on a failure or the retry it caused


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    name: str
    from_state: JobState | None
    to_state: JobState
    at: float


@dataclass(frozen=True)
class BoardEvent:
    """A board's health was recorded (``from_state == to_state`` when only the
    failure count changed; ``from_state`` None for a board seen the first time)."""

    board: str
    from_state: BoardHealth | None
    to_state: BoardHealth
    failures: int
    error: str | None
    at: float


Event = TaskEvent | JobEvent | BoardEvent
