"""The scheduler's logic with stations replaced by threads (Ray is tested elsewhere)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from farm.errors import Failure, IllegalTransition
from farm.result import EngineResult
from farm.scheduler.core import Scheduler
from farm.scheduler.messages import BoardCheck, EngineStarted, Outcome
from farm.spec import Board, Job
from farm.states import BoardHealth, JobState, TaskState
from farm.store import Store
from farm.testing import waiting
from farm.testing.plans import planned_tasks


def _boards(*names):
    return [
        Board.model_validate(
            {"name": n, "station": "head", "transport": "local", "processors": [{"name": "cpu"}]},
            strict=False,
        )
        for n in names
    ]


def _job(name, **settings):
    doc = {"version": 1, "name": name, "models": ["kws"], "targets": [{"boards": ["b0"]}]}
    return Job.model_validate({**doc, **settings}, strict=False)


_tasks = planned_tasks


class FakeStations:
    """Runs ``behaviour(payload)`` on a thread pool and records what ran where and when."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.pool = ThreadPoolExecutor(32)
        self.log: list[tuple[str, str, float, float]] = []
        self.lock = threading.Lock()

    def dispatch(self, station, payload) -> Future:
        def run():
            start = time.monotonic()
            outcome = self.behaviour(payload)
            with self.lock:
                self.log.append((payload.task_id, payload.board.name, start, time.monotonic()))
            return outcome

        return self.pool.submit(run)


RESULT = EngineResult(status="ok", latency={"n": 1, "mean_ms": 1.0, "median_ms": 1.0})


def ok(payload):
    started = time.time()
    time.sleep(0.01)
    return Outcome(TaskState.DONE, result=RESULT, running_at=started)


def failed(error, *, retryable, board_fault=True, logs=()):
    kind, message = error.split(": ", 1)
    failure = Failure(kind, message, retryable=retryable, board_fault=board_fault)
    return Outcome(TaskState.FAILED, failure=failure, logs=list(logs))


def wait_job(sched, job_id, timeout=20):
    return waiting.wait_job(lambda: sched.progress(job_id), timeout, f"job {job_id}")


@pytest.fixture
def make(db_path):
    made = []

    def _make(behaviour=ok, **kw):
        stations = FakeStations(behaviour)
        sched = Scheduler(Store(db_path), stations.dispatch, backoff_s=0.01, **kw)
        made.append(sched)
        return sched, stations

    yield _make
    for s in made:
        s.stop()


def test_one_measurement_per_board_at_a_time(make):
    sched, stations = make()
    job = sched.submit(_job("j"), _tasks(6, "b0") + _tasks(6, "b1", start=6), _boards("b0", "b1"))
    assert wait_job(sched, job).state is JobState.DONE
    for board in ("b0", "b1"):
        spans = sorted((s, e) for _, b, s, e in stations.log if b == board)
        assert len(spans) == 6
        assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))
    # both boards worked at the same time
    b0 = [s for _, b, s, _ in stations.log if b == "b0"]
    b1 = [s for _, b, s, _ in stations.log if b == "b1"]
    assert min(b1) < max(b0)


def _gated(gate: threading.Event, started: threading.Event):
    """A station whose engine runs until ``gate`` opens; ``started`` says one began."""

    def gated(payload):
        started.set()
        assert gate.wait(30)
        return ok(payload)

    return gated


def test_priority_then_fifo(make):
    gate, started = threading.Event(), threading.Event()
    sched, stations = make(_gated(gate, started))
    low = sched.submit(_job("low", priority=0), _tasks(3), _boards("b0"))
    assert started.wait(30)  # low.0 is now running; the rest wait
    high = sched.submit(_job("high", priority=5), _tasks(2), _boards("b0"))
    sched.settle()  # the scheduler has queued high's tasks
    gate.set()
    wait_job(sched, low)
    wait_job(sched, high)
    order = [t for t, *_ in sorted(stations.log, key=lambda x: x[2])]
    assert order == [f"{low}.0", f"{high}.0", f"{high}.1", f"{low}.1", f"{low}.2"]


def test_retry_with_backoff_moves_to_another_board(make):
    def flaky(payload):
        if payload.board.name == "b0":
            return failed("BoardUnreachable: b0: gone", retryable=True)
        return ok(payload)

    sched, _ = make(flaky, quarantine_after=100)
    job = sched.submit(_job("j", retries=2), _tasks(2, "b0", ["b0", "b1"]), _boards("b0", "b1"))
    assert wait_job(sched, job).state is JobState.DONE
    tasks = sched.store.tasks(job)
    assert {t.board for t in tasks} == {"b1"}
    assert all(t.attempts == 2 for t in tasks)
    events = sched.store.events(f"{job}.0")
    assert "retry in" in events[2].detail and events[2].error_kind == "BoardUnreachable"
    assert [(e.to_state, e.attempt) for e in events] == [
        ("queued", 0), ("deploying", 1), ("queued", 1), ("deploying", 2), ("running", 2),
        ("done", 2),
    ]  # fmt: skip


def test_a_failure_that_is_not_retryable_is_not_retried(make):
    """A command that failed on the board is not a lost connection: running the task
    again would fail the same way (the station passes ``CommandFailed.retryable``)."""
    runs = []

    def command_failed(payload):
        runs.append(payload.attempt)
        return failed("CommandFailed: b0: `sha256sum` exited 1: disk I/O error", retryable=False)

    sched, _ = make(command_failed, quarantine_after=100)
    job = sched.submit(_job("j", retries=3), _tasks(1, "b0", ["b0", "b1"]), _boards("b0", "b1"))
    assert wait_job(sched, job).state is JobState.FAILED
    assert runs == [1]
    assert "CommandFailed" in sched.store.task(f"{job}.0").error
    assert sched.store.task(f"{job}.0").error_kind == "CommandFailed"  # stored with its kind


def test_no_migration_and_retries_exhausted_fail_with_cause(make):
    def broken(payload):
        return failed(
            "TransportTimeout: b0: frozen", retryable=True, logs=[(time.time(), "station: gave up")]
        )

    sched, _ = make(broken, quarantine_after=100)
    job = sched.submit(
        _job("j", retries=1, migrate=False), _tasks(1, "b0", ["b0", "b1"]), _boards("b0", "b1")
    )
    assert wait_job(sched, job).state is JobState.FAILED
    task = sched.store.task(f"{job}.0")
    assert task.attempts == 2 and "frozen" in task.error


def _quarantining(broken: threading.Event):
    def behaviour(payload):
        if broken.is_set():
            return failed("TransportTimeout: b0: slow", retryable=True)
        return ok(payload)

    return behaviour


def _health(healthy: threading.Event, checks: list | None = None):
    def check(station, board):
        if checks is not None:
            checks.append(board.name)
        f: Future = Future()
        f.set_result(BoardCheck(board.name, ok=healthy.is_set()))
        return f

    return check


def _quarantining_scheduler(make, healthy: threading.Event, checks: list | None = None):
    """A scheduler whose board fails (and is quarantined) while ``broken`` is set, and
    whose health checks (listed in ``checks``) pass once ``healthy`` is set."""
    broken = threading.Event()
    broken.set()
    sched, _ = make(
        _quarantining(broken),
        quarantine_after=1,
        health_check=_health(healthy, checks),
        health_interval_s=0.05,
    )
    return sched, broken


def test_tasks_of_a_quarantined_board_wait_for_its_health_check(make):
    healthy, checks = threading.Event(), []
    sched, broken = _quarantining_scheduler(make, healthy, checks)
    job = sched.submit(_job("j", retries=0, deadline_s=60), _tasks(3), _boards("b0"))
    # several health checks fail meanwhile (a check runs only on a quarantined board)
    waiting.wait_for(lambda: len(checks) >= 3, 30, "three failed health checks of b0")
    sched.settle()  # the others keep waiting
    assert sched.store.board_health()["b0"].state is BoardHealth.QUARANTINED
    assert sched.store.counts(job) == {TaskState.FAILED: 1, TaskState.QUEUED: 2}
    logged = " ".join(x.line for x in sched.store.logs(f"{job}.1"))
    assert "waiting up to" in logged and "b0" in logged
    broken.clear()
    healthy.set()
    assert wait_job(sched, job).state is JobState.FAILED  # task 0 failed; 1 and 2 ran
    assert sched.store.counts(job) == {TaskState.FAILED: 1, TaskState.DONE: 2}
    assert sched.store.board_health()["b0"].state is BoardHealth.HEALTHY


def test_a_task_still_waiting_at_the_jobs_deadline_fails_saying_why(make):
    sched, _ = _quarantining_scheduler(make, threading.Event())  # never healthy
    t0 = time.time()
    job = sched.submit(_job("j", retries=0, deadline_s=1.0), _tasks(2), _boards("b0"))
    assert wait_job(sched, job).state is JobState.FAILED
    assert time.time() - t0 >= 1.0
    error = sched.store.task(f"{job}.1").error
    assert "no healthy board" in error and "deadline" in error


def test_a_board_refused_for_its_host_key_fails_its_tasks_at_once(make):
    def mismatch(payload):
        failure = Failure("HostKeyMismatch", "b0: changed", board_fault=True, quarantine=True)
        return Outcome(TaskState.FAILED, failure=failure)

    sched, stations = make(mismatch, health_check=_health(threading.Event()))
    t0 = time.time()
    job = sched.submit(_job("j", retries=0, deadline_s=600), _tasks(3), _boards("b0"))
    assert wait_job(sched, job).state is JobState.FAILED
    assert time.time() - t0 < 10  # no waiting for a health check that cannot pass
    assert len(stations.log) == 1
    assert "HostKeyMismatch" in sched.store.task(f"{job}.2").error


def test_cancel_asks_the_station_to_stop_the_running_engine(db_path):
    gate, aborted = threading.Event(), []

    def gated(payload):
        started = time.time()
        gate.wait(30)  # the engine runs until its station stops it
        return Outcome(
            TaskState.FAILED, failure=Failure("EngineError", "killed"), running_at=started
        )

    def abort(station, task_ids):
        aborted.append((station, list(task_ids)))
        gate.set()

    stations = FakeStations(gated)
    sched = Scheduler(Store(db_path), stations.dispatch, abort=abort)
    try:
        job = sched.submit(_job("j"), _tasks(3), _boards("b0"))
        waiting.wait_for(
            lambda: sched.store.counts(job).get(TaskState.DEPLOYING), 30, "task 0 to deploy"
        )
        t0 = time.time()
        sched.cancel(job)
        assert wait_job(sched, job).state is JobState.CANCELLED
        assert time.time() - t0 < 10
        assert aborted == [("head", [f"{job}.0"])]
        assert sched.store.counts(job) == {TaskState.CANCELLED: 3}
    finally:
        gate.set()
        sched.stop()


def test_cancel_drops_queued_tasks(make):
    gate, started = threading.Event(), threading.Event()
    sched, stations = make(_gated(gate, started))
    job = sched.submit(_job("j"), _tasks(5), _boards("b0"))
    assert started.wait(30)
    sched.cancel(job)
    sched.settle()  # the cancel was handled while task 0 still ran
    gate.set()
    assert wait_job(sched, job).state is JobState.CANCELLED
    assert sched.store.counts(job) == {TaskState.CANCELLED: 5}
    assert len(stations.log) == 1


def test_restart_resumes_without_losing_or_duplicating(db_path):
    gate = threading.Event()
    calls = []

    def first(payload):
        calls.append(payload.task_id)
        if len(calls) > 2:
            gate.wait(10)  # the head "dies" while these are in flight
        return ok(payload)

    stations = FakeStations(first)
    sched = Scheduler(Store(db_path), stations.dispatch)
    job = sched.submit(_job("j"), _tasks(4, "b0") + _tasks(4, "b1", start=4), _boards("b0", "b1"))
    waiting.wait_for(lambda: sched.store.counts(job).get(TaskState.DONE, 0) >= 2, 30, "2 done")
    sched.stop()  # loop gone: in-flight outcomes are never recorded
    done_before = {
        c.task.id: c.result for c in sched.store.cells(job) if c.task.state is TaskState.DONE
    }
    assert len(done_before) >= 2

    stations2 = FakeStations(ok)
    sched2 = Scheduler(Store(db_path), stations2.dispatch)  # the restarted head
    try:
        assert wait_job(sched2, job).state is JobState.DONE
        rerun = {t for t, *_ in stations2.log}
        assert not rerun & set(done_before)  # finished results kept, not re-measured
        cells = sched2.store.cells(job)
        assert len(cells) == 8 and all(c.task.state is TaskState.DONE for c in cells)
        assert all(done_before[c.task.id] == c.result for c in cells if c.task.id in done_before)
        assert any(
            e.detail == "requeued after head restart"
            for c in cells
            for e in sched2.store.events(c.task.id)
        )
    finally:
        gate.set()
        sched2.stop()


def test_a_late_running_report_cannot_move_a_finished_or_later_attempt(make):
    """The station's "running" report travels apart from its outcome. One that
    arrives late (after the outcome, or for an earlier attempt) changes nothing,
    and an outcome whose report never came still records that the task ran."""

    def silent(payload):  # never reports running; the outcome says when it started
        return ok(payload)

    sched, _ = make(silent)
    job = sched.submit(_job("j"), _tasks(1), _boards("b0"))
    assert wait_job(sched, job).state is JobState.DONE
    task_id = f"{job}.0"
    sched.running(EngineStarted(task_id, 1, time.time()))  # late: the task is done
    sched.running(EngineStarted(task_id, 7, time.time()))  # an attempt that never was
    sched.settle()  # both reports were handled
    assert [e.to_state for e in sched.store.events(task_id)] == [
        "queued", "deploying", "running", "done",
    ]  # fmt: skip
    with pytest.raises(IllegalTransition):  # and the writer itself refuses it
        sched.store.transition(task_id, TaskState.RUNNING)


def test_the_scheduler_hears_every_move_through_the_store(make):
    heard = []
    sched, _ = make()
    sched.store.subscribe(heard.append)
    job = sched.submit(_job("j"), _tasks(2), _boards("b0"))
    assert wait_job(sched, job).state is JobState.DONE
    task_moves = [(e.task_id, e.to_state) for e in heard if hasattr(e, "task_id")]
    for i in range(2):
        assert [s for t, s in task_moves if t == f"{job}.{i}"] == [
            "queued", "deploying", "running", "done",
        ]  # fmt: skip
    job_moves = [e.to_state for e in heard if hasattr(e, "name")]
    assert job_moves == ["queued", "running", "done"]


def test_running_reports_go_in_batches_and_an_outcome_overtakes_its_own():
    """A station's "engine started" reports: gathered into one call, and a report whose
    outcome already left is not sent (the outcome carries it)."""
    from farm.scheduler.reports import RunningReports

    sent: list[list] = []
    reports = RunningReports(sent.append, delay_s=3600)  # sent when flushed, here
    reports.add(EngineStarted("t.0", 1, 10.0, 4096))  # what its deploy step pushed
    reports.add(EngineStarted("t.1", 1, 11.0))
    reports.add(EngineStarted("t.2", 2, 12.0))
    reports.overtaken("t.1", 1)  # its outcome is on its way
    reports.overtaken("t.2", 1)  # another attempt's outcome: the report of attempt 2 stays
    reports.flush()
    reports.flush()  # nothing left: no empty call
    assert sent == [[EngineStarted("t.0", 1, 10.0, 4096), EngineStarted("t.2", 2, 12.0, 0)]]

    arrived = threading.Event()
    alone = RunningReports(lambda batch: arrived.set(), delay_s=0.01)
    alone.add(EngineStarted("t.3", 1, 13.0))
    assert arrived.wait(30)  # and by itself, soon after it came in


def test_a_cell_the_station_finds_unfit_before_its_engine_starts_does_not_fit(make):
    """A runtime that cannot take the model (``CannotLower`` on the station, before any
    engine runs): the task goes from deploying to does-not-fit, with the reason as its error."""

    def cannot_lower(payload):
        reason = "executorch int8: Missing operator: aten::avg_pool3d.out"
        return Outcome(TaskState.DOES_NOT_FIT, failure=Failure("CannotLower", reason))

    sched, _ = make(cannot_lower)
    job = sched.submit(_job("j"), _tasks(1, "b0", ["b0"]), _boards("b0"))
    assert wait_job(sched, job).state is JobState.DONE
    task = sched.store.task(f"{job}.0")
    assert task.state is TaskState.DOES_NOT_FIT and task.error_kind == "CannotLower"
    assert task.error == "executorch int8: Missing operator: aten::avg_pool3d.out"
