"""Every read ``farm.nightly`` makes of the store, in one place.

Comparisons, trends and the drift check see jobs (``JobRecord``) and *measured
cells* (a task's result with its cell's identity and its board's tags), read
through the store's read API (``farm.store.Reader``: a store file, or a head
through ``farm.client``), and nothing else of the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from farm.errors import NotFound
from farm.nightly import samples
from farm.spec import CellKey
from farm.states import JobState, TaskState
from farm.store import JobRecord, Reader

NIGHTLY = "nightly"  # the job name a lab's nightly sweep carries (jobs/nightly.yaml)
_FINISHED = (JobState.DONE, JobState.FAILED)  # ran to the end (a cancelled night is no baseline)
_SCAN = 100_000  # jobs looked at when searching by name: all of them, in practice


@dataclass
class Measured:
    """A task's outcome as the nightly tools read it (``result`` as the engine's JSON)."""

    cell: CellKey  # what is compared across jobs
    task_id: str
    state: TaskState
    result: dict[str, Any] | None
    job_id: str
    created: float
    tags: tuple[str, ...] | None = None  # the board's tags in the job's inventory
    store: Any = field(default=None, repr=False, compare=False)  # where the markers are

    def markers(self) -> dict[str, Any] | None:
        """The stored markers, read on first use (None for a task that did not finish)."""
        if self.store is None or self.state is not TaskState.DONE:
            return None
        if "_markers" not in self.__dict__:
            self.__dict__["_markers"] = self.store.markers(self.task_id)
        return self.__dict__["_markers"]

    def latencies_ms(self) -> np.ndarray:
        """Per-inference latencies (wall clock), read from the stored markers."""
        return samples.latencies_ms(self.markers())

    def cpu_ms(self) -> np.ndarray | None:
        """Per-inference CPU time (the engine's process clock), where it was recorded."""
        return samples.cpu_ms(self.markers())

    def energies_mj(self) -> np.ndarray | None:
        return samples.energies_mj(self.result)


def find_job(store: Reader, ref: str) -> JobRecord:
    """A job by id or ``latest``; a ``NotFound`` (exit 2) naming the reference otherwise."""
    job = store.job(ref)
    if job is None:
        raise NotFound(f"no job {ref!r}")
    return job


def latest_finished(store: Reader) -> JobRecord:
    """The newest job that ran to its end (done or failed): what a plain ``compare`` judges
    (a running or cancelled job is no night to judge)."""
    rows = store.jobs(limit=1, states=_FINISHED)
    if not rows:
        raise NotFound("no finished job in the store")
    return rows[0]


def job_names(store: Reader) -> list[str]:
    """The names of the finished jobs in the store, sorted."""
    return sorted({row.name for row in store.jobs(limit=_SCAN, states=_FINISHED)})


def previous_job(store: Reader, job: JobRecord, name: str | None = None) -> JobRecord:
    """The latest finished job named ``name`` (default: ``job``'s own) created before ``job``."""
    name = name or job.name
    for row in store.jobs(limit=_SCAN, states=_FINISHED, name=name):
        if row.id != job.id and row.created < job.created:
            return row
    raise NotFound(f"no finished job named {name!r} before {job.id}")


def jobs_named(store: Reader, name: str, last: int) -> list[JobRecord]:
    """The last ``last`` finished jobs named ``name``, oldest first."""
    return list(reversed(store.jobs(limit=last, states=_FINISHED, name=name)))


def recent_jobs(store: Reader, limit: int) -> list[JobRecord]:
    """The ``limit`` most recent finished jobs of any name, newest first."""
    return store.jobs(limit=limit, states=_FINISHED)


def measured(store: Reader, job: JobRecord) -> list[Measured]:
    """Every task of ``job`` as a measured cell (the board is the one that ran it)."""
    tags = {b["name"]: tuple(b.get("tags") or ()) for b in job.boards}
    out = []
    for cell in store.cells(job.id):
        task = cell.task
        out.append(
            Measured(
                cell=cell.key,
                task_id=task.id,
                state=task.state,
                result=cell.result.to_json() if cell.result is not None else None,
                job_id=job.id,
                created=job.created,
                tags=tags.get(task.board),
                store=store,
            )
        )
    return out


def latest_per_cell(store: Reader, jobs: Iterable[JobRecord]) -> list[Measured]:
    """The newest done result of every cell across ``jobs``."""
    newest: dict[CellKey, Measured] = {}
    for job in jobs:
        for m in measured(store, job):
            if m.state is not TaskState.DONE or not m.result:
                continue
            if m.cell not in newest or m.created >= newest[m.cell].created:
                newest[m.cell] = m
    return list(newest.values())
