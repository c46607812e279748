"""The ExecuTorch C++ runner (farm/engine/native): built from the executorch wheel with
g++, it runs kws's float and int8 .pte and agrees with eager; its timings are
CLOCK_MONOTONIC readings in the engine's shape."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from farm import zoo
from farm.engine import native


def _export_pte(model: torch.nn.Module, example: torch.Tensor, int8: bool) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    if int8:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=True)
        )
        prepared = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
        gen = torch.Generator().manual_seed(1)
        for _ in range(8):
            prepared(torch.randn(example.shape, generator=gen))
        model = convert_pt2e(prepared)
    program = torch.export.export(model, (example,))
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    return lowered.to_executorch().buffer


@pytest.fixture(scope="module")
def kws(tmp_path_factory):
    """kws (seeded), one input, eager's output, and its fp32 and int8 .pte files."""
    root = tmp_path_factory.mktemp("native")
    torch.manual_seed(0)
    info = zoo.get("kws")
    model = info.build().eval()
    x = torch.randn(info.input_shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(x).numpy()
    (root / "in.bin").write_bytes(x.numpy().astype(np.float32).tobytes())
    for precision in ("fp32", "int8"):
        (root / f"kws-{precision}.pte").write_bytes(_export_pte(model, x, precision == "int8"))
    return root, want


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    path, built = native.build(tmp_path_factory.mktemp("runners"))
    assert built and native.available(path.parent) is None
    return path


def _run(runner: Path, pte: Path, *args: str) -> dict:
    done = subprocess.run([str(runner), "--model", str(pte), *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_runner_builds_once_per_source_and_wheel(runner):
    meta = json.loads(Path(f"{runner}.json").read_text())
    wheel = native.wheel()
    assert not isinstance(wheel, str)
    assert meta["executorch"] == wheel.version and runner.name == f"runner-{native.key(wheel)}"
    again, built = native.build(runner.parent)
    assert again == runner and not built  # cached: nothing compiled the second time
    # the runner never links torch's C++ API itself: only the wheel's library does
    undefined = subprocess.run(["nm", "-DC", "--undefined-only", str(runner)],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "executorch::runtime::Program::load" in undefined
    assert "at::" not in undefined and "c10::" not in undefined


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-5), ("int8", 0.05)])
def test_the_runner_runs_kws_and_agrees_with_eager(kws, runner, precision, tolerance):
    root, want = kws
    out = root / f"out-{precision}.bin"
    before = time.monotonic_ns()
    answer = _run(runner, root / f"kws-{precision}.pte", "--threads", "1", "--warmup", "2",
                  "--runs", "7", "--input", str(root / "in.bin"), "--output", str(out))  # fmt: skip
    after = time.monotonic_ns()
    got = np.frombuffer(out.read_bytes(), dtype=np.float32).reshape(want.shape)
    assert np.abs(got - want).max() <= tolerance
    assert got.argmax() == want.argmax()
    begin, end = answer["begin_ns"], answer["end_ns"]
    assert len(begin) == len(end) == 7
    # the runner's clock is this process's time.monotonic_ns: its readings fall between ours
    assert before < begin[0] and end[-1] < after
    assert all(b < e for b, e in zip(begin, end, strict=True))
    assert all(e <= b for e, b in zip(end, begin[1:], strict=False))
    assert answer["hwm_kb"] >= answer["rss_kb"] > 0 and answer["threads"] == 1


def test_the_runner_serves_requests_in_one_warm_process(kws, runner):
    root, _ = kws
    proc = subprocess.Popen(
        [str(runner), "--model", str(root / "kws-fp32.pte"), "--serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    answers, _ = proc.communicate("3\nbare 4\n5\n", timeout=120)
    first, bare, second = (json.loads(line) for line in answers.splitlines())
    assert len(first["begin_ns"]) == 3 and len(second["begin_ns"]) == 5
    assert bare["n"] == 4 and bare["bare_ns"] > 0  # four inferences, one reading each side
    assert first["end_ns"][-1] <= second["begin_ns"][0]
    assert first["load_ns"] == second["load_ns"]  # loaded once
    assert proc.returncode == 0


def test_runner_errors_are_one_line(tmp_path, runner):
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"not a program")
    done = subprocess.run([str(runner), "--model", str(bad)], capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == f"runner: cannot parse {bad} as an ExecuTorch program"
    done = subprocess.run([str(runner), "--modle", "x"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown argument --modle" in done.stderr


def test_without_the_wheel_or_a_build_it_says_why(tmp_path, monkeypatch):
    assert "not built" in native.available(tmp_path)
    monkeypatch.setattr(native, "version", _missing)
    assert native.wheel() == f"executorch is not installed in {native.sys.executable}"
    with pytest.raises(native.NativeError, match="executorch is not installed"):
        native.build(tmp_path)


def _missing(name: str) -> str:
    raise native.PackageNotFoundError(name)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_task_through_the_engine_with_the_cpp_runner(lowered, runner, monkeypatch, precision):
    """runtime ``executorch-native``: the .pte the executorch runtime takes, timed by the
    runner in its own process; markers, statistics and memory are the engine's as ever."""
    from farm.engine import bundle
    from farm.engine.request import parse_request
    from farm.engine.runner import run_task

    monkeypatch.setenv("FARM_NATIVE_DIR", str(runner.parent))
    made = lowered("kws", "executorch", precision)
    request = {"artifact": str(made.path), "runtime": "executorch-native", "precision": precision,
               "iterations": 30, "warmup": 3, "threads": 1, "layers": True, "memory": True}  # fmt: skip
    before = time.monotonic_ns()
    r = run_task(parse_request(request))
    after = time.monotonic_ns()
    assert r["status"] == "ok", r["error"]
    assert r["env"]["runtime"] == "executorch-native" and r["env"]["runtime_impl"] == "native"
    assert r["model_form"] == "executorch/xnnpack (C++ runner)"
    assert r["latency"]["n"] == 30 and r["latency"]["median_ms"] > 0
    kinds = r["markers"]["kinds"]
    begins = [t for t, k in zip(r["markers"]["t_ns"], r["markers"]["kind"], strict=True)
              if kinds[k] == "inference_begin"]  # fmt: skip
    assert len(begins) == 30 and before < min(begins) and max(begins) < after
    assert r["memory"]["runner_peak_rss_mb"] > 0
    assert any("has no profiler" in w or "ETDump" in w for w in r["warnings"])
    # the runner's output is ExecuTorch's own: the Python bindings agree on the same program
    manifest = bundle.read_manifest(str(made.path))
    session = native.load(str(made.path), manifest, 1)
    try:
        got = session.output()
    finally:
        session.close()
    from farm.engine.runtimes.et import ExecuTorch

    want = ExecuTorch().load(str(made.path), manifest).output().reshape(-1)
    assert np.abs(got - want).max() <= 1e-6 and got.argmax() == want.argmax()
