"""The results database: one SQLite file, WAL mode, one transaction per state change.

Everything a job leaves behind lives here: the job and its validated spec, every
task with its full state history, the engine's results (latency, per-layer rows,
memory, markers), energy reports with their raw traces, per-task logs, and board
health. The scheduler is the only writer; the CLI reads.

Schema changes bump ``SCHEMA_VERSION`` and add a step to ``_MIGRATIONS``.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

DEFAULT_DB = "~/.local/share/farm/farm.db"


def default_db_path() -> Path:
    """``$FARM_DB`` if set, else ``~/.local/share/farm/farm.db``."""
    return Path(os.environ.get("FARM_DB") or DEFAULT_DB).expanduser()


class TaskState(str, Enum):
    """Where a task is. Every transition is persisted in ``task_events``."""

    QUEUED = "queued"
    DEPLOYING = "deploying"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DOES_NOT_FIT = "does-not-fit"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def has_result(self) -> bool:
        """A cell of the matrix is answered: measured, or known not to fit."""
        return self in (TaskState.DONE, TaskState.DOES_NOT_FIT)


_TERMINAL = frozenset(
    {TaskState.DONE, TaskState.FAILED, TaskState.DOES_NOT_FIT, TaskState.CANCELLED}
)
IN_FLIGHT = (TaskState.DEPLOYING.value, TaskState.RUNNING.value)


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # every task has a result
    FAILED = "failed"  # finished, some task failed
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    source TEXT,
    spec TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    idx INTEGER NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    board TEXT NOT NULL,
    processor TEXT NOT NULL,
    variant TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (job_id, idx)
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks(state);
CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks(job_id);
CREATE TABLE IF NOT EXISTS task_events (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    state TEXT NOT NULL,
    at REAL NOT NULL,
    board TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_by_task ON task_events(task_id);
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY REFERENCES tasks(id),
    status TEXT NOT NULL,
    board TEXT NOT NULL,
    mean_ms REAL,
    median_ms REAL,
    p99_ms REAL,
    required_mb REAL,
    peak_rss_mb REAL,
    energy_mj REAL,
    data TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layers (
    task_id TEXT NOT NULL REFERENCES tasks(id),
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    params INTEGER,
    time_ms REAL,
    share REAL,
    nonlinear INTEGER,
    resident_bytes INTEGER,
    energy_mj REAL,
    PRIMARY KEY (task_id, idx)
);
CREATE TABLE IF NOT EXISTS markers (task_id TEXT PRIMARY KEY REFERENCES tasks(id), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS traces (task_id TEXT PRIMARY KEY REFERENCES tasks(id), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    at REAL NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_task ON logs(task_id);
CREATE TABLE IF NOT EXISTS boards (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated REAL NOT NULL
);
"""


def new_job_id(name: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


def pack(obj: Any) -> bytes:
    """Compact, compressed JSON for markers and other bulky columns."""
    return zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 6)


def unpack(blob: bytes) -> Any:
    return json.loads(zlib.decompress(blob))


class Store:
    """Thread-safe access to one farm database file."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path).expanduser() if path else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._batch = False  # inside batch(): each change is a savepoint of its transaction
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=15000")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    # -- plumbing -----------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every change made inside, from this thread, in one transaction (the scheduler's
        round): one commit instead of one per change. A change that fails undoes only
        itself; other threads' changes wait for the commit."""
        with self._lock:
            if self._batch:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._batch = True
            try:
                yield
            except BaseException:
                self._batch = False
                self._db.execute("ROLLBACK")
                raise
            self._batch = False
            self._db.execute("COMMIT")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._batch:
                self._db.execute("SAVEPOINT change")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK TO change")
                    self._db.execute("RELEASE change")
                    raise
                self._db.execute("RELEASE change")
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def _migrate(self) -> None:
        with self._lock:
            self._db.executescript(_SCHEMA)  # idempotent: CREATE ... IF NOT EXISTS
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: schema version {version} is newer than this farm ({SCHEMA_VERSION})"
                )
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- jobs and tasks -----------------------------------------------------------

    def add_job(
        self,
        job_id: str,
        name: str,
        spec: dict[str, Any],
        tasks: list[dict[str, Any]],
        *,
        priority: int = 0,
        source: str | None = None,
    ) -> None:
        """Persist a job and its expanded tasks (all ``queued``) in one transaction."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs(id, name, source, spec, priority, state, created, updated)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (job_id, name, source, json.dumps(spec), priority, JobState.QUEUED.value, now, now),
            )
            for t in tasks:
                task_id = f"{job_id}.{t['index']}"
                db.execute(
                    "INSERT INTO tasks(id, job_id, idx, key, model, board, processor, variant, spec,"
                    " state, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        task_id,
                        job_id,
                        t["index"],
                        t["key"],
                        t["model"]["name"],
                        t["board"],
                        t["processor"],
                        json.dumps(t["variant"], sort_keys=True),
                        json.dumps(t),
                        TaskState.QUEUED.value,
                        now,
                        now,
                    ),
                )
                db.execute(
                    "INSERT INTO task_events(task_id, state, at, board) VALUES (?,?,?,?)",
                    (task_id, TaskState.QUEUED.value, now, t["board"]),
                )

    def set_job_state(self, job_id: str, state: JobState) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state=?, updated=? WHERE id=?", (state.value, time.time(), job_id)
            )

    def transition(
        self,
        task_id: str,
        state: TaskState,
        *,
        board: str | None = None,
        detail: str | None = None,
        error: str | None = None,
        attempts: int | None = None,
        at: float | None = None,
    ) -> None:
        """Move a task to ``state`` and record the event, in one transaction."""
        at = at or time.time()
        with self._tx() as db:
            self._transition(db, task_id, state, board, detail, error, attempts, at)

    @staticmethod
    def _transition(db, task_id, state, board, detail, error, attempts, at) -> None:
        sets, args = ["state=?", "updated=?"], [state.value, at]
        if board is not None:
            sets.append("board=?")
            args.append(board)
        if error is not None:
            sets.append("error=?")
            args.append(error)
        if attempts is not None:
            sets.append("attempts=?")
            args.append(attempts)
        cur = db.execute(f"UPDATE tasks SET {', '.join(sets)} WHERE id=?", (*args, task_id))
        if cur.rowcount != 1:
            raise KeyError(task_id)
        db.execute(
            "INSERT INTO task_events(task_id, state, at, board, detail) VALUES (?,?,?,?,?)",
            (task_id, state.value, at, board, detail),
        )

    def finish(
        self,
        task_id: str,
        state: TaskState,
        *,
        board: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        logs: list[tuple[float, str]] = (),  # type: ignore[assignment]
        trace: bytes | None = None,
    ) -> None:
        """Record a task's terminal state, its result, layer rows, markers, trace and logs
        atomically. A result already stored for the task is replaced, never duplicated."""
        now = time.time()
        with self._tx() as db:
            self._transition(db, task_id, state, board, None, error, None, now)
            db.executemany(
                "INSERT INTO logs(task_id, at, line) VALUES (?,?,?)",
                [(task_id, at, line) for at, line in logs],
            )
            if result is None:
                return
            result = dict(result)
            markers = result.pop("markers", None)
            layers = result.get("layers") or []
            latency = result.get("latency") or {}
            memory = result.get("memory") or {}
            energy = result.get("energy") or {}
            db.execute(
                "INSERT OR REPLACE INTO results(task_id, status, board, mean_ms, median_ms, p99_ms,"
                " required_mb, peak_rss_mb, energy_mj, data, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    task_id,
                    result.get("status", "ok"),
                    board,
                    latency.get("mean_ms"),
                    latency.get("median_ms"),
                    latency.get("p99_ms"),
                    memory.get("required_mb"),
                    memory.get("peak_rss_mb"),
                    ((energy.get("energy_per_inference_mj") or {}).get("net") or {}).get("mean"),
                    json.dumps(result),
                    now,
                ),
            )
            db.execute("DELETE FROM layers WHERE task_id=?", (task_id,))
            db.executemany(
                "INSERT INTO layers(task_id, idx, name, type, params, time_ms, share, nonlinear,"
                " resident_bytes, energy_mj) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        task_id,
                        row.get("index", i),
                        row.get("name", ""),
                        row.get("type", ""),
                        row.get("params"),
                        row.get("time_ms"),
                        row.get("share"),
                        int(bool(row.get("nonlinear"))),
                        row.get("resident_bytes"),
                        row.get("energy_mj"),
                    )
                    for i, row in enumerate(layers)
                ],
            )
            if markers is not None:
                db.execute(
                    "INSERT OR REPLACE INTO markers(task_id, data) VALUES (?,?)",
                    (task_id, pack(markers)),
                )
            if trace is not None:
                db.execute(
                    "INSERT OR REPLACE INTO traces(task_id, data) VALUES (?,?)", (task_id, trace)
                )

    def requeue_in_flight(self, job_ids: Iterable[str] | None = None) -> int:
        """After a head restart: every task that was deploying or running goes back to
        the queue (its finished siblings keep their results). Returns how many."""
        now = time.time()
        with self._tx() as db:
            sql = f"SELECT id FROM tasks WHERE state IN ({','.join('?' * len(IN_FLIGHT))})"
            args: list[Any] = list(IN_FLIGHT)
            if job_ids is not None:
                ids = list(job_ids)
                sql += f" AND job_id IN ({','.join('?' * len(ids))})"
                args += ids
            rows = db.execute(sql, args).fetchall()
            for row in rows:
                self._transition(
                    db,
                    row["id"],
                    TaskState.QUEUED,
                    None,
                    "requeued after head restart",
                    None,
                    None,
                    now,
                )
        return len(rows)

    def log(self, task_id: str, line: str, at: float | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO logs(task_id, at, line) VALUES (?,?,?)",
                (task_id, at or time.time(), line),
            )

    # -- boards -------------------------------------------------------------------

    def board_health(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: dict(r) for r in self._query("SELECT * FROM boards")}

    def set_board_health(self, name: str, state: str, failures: int, error: str | None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO boards(name, state, failures, last_error, updated)"
                " VALUES (?,?,?,?,?)",
                (name, state, failures, error, time.time()),
            )

    # -- reading ------------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, Any] | None:
        if job_id == "latest":
            rows = self._query("SELECT * FROM jobs ORDER BY created DESC, rowid DESC LIMIT 1")
        else:
            rows = self._query("SELECT * FROM jobs WHERE id=?", (job_id,))
        if not rows:
            return None
        job = dict(rows[0])
        job["spec"] = json.loads(job["spec"])
        return job

    def jobs(self, *, limit: int = 20, states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT id, name, priority, state, created, updated FROM jobs", []
        if states is not None:
            states = list(states)
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            args = states
        sql += " ORDER BY created DESC, rowid DESC LIMIT ?"
        return [dict(r) for r in self._query(sql, [*args, limit])]

    def counts(self, job_id: str) -> dict[str, int]:
        rows = self._query(
            "SELECT state, COUNT(*) AS n FROM tasks WHERE job_id=? GROUP BY state", (job_id,)
        )
        return {r["state"]: r["n"] for r in rows}

    def tasks(self, job_id: str, states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM tasks WHERE job_id=?", [job_id]
        if states is not None:
            states = list(states)
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += states
        out = []
        for r in self._query(sql + " ORDER BY idx", args):
            task = dict(r)
            task["spec"] = json.loads(task["spec"])
            task["variant"] = json.loads(task["variant"])
            out.append(task)
        return out

    def task(self, task_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM tasks WHERE id=?", (task_id,))
        if not rows:
            return None
        task = dict(rows[0])
        task["spec"] = json.loads(task["spec"])
        task["variant"] = json.loads(task["variant"])
        return task

    def events(self, task_id: str) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self._query(
                "SELECT * FROM task_events WHERE task_id=? ORDER BY id", (task_id,)
            )
        ]

    def logs(self, task_id: str) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self._query(
                "SELECT at, line FROM logs WHERE task_id=? ORDER BY id", (task_id,)
            )
        ]

    def results(self, job_id: str) -> list[dict[str, Any]]:
        """One row per task of the job, with its result (None where there is none)."""
        rows = self._query(
            "SELECT t.id, t.idx, t.key, t.model, t.board, t.processor, t.variant, t.state,"
            " t.attempts, t.error, r.data FROM tasks t LEFT JOIN results r ON r.task_id = t.id"
            " WHERE t.job_id=? ORDER BY t.idx",
            (job_id,),
        )
        out = []
        for r in rows:
            row = dict(r)
            row["variant"] = json.loads(row["variant"])
            row["result"] = json.loads(row.pop("data")) if r["data"] else None
            out.append(row)
        return out

    def layers(self, task_id: str) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self._query("SELECT * FROM layers WHERE task_id=? ORDER BY idx", (task_id,))
        ]

    def markers(self, task_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT data FROM markers WHERE task_id=?", (task_id,))
        return unpack(rows[0]["data"]) if rows else None

    def trace(self, task_id: str) -> bytes | None:
        rows = self._query("SELECT data FROM traces WHERE task_id=?", (task_id,))
        return bytes(rows[0]["data"]) if rows else None

    def unfinished_jobs(self) -> list[str]:
        rows = self._query(
            "SELECT id FROM jobs WHERE state IN (?, ?) ORDER BY created",
            (JobState.QUEUED.value, JobState.RUNNING.value),
        )
        return [r["id"] for r in rows]
