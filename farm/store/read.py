"""The read API: typed answers for the CLI, reports, metrics and nightly.

Everything here only reads; every answer is a record of ``farm.store.records``
(or a plain count). The head serves the same methods to remote clients
(``farm.client``), so a report reads the same records embedded or attached.

For each consumer:

- reports: ``job(id | "latest")``, ``cells(job)`` (tasks with typed results:
  latency, memory, energy, env/provenance), ``layers(task)``, ``match_cells(a, b)``;
- metrics: ``latest_cells()`` (the newest result of every cell across jobs),
  ``board_health()``, ``jobs_by_state()``, ``queue_depth()``;
- nightly: ``jobs(name=..., limit=N)`` (newest first), ``cells(job)``,
  ``markers(task)``: per-inference latencies are the widths of the markers'
  inference windows, and per-inference energies ride in the energy report
  (``per_inference_mj``), so no table of samples is needed.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
from collections.abc import Iterable
from typing import Any

from farm.errors import UnknownTask
from farm.result import EngineResult
from farm.spec import CellKey, TaskSpec
from farm.states import BoardHealth, JobState, TaskState
from farm.store.blobs import unpack
from farm.store.records import (
    BoardRecord,
    Cell,
    JobProgress,
    JobRecord,
    LayerRecord,
    LogLine,
    QueuedTask,
    TaskEvent,
    TaskRecord,
)

_TASK_COLUMNS = (
    "t.id, t.job_id, t.idx, t.key, t.model, t.board, t.processor, t.variant, t.state,"
    " t.attempts, t.error, t.created, t.updated, t.spec, t.candidates, t.error_kind"
)

_Lists = dict[tuple[str, int], list[str]]
"""Candidate board lists by (job, index): ``tasks.candidates`` points into them."""


def _task(row: sqlite3.Row, lists: _Lists) -> TaskRecord:
    return TaskRecord(
        id=row["id"],
        job_id=row["job_id"],
        index=row["idx"],
        key=row["key"],
        model=row["model"],
        board=row["board"],
        processor=row["processor"],
        variant=json.loads(row["variant"]),
        state=TaskState(row["state"]),
        attempts=row["attempts"],
        error=row["error"],
        error_kind=row["error_kind"],
        created=row["created"],
        updated=row["updated"],
        spec_json=row["spec"],
        candidates=lists[row["job_id"], row["candidates"]],
    )


def _cell(row: sqlite3.Row, lists: _Lists) -> Cell:
    data = row["data"]
    return Cell(
        task=_task(row, lists),
        result=EngineResult.model_validate_json(data) if data else None,
        result_at=row["result_at"],
    )


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        name=row["name"],
        source=row["source"],
        spec=json.loads(row["spec"]),
        boards=json.loads(row["boards"]),
        priority=row["priority"],
        state=JobState(row["state"]),
        created=row["created"],
        updated=row["updated"],
        owner=json.loads(row["owner"]) if row["owner"] else None,
    )


def _in(values: Iterable[Any]) -> tuple[str, list[Any]]:
    values = list(values)
    return f"({','.join('?' * len(values))})", values


class Reader:
    """Typed reads. Mixed into :class:`farm.store.Store` with the writer."""

    _db: sqlite3.Connection
    _lock: threading.RLock

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # -- jobs -----------------------------------------------------------------------

    def job(self, job_id: str) -> JobRecord | None:
        """A job by id, or the newest job for ``"latest"``."""
        if job_id == "latest":
            rows = self._query("SELECT * FROM jobs ORDER BY created DESC, rowid DESC LIMIT 1")
        else:
            rows = self._query("SELECT * FROM jobs WHERE id=?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs(
        self,
        *,
        limit: int = 20,
        states: Iterable[JobState] | None = None,
        name: str | None = None,
    ) -> list[JobRecord]:
        """Jobs newest first; only those in ``states`` / named ``name`` when given
        (``jobs(name="nightly", limit=7)``: the last seven nightly runs)."""
        where, args = [], []
        if states is not None:
            marks, values = _in(states)
            where.append(f"state IN {marks}")
            args += values
        if name is not None:
            where.append("name=?")
            args.append(name)
        sql = "SELECT * FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created DESC, rowid DESC LIMIT ?"
        return [_job(r) for r in self._query(sql, [*args, limit])]

    def unfinished_jobs(self) -> list[str]:
        """Ids of jobs a head should resume, oldest first."""
        marks, values = _in(s for s in JobState if not s.is_terminal())
        rows = self._query(f"SELECT id FROM jobs WHERE state IN {marks} ORDER BY created", values)
        return [r["id"] for r in rows]

    def jobs_by_state(self) -> dict[JobState, int]:
        rows = self._query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {JobState(r["state"]): r["n"] for r in rows}

    def queue_depth(self) -> dict[int, int]:
        """Queued tasks by their job's priority."""
        rows = self._query(
            "SELECT j.priority, COUNT(*) AS n FROM tasks t JOIN jobs j ON j.id = t.job_id"
            " WHERE t.state=? GROUP BY j.priority",
            (TaskState.QUEUED,),
        )
        return {r["priority"]: r["n"] for r in rows}

    # -- tasks ----------------------------------------------------------------------

    def counts(self, job_id: str) -> dict[TaskState, int]:
        rows = self._query(
            "SELECT state, COUNT(*) AS n FROM tasks WHERE job_id=? GROUP BY state", (job_id,)
        )
        return {TaskState(r["state"]): r["n"] for r in rows}

    def progress(self, job_id: str) -> JobProgress | None:
        """A job's state and task counts (``"latest"`` works too)."""
        job = self.job(job_id)
        return None if job is None else JobProgress(job.id, job.state, self.counts(job.id))

    def tasks(self, job_id: str, states: Iterable[TaskState] | None = None) -> list[TaskRecord]:
        sql, args = f"SELECT {_TASK_COLUMNS} FROM tasks t WHERE t.job_id=?", [job_id]
        if states is not None:
            marks, values = _in(states)
            sql += f" AND t.state IN {marks}"
            args += values
        rows = self._query(sql + " ORDER BY t.idx", args)
        lists = self._candidate_lists(rows)
        return [_task(r, lists) for r in rows]

    def task(self, task_id: str) -> TaskRecord | None:
        rows = self._query(f"SELECT {_TASK_COLUMNS} FROM tasks t WHERE t.id=?", (task_id,))
        return _task(rows[0], self._candidate_lists(rows)) if rows else None

    def queued(self, job_id: str) -> list[QueuedTask]:
        """The job's queued tasks in order, without their specs: what a scheduler
        keeps of each (a spec is read when its task is dispatched, ``task_spec``)."""
        rows = self._query(
            "SELECT id, job_id, idx, board, candidates, attempts FROM tasks"
            " WHERE job_id=? AND state=? ORDER BY idx",
            (job_id, TaskState.QUEUED),
        )
        lists = self._candidate_lists(rows)
        return [
            QueuedTask(
                r["id"],
                r["idx"],
                sys.intern(r["board"]),  # one string per board, not one per task
                lists[job_id, r["candidates"]],
                r["attempts"],
            )
            for r in rows
        ]

    def task_spec(self, task_id: str) -> TaskSpec:
        """The task's cell and measure settings as planned (without its candidates)."""
        rows = self._query("SELECT spec FROM tasks WHERE id=?", (task_id,))
        if not rows:
            raise UnknownTask(f"no task {task_id!r} in the store")
        return TaskSpec.model_validate_json(rows[0]["spec"])

    def _candidate_lists(self, rows: list[sqlite3.Row]) -> _Lists:
        """The candidate lists of the jobs ``rows`` belong to, each parsed once and
        shared by every task that points at it."""
        marks, values = _in({r["job_id"] for r in rows})
        found = self._query(
            f"SELECT job_id, idx, boards FROM candidate_sets WHERE job_id IN {marks}", values
        )
        return {(r["job_id"], r["idx"]): json.loads(r["boards"]) for r in found}

    def events(self, task_id: str) -> list[TaskEvent]:
        """A task's history, oldest first, in the shape the writer published it."""
        rows = self._query(
            "SELECT e.*, t.job_id FROM task_events e JOIN tasks t ON t.id = e.task_id"
            " WHERE e.task_id=? ORDER BY e.id",
            (task_id,),
        )
        return [
            TaskEvent(
                task_id=r["task_id"],
                job_id=r["job_id"],
                board=r["board"],
                from_state=TaskState(r["from_state"]) if r["from_state"] else None,
                to_state=TaskState(r["state"]),
                attempt=r["attempt"] or 0,
                at=r["at"],
                error=r["error"],
                detail=r["detail"],
                error_kind=r["error_kind"],
            )
            for r in rows
        ]

    def logs(self, task_id: str) -> list[LogLine]:
        rows = self._query("SELECT at, line FROM logs WHERE task_id=? ORDER BY id", (task_id,))
        return [LogLine(r["at"], r["line"]) for r in rows]

    # -- results --------------------------------------------------------------------

    def cells(self, job_id: str) -> list[Cell]:
        """Every task of the job in order, each with its result (or None)."""
        rows = self._query(
            f"SELECT {_TASK_COLUMNS}, r.data, r.created AS result_at FROM tasks t"
            " LEFT JOIN results r ON r.task_id = t.id WHERE t.job_id=? ORDER BY t.idx",
            (job_id,),
        )
        lists = self._candidate_lists(rows)
        return [_cell(r, lists) for r in rows]

    def latest_cells(self) -> list[Cell]:
        """The newest result of every cell (``farm.spec.CellKey``) across all jobs: what
        a metrics exporter shows. SQL takes the newest per stored variant; variants
        that differ only by spelled-out defaults are one cell, reduced here."""
        rows = self._query(
            f"SELECT * FROM (SELECT {_TASK_COLUMNS}, r.data, r.created AS result_at,"
            " r.rowid AS result_row,"
            " ROW_NUMBER() OVER (PARTITION BY t.model, t.board, t.processor, t.variant"
            " ORDER BY r.created DESC, r.rowid DESC) AS newest"
            " FROM tasks t JOIN results r ON r.task_id = t.id) WHERE newest = 1"
        )
        lists = self._candidate_lists(rows)
        newest: dict[CellKey, sqlite3.Row] = {}
        for row in sorted(rows, key=lambda r: (r["result_at"], r["result_row"])):
            key = CellKey.of(
                row["model"], row["board"], row["processor"], json.loads(row["variant"])
            )
            newest[key] = row  # the later result of one cell replaces the earlier
        return [_cell(newest[key], lists) for key in sorted(newest)]

    def match_cells(self, job_a: str, job_b: str) -> list[tuple[CellKey, Cell | None, Cell | None]]:
        """The cells of two jobs side by side, matched by cell; a cell only one job
        has comes with None for the other. In job A's order, then B's extra cells."""
        a = {c.key: c for c in self.cells(job_a)}
        b = {c.key: c for c in self.cells(job_b)}
        keys = list(a) + [k for k in b if k not in a]
        return [(k, a.get(k), b.get(k)) for k in keys]

    def layers(self, task_id: str) -> list[LayerRecord]:
        rows = self._query("SELECT * FROM layers WHERE task_id=? ORDER BY idx", (task_id,))
        return [
            LayerRecord(
                task_id=r["task_id"],
                index=r["idx"],
                name=r["name"],
                type=r["type"],
                params=r["params"],
                time_ms=r["time_ms"],
                share=r["share"],
                nonlinear=bool(r["nonlinear"]),
                resident_bytes=r["resident_bytes"],
                energy_mj=r["energy_mj"],
            )
            for r in rows
        ]

    def markers(self, task_id: str) -> dict[str, Any] | None:
        """The engine's markers (column arrays, see docs/internals.md)."""
        rows = self._query("SELECT data FROM markers WHERE task_id=?", (task_id,))
        return unpack(rows[0]["data"]) if rows else None

    def trace(self, task_id: str) -> bytes | None:
        """The power trace as ``farm.power.Trace.to_bytes`` wrote it."""
        rows = self._query("SELECT data FROM traces WHERE task_id=?", (task_id,))
        return bytes(rows[0]["data"]) if rows else None

    # -- boards ---------------------------------------------------------------------

    def board_health(self) -> dict[str, BoardRecord]:
        return {
            r["name"]: BoardRecord(
                r["name"], BoardHealth(r["state"]), r["failures"], r["last_error"], r["updated"]
            )
            for r in self._query("SELECT * FROM boards ORDER BY name")
        }
