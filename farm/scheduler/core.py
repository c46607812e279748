"""The scheduler's logic: queues, board exclusivity, retries, quarantine.

It knows nothing of Ray. It hands a task to a *station* through a ``dispatch``
callable that returns a ``concurrent.futures.Future`` of the outcome; Ray's
actor calls (``ObjectRef.future()``) and plain threads (tests) both fit.

One loop thread owns every decision; futures complete into a queue the loop
drains, so no lock guards the scheduling state. The store is written on every
state change, which is what lets a restarted head resume.

How a task moves::

    queued ──► deploying ──► running ──► done | does-not-fit
       ▲            │            │
       └── retry ◄──┴────────────┴──► failed    (and cancelled from anywhere)

Each board runs one measurement at a time (``busy``). A task waits in the queue
of its board, ordered by (-priority, job order, index). On a retryable transport
error it goes back after an exponential backoff, moved to the least-loaded
healthy board of its target when the job allows migration. A board is
quarantined after ``quarantine_after`` consecutive failures; a periodic health
check brings it back. A task none of whose candidate boards is usable waits for
that health check, within the job's deadline (``deadline_s`` from submission):
one bad spell — a timeout on a busy board — is not proof that a board is broken.
Past the deadline it fails with a message that says so; at once when its boards
were refused for what only a person can mend (a changed host key).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from farm.store import JobState, Store, TaskState, new_job_id

log = logging.getLogger(__name__)

Dispatch = Callable[[str, dict[str, Any]], "Future[dict[str, Any]]"]
"""``dispatch(station, payload) -> Future[outcome]``: run one task on a station."""


@dataclass
class BoardState:
    spec: dict[str, Any]
    healthy: bool = True
    refused: bool = False  # quarantined for a reason no wait can cure (a changed host key)
    busy: str | None = None  # task id running on it
    failures: int = 0
    last_error: str | None = None
    queue: list[tuple[int, int, int, str]] = field(default_factory=list)  # heap

    @property
    def station(self) -> str:
        return self.spec.get("station") or "head"


@dataclass
class TaskRun:
    """The scheduler's in-memory view of a queued or in-flight task."""

    id: str
    job_id: str
    spec: dict[str, Any]
    board: str
    candidates: list[str]
    priority: int
    job_seq: int
    attempts: int = 0
    ready_at: float = 0.0
    state: str = TaskState.QUEUED.value

    def sort_key(self) -> tuple[int, int, int, str]:
        return (-self.priority, self.job_seq, self.spec["index"], self.id)


@dataclass
class JobRun:
    id: str
    spec: dict[str, Any]
    seq: int
    remaining: set[str]
    deadline: float = float("inf")  # tasks waiting for a quarantined board fail after it
    cancelled: bool = False
    counts: collections.Counter[str] = field(default_factory=collections.Counter)


class Scheduler:
    """Owns the queue. Thread-safe entry points: ``submit``, ``cancel``, ``report``,
    ``progress``; everything else runs on the loop thread."""

    def __init__(
        self,
        store: Store,
        dispatch: Dispatch,
        *,
        quarantine_after: int = 3,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        health_check: Callable[[str, dict[str, Any]], Future[dict[str, Any]]] | None = None,
        health_interval_s: float = 30.0,
        abort: Callable[[str, list[str]], object] | None = None,
        resume: bool = True,
    ):
        self.store = store
        self._dispatch = dispatch
        self._health_check = health_check
        self._abort = abort  # abort(station, task ids): stop those tasks' engines now
        self.quarantine_after = quarantine_after
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.health_interval_s = health_interval_s
        self.boards: dict[str, BoardState] = {}
        self.jobs: dict[str, JobRun] = {}
        self.tasks: dict[str, TaskRun] = {}
        self._delayed: list[tuple[float, str]] = []  # (ready_at, task id)
        self._waiting: set[str] = set()  # tasks whose every candidate board is quarantined
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._job_seq = itertools.count()
        self._stop = threading.Event()
        self._last_health = 0.0
        self._health_pending: set[str] = set()
        # what `progress` answers for running jobs, published by the loop after each round:
        # counting a job's tasks in the store takes ~0.1 s at 100,000 tasks, under its lock
        self._progress: dict[str, dict[str, Any]] = {}
        for name, row in store.board_health().items():
            self.boards[name] = BoardState(
                spec={"name": name},
                healthy=row["state"] == "healthy",
                failures=row["failures"],
                last_error=row["last_error"],
            )
        if resume:
            self._resume()
        self._thread = threading.Thread(target=self._loop, name="farm-scheduler", daemon=True)
        self._thread.start()

    # -- thread-safe API ----------------------------------------------------------

    def submit(
        self,
        job: dict[str, Any],
        tasks: list[dict[str, Any]],
        boards: list[dict[str, Any]],
        *,
        source: str | None = None,
    ) -> str:
        """Persist the job, queue its tasks, and return the job id.

        ``tasks`` are expanded TaskSpecs as dicts, each with ``candidates``: the
        boards of its target that have its processor (migration targets)."""
        job_id = new_job_id(job["name"])
        # a target's candidate list is stored once per job, not once per task: a sweep
        # over a thousand boards would otherwise repeat a thousand names in every task
        groups: dict[tuple[str, ...], int] = {}
        slim = []
        for task in tasks:
            members = tuple(task.get("candidates") or [task["board"]])
            slim.append({**task, "candidates": groups.setdefault(members, len(groups))})
        # kept so a restarted head knows the boards
        job = {**job, "_boards": boards, "_candidates": [list(g) for g in groups]}
        self.store.add_job(
            job_id, job["name"], job, slim, priority=job.get("priority", 0), source=source
        )
        self._inbox.put(("submit", (job_id, job, boards)))
        return job_id

    def cancel(self, job_id: str) -> None:
        self._inbox.put(("cancel", job_id))

    def report(self, task_id: str, state: str, at: float, detail: str | None = None) -> None:
        """A station says a task moved on (``running``)."""
        self._inbox.put(("report", (task_id, state, at, detail)))

    def progress(self, job_id: str) -> dict[str, Any]:
        published = self._progress.get(job_id)
        if published is not None:
            return published
        job = self.store.job(job_id)
        if job is None:
            raise KeyError(job_id)
        return {"job": job_id, "state": job["state"], "counts": self.store.counts(job_id)}

    def idle(self) -> bool:
        return not self.jobs and self._inbox.empty()

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(("wake", None))
        self._thread.join(timeout=10)

    # -- loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            timeout = self._next_wakeup()
            try:
                kind, payload = self._inbox.get(timeout=timeout)
            except queue.Empty:
                kind, payload = "wake", None
            # one round, one transaction: at hundreds of tasks a second, a commit per
            # state change would be most of the scheduler's time
            with self.store.batch():
                self._round(kind, payload)

    def _round(self, kind: str, payload: Any) -> None:
        try:
            self._handle(kind, payload)
            while True:  # drain what else arrived, then dispatch once
                try:
                    kind, payload = self._inbox.get_nowait()
                except queue.Empty:
                    break
                self._handle(kind, payload)
            self._release_delayed()
            self._expire_waiting()
            self._maybe_health_check()
            self._dispatch_ready()
        except Exception:  # the loop must survive a bad event; say so loudly
            log.exception("scheduler loop error while handling %s", kind)
        self._progress = {
            job.id: {"job": job.id, "state": JobState.RUNNING.value,
                     "counts": {k: n for k, n in job.counts.items() if n}}
            for job in self.jobs.values()
        }  # fmt: skip

    def _next_wakeup(self) -> float:
        wake = 1.0
        if self._delayed:
            wake = min(wake, max(0.0, self._delayed[0][0] - time.time()))
        return wake  # waiting tasks' deadlines are checked at least once a second

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "submit":
            self._on_submit(*payload)
        elif kind == "done":
            self._on_outcome(*payload)
        elif kind == "report":
            task_id, state, at, detail = payload
            run = self.tasks.get(task_id)
            if run is not None:
                self.store.transition(
                    task_id, TaskState(state), board=run.board, at=at, detail=detail
                )
                self._moved(run, TaskState(state))
        elif kind == "cancel":
            self._on_cancel(payload)
        elif kind == "health":
            self._on_health(*payload)

    # -- submit / resume ----------------------------------------------------------

    def _learn_boards(self, boards: list[dict[str, Any]]) -> None:
        for spec in boards:
            state = self.boards.get(spec["name"])
            if state is None:
                self.boards[spec["name"]] = BoardState(spec=spec)
            else:
                state.spec = spec

    def _on_submit(self, job_id: str, job: dict[str, Any], boards: list[dict[str, Any]]) -> None:
        self._learn_boards(boards)
        record = self.store.job(job_id) or {}
        run = JobRun(
            id=job_id,
            spec=job,
            seq=next(self._job_seq),
            remaining=set(),
            deadline=(record.get("created") or time.time()) + float(job.get("deadline_s", 3600)),
            counts=collections.Counter(self.store.counts(job_id)),
        )
        self.jobs[job_id] = run
        self.store.set_job_state(job_id, JobState.RUNNING)
        for task in self.store.tasks(job_id, states=[TaskState.QUEUED.value]):
            self._enqueue_new(run, task)
        self._maybe_finish_job(job_id)

    def _resume(self) -> None:
        """Pick up jobs a previous head left unfinished: in-flight tasks requeue."""
        for job_id in self.store.unfinished_jobs():
            job = self.store.job(job_id)
            if job is None:
                continue
            n = self.store.requeue_in_flight([job_id])
            if n:
                log.info("%s: requeued %d in-flight tasks after restart", job_id, n)
            boards = job["spec"].get("_boards", [])
            self._on_submit(job_id, job["spec"], boards)

    def _enqueue_new(self, job: JobRun, task: dict[str, Any]) -> None:
        spec = task["spec"]
        run = TaskRun(
            id=task["id"],
            job_id=job.id,
            spec=spec,
            board=task["board"],
            candidates=_candidates(job.spec, spec) or [task["board"]],
            priority=job.spec.get("priority", 0),
            job_seq=job.seq,
            attempts=task["attempts"],
        )
        self.tasks[run.id] = run
        job.remaining.add(run.id)
        self._place(run)

    # -- placing and dispatching ----------------------------------------------------

    def _usable(self, name: str) -> bool:
        board = self.boards.get(name)
        return board is not None and board.healthy

    def _place(self, run: TaskRun) -> None:
        """Put a queued task in the queue of a usable board, or let it wait for one."""
        if not self._usable(run.board):
            movable = self.jobs[run.job_id].spec.get("migrate", True)
            options = [b for b in run.candidates if self._usable(b)] if movable else []
            if not options:
                self._wait_for_board(run, movable)
                return
            run.board = min(options, key=lambda b: len(self.boards[b].queue))
        self._waiting.discard(run.id)
        heapq.heappush(self.boards[run.board].queue, run.sort_key())

    def _wait_for_board(self, run: TaskRun, movable: bool) -> None:
        """Every board the task may use is quarantined (or unknown): wait for a health
        check to bring one back until the job's deadline, then fail saying why."""
        boards = run.candidates if movable else [run.board]
        known = [b for b in boards if b in self.boards]
        hopeful = [b for b in known if not self.boards[b].refused]
        job = self.jobs[run.job_id]
        if hopeful and time.time() < job.deadline:
            if run.id not in self._waiting:
                self._waiting.add(run.id)
                left = job.deadline - time.time()
                self.store.log(
                    run.id,
                    f"waiting up to {left:.0f} s (the job's deadline) for a health check to"
                    f" bring back {', '.join(hopeful)} (quarantined)",
                    time.time(),
                )
            return
        self._waiting.discard(run.id)
        why = "quarantined (migration off)" if not movable else "unknown or quarantined"
        if hopeful:
            why += ", still at the job's deadline"
        elif known:
            why += f" ({self.boards[known[0]].last_error})"
        self._finish_without_result(
            run, TaskState.FAILED, f"no healthy board for this task: {', '.join(boards)} {why}"
        )

    def _expire_waiting(self) -> None:
        now = time.time()
        for task_id in list(self._waiting):
            run = self.tasks.get(task_id)
            if run is None:
                self._waiting.discard(task_id)
            elif now >= self.jobs[run.job_id].deadline:
                self._place(run)

    def _wake_waiting(self, board: str) -> None:
        """``board`` is back: the tasks that were waiting for it go to a queue."""
        for task_id in list(self._waiting):
            run = self.tasks.get(task_id)
            if run is not None and board in (*run.candidates, run.board):
                self._place(run)

    def _dispatch_ready(self) -> None:
        for name, board in self.boards.items():
            while board.busy is None and board.healthy and board.queue:
                task_id = heapq.heappop(board.queue)[-1]
                run = self.tasks.get(task_id)
                if run is None or run.board != name:
                    continue  # cancelled or moved while queued
                self._start(run, board)

    def _start(self, run: TaskRun, board: BoardState) -> None:
        board.busy = run.id
        run.attempts += 1
        self.store.transition(
            run.id, TaskState.DEPLOYING, board=board.spec["name"], attempts=run.attempts
        )
        self._moved(run, TaskState.DEPLOYING)
        payload = {
            "task_id": run.id,
            "job_id": run.job_id,
            "task": run.spec,
            "board": board.spec,
            "attempt": run.attempts,
            "isolation": self.jobs[run.job_id].spec.get("isolation", "warm"),
        }
        try:
            future = self._dispatch(board.station, payload)
        except Exception as exc:  # the station itself could not be reached
            self._on_outcome(run.id, _failure(exc))
            return
        future.add_done_callback(lambda f, tid=run.id: self._inbox.put(("done", (tid, _result(f)))))

    # -- outcomes -----------------------------------------------------------------

    def _on_outcome(self, task_id: str, outcome: dict[str, Any]) -> None:
        run = self.tasks.get(task_id)
        if run is None:
            return
        board = self.boards[run.board]
        if board.busy == task_id:
            board.busy = None
        logs = [tuple(x) for x in outcome.get("logs", [])]
        job = self.jobs[run.job_id]
        state = TaskState(outcome["state"])
        if job.cancelled:
            self._finish(run, TaskState.CANCELLED, outcome.get("result"), "cancelled", logs)
            return
        if state in (TaskState.DONE, TaskState.DOES_NOT_FIT):
            self._board_ok(board)
            self._finish(run, state, outcome.get("result"), None, logs, outcome.get("trace"))
            return
        error = outcome.get("error") or "unknown error"
        if outcome.get("board_fault"):
            self._board_failed(board, error, now=bool(outcome.get("quarantine")))
        retries = job.spec.get("retries", 2)
        if outcome.get("retryable") and run.attempts <= retries:
            delay = min(self.backoff_max_s, self.backoff_s * 2 ** (run.attempts - 1))
            detail = f"attempt {run.attempts} failed: {error}; retry in {delay:.1f}s"
            self.store.transition(run.id, TaskState.QUEUED, board=run.board, detail=detail)
            self._moved(run, TaskState.QUEUED)
            for at, line in logs:
                self.store.log(run.id, line, at)
            if job.spec.get("migrate", True):
                others = [b for b in run.candidates if b != run.board and self._usable(b)]
                if others:
                    run.board = min(others, key=lambda b: len(self.boards[b].queue))
            run.ready_at = time.time() + delay
            heapq.heappush(self._delayed, (run.ready_at, run.id))
            return
        self._finish(run, TaskState.FAILED, outcome.get("result"), error, logs)

    def _release_delayed(self) -> None:
        now = time.time()
        while self._delayed and self._delayed[0][0] <= now:
            _, task_id = heapq.heappop(self._delayed)
            run = self.tasks.get(task_id)
            if run is not None:
                self._place(run)

    def _finish(self, run, state, result, error, logs, trace=None) -> None:
        self.store.finish(
            run.id, state, board=run.board, result=result, error=error, logs=logs, trace=trace
        )
        self._moved(run, state)
        self._forget(run)

    def _finish_without_result(self, run: TaskRun, state: TaskState, error: str) -> None:
        self.store.finish(run.id, state, board=run.board, error=error)
        self._moved(run, state)
        self._forget(run)

    def _moved(self, run: TaskRun, state: TaskState) -> None:
        """Keep the job's task counts (what ``progress`` answers) in step with the store."""
        job = self.jobs.get(run.job_id)
        if job is not None:
            job.counts[run.state] -= 1
            job.counts[state.value] += 1
        run.state = state.value

    def _forget(self, run: TaskRun) -> None:
        self.tasks.pop(run.id, None)
        self._waiting.discard(run.id)
        job = self.jobs.get(run.job_id)
        if job is not None:
            job.remaining.discard(run.id)
            self._maybe_finish_job(run.job_id)

    def _maybe_finish_job(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.remaining:
            return
        counts = self.store.counts(job_id)
        if job.cancelled:
            state = JobState.CANCELLED
        elif counts.get(TaskState.FAILED.value) or counts.get(TaskState.CANCELLED.value):
            state = JobState.FAILED
        else:
            state = JobState.DONE
        self.store.set_job_state(job_id, state)
        del self.jobs[job_id]

    def _on_cancel(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        job.cancelled = True
        running: dict[str, list[str]] = {}
        for task_id in list(job.remaining):
            run = self.tasks[task_id]
            board = self.boards[run.board]
            if board.busy != task_id:  # queued: cancel now
                self._finish_without_result(run, TaskState.CANCELLED, "cancelled")
            else:
                running.setdefault(board.station, []).append(task_id)
        # in-flight tasks finish as cancelled when their outcome arrives: sooner when their
        # station stops their engines
        for station, task_ids in running.items():
            if self._abort is not None:
                self._abort(station, task_ids)

    # -- board health ---------------------------------------------------------------

    def _board_ok(self, board: BoardState) -> None:
        if board.failures or not board.healthy:
            board.failures = 0
            board.healthy = True
            board.refused = False
            self.store.set_board_health(board.spec["name"], "healthy", 0, None)
            self._wake_waiting(board.spec["name"])

    def _board_failed(self, board: BoardState, error: str, *, now: bool = False) -> None:
        board.failures += 1
        board.last_error = error
        name = board.spec["name"]
        if board.healthy and (now or board.failures >= self.quarantine_after):
            board.healthy = False
            board.refused = now
            log.warning(
                "%s quarantined after %d consecutive failures: %s", name, board.failures, error
            )
            self.store.set_board_health(name, "quarantined", board.failures, error)
            self._evacuate(board)
        else:
            self.store.set_board_health(
                name, "healthy" if board.healthy else "quarantined", board.failures, error
            )

    def _evacuate(self, board: BoardState) -> None:
        """Move the tasks queued on a board just quarantined (or let them wait)."""
        waiting, board.queue = board.queue, []
        for *_, task_id in waiting:
            run = self.tasks.get(task_id)
            if run is not None and run.board == board.spec["name"]:
                self._place(run)

    def _maybe_health_check(self) -> None:
        if self._health_check is None or time.time() - self._last_health < self.health_interval_s:
            return
        self._last_health = time.time()
        for name, board in self.boards.items():
            if board.healthy or name in self._health_pending or "transport" not in board.spec:
                continue
            self._health_pending.add(name)
            future = self._health_check(board.station, board.spec)
            future.add_done_callback(lambda f, n=name: self._inbox.put(("health", (n, _result(f)))))

    def _on_health(self, name: str, outcome: dict[str, Any]) -> None:
        self._health_pending.discard(name)
        board = self.boards[name]
        if outcome.get("ok"):
            log.info("%s passed its health check: back in service", name)
            self._board_ok(board)


def _candidates(job: dict[str, Any], task: dict[str, Any]) -> list[str] | None:
    """A task's candidate boards: an index into its job's list of them."""
    found = task.get("candidates")
    return job["_candidates"][found] if isinstance(found, int) else found


def _result(future: Future) -> dict[str, Any]:
    try:
        return future.result()
    except Exception as exc:
        return _failure(exc)


def _failure(exc: BaseException) -> dict[str, Any]:
    """A station call that raised (actor died, node lost): retry it elsewhere."""
    return {
        "state": TaskState.FAILED.value,
        "error": f"station call failed: {type(exc).__name__}: {exc}",
        "retryable": True,
        "board_fault": False,
        "ok": False,
    }
