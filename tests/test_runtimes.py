"""The engine's runtime seam: eager, ONNX Runtime and ExecuTorch behind one timing loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from farm.engine import runtimes, timing
from farm.engine.request import RequestError, parse_request
from farm.engine.runner import ModelCache, run_task

ROOT = Path(__file__).resolve().parents[1]


def _run(artifact, runtime, cache=None, **fields):
    request = {"artifact": str(artifact), "runtime": runtime, "iterations": 30, "warmup": 2,
               "layer_iterations": 5, "threads": 1, **fields}  # fmt: skip
    return run_task(parse_request(request), cache)


def _count(r, kind):
    code = r["markers"]["kinds"].index(kind)
    return r["markers"]["kind"].count(code)


def test_runtimes_register_by_name_and_refuse_a_second_of_the_same_name():
    assert {"eager", "onnxruntime", "executorch", "aoti"} <= set(runtimes.names())
    with pytest.raises(ValueError, match="already registered"):
        runtimes.register("onnxruntime")(type("Again", (runtimes.Runtime,), {}))
    with pytest.raises(RequestError, match="is not one of aoti, eager"):
        parse_request({"artifact": "x.farm", "runtime": "tflite"})
    with pytest.raises(RequestError, match="precision"):
        parse_request({"artifact": "x.farm", "precision": "int4"})


def test_an_onnx_task_is_timed_by_the_common_loop_and_profiled_by_ort(lowered):
    made = lowered("kws", "onnxruntime")
    r = _run(made.path, "onnxruntime")
    assert r["status"] == "ok", r["error"]
    assert r["env"]["runtime"] == "onnxruntime" and r["env"]["precision"] == "fp32"
    assert r["model_form"] == "onnxruntime" and r["latency"]["n"] == 30
    assert _count(r, "inference_begin") == 30 and _count(r, "cold_begin") == 1
    # ORT fuses kws's Gemm+Relu: the row names both layers; the last Gemm stays fc4
    names = [row["name"] for row in r["layers"]]
    assert "fc1+act1 (fused)" in names and "fc4" in names and "softmax" in names
    assert r["layer_pass"]["source"] == "onnxruntime enable_profiling"
    assert r["layer_pass"]["layer_whole_ms"] > 0 and r["layer_pass"]["layer_sum_ms"] > 0
    # ORT's time outside its kernels (its profiler's included) is the last row, as eager's
    # forward's entry and exit are; the rows add up to the profiled runs, and are set
    # against unprofiled runs interleaved with them
    lp, last = r["layer_pass"], r["layers"][-1]
    assert last["name"] == "(graph)" and last["type"] == "Graph" and lp["graph_ms"] >= 0
    assert lp["layer_sum_ms"] == pytest.approx(sum(row["time_ms"] for row in r["layers"]))
    assert lp["layer_sum_ms"] == pytest.approx(lp["layer_whole_ms"])
    assert lp["whole_unhooked_ms"] > 0
    added = 100 * (lp["layer_whole_ms"] / lp["whole_unhooked_ms"] - 1)
    assert lp["overhead_pct"] == pytest.approx(added)
    assert lp["layer_sum_vs_whole"] == pytest.approx(lp["layer_sum_ms"] / lp["whole_unhooked_ms"])
    # the sum check is the eager one: a flag, and a warning beside it when outside 5%
    flagged = lp["layer_sum_outside_5pct"]
    assert flagged == any("outside 5%" in w for w in r["warnings"])
    assert 0 < r["memory"]["param_bytes"] <= made.size_bytes


def _trace(runs: list[tuple[int, list[tuple[str, int]]]], gap: int = 5) -> list[dict]:
    """An ORT profile as ``enable_profiling`` writes it: per run a ``model_run`` session
    event (ts, dur in µs) and a ``<node>_kernel_time`` event per node inside it, ``gap``
    µs apart (ORT's executor between kernels)."""
    events, ts = [], 1000
    for dur, nodes in runs:
        events.append({"cat": "Session", "name": "model_run", "ts": ts, "dur": dur})
        at = ts + 1
        for name, us in nodes:
            events.append({"cat": "Node", "name": f"{name}_kernel_time", "ts": at, "dur": us,
                           "args": {"op_name": "Gemm"}})  # fmt: skip
            at += us + gap
        ts += dur + 50
    return events


def test_ort_rows_are_the_kernels_and_a_graph_row_with_the_rest_of_the_profiled_run():
    """Kernels a 30 µs and b 20 µs; profiled runs 100 µs, unprofiled 80 µs (the faster
    half of 4 on each side). Rows as measured, the (graph) row the rest (100 - 50):
    they add up to the profiled run, and the unprofiled one says what the profiler added."""
    from farm.engine.runtimes import ort

    fast, slow = [("a", 30), ("b", 20)], [("a", 60), ("b", 40)]
    events = _trace([(300, slow), (90, fast), (300, slow), (90, fast)])
    profiled = [300_000, 100_000, 300_000, 100_000]
    plain = [80_000, 80_000, 500_000, 900_000]
    profile = ort._rows(events, [], profiled, plain)
    rows = {row.name: row.time_ms for row in profile.rows}
    assert rows == pytest.approx({"a": 0.030, "b": 0.020, "(graph)": 0.050})
    assert sum(rows.values()) == pytest.approx(profile.whole_ms) == pytest.approx(0.1)
    assert profile.unprofiled_ms == pytest.approx(0.080) and profile.iterations == 4
    # the warm-up runs before the last len(profiled) are dropped
    warm = _trace([(500, slow), (300, slow), (90, fast), (300, slow), (90, fast)])
    assert {r.name: r.time_ms for r in ort._rows(warm, [], profiled, plain).rows} == rows


def test_an_int8_onnx_task_runs_and_names_its_quantize_nodes_by_layer(lowered):
    made = lowered("kws", "onnxruntime", "int8")
    r = _run(made.path, "onnxruntime", precision="int8")
    assert r["status"] == "ok", r["error"]
    names = [row["name"] for row in r["layers"]]
    types = {row["type"] for row in r["layers"]}
    assert "QGemm" in types or "MatMulInteger" in types, types
    assert "fc1" in names
    assert any(name.endswith("(QuantizeLinear)") and not name.startswith("(") for name in names)


def test_a_warm_cache_keeps_the_session_and_rebuilds_it_for_another_thread_count(lowered):
    made = lowered("kws", "onnxruntime")
    cache = ModelCache(capacity=2)
    first = _run(made.path, "onnxruntime", cache, layers=False)
    again = _run(made.path, "onnxruntime", cache, layers=False, threads=2)
    assert first["status"] == again["status"] == "ok"
    assert not first["env"]["model_cached"] and again["env"]["model_cached"]
    assert first["env"]["threads"] == 1 and again["env"]["threads"] == 2
    (session,) = [s for s in cache._models.values()]
    assert session._session.get_session_options().intra_op_num_threads == 2


def test_an_artifact_of_another_kind_is_refused_as_not_fitting(lowered):
    made = lowered("kws", "onnxruntime")
    r = _run(made.path, "executorch", layers=False)
    assert r["status"] == "does_not_fit"
    assert "executorch loads pte artifacts, not 'onnx'" in r["error"]


def test_an_executorch_task_and_its_fixed_thread_pool(lowered):
    """ExecuTorch's pool is sized once per process: the first task fixes it, a later
    task asking another count is refused with the reason, never a crash."""
    made = lowered("kws", "executorch", "int8")
    et = runtimes.get("executorch")
    threads = et.fixed or 1
    r = _run(made.path, "executorch", threads=threads, precision="int8")
    assert r["status"] == "ok", r["error"]
    assert r["env"]["runtime_impl"] == "pybindings" and r["env"]["threads"] == threads
    assert r["model_form"] == "executorch/xnnpack" and r["latency"]["n"] == 30
    # the pip wheel has no ETDump: no rows, and the warning says why
    assert r["layers"] == [] and any("EXECUTORCH_ENABLE_EVENT_TRACER" in w for w in r["warnings"])
    other = _run(made.path, "executorch", threads=threads + 1, layers=False)
    assert other["status"] == "does_not_fit" and "thread pool is fixed" in other["error"]


class _Native(runtimes.Session):
    """Shaped like a native runner: it times ``n`` inferences in its own loop and hands
    back CLOCK_MONOTONIC readings (here: sleeps of 1 ms)."""

    form = "native-test"
    impl = "native"

    def __init__(self):
        self.inputs, self.param_bytes, self.calls = [], 1000, []

    def timed_run(self, n):
        self.calls.append(n)
        begin, end = [], []
        for _ in range(n):
            begin.append(time.monotonic_ns())
            time.sleep(0.001)
            end.append(time.monotonic_ns())
        return timing.Timed.from_ns(begin, end)


class _NativeRuntime(runtimes.Runtime):
    kinds = ("onnx",)

    def set_threads(self, threads):
        return threads

    def load(self, path, manifest):
        return _Native()


@pytest.mark.timing
def test_a_runtime_that_times_in_its_own_process_hands_back_readings(lowered):
    """The contract of i18b's C++ runner: ``timed_run(n)`` instead of ``call``; warm-up,
    markers and statistics stay the engine's."""
    if "native-test" not in runtimes.names():
        runtimes.register("native-test")(_NativeRuntime)
    made = lowered("kws", "onnxruntime")
    cache = ModelCache(capacity=1)
    r = _run(made.path, "native-test", cache, iterations=20, warmup=3)
    assert r["status"] == "ok", r["error"]
    (session,) = cache._models.values()
    assert session.calls == [1, 3, 20]  # cold, warm-up, timed
    assert 0.9 < r["latency"]["median_ms"] < 50
    assert _count(r, "inference_end") == 20
    assert any("no profiler" in w for w in r["warnings"])


_BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked on this board")
sys.meta_path.insert(0, _NoTorch())
"""


def test_the_engine_runs_onnxruntime_where_torch_cannot_be_imported(lowered, tmp_path):
    """A board whose Python has onnxruntime and no torch: the engine imports, runs an
    ONNX task end to end (through ``python -m farm.engine run``), never imports torch."""
    made = lowered("svhn", "onnxruntime")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BLOCK_TORCH)
    request = {"artifact": str(made.path), "runtime": "onnxruntime", "iterations": 20,
               "warmup": 2, "layer_iterations": 3, "threads": 1, "sync_pulse": True}  # fmt: skip
    check = "import farm.engine.runner, farm.engine.serve, sys; assert 'torch' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    blocked = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True)
    assert blocked.returncode != 0 and b"blocked" in blocked.stderr
    subprocess.run([sys.executable, "-c", check], env=env, check=True)
    done = subprocess.run(
        [sys.executable, "-m", "farm.engine", "run"], input=json.dumps(request), env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["status"] == "ok", r["error"]
    assert r["env"]["torch"] is None or isinstance(r["env"]["torch"], str)
    assert r["env"]["mkldnn"] is None  # torch was never imported to ask
    assert len(r["env"]["sync_pulse"]["pattern"]) == 16
    assert [row["name"] for row in r["layers"]][:1] == ["conv1+act1 (fused)"]


def test_an_eager_task_records_its_runtime_and_keeps_its_own_instruments(lowered):
    made = lowered("kws", "eager")
    r = _run(made.path, "eager")
    assert r["status"] == "ok", r["error"]
    assert r["env"]["runtime"] == "eager" and r["model_form"] == "eager"
    assert r["layer_pass"]["source"] == "eager" and r["memory"]["peak_activation_bytes"] > 0


def test_the_seam_lists_what_each_runtime_loads():
    assert runtimes.get("eager").kinds == ("graph", "module", "program")
    assert runtimes.get("onnxruntime").kinds == ("onnx",)
    assert runtimes.get("executorch").kinds == ("pte",)
    script = textwrap.dedent(_BLOCK_TORCH) + "import farm.engine.runtimes as r; print(r.names())"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)  # fmt: skip
    assert "onnxruntime" in out.stdout
