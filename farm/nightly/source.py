"""Every read ``farm.nightly`` makes of the store, in one place.

Comparisons, trends and the drift check see jobs and *measured cells* (a
task's result with its cell's identity and its board's tags), never SQL or the
store's row shapes, so moving to the store's typed read API touches only this
module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from farm.errors import UserError
from farm.nightly import samples

NIGHTLY = "nightly"  # the job name a lab's nightly sweep carries (jobs/nightly.yaml)
_FINISHED = ("done", "failed")  # jobs that ran to the end (a cancelled night is no baseline)
_SCAN = 100_000  # jobs looked at when searching by name: all of them, in practice


def variant_label(variant: dict[str, Any]) -> str:
    """A variant as one short canonical string, as ``farm results`` shows it:
    ``activation=relu,threads=1``, unset values left out, ``-`` for none."""
    return ",".join(f"{k}={v}" for k, v in sorted(variant.items()) if v is not None) or "-"


@dataclass(frozen=True, order=True)
class Cell:
    """One cell of the matrix: what is compared across jobs."""

    model: str
    board: str
    processor: str
    variant: str

    def __str__(self) -> str:
        return f"{self.model}/{self.board}/{self.processor}/{self.variant}"

    @property
    def peers_key(self) -> tuple[str, str, str]:
        """The cell on any board: what boards of the same tags are compared on."""
        return self.model, self.processor, self.variant


@dataclass
class Measured:
    """A task's outcome as the nightly tools read it."""

    cell: Cell
    task_id: str
    state: str
    result: dict[str, Any] | None
    job_id: str
    created: float
    tags: tuple[str, ...] | None = None  # the board's tags in the job's inventory
    store: Any = field(default=None, repr=False, compare=False)  # where the markers are

    def latencies_ms(self) -> np.ndarray:
        """Per-inference latencies, read from the stored markers on first use."""
        if self.store is None or self.state != "done":
            return np.zeros(0)
        return samples.latencies_ms(self.store.markers(self.task_id))

    def energies_mj(self) -> np.ndarray | None:
        return samples.energies_mj(self.result)


def find_job(store: Any, ref: str) -> dict[str, Any]:
    """A job by id or ``latest``; a ``UserError`` (exit 2) naming the reference otherwise."""
    job = store.job(ref)
    if job is None:
        raise UserError(f"no job {ref!r} in {getattr(store, 'path', 'the store')}")
    return job


def previous_job(store: Any, job: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The latest finished job named ``name`` (default: ``job``'s own) created before ``job``."""
    name = name or job["name"]
    for row in store.jobs(limit=_SCAN, states=_FINISHED):
        if row["name"] == name and row["id"] != job["id"] and row["created"] < job["created"]:
            return find_job(store, row["id"])
    raise UserError(f"no finished job named {name!r} before {job['id']}")


def jobs_named(store: Any, name: str, last: int) -> list[dict[str, Any]]:
    """The last ``last`` finished jobs named ``name``, oldest first."""
    rows = [r for r in store.jobs(limit=_SCAN, states=_FINISHED) if r["name"] == name]
    return [find_job(store, r["id"]) for r in reversed(rows[:last])]


def recent_jobs(store: Any, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` most recent finished jobs of any name, newest first."""
    return [find_job(store, r["id"]) for r in store.jobs(limit=limit, states=_FINISHED)]


def measured(store: Any, job: dict[str, Any]) -> list[Measured]:
    """Every task of ``job`` as a measured cell (the board is the one that ran it)."""
    tags = {b["name"]: tuple(b.get("tags") or ()) for b in job["spec"].get("_boards", [])}
    return [
        Measured(
            cell=Cell(row["model"], row["board"], row["processor"], variant_label(row["variant"])),
            task_id=row["id"],
            state=row["state"],
            result=row["result"],
            job_id=job["id"],
            created=job["created"],
            tags=tags.get(row["board"]),
            store=store,
        )
        for row in store.results(job["id"])
    ]


def latest_per_cell(store: Any, jobs: Iterable[dict[str, Any]]) -> list[Measured]:
    """The newest done result of every cell across ``jobs``."""
    newest: dict[Cell, Measured] = {}
    for job in jobs:
        for m in measured(store, job):
            if (
                m.state == "done"
                and m.result
                and m.created >= getattr(newest.get(m.cell), "created", -1)
            ):
                newest[m.cell] = m
    return list(newest.values())


def board_health(store: Any) -> dict[str, dict[str, Any]]:
    return store.board_health()
