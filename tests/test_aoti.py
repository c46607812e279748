"""The ``aoti`` runtime: a model compiled by AOTInductor on the station (g++), loaded
by torch on the board, timed by the common loop; refused where the library cannot
load (another architecture, CPU or torch; no torch at all)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from runtime_fixtures import kws_payload

from farm import deploy, zoo
from farm.engine import artifact, bundle, runtimes
from farm.engine.request import parse_request
from farm.engine.runner import run_task
from farm.export import aoti
from farm.states import TaskState
from farm.zoo import exporter

ROOT = Path(__file__).resolve().parents[1]


def _run(artifact, **fields):
    request = {"artifact": str(artifact), "runtime": "aoti", "iterations": 30, "warmup": 2,
               "layer_iterations": 5, "threads": 1, **fields}  # fmt: skip
    return run_task(parse_request(request))


def test_kws_compiles_to_a_library_that_agrees_with_eager_and_is_timed(lowered, export_cache):
    made = lowered("kws", "aoti")
    record = made.record()
    assert record["runtime"] == "aoti" and record["export_s"] > 0
    assert record["agreement"]["top1"] == 1.0 and record["agreement"]["max_abs_diff"] < 1e-5
    manifest = bundle.read_manifest(made.path)
    assert manifest["kind"] == "pt2" and manifest["target"] == aoti.target() == made.target
    with zipfile.ZipFile(made.path) as archive:
        assert set(archive.namelist()) == {"manifest.json", "model.pt2"}
    # the board's view: the library's output on the seeded input is eager's
    session = runtimes.get("aoti").load(str(made.path), manifest)
    eager = zoo.export("kws", activation="relu", seed=0, cache_dir=export_cache)
    module = artifact.load(eager.path).module
    with torch.inference_mode():
        want = module(*(torch.from_numpy(a) for a in session.inputs)).numpy()
    np.testing.assert_allclose(session.output(), want, atol=1e-5)
    # the engine's common loop times it
    r = _run(made.path)
    assert r["status"] == "ok", r["error"]
    assert r["env"]["runtime"] == "aoti" and r["model_form"] == "aoti" and r["env"]["threads"] == 1
    assert r["latency"]["n"] == 30 and r["latency"]["median_ms"] > 0
    # no per-operator rows (the library is built without kernel profiling): the result says why
    assert r["layers"] == [] and any("enable_kernel_profile" in w for w in r["warnings"])
    assert 0 < r["memory"]["param_bytes"] <= made.size_bytes


def test_the_library_follows_torch_set_num_threads_after_loading(lowered):
    """Compiled with dynamic threads, the library's parallel loops ask OpenMP each call:
    at 1 thread no worker thread ever starts; set to 2 in the same process, one does.
    (A count fixed at compile time would start workers at 1, or never at 2.)"""
    made = lowered("kws", "aoti")
    with zipfile.ZipFile(io.BytesIO(bundle.member_bytes(made.path, "model.pt2"))) as package:
        kernels = [n for n in package.namelist() if n.endswith(".kernel.cpp")]
        code = "".join(package.read(n).decode() for n in kernels)
    assert "#pragma omp parallel" in code and "num_threads(" not in code
    child = textwrap.dedent(f"""
        import json, os
        from farm.engine import artifact, bundle, runtimes
        path = {str(made.path)!r}
        rt = runtimes.get("aoti")
        counts = [rt.set_threads(1)]
        session = rt.load(path, bundle.read_manifest(path))
        tasks = lambda: len(os.listdir("/proc/self/task"))
        session.call(); before = tasks()
        for _ in range(20): session.call()
        counts += [before, tasks(), rt.set_threads(2)]
        for _ in range(20): session.call()
        counts.append(tasks())
        print(json.dumps(counts))
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    one, before, after_one, two, after_two = json.loads(done.stdout.strip().splitlines()[-1])
    assert (one, two) == (1, 2)
    assert after_one == before  # one thread: no OpenMP worker
    assert after_two > after_one  # two: the parallel loops started one


def _retarget(made, export_cache, **changes):
    """The same library with its manifest's target changed (a board it was not made for)."""
    manifest = bundle.read_manifest(made.path)
    manifest["target"] = {**manifest["target"], **changes}
    member = bundle.member_bytes(made.path, "model.pt2")
    ref = exporter._store(export_cache, None, manifest, {"model.pt2": member}, "kws", {})
    return ref.path


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"machine": "aarch64"}, "compiled for aarch64; this board is x86_64"),
        ({"torch": "2.12.0"}, "compiled against torch 2.12.0; this board has torch"),
        ({"cpu_flags": ["fma", "amx_fp16_not_a_cpu_flag"]}, "lacks amx_fp16_not_a_cpu_flag"),
    ],
)
def test_the_board_refuses_a_library_compiled_for_another_target(
    lowered, export_cache, changes, says
):
    path = _retarget(lowered("kws", "aoti"), export_cache, **changes)
    r = _run(path, layers=False)
    assert r["status"] == "does_not_fit" and says in r["error"], r["error"]
    assert r["latency"] is None


def test_mismatch_names_what_differs():
    target = aoti.target()
    assert aoti.mismatch(target, target["machine"], target["torch"]) is None
    assert "compiled for x86_64 and the board is aarch64" in aoti.mismatch(
        {**target, "machine": "x86_64"}, "aarch64", target["torch"]
    )
    assert "the board has no torch" in aoti.mismatch(target, target["machine"], None)


# ------------------------------------------------------------------------ the station


def test_the_station_runs_an_aoti_cell_and_refuses_a_board_of_another_arch(
    station, lowered, monkeypatch
):
    lowered("kws", "aoti")  # compiled once for the session
    done = station.run_task(kws_payload({"runtime": "aoti"}))
    assert done.state is TaskState.DONE, done.error
    assert done.result.artifact.runtime == "aoti" and done.result.latency.n == 3
    station.close()
    # an aarch64 board with the same torch (hardware this machine lacks: its probe's words)
    real = deploy.probe

    def aarch64(transport, board):
        return real(transport, board).model_copy(update={"machine": "aarch64"})

    monkeypatch.setattr(deploy, "probe", aarch64)
    pushed = []
    monkeypatch.setattr(deploy, "deploy", lambda *a, **k: pushed.append(a))
    refused = station.run_task(kws_payload({"runtime": "aoti"}))
    assert refused.state is TaskState.DOES_NOT_FIT and refused.result is None
    assert refused.failure.message == (
        "f0 cannot load it: the AOTInductor library is compiled for x86_64 and the board is aarch64"
    )
    assert pushed == []  # refused before anything went to the board
