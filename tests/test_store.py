"""The store: schema and migration, the one writer's state graph, events, typed reads."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from farm.errors import IllegalTransition, SchemaTooNew, UnknownTask
from farm.result import EngineResult
from farm.spec import CellKey
from farm.states import BoardHealth, JobState, TaskState
from farm.store import (
    SCHEMA_VERSION,
    BoardEvent,
    JobEvent,
    Store,
    TaskEvent,
    open_reader,
    open_writer,
)
from farm.testing.plans import planned_tasks

V1_FILE = Path(__file__).parent / "data" / "farm-v1.db"  # written by farm's schema-1 store


def _tasks(n, board="local"):
    return planned_tasks(n, board, threads=True)


RESULT = EngineResult.model_validate(
    {
        "status": "ok",
        "latency": {"n": 3, "mean_ms": 1.5, "median_ms": 1.4, "p99_ms": None},
        "memory": {"required_mb": 3.0, "peak_rss_mb": 200.0},
        "layers": [
            {
                "index": 0,
                "name": "fc1",
                "type": "Linear",
                "params": 10,
                "time_ms": 0.1,
                "share": 1.0,
            },
        ],
        "env": {"torch": "2.13.0", "threads": 2, "governor": "performance"},
    }
)


def _run(store, task_id, board="local"):
    store.transition(task_id, TaskState.DEPLOYING, board=board, attempt=1)
    store.transition(task_id, TaskState.RUNNING)


def test_new_file_has_the_current_schema_in_wal(db_path):
    Store(db_path).close()
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert version == str(SCHEMA_VERSION) == "5"


def test_newer_schema_is_refused(db_path):
    Store(db_path).close()
    db = sqlite3.connect(db_path)
    db.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    db.commit()
    with pytest.raises(SchemaTooNew, match="newer"):
        Store(db_path)


def test_a_file_written_by_schema_1_migrates_and_keeps_everything(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(V1_FILE, path)
    store = Store(path)
    job = store.job("latest")
    assert job.id == "smoke-20261128-000000-abcd" and job.state is JobState.RUNNING
    assert "_boards" not in job.spec and job.spec["name"] == "smoke"
    assert [b["name"] for b in job.boards] == ["local"]  # moved out of the spec
    cells = store.cells(job.id)
    assert [c.task.state for c in cells] == [TaskState.DONE, TaskState.RUNNING, TaskState.QUEUED]
    done = cells[0].result
    assert done.version == 1 and done.latency.mean_ms == 1.25 and done.env.torch == "2.13.0"
    assert [row.name for row in store.layers(cells[0].task.id)] == ["fc1", "relu1"]
    assert store.markers(cells[0].task.id)["t_ns"] == [1, 2]
    events = store.events(cells[0].task.id)
    assert [(e.from_state, e.to_state) for e in events] == [
        (None, TaskState.QUEUED),
        (TaskState.QUEUED, TaskState.DEPLOYING),
        (TaskState.DEPLOYING, TaskState.RUNNING),
        (TaskState.RUNNING, TaskState.DONE),
    ]
    assert cells[1].task.planned().candidates == ["local"]
    # each distinct candidate list is stored once per job, the tasks point at it
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT job_id, idx, boards FROM candidate_sets").fetchall() == [
        (job.id, 0, '["local"]')
    ]
    specs = raw.execute("SELECT spec, candidates FROM tasks ORDER BY idx").fetchall()
    assert [json.loads(spec).get("candidates") for spec, _ in specs] == [None] * 3
    assert [index for _, index in specs] == [0] * 3
    raw.close()
    assert store.board_health()["local"].failures == 1
    # the migrated file goes on: a restarted head requeues the in-flight task
    assert store.requeue_in_flight() == 1
    assert store.counts(job.id) == {TaskState.DONE: 1, TaskState.QUEUED: 2}
    store.close()
    assert Store(path).job(job.id).boards == job.boards  # the upgrade ran once


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    from farm.store import schema

    path = tmp_path / "old.db"
    shutil.copy(V1_FILE, path)

    def broken(db):
        schema._v2(db)
        raise RuntimeError("disk full")

    monkeypatch.setattr(schema, "MIGRATIONS", [broken])
    with pytest.raises(RuntimeError, match="disk full"):
        Store(path)
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
    columns = [r[1] for r in db.execute("PRAGMA table_info(jobs)")]
    assert "boards" not in columns


def test_task_history_result_and_events(db_path):
    store = Store(db_path)
    heard = []
    store.subscribe(heard.append)
    store.add_job("j1", "smoke", {"name": "smoke"}, _tasks(2), boards=[{"name": "local"}])
    assert store.counts("j1") == {TaskState.QUEUED: 2}
    _run(store, "j1.0")
    store.finish(
        "j1.0",
        TaskState.DONE,
        board="local",
        result=RESULT,
        markers={"t_ns": [1, 2], "kind": [2, 3]},
        logs=[(1.0, "hello")],
    )
    assert [e.to_state for e in store.events("j1.0")] == ["queued", "deploying", "running", "done"]
    cells = store.cells("j1")
    assert cells[0].result == RESULT and cells[0].result.env.governor == "performance"
    assert cells[1].result is None
    assert store.markers("j1.0") == {"t_ns": [1, 2], "kind": [2, 3]}
    assert store.layers("j1.0")[0].name == "fc1"
    assert store.logs("j1.0")[0].line == "hello"
    assert heard[0] == JobEvent("j1", "smoke", None, JobState.QUEUED, heard[0].at)
    moves = [(e.task_id, e.from_state, e.to_state, e.attempt) for e in heard[1:]]
    assert moves == [
        ("j1.0", None, "queued", 0),
        ("j1.1", None, "queued", 0),
        ("j1.0", "queued", "deploying", 1),
        ("j1.0", "deploying", "running", 1),
        ("j1.0", "running", "done", 1),
    ]
    assert all(isinstance(e, TaskEvent) and e.job_id == "j1" for e in heard[1:])
    # the events read back are the events published
    assert store.events("j1.0") == [e for e in heard[1:] if e.task_id == "j1.0"]


def test_an_illegal_move_is_refused_and_writes_nothing(db_path):
    store = Store(db_path)
    heard = []
    store.subscribe(heard.append)
    store.add_job("j1", "smoke", {"name": "smoke"}, _tasks(1))
    _run(store, "j1.0")
    store.finish("j1.0", TaskState.DONE, board="local", result=RESULT, logs=[(1.0, "first")])
    before = len(heard)
    with pytest.raises(IllegalTransition, match="done → done"):
        store.finish("j1.0", TaskState.DONE, board="b2", result=RESULT, logs=[(2.0, "again")])
    with pytest.raises(IllegalTransition, match="done → queued"):
        store.transition("j1.0", TaskState.QUEUED)
    with pytest.raises(IllegalTransition):
        store.finish("j1.0", TaskState.RUNNING, board="local")
    assert len(heard) == before  # nothing published
    assert [x.line for x in store.logs("j1.0")] == ["first"]
    assert store.task("j1.0").board == "local"
    assert len(store.events("j1.0")) == 4
    # a task cannot be done without having run
    store.add_job("j2", "smoke", {"name": "smoke"}, _tasks(1))
    with pytest.raises(IllegalTransition, match="queued → done"):
        store.finish("j2.0", TaskState.DONE, board="local", result=RESULT)


def test_unknown_task_transition_raises_and_changes_nothing(db_path):
    store = Store(db_path)
    store.add_job("j1", "smoke", {"name": "smoke"}, _tasks(1))
    with pytest.raises(UnknownTask):
        store.transition("j1.9", TaskState.DEPLOYING)
    with pytest.raises(UnknownTask):
        store.set_job_state("nope", JobState.RUNNING)
    assert store.counts("j1") == {TaskState.QUEUED: 1}


def test_job_moves(db_path):
    store = Store(db_path)
    store.add_job("j1", "smoke", {"name": "smoke"}, _tasks(1))
    with pytest.raises(IllegalTransition):
        store.set_job_state("j1", JobState.DONE)  # never ran
    store.set_job_state("j1", JobState.RUNNING)
    with pytest.raises(IllegalTransition):
        store.set_job_state("j1", JobState.RUNNING)
    event = store.set_job_state("j1", JobState.CANCELLED)
    assert (event.from_state, event.to_state) == (JobState.RUNNING, JobState.CANCELLED)
    assert store.jobs_by_state() == {JobState.CANCELLED: 1}


def test_board_health_events(db_path):
    store = Store(db_path)
    heard = []
    store.subscribe(heard.append)
    store.set_board_health("b0", BoardHealth.HEALTHY, 1, "lost")
    store.set_board_health("b0", BoardHealth.QUARANTINED, 3, "lost")
    store.set_board_health("b0", BoardHealth.HEALTHY, 0, None)
    assert [(e.from_state, e.to_state, e.failures) for e in heard] == [
        (None, "healthy", 1),
        ("healthy", "quarantined", 3),
        ("quarantined", "healthy", 0),
    ]
    assert all(isinstance(e, BoardEvent) for e in heard)
    assert store.board_health()["b0"].state is BoardHealth.HEALTHY


def test_a_failing_subscriber_does_not_stop_the_others(db_path):
    store = Store(db_path)
    heard = []

    def broken(event):
        raise ValueError("exporter bug")

    store.subscribe(broken)
    unsubscribe = store.subscribe(heard.append)
    store.add_job("j1", "smoke", {"name": "smoke"}, _tasks(1))
    assert len(heard) == 2
    unsubscribe()
    store.transition("j1.0", TaskState.DEPLOYING)
    assert len(heard) == 2


def test_requeue_in_flight_after_restart(db_path):
    store = Store(db_path)
    store.add_job("j1", "smoke", {"name": "smoke"}, _tasks(3))
    store.set_job_state("j1", JobState.RUNNING)
    _run(store, "j1.0")
    _run(store, "j1.1")
    store.finish("j1.1", TaskState.DONE, board="local", result=RESULT)
    store.close()
    store = Store(db_path)  # the "restarted head"
    assert store.unfinished_jobs() == ["j1"]
    assert store.requeue_in_flight() == 1
    assert store.counts("j1") == {TaskState.QUEUED: 2, TaskState.DONE: 1}
    assert store.events("j1.0")[-1].detail == "requeued after head restart"


def test_reads_for_metrics_reports_and_nightly(db_path):
    store = Store(db_path)
    for job_id, mean in (("n1", 1.0), ("n2", 2.0)):
        store.add_job(job_id, "nightly", {"name": "nightly"}, _tasks(2), priority=5)
        store.set_job_state(job_id, JobState.RUNNING)
        _run(store, f"{job_id}.0")
        result = RESULT.model_copy(
            update={"latency": RESULT.latency.model_copy(update={"mean_ms": mean})}
        )
        store.finish(f"{job_id}.0", TaskState.DONE, board="local", result=result)
    store.add_job("adhoc", "smoke", {"name": "smoke"}, _tasks(1, board="other"), priority=1)
    latest = store.latest_cells()
    assert [(c.task.job_id, c.result.latency.mean_ms) for c in latest] == [("n2", 2.0)]
    assert latest[0].key == CellKey("kws", "local", "cpu", "threads=0")
    assert [j.id for j in store.jobs(name="nightly", limit=5)] == ["n2", "n1"]
    assert store.queue_depth() == {5: 2, 1: 1}
    assert store.jobs_by_state() == {JobState.RUNNING: 2, JobState.QUEUED: 1}
    pairs = store.match_cells("n1", "n2")
    assert [(a.result.latency.mean_ms, b.result.latency.mean_ms) for _, a, b in pairs[:1]] == [
        (1.0, 2.0)
    ]
    assert pairs[1][1].result is None and pairs[1][2].result is None


def test_states_as_data():
    assert TaskState.DONE.is_terminal() and not TaskState.RUNNING.is_terminal()
    assert TaskState.DOES_NOT_FIT.has_result() and not TaskState.FAILED.has_result()
    assert JobState.FAILED.is_terminal() and not JobState.RUNNING.is_terminal()
    assert f"{TaskState.DOES_NOT_FIT}" == "does-not-fit"


def test_a_candidate_list_is_stored_once_per_job_and_read_back_shared(db_path):
    store = Store(db_path)
    wide = [f"b{i}" for i in range(1000)]
    tasks = [t.model_copy(update={"candidates": wide}) for t in _tasks(3)]
    tasks.append(_tasks(4)[3].model_copy(update={"candidates": list(wide)}))  # equal, not same
    tasks.append(_tasks(5, board="other")[4])
    store.add_job("j", "j", {}, tasks)
    raw = sqlite3.connect(db_path)
    assert [json.loads(b) for (b,) in raw.execute("SELECT boards FROM candidate_sets")] == [
        wide,
        ["other"],
    ]
    assert max(len(spec) for (spec,) in raw.execute("SELECT spec FROM tasks")) < 1000
    raw.close()
    planned = [t.planned() for t in store.tasks("j")]
    assert [p.candidates for p in planned] == [wide] * 4 + [["other"]]
    assert planned[0].candidates is planned[3].candidates  # one list for the job, not a copy
    assert planned[2].model_dump(exclude={"candidates"}) == tasks[2].model_dump(
        exclude={"candidates"}
    )
    # what a scheduler keeps of a queued task: no spec, the job's shared list
    store.transition("j.1", TaskState.DEPLOYING, attempt=1)
    queued = store.queued("j")
    assert [(q.id, q.index, q.board, q.attempts) for q in queued] == [
        ("j.0", 0, "local", 0),
        ("j.2", 2, "local", 0),
        ("j.3", 3, "local", 0),
        ("j.4", 4, "other", 0),
    ]
    assert queued[0].candidates is queued[2].candidates == wide
    assert store.task_spec("j.4").model_dump() == tasks[4].model_dump(exclude={"candidates"})
    with pytest.raises(UnknownTask):
        store.task_spec("j.9")
    store.close()


def test_one_writable_store_is_opened_in_farm():
    """The scheduler's owner opens the one writer; everything else in farm reads."""
    import ast

    root = Path(__file__).resolve().parents[1]
    writers = []

    def visit(node: ast.AST, path: Path, owner: str) -> None:
        if isinstance(node, ast.ClassDef):
            owner = node.name
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            readonly = any(
                k.arg == "readonly" and getattr(k.value, "value", None) is True
                for k in node.keywords
            )
            if name in ("open_writer", "StoreWriter") or (name == "Store" and not readonly):
                writers.append((str(path.relative_to(root)), owner))
        for child in ast.iter_child_nodes(node):
            visit(child, path, owner)

    for path in sorted((root / "farm").rglob("*.py")):
        if path.parent.name != "store":  # where the types are defined
            visit(ast.parse(path.read_text()), path, "")
    assert writers == [("farm/scheduler/actors.py", "SchedulerActor")]


def test_a_reader_cannot_write(db_path):
    Store(db_path).close()  # a writer made the file
    reader = open_reader(db_path)
    assert not hasattr(reader, "add_job") and not hasattr(reader, "transition")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader._db.execute("DELETE FROM jobs")
    reader.close()


def test_a_writer_marks_no_orphans_by_opening(db_path, monkeypatch):
    """Orphans are the scheduler's start-up's to mark (test_interrupts), not any opener's."""
    store = Store(db_path)
    store.add_job("j1", "smoke", {"name": "smoke"}, _tasks(1), owner={"host": "x", "pid": 1})
    store.close()
    from farm.owner import Owner

    monkeypatch.setattr(Owner, "alive", lambda self: False)
    again = open_writer(db_path)
    assert again.job("j1").state is JobState.QUEUED
    assert again.interrupt_dead_owners() == ["j1"]
    assert again.job("j1").state is JobState.INTERRUPTED
    again.close()
