"""Every read the report makes of the store, in one place.

The report asks the store's typed read API (``farm.store.read.Reader``: a local
store, or a head's through ``farm.client``) for a job, the job's cells and a
task's layer rows, and nothing else.
"""

from __future__ import annotations

from farm.errors import NotFound
from farm.store import Cell, JobRecord, LayerRecord
from farm.store.read import Reader


def job(store: Reader, ref: str) -> JobRecord:
    """The job ``ref`` names (an id, or ``latest``); a one-line error when there is none."""
    found = store.job(ref)
    if found is None:
        raise NotFound(f"no job {ref!r}")
    return found


def cells(store: Reader, job_id: str) -> list[Cell]:
    """One cell per task of the job, in task order, with its result (or None)."""
    return store.cells(job_id)


def layers(store: Reader, task_id: str) -> list[LayerRecord]:
    """The task's per-layer rows, in execution order."""
    return store.layers(task_id)
