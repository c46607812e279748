"""Every read the report makes of the store, in one place.

The report never queries SQLite itself: it asks for a job, the job's rows (one
per task, with its result) and a task's layer rows. When the store grows its
typed read API, only this module changes.
"""

from __future__ import annotations

from typing import Any, Protocol

from farm.errors import UserError


class Store(Protocol):
    """What the report reads: a local ``farm.store.Store`` or a head's remote store."""

    def job(self, job_id: str) -> dict[str, Any] | None: ...
    def results(self, job_id: str) -> list[dict[str, Any]]: ...
    def layers(self, task_id: str) -> list[dict[str, Any]]: ...


def job(store: Store, ref: str) -> dict[str, Any]:
    """The job ``ref`` names (an id, or ``latest``); a one-line error when there is none."""
    found = store.job(ref)
    if found is None:
        raise UserError(f"{getattr(store, 'path', 'the head')}: no job {ref!r}")
    return found


def rows(store: Store, job_id: str) -> list[dict[str, Any]]:
    """One row per task of the job, in task order, with its result (or None)."""
    return store.results(job_id)


def layers(store: Store, task_id: str) -> list[dict[str, Any]]:
    """The task's per-layer rows, in execution order."""
    return store.layers(task_id)
