"""The SQLite store: schema, transitions, atomic results, restart recovery."""

from __future__ import annotations

import sqlite3

import pytest

from farm.store import SCHEMA_VERSION, JobState, Store, TaskState


def _tasks(n):
    return [
        {
            "index": i,
            "key": f"kws/local/cpu/{i}",
            "model": {"name": "kws", "zoo": "kws"},
            "board": "local",
            "processor": "cpu",
            "variant": {"threads": i},
        }
        for i in range(n)
    ]


def test_schema_version_and_wal(db_path):
    store = Store(db_path)
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION
    )
    store.close()


def test_newer_schema_is_refused(db_path):
    Store(db_path).close()
    db = sqlite3.connect(db_path)
    db.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    db.commit()
    with pytest.raises(RuntimeError, match="newer"):
        Store(db_path)


def test_task_history_and_result(db_path):
    store = Store(db_path)
    store.add_job("j1", "smoke", {"name": "smoke"}, _tasks(2))
    assert store.counts("j1") == {"queued": 2}
    store.transition("j1.0", TaskState.DEPLOYING, board="local", attempts=1)
    store.transition("j1.0", TaskState.RUNNING, board="local")
    result = {
        "status": "ok",
        "latency": {"mean_ms": 1.5, "median_ms": 1.4, "p99_ms": None},
        "memory": {"required_mb": 3.0, "peak_rss_mb": 200.0},
        "layers": [
            {
                "index": 0,
                "name": "fc1",
                "type": "Linear",
                "params": 10,
                "time_ms": 0.1,
                "share": 1.0,
            }
        ],
        "markers": {"t_ns": [1, 2], "kind": [2, 3]},
    }
    store.finish("j1.0", TaskState.DONE, board="local", result=result, logs=[(1.0, "hello")])
    # finishing again replaces, never duplicates
    store.finish("j1.0", TaskState.DONE, board="local", result=result)
    assert [e["state"] for e in store.events("j1.0")] == [
        "queued", "deploying", "running", "done", "done",
    ]  # fmt: skip
    rows = store.results("j1")
    assert rows[0]["result"]["latency"]["mean_ms"] == 1.5
    assert "markers" not in rows[0]["result"]
    assert rows[1]["result"] is None
    assert store.markers("j1.0") == {"t_ns": [1, 2], "kind": [2, 3]}
    assert len(store.layers("j1.0")) == 1
    assert store.logs("j1.0")[0]["line"] == "hello"
    n = sqlite3.connect(db_path).execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert n == 1


def test_unknown_task_transition_raises_and_changes_nothing(db_path):
    store = Store(db_path)
    store.add_job("j1", "smoke", {"name": "smoke"}, _tasks(1))
    with pytest.raises(KeyError):
        store.transition("j1.9", TaskState.RUNNING)
    assert store.counts("j1") == {"queued": 1}


def test_requeue_in_flight_after_restart(db_path):
    store = Store(db_path)
    store.add_job("j1", "smoke", {"name": "smoke"}, _tasks(3))
    store.set_job_state("j1", JobState.RUNNING)
    store.transition("j1.0", TaskState.DEPLOYING)
    store.transition("j1.0", TaskState.RUNNING)
    store.finish("j1.1", TaskState.DONE, board="local", result={"status": "ok"})
    store.close()
    store = Store(db_path)  # the "restarted head"
    assert store.unfinished_jobs() == ["j1"]
    assert store.requeue_in_flight() == 1
    assert store.counts("j1") == {"queued": 2, "done": 1}
    assert store.events("j1.0")[-1]["detail"] == "requeued after head restart"


def test_task_state_enum():
    assert TaskState.DONE.is_terminal() and not TaskState.RUNNING.is_terminal()
    assert TaskState.DOES_NOT_FIT.has_result() and not TaskState.FAILED.has_result()
    assert JobState.FAILED.is_terminal() and not JobState.RUNNING.is_terminal()
