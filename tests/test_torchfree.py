"""A torch-free board: its Python has onnxruntime and numpy and no torch (the test bed's
venv, ``farm.testing.torchfree``), reached over real sshd. The probe, ``inventory
check`` and ``farm board bootstrap`` say what it can run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from testbed_fixtures import board_spec

from farm import bootstrap, deploy
from farm.testing import torchfree
from farm.testing.testbed import BoardClass, torch_free
from farm.transport import connect


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    """board0 with this interpreter (torch), board1 torch-free."""
    from farm.testing.testbed import Testbed

    built = Testbed(tmp_path_factory.mktemp("torchfree"), classes=[BoardClass(), torch_free()])
    try:
        yield built.up()
    finally:
        built.down()


def test_the_venv_has_onnxruntime_and_numpy_and_no_torch():
    python = torchfree.python()
    assert not (python.parent.parent / "pyvenv.cfg").read_text().count("include-system-site-packages = true")
    code = (
        "import importlib.util as u, onnxruntime, numpy;"
        "print(u.find_spec('torch'), onnxruntime.__version__, numpy.__version__)"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["None", *[p.split("==")[1] for p in torchfree.pins()]]


def test_the_probe_says_which_runtimes_each_board_runs(bed):
    with_torch, free = board_spec(bed, "board0"), board_spec(bed, "board1")
    assert free.python == str(torchfree.python()) and "torch-free" in free.tags
    with connect(with_torch) as t:
        rich = deploy.probe(t, with_torch)
    with connect(free) as t:
        bare = deploy.probe(t, free)
    assert {"eager", "onnxruntime", "executorch"} <= set(rich.runtimes)
    assert bare.torch is None and bare.runtimes == ["onnxruntime"]
    assert bare.unavailable["eager"] == f"torch is not installed in {free.python}"
    assert bare.unavailable["aoti"] == f"torch is not installed in {free.python}"
    assert "aoti" in rich.runtimes
    assert "executorch is not installed" in bare.unavailable["executorch"]
    assert "executorch is not installed" in bare.unavailable["executorch-native"]


def test_inventory_check_has_a_runtimes_column(bed, tmp_path):
    env = {**os.environ, "FARM_CACHE": str(tmp_path / "cache"), "COLUMNS": "250"}
    argv = [sys.executable, "-m", "farm.cli", "inventory", "check", "-i", str(bed.inventory_path)]
    table = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180)
    assert table.returncode == 0, table.stderr
    assert "runtimes" in table.stdout
    lines = {ln.split("│")[1].strip(): ln for ln in table.stdout.splitlines() if "│" in ln}
    cells = [c.strip() for c in lines["board1"].split("│")]
    assert "onnxruntime" in cells and "eager" not in lines["board1"]
    assert "eager, onnxruntime, executorch" in lines["board0"]
    rows = json.loads(subprocess.run([*argv, "--format", "json"], capture_output=True,
                                     text=True, env=env, timeout=180, check=True).stdout)  # fmt: skip
    by_name = {r["board"]: r for r in rows}
    assert by_name["board1"]["runtimes"] == ["onnxruntime"]
    assert by_name["board1"]["torch"] is None
    assert "torch is not installed" in by_name["board1"]["unavailable"]["eager"]
    assert "eager" in by_name["board0"]["runtimes"]


def test_bootstrap_takes_a_torch_free_board_and_builds_the_runner_where_it_can(bed, tmp_path):
    engine = deploy.build_engine_zip(tmp_path / "engine")
    reports = {
        name: bootstrap.bootstrap(board_spec(bed, name), engine=engine, facts_dir=tmp_path / "f")
        for name in ("board0", "board1")
    }
    free = {s.name: s for s in reports["board1"].steps}
    assert reports["board1"].ok, reports["board1"]
    assert free["torch"].status == "skipped" and "torch-free board" in free["torch"].detail
    assert free["native"].status == "skipped"
    assert free["native"].detail.startswith("executorch is not installed")
    facts = json.loads((tmp_path / "f" / "board1.json").read_text())
    assert facts["runtimes"] == ["onnxruntime"] and facts["torch"] is None
    rich = {s.name: s for s in reports["board0"].steps}
    assert reports["board0"].ok and rich["native"].status == "changed"  # compiled there
    runner = rich["native"].detail
    assert runner.startswith(f"{bed.board('board0').cache_dir}/native/runner-")
    assert os.access(runner, os.X_OK)
    facts = json.loads((tmp_path / "f" / "board0.json").read_text())
    assert "executorch-native" in facts["runtimes"]
    again = bootstrap.bootstrap(board_spec(bed, "board0"), engine=engine, facts_dir=tmp_path / "f")
    assert {s.name: s.status for s in again.steps}["native"] == "ok"  # built once


FAST = {"iterations": 20, "warmup": 1, "layers": False, "memory": False, "timeout_s": 120}


def _submit(ray, tmp_path, bed, job: dict):
    from test_farm_ssh import submit, wait

    actor, job_id, store = submit(ray, tmp_path, bed.inventory_path, job)
    try:
        progress = wait(ray, actor, job_id, timeout=600)
    finally:
        ray.kill(actor)
    return progress, store.cells(job_id), store


def test_a_job_on_a_torch_free_board_runs_onnxruntime_and_refuses_eager(
    ray_session, bed, tmp_path
):
    """Through Ray and sshd: onnxruntime fp32 and int8 measured in the venv without torch,
    for kws and a convolutional model (svhn); the eager and aoti cells are does-not-fit
    with the board's reason, never a traceback."""
    job = {"name": "torch-free", "models": ["kws", "svhn"], "targets": [{"tags": ["torch-free"]}],
           "variants": {"runtime": ["eager", "onnxruntime", "aoti"],
                        "precision": ["fp32", "int8"]},
           "measure": FAST}  # fmt: skip
    progress, cells, store = _submit(ray_session, tmp_path, bed, job)
    states = [(c.task.model, c.task.variant, c.task.state, c.task.error) for c in cells]
    assert progress.state == "done" and len(cells) == 12, states
    by = {(c.task.model, c.task.variant["runtime"], c.task.variant["precision"]): c
          for c in cells}  # fmt: skip
    python = str(torchfree.python())
    for model in ("kws", "svhn"):
        for precision in ("fp32", "int8"):
            ort = by[(model, "onnxruntime", precision)]
            assert ort.task.state == "done", (ort.task.error, ort.result and ort.result.error)
            assert ort.task.board == "board1" and ort.result.latency.n == FAST["iterations"]
            env = ort.result.env
            assert env.model_extra["runtime_impl"] == "python"
            assert env.model["precision"] == precision
            assert env.model_extra["precision"] == precision and env.model["name"] == model
            assert ort.result.artifact.agreement.n > 0
            for runtime in ("eager", "aoti"):
                refused = by[(model, runtime, precision)]
                assert refused.task.state == "does-not-fit"
                assert refused.result.error == (
                    f"board1 cannot run {runtime}: torch is not installed in {python}"
                )
                assert refused.task.error == refused.result.error  # the tables' reason
                logs = " ".join(entry.line for entry in store.logs(refused.task.id))
                assert f"does not fit: board1 cannot run {runtime}" in logs
                assert "Traceback" not in logs
                assert "deployed" not in logs  # refused before an artifact went there
