"""The scheduler's logic: queues, board exclusivity, retries, quarantine.

It knows nothing of Ray. It hands a task to a *station* through a ``dispatch``
callable that returns a ``concurrent.futures.Future`` of the outcome; Ray's
actor calls (``ObjectRef.future()``) and plain threads (tests) both fit.

One loop thread owns every decision and every write: ``submit`` and ``resume``
hand their job to it and wait for its answer; futures complete into a queue the
loop drains, so no lock guards the scheduling state. At start-up it marks
interrupted the jobs whose embedded farm died (the store's one writer is the
scheduler's). The store is written on every
state change, which is what lets a restarted head resume.

A task moves along the graph in ``farm.states``; every move goes through the
store's writer, which refuses an illegal one. The station tells the scheduler
when the engine started (``running``, with the attempt it belongs to), and the
outcome repeats it (``Outcome.running_at``) so a late or lost report cannot leave
a task that finished without having run.

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

At hundreds of tasks a second, the loop writes each round's changes in one
transaction (``Store.batch``) and answers ``progress`` from the counts it keeps,
never by counting a job's tasks in the store.
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
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, fields
from typing import Any

from farm.errors import NotFound, UserError
from farm.scheduler.messages import BoardCheck, EngineStarted, Outcome, TaskPayload
from farm.spec import Board, Job, PlannedTask
from farm.states import BoardHealth, JobState, TaskState
from farm.store import Event, JobEvent, JobProgress, QueuedTask, StoreWriter, TaskEvent, new_job_id

log = logging.getLogger(__name__)

Dispatch = Callable[[str, TaskPayload], "Future[Outcome]"]
"""``dispatch(station, payload) -> Future[Outcome]``: run one task on a station."""

HealthCheck = Callable[[str, Board], "Future[BoardCheck]"]
"""``health_check(station, board) -> Future[BoardCheck]``: is a quarantined board back?"""


@dataclass(frozen=True)
class JobPolicy:
    """What the scheduler reads of a job: its order and how it retries and runs. The
    names are ``Job``'s own fields; a job stored without one runs by ``Job``'s default."""

    priority: int
    retries: int
    migrate: bool
    isolation: str
    deadline_s: float  # tasks waiting for a quarantined board fail after it

    @classmethod
    def of(cls, spec: dict[str, Any]) -> JobPolicy:
        """From a job as stored (``Job`` dumped to JSON): what a resumed job runs by."""
        job = Job.model_fields
        return cls(**{f.name: spec.get(f.name, job[f.name].default) for f in fields(cls)})


@dataclass
class BoardState:
    name: str
    spec: Board | None = None  # None: known from its stored health only
    healthy: bool = True
    refused: bool = False  # quarantined for a reason no wait can cure (a changed host key)
    busy: str | None = None  # task id running on it
    failures: int = 0
    last_error: str | None = None
    queue: list[tuple[int, int, int, str]] = field(default_factory=list)  # heap

    @property
    def station(self) -> str:
        return (self.spec.station if self.spec else None) or "head"


@dataclass(slots=True)
class TaskRun:
    """The scheduler's in-memory view of a queued or in-flight task: what placing it
    takes, not its spec. A head holds one per unfinished task (100,000 in a wide
    sweep), so it is small: ``candidates`` is the list its job's tasks share, and the
    spec (model, measure, variant) is read from the store when the task is dispatched."""

    id: str
    job_id: str
    index: int
    candidates: list[str]  # shared with the job's other tasks: read-only
    board: str
    priority: int
    job_seq: int
    attempts: int = 0
    running: bool = False  # the current attempt reached the engine
    ready_at: float = 0.0
    state: TaskState = TaskState.QUEUED

    def sort_key(self) -> tuple[int, int, int, str]:
        return (-self.priority, self.job_seq, self.index, self.id)


@dataclass
class JobRun:
    id: str
    policy: JobPolicy
    seq: int
    remaining: set[str]
    deadline: float = float("inf")
    cancelled: bool = False
    counts: collections.Counter[TaskState] = field(default_factory=collections.Counter)


class Scheduler:
    """Owns the queue. Thread-safe entry points: ``submit``, ``cancel``, ``running``,
    ``progress``, ``settle``; everything else runs on the loop thread."""

    def __init__(
        self,
        store: StoreWriter,
        dispatch: Dispatch,
        *,
        quarantine_after: int = 3,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        health_check: HealthCheck | None = None,
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
        self._progress: dict[str, JobProgress] = {}  # running jobs, published each round
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._answers: list[tuple[Future[Any], Any]] = []  # given after the round commits
        self._job_seq = itertools.count()
        self._stop = threading.Event()
        self._last_health = 0.0
        self._health_pending: set[str] = set()
        self._beat = (time.monotonic(), 0.0)  # (when the loop last waited, for how long)
        for name, row in store.board_health().items():
            self.boards[name] = BoardState(
                name=name,
                healthy=row.state is BoardHealth.HEALTHY,
                failures=row.failures,
                last_error=row.last_error,
            )
        self._unsubscribe = store.subscribe(_log_event)
        store.interrupt_dead_owners()  # jobs whose embedded farm died: interrupted
        if resume:
            self._resume()
        self._thread = threading.Thread(target=self._loop, name="farm-scheduler", daemon=True)
        self._thread.start()

    # -- thread-safe API ----------------------------------------------------------

    def submit(
        self,
        job: Job,
        tasks: list[PlannedTask],
        boards: list[Board],
        *,
        source: str | None = None,
        owner: dict[str, Any] | None = None,
    ) -> str:
        """Persist the job with the boards it was planned on, queue its tasks, and
        return the job id. ``owner``: the embedded farm that runs it (``farm.owner``)."""
        job_id = new_job_id(job.name)
        self._ask("submit", (job_id, job, tasks, boards, source, owner))
        return job_id

    def cancel(self, job_id: str) -> None:
        self._inbox.put(("cancel", job_id))

    def resume(self, job_id: str, owner: dict[str, Any] | None = None) -> int:
        """Run what is left of an interrupted job (its queued tasks); returns how many."""
        return self._ask("resume", (job_id, owner))

    def _ask(self, kind: str, args: tuple[Any, ...]) -> Any:
        """Have the loop thread do ``kind`` (it alone writes) and wait for its answer,
        given once the round that did it is committed; its error is raised here."""
        answer: Future[Any] = Future()
        self._inbox.put((kind, (answer, *args)))
        while True:
            try:
                return answer.result(timeout=1.0)
            except FutureTimeout:
                if not self._thread.is_alive():
                    raise UserError("the scheduler stopped before it took the request") from None

    def running(self, report: EngineStarted) -> None:
        """A station says the engine started on an attempt of a task."""
        self._inbox.put(("running", report))

    def progress(self, job_id: str) -> JobProgress | None:
        published = self._progress.get(job_id)
        return published if published is not None else self.store.progress(job_id)

    def loop_lag_s(self) -> float:
        """How far the loop is behind the wake-up it promised itself when it last waited:
        0 while it keeps up; grows while one batch of events holds it."""
        since, timeout = self._beat
        return max(0.0, time.monotonic() - since - timeout)

    def idle(self) -> bool:
        return not self.jobs and self._inbox.empty()

    def settle(self, timeout: float = 30.0) -> None:
        """Return once the loop has finished a round that handled everything put in
        before this call (submissions, outcomes, cancels) and dispatched what it could:
        how a caller waits for the scheduler without guessing at a sleep."""
        done = threading.Event()
        self._inbox.put(("settle", done))
        if not done.wait(timeout):
            raise TimeoutError(f"the scheduler loop did not finish a round in {timeout:.0f} s")

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(("wake", None))
        self._thread.join(timeout=10)
        self._unsubscribe()

    # -- loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            timeout = self._next_wakeup()
            self._beat = (time.monotonic(), timeout)
            try:
                kind, payload = self._inbox.get(timeout=timeout)
            except queue.Empty:
                kind, payload = "wake", None
            with self.store.batch():  # one round, one transaction
                settled = self._round(kind, payload)
            for event in settled:  # what waits on the round sees it written
                event.set()
            answers, self._answers = self._answers, []
            for answer, value in answers:
                answer.set_result(value)

    def _round(self, kind: str, payload: Any) -> list[threading.Event]:
        """Handle what arrived and dispatch; returns the ``settle`` calls it answers."""
        settled: list[threading.Event] = []
        try:
            while True:  # handle what arrived, then dispatch once
                if kind == "settle":
                    settled.append(payload)
                else:
                    self._handle(kind, payload)
                try:
                    kind, payload = self._inbox.get_nowait()
                except queue.Empty:
                    break
            self._release_delayed()
            self._expire_waiting()
            self._maybe_health_check()
            self._dispatch_ready()
        except Exception:  # the loop must survive a bad event; say so loudly
            log.exception("scheduler loop error while handling %s", kind)
        self._progress = {
            job.id: JobProgress(
                job.id, JobState.RUNNING, {s: n for s, n in job.counts.items() if n}
            )
            for job in self.jobs.values()
        }
        return settled

    def _next_wakeup(self) -> float:
        wake = 1.0
        if self._delayed:
            wake = min(wake, max(0.0, self._delayed[0][0] - time.time()))
        return wake

    def _handle(self, kind: str, payload: Any) -> None:
        if kind in ("submit", "resume"):
            answer, *args = payload
            try:
                value = self._on_new_job(*args) if kind == "submit" else self._on_resume(*args)
            except Exception as exc:  # the caller's error (no such job...), raised there
                answer.set_exception(exc)
            else:
                self._answers.append((answer, value))  # answered once committed
        elif kind == "done":
            self._on_outcome(*payload)
        elif kind == "running":
            self._on_running(payload)
        elif kind == "cancel":
            self._on_cancel(payload)
        elif kind == "health":
            self._on_health(*payload)

    # -- submit / resume ----------------------------------------------------------

    def _learn_boards(self, boards: list[Board]) -> None:
        for spec in boards:
            state = self.boards.get(spec.name)
            if state is None:
                self.boards[spec.name] = BoardState(name=spec.name, spec=spec)
            else:
                state.spec = spec

    def _on_new_job(
        self,
        job_id: str,
        job: Job,
        tasks: list[PlannedTask],
        boards: list[Board],
        source: str | None,
        owner: dict[str, Any] | None,
    ) -> None:
        """Persist the job with the boards it was planned on and queue its tasks."""
        spec = job.model_dump(mode="json")
        self.store.add_job(
            job_id,
            job.name,
            spec,
            tasks,
            boards=[b.model_dump(mode="json") for b in boards],
            priority=job.priority,
            source=source,
            owner=owner,
        )
        self._on_submit(job_id, JobPolicy.of(spec), boards)

    def _on_resume(self, job_id: str, owner: dict[str, Any] | None) -> int:
        job = self.store.job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if job.state is not JobState.INTERRUPTED:
            raise UserError(f"{job.id} is {job.state}: only an interrupted job resumes")
        self.store.set_owner(job.id, owner)
        self.store.set_job_state(job.id, JobState.RUNNING)
        queued = self.store.counts(job.id).get(TaskState.QUEUED, 0)
        boards = [Board.model_validate(b, strict=False) for b in job.boards]
        self._on_submit(job.id, JobPolicy.of(job.spec), boards)
        return queued

    def _on_submit(self, job_id: str, policy: JobPolicy, boards: list[Board]) -> None:
        self._learn_boards(boards)
        record = self.store.job(job_id)
        run = JobRun(
            id=job_id,
            policy=policy,
            seq=next(self._job_seq),
            remaining=set(),
            deadline=(record.created if record else time.time()) + policy.deadline_s,
            counts=collections.Counter(self.store.counts(job_id)),
        )
        self.jobs[job_id] = run
        if record is not None and record.state is JobState.QUEUED:
            self.store.set_job_state(job_id, JobState.RUNNING)
        for task in self.store.queued(job_id):
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
            boards = [Board.model_validate(b, strict=False) for b in job.boards]
            self._on_submit(job_id, JobPolicy.of(job.spec), boards)

    def _enqueue_new(self, job: JobRun, task: QueuedTask) -> None:
        run = TaskRun(
            id=task.id,
            job_id=job.id,
            index=task.index,
            candidates=task.candidates,
            board=task.board,
            priority=job.policy.priority,
            job_seq=job.seq,
            attempts=task.attempts,
        )
        self.tasks[run.id] = run
        job.remaining.add(run.id)
        self._place(run)

    # -- placing and dispatching ----------------------------------------------------

    def _usable(self, name: str) -> bool:
        board = self.boards.get(name)
        return board is not None and board.healthy and board.spec is not None

    def _place(self, run: TaskRun) -> None:
        """Put a queued task in the queue of a usable board, or let it wait for one."""
        if not self._usable(run.board):
            movable = self.jobs[run.job_id].policy.migrate
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
                self.store.log(
                    run.id,
                    f"waiting up to {job.deadline - time.time():.0f} s (the job's deadline) for"
                    f" a health check to bring back {', '.join(hopeful)} (quarantined)",
                    time.time(),
                )
            return
        self._waiting.discard(run.id)
        why = "quarantined (migration off)" if not movable else "unknown or quarantined"
        if hopeful:
            why += ", still at the job's deadline"
        elif known:
            why += f" ({self.boards[known[0]].last_error})"
        self._finish(
            run,
            TaskState.FAILED,
            error=f"no healthy board for this task: {', '.join(boards)} {why}",
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
        if board.spec is None:  # not reachable: _place() only queues on usable boards
            raise RuntimeError(f"{board.name}: queued on a board without a spec")
        board.busy = run.id
        run.attempts += 1
        run.running = False
        self.store.transition(run.id, TaskState.DEPLOYING, board=board.name, attempt=run.attempts)
        self._moved(run, TaskState.DEPLOYING)
        payload = TaskPayload(
            task_id=run.id,
            job_id=run.job_id,
            # the attempt's own board only: a wide job's candidates (1,000 names) would be
            # pickled into every dispatch, and the station has no use for them
            task=PlannedTask.of(self.store.task_spec(run.id), [board.name]),
            board=board.spec,
            attempt=run.attempts,
            isolation=self.jobs[run.job_id].policy.isolation,  # type: ignore[arg-type]
        )
        try:
            future = self._dispatch(board.station, payload)
        except Exception as exc:  # the station itself could not be reached
            self._on_outcome(run.id, run.attempts, Outcome.lost(exc))
            return
        future.add_done_callback(
            lambda f, tid=run.id, n=run.attempts: self._inbox.put(("done", (tid, n, _result(f))))
        )

    def _on_running(self, report: EngineStarted) -> None:
        run = self.tasks.get(report.task_id)
        if run is None or run.attempts != report.attempt or run.running:
            return  # a late report of an attempt already over
        run.running = True
        self.store.transition(
            report.task_id, TaskState.RUNNING, at=report.at, deploy_bytes=report.deploy_bytes
        )
        self._moved(run, TaskState.RUNNING)

    # -- outcomes -----------------------------------------------------------------

    def _on_outcome(self, task_id: str, attempt: int, outcome: Outcome) -> None:
        run = self.tasks.get(task_id)
        if run is None or run.attempts != attempt:
            return
        board = self.boards[run.board]
        if board.busy == task_id:
            board.busy = None
        started = outcome.started(task_id, attempt)
        if started is not None:
            self._on_running(started)
        job = self.jobs[run.job_id]
        if job.cancelled:
            self._finish(run, TaskState.CANCELLED, outcome, error="cancelled")
            return
        if outcome.state.has_result():
            self._board_ok(board)
            # a cell that does not fit keeps its reason (a runtime's missing operator)
            why = outcome.failure
            self._finish(
                run, outcome.state, outcome,
                error=why.message if why else None, error_kind=why.kind if why else None,
            )  # fmt: skip
            return
        error = outcome.error or "unknown error"
        kind = outcome.failure.kind if outcome.failure is not None else None
        if outcome.board_fault:
            self._board_failed(board, error, now=outcome.quarantine)
        if outcome.quarantine and job.policy.migrate:  # the board is at fault, not the task
            others = [b for b in run.candidates if b != run.board and self._usable(b)]
            if others:  # it moves, as the tasks queued behind it on that board do
                detail = f"attempt {run.attempts}: {run.board} taken out of service: {error}; moved"
                self.store.transition(run.id, TaskState.QUEUED, board=run.board, detail=detail)
                self._moved(run, TaskState.QUEUED)
                for at, line in outcome.logs:
                    self.store.log(run.id, line, at)
                run.board = min(others, key=lambda b: len(self.boards[b].queue))
                self._place(run)
                return
        if outcome.retryable and run.attempts <= job.policy.retries:
            delay = min(self.backoff_max_s, self.backoff_s * 2 ** (run.attempts - 1))
            detail = f"attempt {run.attempts} failed: {error}; retry in {delay:.1f}s"
            self.store.transition(
                run.id, TaskState.QUEUED, board=run.board, detail=detail, error_kind=kind
            )
            self._moved(run, TaskState.QUEUED)
            for at, line in outcome.logs:
                self.store.log(run.id, line, at)
            if job.policy.migrate:
                others = [b for b in run.candidates if b != run.board and self._usable(b)]
                if others:
                    run.board = min(others, key=lambda b: len(self.boards[b].queue))
            run.ready_at = time.time() + delay
            heapq.heappush(self._delayed, (run.ready_at, run.id))
            return
        self._finish(run, TaskState.FAILED, outcome, error=error, error_kind=kind)

    def _release_delayed(self) -> None:
        now = time.time()
        while self._delayed and self._delayed[0][0] <= now:
            _, task_id = heapq.heappop(self._delayed)
            run = self.tasks.get(task_id)
            if run is not None:
                self._place(run)

    def _finish(
        self,
        run: TaskRun,
        state: TaskState,
        outcome: Outcome | None = None,
        *,
        error: str | None = None,
        error_kind: str | None = None,
    ) -> None:
        kept = outcome or Outcome(state)
        self.store.finish(
            run.id,
            state,
            board=run.board,
            result=kept.result,
            markers=kept.markers,
            error=error,
            error_kind=error_kind,
            logs=kept.logs,
            trace=kept.trace if state is TaskState.DONE else None,
        )
        self._moved(run, state)
        self._forget(run)

    def _moved(self, run: TaskRun, state: TaskState) -> None:
        """Keep the job's task counts (what ``progress`` answers) in step with the store."""
        job = self.jobs.get(run.job_id)
        if job is not None:
            job.counts[run.state] -= 1
            job.counts[state] += 1
        run.state = state

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
        elif counts.get(TaskState.FAILED) or counts.get(TaskState.CANCELLED):
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
                self._finish(run, TaskState.CANCELLED, error="cancelled")
            else:
                running.setdefault(board.station, []).append(task_id)
        # in-flight tasks finish as cancelled when their outcome arrives: at once when
        # their station stops their engines
        for station, task_ids in running.items():
            if self._abort is not None:
                self._abort(station, task_ids)

    # -- board health ---------------------------------------------------------------

    def _board_ok(self, board: BoardState) -> None:
        if board.failures or not board.healthy:
            board.failures = 0
            board.healthy = True
            board.refused = False
            self.store.set_board_health(board.name, BoardHealth.HEALTHY, 0, None)
            self._wake_waiting(board.name)

    def _board_failed(self, board: BoardState, error: str, *, now: bool = False) -> None:
        board.failures += 1
        board.last_error = error
        if board.healthy and (now or board.failures >= self.quarantine_after):
            board.healthy = False
            board.refused = now
            log.warning(
                "%s quarantined after %d consecutive failures: %s",
                board.name, board.failures, error,
            )  # fmt: skip
            self.store.set_board_health(board.name, BoardHealth.QUARANTINED, board.failures, error)
            self._evacuate(board)
        else:
            health = BoardHealth.HEALTHY if board.healthy else BoardHealth.QUARANTINED
            self.store.set_board_health(board.name, health, board.failures, error)

    def _evacuate(self, board: BoardState) -> None:
        """Move the tasks queued on a board just quarantined (or let them wait)."""
        waiting, board.queue = board.queue, []
        for *_, task_id in waiting:
            run = self.tasks.get(task_id)
            if run is not None and run.board == board.name:
                self._place(run)

    def _maybe_health_check(self) -> None:
        if self._health_check is None or time.time() - self._last_health < self.health_interval_s:
            return
        self._last_health = time.time()
        for name, board in self.boards.items():
            if board.healthy or name in self._health_pending or board.spec is None:
                continue
            self._health_pending.add(name)
            future = self._health_check(board.station, board.spec)
            future.add_done_callback(
                lambda f, n=name: self._inbox.put(("health", (n, _check(f, n))))
            )

    def _on_health(self, name: str, check: BoardCheck) -> None:
        self._health_pending.discard(name)
        if check.ok:
            log.info("%s passed its health check: back in service", name)
            self._board_ok(self.boards[name])


def _log_event(event: Event) -> None:
    """The scheduler's own subscription: every move in the head's log."""
    if isinstance(event, TaskEvent):
        log.debug("%s: %s → %s (attempt %d)", event.task_id, event.from_state,
                  event.to_state, event.attempt)  # fmt: skip
    elif isinstance(event, JobEvent):
        log.info("job %s: %s → %s", event.job_id, event.from_state, event.to_state)
    else:
        log.info("board %s: %s (%d failures)", event.board, event.to_state, event.failures)


def _result(future: Future) -> Outcome:
    try:
        return future.result()
    except Exception as exc:
        return Outcome.lost(exc)


def _check(future: Future, board: str) -> BoardCheck:
    try:
        return future.result()
    except Exception as exc:
        return BoardCheck(board=board, error=f"{type(exc).__name__}: {exc}")
