"""Ctrl-C and a killed ``farm submit``: the store always ends up saying what happened.

An embedded ``farm submit`` is its job's head. Interrupted (SIGINT, as Ctrl-C
sends it), it cancels its job, stops the engines and exits 130. Killed outright,
it can say nothing: the next farm's scheduler, starting, finds the dead owner,
marks the job interrupted, and ``farm resume`` runs what is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
import yaml

from farm.owner import Owner
from farm.scheduler.core import Scheduler
from farm.states import JobState, TaskState
from farm.store import Store, open_writer
from farm.testing.waiting import wait_for

pytestmark = pytest.mark.timeout(900)


def _job(tmp_path: Path, iterations: int) -> Path:
    doc = {
        "version": 1,
        "name": "long",
        # two tasks of one small model: the first is caught running, the second waits;
        # a larger second model would only make the resumed run longer
        "models": [{"zoo": "kws", "name": "first"}, {"zoo": "kws", "name": "second"}],
        "targets": [{"boards": ["board0"]}],
        "variants": {"threads": [1]},
        "measure": {"iterations": iterations, "warmup": 1, "layers": False, "memory": False},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _farm(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["FARM_CACHE"] = str(tmp_path / "cache")
    return subprocess.Popen(
        [sys.executable, "-m", "farm.cli", *args, "--db", str(tmp_path / "farm.db"), "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_running(tmp_path: Path, proc: subprocess.Popen, timeout: float = 300) -> str:
    def running() -> str | None:
        assert proc.poll() is None, proc.communicate()
        if (tmp_path / "farm.db").exists():
            store = Store(tmp_path / "farm.db", readonly=True)
            job = store.job("latest")
            if job is not None and store.counts(job.id).get(TaskState.RUNNING):
                return job.id
        return None

    return wait_for(running, timeout, "a task running", interval=0.2)


def _engines(cache_dir: str) -> list[int]:
    pattern = f"^{sys.executable} {cache_dir}/engine/[0-9a-f]+[.]zip serve"
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_ctrl_c_cancels_an_embedded_job_and_stops_its_engine(make_testbed, tmp_path):
    bed = make_testbed(n=1)
    farm = _farm(tmp_path, "submit", str(_job(tmp_path, 500_000)), "-i", str(bed.inventory_path))
    job_id = _wait_running(tmp_path, farm)
    cache = bed.board_specs()[0]["cache_dir"]
    wait_for(lambda: _engines(cache), 60, "the engine's process")  # what Ctrl-C must stop
    farm.send_signal(signal.SIGINT)
    _, stderr = farm.communicate(timeout=300)
    assert farm.returncode == 130, stderr
    assert "cancelling" in stderr and "Traceback" not in stderr
    store = Store(tmp_path / "farm.db", readonly=True)
    assert store.job(job_id).state is JobState.CANCELLED
    assert set(store.counts(job_id)) == {TaskState.CANCELLED}
    # the engine was stopped, not left measuring
    wait_for(lambda: not _engines(cache), 30, "the engine to stop")
    assert not Path(f"{tmp_path / 'farm.db'}-wal").exists() or not os.path.getsize(
        f"{tmp_path / 'farm.db'}-wal"
    )  # and the store was closed cleanly


def test_a_killed_farms_job_is_marked_interrupted_and_resumes(make_testbed, tmp_path):
    bed = make_testbed(n=1)
    farm = _farm(tmp_path, "submit", str(_job(tmp_path, 30_000)), "-i", str(bed.inventory_path))
    job_id = _wait_running(tmp_path, farm)
    farm.kill()  # SIGKILL: no word to anyone; its Ray dies with it
    farm.communicate(timeout=60)
    before = Store(tmp_path / "farm.db", readonly=True)
    assert before.job(job_id).state is JobState.RUNNING  # as it was left
    assert before.job(job_id).owner["pid"] == farm.pid
    # the killed farm's Ray processes go with it...
    owner = Owner.from_dict(before.job(job_id).owner)
    wait_for(lambda: owner.alive() is False, 60, "the killed farm to be gone", 0.5)
    # ...and the next farm's scheduler, starting, marks its job interrupted
    writer = open_writer(tmp_path / "farm.db")
    Scheduler(writer, lambda station, payload: Future(), resume=False).stop()
    writer.close()
    assert Store(tmp_path / "farm.db", readonly=True).job(job_id).state is JobState.INTERRUPTED
    counts = Store(tmp_path / "farm.db", readonly=True).counts(job_id)
    assert TaskState.RUNNING not in counts and TaskState.DEPLOYING not in counts
    resumed = _farm(tmp_path, "resume", job_id)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resuming" in err
    after = Store(tmp_path / "farm.db", readonly=True)
    assert after.job(job_id).state is JobState.DONE
    assert set(after.counts(job_id)) == {TaskState.DONE}


def _tiny(tmp_path: Path) -> subprocess.Popen:
    """``farm submit`` of one short task on this machine, from a folder of its own (the
    built-in local inventory), its output piped."""
    doc = {"version": 1, "name": "tiny", "models": ["kws"], "targets": [{"boards": ["local"]}],
           "measure": {"iterations": 5, "warmup": 1, "layers": False, "memory": False}}  # fmt: skip
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(doc))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(FARM_CACHE=str(tmp_path / "cache"), COLUMNS="200")
    return subprocess.Popen(
        [sys.executable, "-m", "farm.cli", "submit", "tiny.yaml", "--db", "farm.db", "--quiet"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _quiet_end(stderr: str) -> None:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def test_ctrl_c_while_ray_starts_says_nothing_was_submitted(tmp_path):
    import psutil

    farm = _tiny(tmp_path)
    me = psutil.Process(farm.pid)
    kids = wait_for(me.children, 300, "Ray's first process (gcs_server)", interval=0.05)
    farm.send_signal(signal.SIGINT)
    _, stderr = farm.communicate(timeout=300)
    assert farm.returncode == 130, stderr
    _quiet_end(stderr)
    lines = stderr.strip().splitlines()
    assert lines == ["interrupted while starting Ray in this process: no job was submitted,"
                     " nothing ran"], stderr  # fmt: skip
    wait_for(lambda: not [k for k in kids if k.is_running() and k.status() != "zombie"], 60,
             "Ray's processes to go")  # fmt: skip


@pytest.mark.parametrize("after_s", [0.0, 1.0, 2.5])
def test_ctrl_c_after_the_table_is_one_line(tmp_path, after_s):
    """Whether it lands while the head closes, while Ray shuts down or in the interpreter's
    teardown: one line (or none, once the exit is decided), never a traceback."""
    farm = _tiny(tmp_path)
    assert farm.stdout is not None
    for line in farm.stdout:
        if line.startswith("└"):  # the results table's last line
            break
    time.sleep(after_s)
    farm.send_signal(signal.SIGINT)
    _, stderr = farm.communicate(timeout=300)
    _quiet_end(stderr)
    assert farm.returncode in (0, 130), (farm.returncode, stderr)
    lines = stderr.strip().splitlines()
    assert lines[0].startswith("job tiny-") and len(lines) <= 2, stderr
    if farm.returncode == 130:
        assert len(lines) == 2 and lines[1].startswith("interrupted while"), stderr
