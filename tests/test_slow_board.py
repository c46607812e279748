"""An Edison-class board: sshd and all it runs get a tenth of one core.

The study's Intel Edison imports torch in minutes. A farm that gave a board's
start-up the same few seconds as one request quarantined such a board at its
first task; here a job on one completes, under its own start-up limit, with the
power monitor's clock exchanges included.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_farm_ssh import FAST, submit, wait

from farm.testing.testbed import EDISON

pytestmark = pytest.mark.timeout(1500)  # a slow board starts its engine in minutes

SYNTHETIC = {"name": "meter", "backend": "synthetic", "station": "head",
             "options": {"rate_hz": 20000, "pre_idle_s": 0.2, "post_idle_s": 0.2}}  # fmt: skip


def _inventory(path: Path, boards: list[dict], monitors: list[dict] | None = None) -> Path:
    doc = {"version": 1, "monitors": monitors or [], "boards": boards}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_the_slow_board_runs_everything_in_its_cgroup(make_testbed):
    bed = make_testbed(n=1, classes=[EDISON])
    board = bed.boards[0]
    cpu, memory = (Path(d) for d in board.cgroups)
    assert "/cpu/" in str(cpu) and "/memory/" in str(memory)
    quota = int((cpu / "cpu.cfs_quota_us").read_text())
    period = int((cpu / "cpu.cfs_period_us").read_text())
    assert quota / period == 0.1
    procs = {int(p) for p in (cpu / "cgroup.procs").read_text().split()}
    assert board.pid in procs
    assert int((memory / "memory.limit_in_bytes").read_text()) == 1024 * 1024 * 1024
    bed.down()
    assert not cpu.exists() and not memory.exists()


def test_a_job_completes_on_an_edison_class_board(
    ray_session, make_testbed, tmp_path, scheduler_cleanup
):
    bed = make_testbed(n=1, classes=[EDISON])
    spec = {**bed.board_specs()[0], "name": "edison", "power": {"monitor": "meter"}}
    inv = _inventory(tmp_path / "inv.yaml", [spec], [SYNTHETIC])
    job = {
        "name": "edison",
        "models": ["kws", "svhn"],
        "targets": [{"boards": ["edison"]}],
        "retries": 0,
        "measure": {**FAST, "iterations": 30, "timeout_s": 600},
    }
    actor, job_id, store = submit(ray_session, tmp_path, inv, job, quarantine_after=1)
    scheduler_cleanup.append(actor)
    assert wait(ray_session, actor, job_id, timeout=900).state == "done"
    cells = store.cells(job_id)
    assert {c.task.model for c in cells} == {"kws", "svhn"}
    for c in cells:
        assert c.result.latency.n == 30 and c.result.env.threads == 1
        assert c.result.energy.energy_per_inference_mj.net.mean > 0
    health = store.board_health().get("edison")
    assert health is None or health.state == "healthy"


def test_a_start_up_over_the_jobs_limit_fails_saying_so(
    ray_session, make_testbed, tmp_path, scheduler_cleanup
):
    bed = make_testbed(n=1, classes=[EDISON])
    inv = _inventory(tmp_path / "inv.yaml", bed.board_specs())
    job = {
        "name": "impatient",
        "models": ["kws"],
        "targets": [{"boards": ["board0"]}],
        "retries": 0,
        "measure": {**FAST, "startup_timeout_s": 2},  # the job's limit beats the board's
    }
    actor, job_id, store = submit(ray_session, tmp_path, inv, job)
    scheduler_cleanup.append(actor)
    assert wait(ray_session, actor, job_id).state == "failed"
    error = store.tasks(job_id)[0].error
    assert "engine did not start within 2 s (startup_timeout_s)" in error
