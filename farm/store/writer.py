"""The one writer: every state change of a task, a job or a board passes here.

Each write is one transaction. A state change is checked against the graph in
``farm.states`` inside that transaction (an illegal move raises
:class:`farm.errors.IllegalTransition` and writes nothing), recorded with its
history row, committed, and then published to every subscriber as a typed
event (``TaskEvent``, ``JobEvent``, ``BoardEvent``): the scheduler, and metrics.

Subscribers run on the writer's thread after the commit; one that raises is
logged and the others still hear the event (a broken exporter never stops a run).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from farm.errors import IllegalTransition, UnknownTask
from farm.result import EngineResult
from farm.spec import PlannedTask
from farm.states import IN_FLIGHT_TASK_STATES, BoardHealth, JobState, TaskState, can_move
from farm.store.blobs import pack
from farm.store.records import BoardEvent, Event, JobEvent, TaskEvent

log = logging.getLogger(__name__)

Subscriber = Callable[[Event], None]


class Writer:
    """Writes and publishes. Mixed into :class:`farm.store.Store` with the reader."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    _subscribers: list[Subscriber]
    _batch: list[Event] | None  # inside batch(): the events its changes will publish

    # -- subscribing ----------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(event)`` after every committed state change; returns the
        function that unsubscribes it."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def _publish(self, events: Iterable[Event]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for event in events:
            for subscriber in subscribers:
                try:
                    subscriber(event)
                except Exception:  # one broken listener must not stop the others or the run
                    log.exception("store subscriber %r failed on %r", subscriber, event)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every change made inside, from this thread, in one transaction (the scheduler's
        round): one commit instead of one per change, then every event published. A
        change that fails undoes only itself; other threads' writes wait for the commit."""
        with self._lock:
            if self._batch is not None:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._batch = []
            try:
                yield
            except BaseException:
                self._batch = None
                self._db.execute("ROLLBACK")
                raise
            events, self._batch = self._batch, None
            self._db.execute("COMMIT")
        self._publish(events)

    @contextmanager
    def _tx(self) -> Iterator[list[Event]]:
        """One transaction; the events it collects are published once it committed.
        Inside :meth:`batch`, a savepoint of the batch's transaction."""
        events: list[Event] = []
        with self._lock:
            if self._batch is not None:
                self._db.execute("SAVEPOINT change")
                try:
                    yield events
                except BaseException:
                    self._db.execute("ROLLBACK TO change")
                    self._db.execute("RELEASE change")
                    raise
                self._db.execute("RELEASE change")
                self._batch.extend(events)
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield events
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        self._publish(events)

    # -- jobs -------------------------------------------------------------------------

    def add_job(
        self,
        job_id: str,
        name: str,
        spec: dict[str, Any],
        tasks: Sequence[PlannedTask],
        *,
        boards: Sequence[dict[str, Any]] = (),
        priority: int = 0,
        source: str | None = None,
        owner: dict[str, Any] | None = None,
    ) -> None:
        """Persist a job, the boards it was planned on, and its tasks (all queued);
        ``owner``: the embedded farm that runs it (``farm.owner.Owner``), if one does."""
        now = time.time()
        with self._tx() as events:
            self._db.execute(
                "INSERT INTO jobs(id, name, source, spec, boards, priority, state, created,"
                " updated, owner) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    job_id,
                    name,
                    source,
                    json.dumps(spec),
                    json.dumps(list(boards)),
                    priority,
                    JobState.QUEUED,
                    now,
                    now,
                    json.dumps(owner) if owner else None,
                ),
            )
            events.append(JobEvent(job_id, name, None, JobState.QUEUED, now))
            sets = _CandidateSets()
            rows, queued = [], []
            for t in tasks:
                task_id = f"{job_id}.{t.index}"
                rows.append(
                    (
                        task_id,
                        job_id,
                        t.index,
                        t.key,
                        t.model.name,
                        t.board,
                        t.processor,
                        json.dumps(t.variant, sort_keys=True),
                        t.model_dump_json(exclude={"candidates"}),
                        sets.index(t.candidates),
                        TaskState.QUEUED,
                        now,
                        now,
                    )
                )
                queued.append((task_id, TaskState.QUEUED, now, t.board))
                events.append(TaskEvent(task_id, job_id, t.board, None, TaskState.QUEUED, 0, now))
            self._db.executemany(
                "INSERT INTO candidate_sets(job_id, idx, boards) VALUES (?,?,?)",
                [(job_id, i, json.dumps(boards)) for i, boards in enumerate(sets.lists)],
            )
            self._db.executemany(
                "INSERT INTO tasks(id, job_id, idx, key, model, board, processor, variant,"
                " spec, candidates, state, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            self._db.executemany(
                "INSERT INTO task_events(task_id, state, at, board, attempt) VALUES (?,?,?,?,0)",
                queued,
            )

    def set_job_state(self, job_id: str, state: JobState) -> JobEvent:
        """Move a job; refuses a move ``farm.states.JOB_MOVES`` does not allow."""
        now = time.time()
        with self._tx() as events:
            row = self._db.execute("SELECT name, state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise UnknownTask(f"no job {job_id!r} in the store")
            current = JobState(row["state"])
            if not can_move(current, state):
                raise IllegalTransition(f"job {job_id}", current, state)
            self._db.execute("UPDATE jobs SET state=?, updated=? WHERE id=?", (state, now, job_id))
            event = JobEvent(job_id, row["name"], current, state, now)
            events.append(event)
        return event

    # -- tasks ------------------------------------------------------------------------

    def transition(
        self,
        task_id: str,
        state: TaskState,
        *,
        board: str | None = None,
        detail: str | None = None,
        error: str | None = None,
        attempt: int | None = None,
        at: float | None = None,
        deploy_bytes: int = 0,
        error_kind: str | None = None,
    ) -> TaskEvent:
        """Move a task to ``state`` and record the event, in one transaction.

        ``attempt`` (when given) becomes the task's attempt count: the scheduler
        passes it when it hands the task to a board. ``deploy_bytes`` (on the move to
        running) is what the deploy step pushed; the event carries it to metrics.
        ``error_kind``: the failure's kind (``Failure.kind``), kept beside its text."""
        with self._tx() as events:
            event = self._move(
                task_id, state, board, detail, error, attempt, at or time.time(), error_kind
            )
            if deploy_bytes:
                event = dataclasses.replace(event, deploy_bytes=deploy_bytes)
            events.append(event)
        return event

    def _move(self, task_id, state, board, detail, error, attempt, at, kind=None) -> TaskEvent:
        row = self._db.execute(
            "SELECT job_id, board, state, attempts FROM tasks WHERE id=?", (task_id,)
        ).fetchone()
        if row is None:
            raise UnknownTask(f"no task {task_id!r} in the store")
        current = TaskState(row["state"])
        if not can_move(current, state):
            raise IllegalTransition(f"task {task_id}", current, state)
        board = board if board is not None else row["board"]
        attempts = attempt if attempt is not None else row["attempts"]
        self._db.execute(
            "UPDATE tasks SET state=?, updated=?, board=?, attempts=?,"
            " error=COALESCE(?, error), error_kind=CASE WHEN ? IS NULL THEN error_kind ELSE ? END"
            " WHERE id=?",
            (state, at, board, attempts, error, error, kind, task_id),
        )
        self._db.execute(
            "INSERT INTO task_events(task_id, state, at, board, detail, from_state, attempt,"
            " error, error_kind) VALUES (?,?,?,?,?,?,?,?,?)",
            (task_id, state, at, board, detail, current, attempts, error, kind),
        )
        return TaskEvent(
            task_id, row["job_id"], board, current, state, attempts, at, error, detail,
            error_kind=kind,
        )  # fmt: skip

    def finish(
        self,
        task_id: str,
        state: TaskState,
        *,
        board: str,
        result: EngineResult | None = None,
        markers: dict[str, Any] | None = None,
        error: str | None = None,
        logs: Sequence[tuple[float, str]] = (),
        trace: bytes | None = None,
        error_kind: str | None = None,
    ) -> TaskEvent:
        """Record a task's terminal state with its result, layer rows, markers, trace
        and logs, atomically (a refused move writes none of them)."""
        if not state.is_terminal():
            raise IllegalTransition(f"task {task_id}", "finish", state)
        now = time.time()
        with self._tx() as events:
            event = self._move(task_id, state, board, None, error, None, now, error_kind)
            events.append(event)
            db = self._db
            db.executemany(
                "INSERT INTO logs(task_id, at, line) VALUES (?,?,?)",
                [(task_id, at, line) for at, line in logs],
            )
            if result is not None:
                self._store_result(task_id, board, result, now)
            if markers is not None:
                db.execute(
                    "INSERT OR REPLACE INTO markers(task_id, data) VALUES (?,?)",
                    (task_id, pack(markers)),
                )
            if trace is not None:
                db.execute(
                    "INSERT OR REPLACE INTO traces(task_id, data) VALUES (?,?)", (task_id, trace)
                )
        return event

    def _store_result(self, task_id: str, board: str, result: EngineResult, now: float) -> None:
        latency, memory, energy = result.latency, result.memory, result.energy
        self._db.execute(
            "INSERT OR REPLACE INTO results(task_id, status, board, mean_ms, median_ms, p99_ms,"
            " required_mb, peak_rss_mb, energy_mj, data, created, version)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                task_id,
                result.status,
                board,
                latency.mean_ms if latency else None,
                latency.median_ms if latency else None,
                latency.p99_ms if latency else None,
                memory.required_mb,
                memory.peak_rss_mb,
                energy.energy_per_inference_mj.net.mean if energy else None,
                result.model_dump_json(exclude_unset=True),
                now,
                result.version,
            ),
        )
        self._db.execute("DELETE FROM layers WHERE task_id=?", (task_id,))
        self._db.executemany(
            "INSERT INTO layers(task_id, idx, name, type, params, time_ms, share, nonlinear,"
            " resident_bytes, energy_mj) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    task_id,
                    r.index,
                    r.name,
                    r.type,
                    r.params,
                    r.time_ms,
                    r.share,
                    int(r.nonlinear),
                    r.resident_bytes,
                    r.energy_mj,
                )
                for r in result.layers
            ],
        )

    def requeue_in_flight(self, job_ids: Iterable[str] | None = None) -> int:
        """After a head restart: every task that was deploying or running goes back to
        the queue (its finished siblings keep their results). Returns how many."""
        now = time.time()
        states = sorted(IN_FLIGHT_TASK_STATES)
        sql = f"SELECT id FROM tasks WHERE state IN ({','.join('?' * len(states))})"
        args: list[Any] = list(states)
        if job_ids is not None:
            ids = list(job_ids)
            sql += f" AND job_id IN ({','.join('?' * len(ids))})"
            args += ids
        with self._tx() as events:
            rows = self._db.execute(sql, args).fetchall()
            for row in rows:
                events.append(
                    self._move(
                        row["id"],
                        TaskState.QUEUED,
                        None,
                        "requeued after head restart",
                        None,
                        None,
                        now,
                    )
                )
        return len(rows)

    def set_owner(self, job_id: str, owner: dict[str, Any] | None) -> None:
        """Who runs the job now (``farm resume`` takes over an interrupted one)."""
        with self._tx():
            self._db.execute(
                "UPDATE jobs SET owner=? WHERE id=?", (json.dumps(owner) if owner else None, job_id)
            )

    def interrupt_orphans(self, alive: Callable[[dict[str, Any]], bool | None]) -> list[str]:
        """Mark interrupted every unfinished job whose embedded owner is dead (``alive``
        says False; None, another host's owner, is left alone), its in-flight tasks back
        in the queue. Returns their ids."""
        rows = self._db.execute(
            "SELECT id, owner FROM jobs WHERE owner IS NOT NULL AND state IN (?, ?)",
            (JobState.QUEUED, JobState.RUNNING),
        ).fetchall()
        dead = [r["id"] for r in rows if alive(json.loads(r["owner"])) is False]
        for job_id in dead:
            self.requeue_in_flight([job_id])
            self.set_job_state(job_id, JobState.INTERRUPTED)
        return dead

    def log(self, task_id: str, line: str, at: float | None = None) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO logs(task_id, at, line) VALUES (?,?,?)",
                (task_id, at or time.time(), line),
            )

    # -- boards -----------------------------------------------------------------------

    def set_board_health(
        self, name: str, state: BoardHealth, failures: int, error: str | None
    ) -> BoardEvent:
        """Record a board's health. A change of state is checked against
        ``farm.states.BOARD_MOVES``; the same state only updates the counts."""
        now = time.time()
        with self._tx() as events:
            row = self._db.execute("SELECT state FROM boards WHERE name=?", (name,)).fetchone()
            current = BoardHealth(row["state"]) if row else None
            if current is not None and current != state and not can_move(current, state):
                raise IllegalTransition(f"board {name}", current, state)
            self._db.execute(
                "INSERT OR REPLACE INTO boards(name, state, failures, last_error, updated)"
                " VALUES (?,?,?,?,?)",
                (name, state, failures, error, now),
            )
            event = BoardEvent(name, current, state, failures, error, now)
            events.append(event)
        return event


class _CandidateSets:
    """A job's distinct candidate lists, numbered in order of first use.

    Tasks planned together share one list object (``PlannedTask.of``): a list
    seen before is found by identity without hashing its names again."""

    def __init__(self) -> None:
        self.lists: list[list[str]] = []
        self._by_names: dict[tuple[str, ...], int] = {}
        self._by_id: dict[int, int] = {}

    def index(self, candidates: list[str]) -> int:
        found = self._by_id.get(id(candidates))
        if found is None:
            found = self._by_names.setdefault(tuple(candidates), len(self.lists))
            if found == len(self.lists):
                self.lists.append(candidates)
            self._by_id[id(candidates)] = found
        return found
