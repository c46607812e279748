"""Where a task, a job and a board stand, and the moves between states, as data.

Readers ask this module (``is_terminal``, ``has_result``, ``can_move``); nobody
re-lists states. The store's writer is the one place a state changes, and it
checks every move against the tables here, so an illegal move is an error at
the place it happens (``farm.errors.IllegalTransition``).

How a task moves::

    queued ──► deploying ──► running ──► done | does-not-fit
       ▲            │            │
       └── retry ◄──┴────────────┴──► failed
    cancelled from any state that is not terminal;
    queued ──► failed when no healthy board can take the task;
    deploying | running ──► queued after a head restart (requeue)

How a job moves::

    queued ──► running ──► done | failed | cancelled      (queued ──► cancelled)
    queued | running ──► interrupted ──► running (farm resume) | cancelled
                  (an embedded farm that ran it died: the next farm to open the store says so)

How a board's health moves::

    healthy ◄──► quarantined
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class TaskState(StrEnum):
    """Where one task (one cell of the matrix) is."""

    QUEUED = "queued"
    DEPLOYING = "deploying"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DOES_NOT_FIT = "does-not-fit"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return not TASK_MOVES[self]

    def has_result(self) -> bool:
        """A cell of the matrix is answered: measured, or known not to fit."""
        return self in (TaskState.DONE, TaskState.DOES_NOT_FIT)

    def in_flight(self) -> bool:
        """On a board now: what a restarted head puts back in the queue."""
        return self in (TaskState.DEPLOYING, TaskState.RUNNING)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # every task has a result
    FAILED = "failed"  # finished, some task failed or was cancelled
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # its embedded owner died; `farm resume` runs what is left

    def is_terminal(self) -> bool:
        return not JOB_MOVES[self]


class BoardHealth(StrEnum):
    HEALTHY = "healthy"
    QUARANTINED = "quarantined"

    def is_terminal(self) -> bool:
        return False


_T = TaskState
TASK_MOVES: Mapping[TaskState, frozenset[TaskState]] = {
    _T.QUEUED: frozenset({_T.DEPLOYING, _T.FAILED, _T.CANCELLED}),
    # does-not-fit from deploying: the station refused the cell before any engine ran
    # (the board lacks the runtime; the runtime cannot lower the model)
    _T.DEPLOYING: frozenset({_T.RUNNING, _T.QUEUED, _T.FAILED, _T.CANCELLED, _T.DOES_NOT_FIT}),
    _T.RUNNING: frozenset({_T.DONE, _T.DOES_NOT_FIT, _T.QUEUED, _T.FAILED, _T.CANCELLED}),
    _T.DONE: frozenset(),
    _T.FAILED: frozenset(),
    _T.DOES_NOT_FIT: frozenset(),
    _T.CANCELLED: frozenset(),
}
"""The legal moves of a task: ``TASK_MOVES[from]`` is every state it may go to."""

_J = JobState
JOB_MOVES: Mapping[JobState, frozenset[JobState]] = {
    _J.QUEUED: frozenset({_J.RUNNING, _J.CANCELLED, _J.INTERRUPTED}),
    _J.RUNNING: frozenset({_J.DONE, _J.FAILED, _J.CANCELLED, _J.INTERRUPTED}),
    _J.INTERRUPTED: frozenset({_J.RUNNING, _J.CANCELLED}),
    _J.DONE: frozenset(),
    _J.FAILED: frozenset(),
    _J.CANCELLED: frozenset(),
}

BOARD_MOVES: Mapping[BoardHealth, frozenset[BoardHealth]] = {
    BoardHealth.HEALTHY: frozenset({BoardHealth.QUARANTINED}),
    BoardHealth.QUARANTINED: frozenset({BoardHealth.HEALTHY}),
}

_MOVES: Mapping[type, Mapping[Any, frozenset[Any]]] = {
    TaskState: TASK_MOVES,
    JobState: JOB_MOVES,
    BoardHealth: BOARD_MOVES,
}

IN_FLIGHT_TASK_STATES = frozenset(s for s in TaskState if s.in_flight())


def can_move(
    current: TaskState | JobState | BoardHealth, target: TaskState | JobState | BoardHealth
) -> bool:
    """Whether ``current → target`` is a legal move (of the same kind of state)."""
    return type(target) is type(current) and target in _MOVES[type(current)][current]
