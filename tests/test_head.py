"""A real farm head: ``ray start`` processes, real sshd boards, the real SQLite store.

Everything goes through the ``farm`` command in subprocesses, the way a person
uses it; this process never joins a Ray cluster (the session's ``ray_session``
is left alone). One head serves the whole module (a Ray head takes seconds to
start on two cores); the last test kills it hard and starts it again on the
same store. Finalizers stop every node these tests started, by its marker,
also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from farm.procs import started
from farm.scheduler.cluster import node_pids
from farm.store import Store
from farm.testing.testbed import Testbed, free_port
from farm.testing.waiting import wait_for

pytestmark = pytest.mark.timeout(240)

CLI_TIMEOUT_S = 120


class Farm:
    """The ``farm`` command with this module's private store, cache and head."""

    def __init__(self, root: Path):
        self.root = root
        self.cache = root / "cache"
        self.db = root / "farm.db"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.metrics_port = free_port()  # never the default 9500: other heads may hold it
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
            "FARM_CACHE": str(self.cache),
            "FARM_DB": str(self.db),
            "COLUMNS": "250",  # rich tables unclipped
            "PYTHONUNBUFFERED": "1",
        }

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT_S):
        return subprocess.run(
            [sys.executable, "-m", "farm.cli", *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_head(self, check: bool = True) -> subprocess.CompletedProcess:
        args = ("head", "start", "--port", str(self.port), "--db", str(self.db))
        metrics = ("--metrics-address", f"127.0.0.1:{self.metrics_port}")
        return (self.ok if check else self.run)(*args, *metrics)

    def ok(self, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        proc = self.run(*args, **kw)
        if proc.returncode != 0:
            pytest.fail(f"farm {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def record(self, kind: str, key: str) -> dict[str, Any] | None:
        path = self.cache / f"{kind}s" / f"{key}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def store(self) -> Store:
        return Store(self.db)

    def kill_everything(self) -> None:
        """Last resort for a finalizer: SIGKILL every process of every node recorded here."""
        for path in self.cache.glob("*s/*.json"):
            marker = json.loads(path.read_text())["marker"]
            for pid in node_pids(marker):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def job_file(root: Path, name: str, *, boards: list[str] | None = None, **measure: Any) -> Path:
    doc = {
        "version": 1,
        "name": name,
        "retries": 1,
        "models": ["kws"],
        "targets": [{"boards": boards} if boards else {"tags": ["testbed"]}],
        "variants": measure.pop("variants", {"activation": ["relu"]}),
        "measure": {
            "iterations": 50,
            "warmup": 2,
            "layers": True,
            "layer_iterations": 5,
            "memory": True,
            "timeout_s": 120,
            **measure,
        },
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def inventory_with_station(bed: Testbed, root: Path, station: str) -> Path:
    """The test bed's inventory with board0 served by ``station`` instead of the head."""
    doc = yaml.safe_load(bed.inventory_path.read_text())
    doc["boards"] = [dict(b, station=station) for b in doc["boards"] if b["name"] == "board0"]
    path = root / f"inventory-{station}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def listeners(port: int) -> list[str]:
    """Local addresses with a socket LISTENing on ``port`` (from /proc/net/tcp{,6})."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:
                found.append(addr)
    return found


LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F"}


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> Iterator[Farm]:
    return_farm = Farm(tmp_path_factory.mktemp("head"))
    yield return_farm
    return_farm.run("station", "stop", "--name", "lab", timeout=60)
    return_farm.run("head", "stop", "--address", return_farm.address, timeout=60)
    return_farm.kill_everything()


@pytest.fixture(scope="module")
def head(farm: Farm) -> Farm:
    proc = farm.start_head()
    assert farm.address in proc.stdout
    return farm


# -- the head ------------------------------------------------------------------------------


def test_head_start_returns_and_records_its_node(head: Farm) -> None:
    record = head.record("head", str(head.port))
    assert record is not None and record["db"] == str(head.db)
    pids = node_pids(record["marker"])
    names = {Path(f"/proc/{p}/comm").read_text().strip() for p in pids}
    assert {"gcs_server", "raylet"} <= names, names
    # the GCS and /metrics listen on the loopback only, the dashboard not at all
    assert listeners(head.port) and set(listeners(head.port)) <= LOOPBACK_HEX
    assert listeners(head.metrics_port) and set(listeners(head.metrics_port)) <= LOOPBACK_HEX
    assert not listeners(8265) or all(
        "dashboard" not in Path(f"/proc/{p}/cmdline").read_text() for p in pids
    )
    # a second head on the same port is refused, and the first one is left alone
    again = head.start_head(check=False)
    assert again.returncode == 2 and "already runs" in again.stderr
    assert node_pids(record["marker"])


def test_head_status_shows_store_and_stations(head: Farm) -> None:
    proc = head.ok("head", "status", "--address", head.address)
    assert str(head.db) in proc.stdout
    assert "0 job(s) running" in proc.stdout
    assert "127.0.0.1" in proc.stdout and "head" in proc.stdout


def test_unreachable_head_is_a_clear_error(head: Farm) -> None:
    dead = f"127.0.0.1:{free_port()}"
    proc = head.run("head", "status", "--address", dead, timeout=30)
    assert proc.returncode == 2
    assert f"cannot reach a Ray head at {dead}" in proc.stderr


# -- submit through the head ---------------------------------------------------------------


def test_submit_address_prints_results_read_through_head(head: Farm, testbed: Testbed) -> None:
    job = job_file(head.root, "viahead")
    proc = head.ok("submit", str(job), "-i", str(testbed.inventory_path), "--address", head.address)
    job_id = next(ln.split()[1] for ln in proc.stderr.splitlines() if ln.startswith("job "))
    job_id = job_id.rstrip(":")
    store = head.store()
    assert store.job(job_id).state == "done"
    cells = store.cells(job_id)
    assert {c.task.board for c in cells} == {"board0", "board1", "board2"}
    assert all(c.task.state == "done" and c.result.latency.n == 50 for c in cells)
    assert job_id in proc.stdout and proc.stdout.count("done") >= 3  # the results table


def test_detach_with_ray_address(head: Farm, testbed: Testbed) -> None:
    job = job_file(head.root, "detached")
    started = time.monotonic()
    proc = head.ok(
        "submit", str(job), "-i", str(testbed.inventory_path), "--detach",
        env={"RAY_ADDRESS": head.address},
    )  # fmt: skip
    job_id = proc.stdout.strip()
    assert job_id.startswith("detached-") and "\n" not in job_id
    store = head.store()
    assert store.job(job_id) is not None  # persisted before submit returned
    wait_for(lambda: store.job(job_id).state == "done", 60, "the detached job")
    assert time.monotonic() - started < 60
    # reading it back through the head, by RAY_ADDRESS alone
    out = head.ok("results", job_id, "--format", "json", env={"RAY_ADDRESS": head.address})
    assert len(json.loads(out.stdout)["results"]) == 3
    # the listing and nightly verbs read through the head too (keyword arguments included)
    assert job_id in head.ok("status", env={"RAY_ADDRESS": head.address}).stdout
    head.ok("submit", str(job), "-i", str(testbed.inventory_path), "--quiet",
            "--address", head.address)  # fmt: skip
    cmp = head.run("compare", "--format", "json", "--address", head.address)
    assert cmp.returncode in (0, 1), cmp.stderr
    assert json.loads(cmp.stdout)["baseline"] == job_id


def test_board_without_station_fails_fast(head: Farm, testbed: Testbed) -> None:
    inventory = inventory_with_station(testbed, head.root, "nowhere")
    job = job_file(head.root, "orphan", boards=["board0"])
    before = len(head.store().jobs(limit=1000))
    proc = head.run("submit", str(job), "-i", str(inventory), "--address", head.address)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "no Ray node serves station(s) nowhere" in errors[0], proc.stderr
    assert len(head.store().jobs(limit=1000)) == before  # nothing was queued


def test_station_joins_runs_its_boards_and_leaves(head: Farm, testbed: Testbed) -> None:
    head.ok("station", "start", "--address", head.address, "--name", "lab")
    record = head.record("station", "lab")
    assert record is not None
    status = head.ok("head", "status", "--address", head.address).stdout
    assert "lab" in status

    inventory = inventory_with_station(testbed, head.root, "lab")
    job = job_file(head.root, "atlab", boards=["board0"])
    head.ok("submit", str(job), "-i", str(inventory), "--address", head.address)
    # the lab's station actor runs on the station's node, not on the head
    station_titles = [Path(f"/proc/{p}/cmdline").read_bytes() for p in node_pids(record["marker"])]
    assert any(t.startswith(b"ray::StationActor") for t in station_titles), station_titles

    head.ok("station", "stop", "--name", "lab")
    assert not node_pids(record["marker"]) and head.record("station", "lab") is None

    def lab_gone() -> bool:
        return "lab" not in head.ok("head", "status", "--address", head.address).stdout

    wait_for(lab_gone, 45, "the head to see the station leave", interval=1)
    assert head.record("head", str(head.port)) is not None  # the head lives on


def test_cancel_drops_queued_tasks(head: Farm, testbed: Testbed) -> None:
    job = job_file(
        head.root, "tocancel", boards=["board1"], iterations=20000,
        variants={"activation": ["relu", "sigmoid", "tanh"], "threads": [1, 2]},
    )  # fmt: skip
    inventory = str(testbed.inventory_path)
    job_id = head.ok(
        "submit", str(job), "-i", inventory, "--address", head.address, "--detach"
    ).stdout.strip()
    store = head.store()
    wait_for(lambda: store.counts(job_id).get("running"), 60, "a task to run")
    proc = head.ok("cancel", job_id, "--address", head.address)
    assert "cancelled" in proc.stderr
    assert store.job(job_id).state == "cancelled"
    counts = store.counts(job_id)
    assert set(counts) <= {"done", "cancelled"} and counts.get("cancelled", 0) >= 4, counts
    # cancelling again says so, and an unknown job is an input error
    again = head.run("cancel", job_id, "--address", head.address)
    assert again.returncode == 0 and "already ended" in again.stderr
    assert head.run("cancel", "nope", "--address", head.address).returncode == 2


# -- a head that dies mid-sweep ----------------------------------------------------------------


def test_head_killed_mid_sweep_resumes(head: Farm, testbed: Testbed) -> None:
    # Long tasks (some must be in flight at the kill), on one thread each: three
    # boards share this machine's cores, and two torch threads that must meet at
    # every layer make an inference ~40x slower once the cores are busy.
    job = job_file(
        head.root, "sweep", iterations=20000, layer_iterations=20,
        variants={"activation": ["relu", "sigmoid"], "batch": [1, 2], "threads": [1]},
    )  # fmt: skip
    inventory = str(testbed.inventory_path)
    job_id = head.ok(
        "submit", str(job), "-i", inventory, "--address", head.address, "--detach"
    ).stdout.strip()
    store = head.store()

    def some_done_some_running() -> bool:
        counts = store.counts(job_id)
        return counts.get("done", 0) >= 2 and bool(counts.get("running") or counts.get("deploying"))

    wait_for(some_done_some_running, 90, "a few finished tasks and one in flight", 0.1)
    old = head.record("head", str(head.port))
    on_boards = board_processes(testbed)  # its warm engines and lease holders
    assert on_boards
    head.ok("head", "stop", "--force", "--address", head.address)
    assert not node_pids(old["marker"])  # every process of that head is gone
    # and so are its engines, mid-run or not: none measures beside the resumed tasks
    wait_for(lambda: not any(started(p) == t for p, t in on_boards.items()), 30,
             "the killed head's engines to stop")  # fmt: skip

    before = {c.task.id: c for c in store.cells(job_id) if c.result is not None}
    created = _result_created(head.db, list(before))
    in_flight = [t.id for t in store.tasks(job_id, states=["deploying", "running"])]
    assert len(before) >= 2 and in_flight and len(before) < 12

    head.start_head()
    wait_for(lambda: store.job(job_id).state == "done", 120, "the resumed sweep")

    tasks = store.tasks(job_id)
    assert len(tasks) == 12 and all(t.state == "done" for t in tasks)
    after = {c.task.id: c for c in store.cells(job_id)}
    for task_id, cell in before.items():  # kept, not measured again
        assert after[task_id].result == cell.result
        assert store.task(task_id).attempts == 1
    assert _result_created(head.db, list(before)) == created
    for task_id in in_flight:
        details = [e.detail for e in store.events(task_id)]
        assert "requeued after head restart" in details, details
    assert _result_rows(head.db, job_id) == 12  # one row per task, no duplicates


def board_processes(bed: Testbed) -> dict[int, float | None]:
    """The engines and lease processes running on the test bed's boards, by pid (start time)."""
    engines = tuple(str(b.cache_dir / "engine") + "/" for b in bed.boards)
    return {
        proc.pid: started(proc.pid)
        for proc in psutil.process_iter(["cmdline"])
        if len(proc.info["cmdline"] or []) > 1 and proc.info["cmdline"][1].startswith(engines)
    }


def _result_created(db: Path, task_ids: list[str]) -> dict[str, float]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        marks = ",".join("?" * len(task_ids))
        rows = conn.execute(
            f"SELECT task_id, created FROM results WHERE task_id IN ({marks})", task_ids
        )
        return dict(rows.fetchall())


def _result_rows(db: Path, job_id: str) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM results r JOIN tasks t ON t.id = r.task_id WHERE t.job_id = ?",
            (job_id,),
        ).fetchone()
        return n


def test_head_stop_leaves_no_process_of_its_node(head: Farm) -> None:
    """Ray's agents retitle themselves (their environment marker goes with it): the
    node's process tree still names them, and `head stop` waits until all are gone."""
    record = head.record("head", str(head.port))
    assert record is not None
    pids = {p: started(p) for p in node_pids(record["marker"])}
    titles = [Path(f"/proc/{p}/cmdline").read_bytes() for p in pids]
    assert any(t.startswith(b"ray::DashboardAgent") for t in titles), titles
    assert any(t.startswith(b"ray::RuntimeEnvAgent") for t in titles), titles
    # a station this machine joined to the head goes with it (else its raylet lives on)
    head.ok("station", "start", "--address", head.address, "--name", "stray")
    station = head.record("station", "stray")
    assert station is not None and node_pids(station["marker"])
    station_pids = {p: started(p) for p in node_pids(station["marker"])}
    proc = head.ok("head", "stop", "--address", head.address)
    count = int(proc.stdout.split("(")[1].split()[0])
    assert count >= len(pids) + len(station_pids), proc.stdout
    assert "stations stopped with it: stray" in proc.stdout, proc.stdout
    both = {**pids, **station_pids}
    left = [p for p, t in both.items() if t is not None and started(p) == t]
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in left]
    assert head.record("head", str(head.port)) is None
    assert head.record("station", "stray") is None
