"""Export on the station: artifacts for ONNX Runtime and ExecuTorch, fp32 and int8,
made once, with their agreement against eager; jobs' runtime and precision axes."""

from __future__ import annotations

import pytest
import torch
from runtime_fixtures import kws_payload
from torch import nn

from farm import export, spec
from farm.engine import bundle, runtimes
from farm.errors import CannotLower, SpecError
from farm.export import agree, cache, lower
from farm.states import TaskState


def test_the_channel_lrn_computes_eager_lrn_and_eager_keeps_its_own():
    """ExecuTorch cannot run LRN's 4-D path (5-D pad + avg_pool3d), and XNNPACK leaves its
    3-D path's pooling and fractional power to slow portable kernels; the export writes
    it as channel slices. Same numbers; the eager model is left as it was."""
    lrn = nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
    x = torch.randn(2, 96, 27, 27, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lower.ChannelLRN(lrn)(x), lrn(x), rtol=0, atol=1e-10)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), lrn).eval()
    ready = lower.export_ready(model)
    assert type(model[2]) is nn.LocalResponseNorm and type(ready[2]) is lower.ChannelLRN
    y = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ready(y), model(y), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [1, 2, 4, 5, 7])
@pytest.mark.parametrize("shape", [(2, 3, 10), (1, 6, 5, 4), (1, 8, 3, 2, 2)])
def test_the_channel_lrn_matches_eager_at_every_window_and_rank(size, shape):
    """Even windows pad one channel fewer after than before; fewer channels than the
    window; 3-, 4- and 5-D input (eager's three code paths)."""
    lrn = nn.LocalResponseNorm(size=size, alpha=0.3, beta=0.6, k=1.5)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
    assert torch.allclose(lower.ChannelLRN(lrn)(x), lrn(x), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="3D or higher"):  # eager's refusal, word for word
        lower.ChannelLRN(lrn)(torch.ones(2, 3))


class _ConvLRN(nn.Module):
    """AlexNet's first block in small: conv, relu, LRN, max pool, a classifier."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 5, stride=2)
        self.act = nn.ReLU()
        self.norm = nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
        self.pool = nn.MaxPool2d(3, 2)
        self.fc = nn.Linear(16 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.norm(self.act(self.conv(x)))), 1))


def test_an_lrn_model_lowers_to_executorch_only_rewritten_in_fp32_and_int8():
    torch.manual_seed(0)
    model = _ConvLRN().eval()
    example = (torch.randn(1, 3, 32, 32),)
    items = agree.inputs(example, n=8)
    reference = agree.eager_outputs(model, items)
    # as written, the program ExecuTorch gets cannot run: avg_pool3d has no kernel
    with pytest.raises(RuntimeError):
        agree.pte_outputs(lower.to_pte(model, example), items)
    ready = lower.export_ready(model)
    fp32 = agree.compare(reference, agree.pte_outputs(lower.to_pte(ready, example), items))
    assert fp32.max_abs_diff < 1e-5 and fp32.top1 == 1.0
    program = lower.to_pte(ready, example, lower.calibration_set(example))
    int8 = agree.compare(reference, agree.pte_outputs(program, items))
    assert int8.max_abs_diff < 0.5 and int8.n == 8


def test_the_rewritten_lrn_leaves_nothing_outside_the_xnnpack_delegate():
    """What slowed ExecuTorch's AlexNet below eager: LRN's ops left to portable kernels.
    As written, the pooling and the power stay outside XNNPACK; rewritten, every op of
    the model is delegated, in fp32 and int8."""
    torch.manual_seed(0)
    model = _ConvLRN().eval()
    example = (torch.randn(1, 3, 32, 32),)
    outside = lower.outside_delegate(lower.to_xnnpack(model, example))
    assert "aten.pow.Tensor_Scalar" in outside and "aten.avg_pool3d.default" in outside
    ready = lower.export_ready(model)
    assert lower.outside_delegate(lower.to_xnnpack(ready, example)) == {}
    int8 = lower.to_xnnpack(ready, example, lower.calibration_set(example, n=4))
    assert lower.outside_delegate(int8) == {}


def test_int8_leaves_the_lrn_float():
    """Squares of activations quantized to int8 would lose the small ones: the quantizer
    skips the normalisation (its input is dequantized, its squares stay float)."""
    torch.manual_seed(0)
    model = lower.export_ready(_ConvLRN().eval())
    example = (torch.randn(1, 3, 32, 32),)
    converted = lower._pt2e_int8(model, example, lower.calibration_set(example, n=4))
    nodes = list(converted.graph.nodes)
    quantizes = [n for n in nodes if "quantize_per_tensor" in str(n.target)
                 and "dequantize" not in str(n.target)]  # fmt: skip
    assert quantizes  # the convolution and the linear layer are int8
    squares = [n for n in nodes if n.target == torch.ops.aten.mul.Tensor
               and n.args[0] is n.args[1]]  # fmt: skip
    assert len(squares) == 1
    assert not any("quantize" in str(user.target) for user in squares[0].users)


def test_onnx_int8_quantizes_conv_gemm_matmul_and_leaves_softmax_float(lowered):
    made = lowered("kws", "onnxruntime", "int8")
    manifest = bundle.read_manifest(made.path)
    assert manifest["kind"] == "onnx" and manifest["precision"] == "int8"
    nodes = manifest["nodes"]
    made_by = {o: n for n in nodes for o in n["outputs"]}
    (softmax,) = [n for n in nodes if n["op"] == "Softmax"]
    # the probabilities stay float: nothing quantizes the softmax's output (ORT's defaults
    # would, and a uint8 of 1,000 probabilities near 1e-3 loses AlexNet's argmax)
    readers = [n for n in nodes if set(softmax["outputs"]) & set(n["inputs"])]
    assert all(n["op"] != "QuantizeLinear" for n in readers)
    assert not any(n["op"].startswith("QLinear") for n in nodes)
    gemms = [n for n in nodes if n["op"] == "Gemm"]
    assert gemms and all(made_by[n["inputs"][0]]["op"] == "DequantizeLinear" for n in gemms)


def test_an_export_is_made_once_and_records_its_cost_and_agreement(lowered, export_cache,
                                                                   monkeypatch):  # fmt: skip
    made = lowered("kws", "onnxruntime")
    record = made.record()
    assert record["runtime"] == "onnxruntime" and record["precision"] == "fp32"
    assert record["export_s"] > 0 and record["size_bytes"] == made.path.stat().st_size
    assert record["agreement"]["max_abs_diff"] < 1e-5 and record["agreement"]["top1"] == 1.0
    assert record["source_sha256"] != record["sha256"]
    monkeypatch.setattr(cache, "_lower", lambda *a: pytest.fail("lowered a second time"))
    again = export.export("kws", runtime="onnxruntime", cache_dir=export_cache)
    assert again.sha256 == made.sha256 and again.record() == record


def test_a_cell_a_runtime_cannot_take_says_why_once(export_cache, monkeypatch):
    with pytest.raises(CannotLower, match="eager runs fp32 only"):
        export.export("kws", runtime="eager", precision="int8", cache_dir=export_cache)

    def broken(module, example, calibration=None):
        raise RuntimeError("Missing operator: aten::avg_pool3d.out\nmore detail")

    monkeypatch.setattr(lower, "to_pte", broken)
    with pytest.raises(CannotLower, match=r"^executorch fp32: Missing operator: aten::avg_pool3d"):
        export.export("svhn", runtime="executorch", activation="tanh", cache_dir=export_cache)
    monkeypatch.setattr(cache, "_lower", lambda *a: pytest.fail("lowered a second time"))
    with pytest.raises(CannotLower, match="avg_pool3d"):  # remembered, not tried again
        export.export("svhn", runtime="executorch", activation="tanh", cache_dir=export_cache)


# ------------------------------------------------------------------------ jobs


INVENTORY = """
version: 1
boards:
  - name: local
    transport: local
    processors: [{name: cpu}]
"""

JOB = """
version: 1
name: rt
models: [kws]
targets: [{boards: [local]}]
variants:
  runtime: [eager, onnxruntime, executorch]
  precision: [fp32, int8]
"""


def test_runtime_and_precision_are_variant_axes_of_a_job():
    inventory = spec.parse_inventory(INVENTORY, file="inv.yaml")
    names = runtimes.names()
    job = spec.parse_job(JOB, file="rt.yaml", inventory=inventory, known_runtimes=names)
    keys = [t.key for t in spec.expand(job, inventory)]
    assert len(keys) == 6
    assert "kws/local/cpu/precision=int8,runtime=onnxruntime" in keys
    assert "kws/local/cpu/precision=fp32,runtime=eager" in keys
    bad = JOB.replace("executorch]", "tflite]")
    with pytest.raises(SpecError) as err:
        spec.parse_job(bad, file="rt.yaml", inventory=inventory, known_runtimes=names)
    assert str(err.value).startswith("rt.yaml:7: variants.runtime[2]: unknown runtime 'tflite'")
    assert f"registered: {', '.join(sorted(names))}" in str(err.value)
    assert {"eager", "executorch", "onnxruntime"} <= set(names)
    with pytest.raises(SpecError, match=r"rt.yaml:8: variants.precision\[1\]"):
        spec.parse_job(JOB.replace("int8]", "int4]"), file="rt.yaml", inventory=inventory)


def test_the_station_exports_per_runtime_and_a_cell_that_cannot_fit_says_why(station):
    outcome = station.run_task(kws_payload({"runtime": "onnxruntime", "precision": "int8"}))
    assert outcome.state is TaskState.DONE, outcome.error
    record = outcome.result.artifact  # typed: farm.result.Artifact
    assert record.runtime == "onnxruntime" and record.precision == "int8"
    assert record.export_s > 0 and record.agreement.n == agree.AGREEMENT_SIZE
    top1 = record.agreement.top1
    warned = [w for w in outcome.result.warnings if "agrees with eager on top-1" in w]
    assert bool(warned) == (top1 < agree.TOP1_WARN)
    unfit = station.run_task(kws_payload({"runtime": "eager", "precision": "int8"}))
    assert unfit.state is TaskState.DOES_NOT_FIT and unfit.result is None
    assert unfit.failure.kind == "CannotLower" and "\n" not in unfit.error
    assert unfit.failure.message.startswith("eager runs fp32 only")


# ----------------------------------------------------------------------- report


def _cell(variant, state, result, error=None):
    from farm.report import cells
    from farm.result import EngineResult
    from farm.store import Cell as StoredCell
    from farm.store import TaskRecord

    task = TaskRecord(
        id=f"j.{len(str(variant))}", job_id="j", index=0, key="k", model="kws", board="b",
        processor="cpu", variant=variant, state=state, attempts=1, error=error,
        created=0.0, updated=0.0,
    )  # fmt: skip
    return cells.Cell(StoredCell(task, EngineResult.model_validate(result) if result else None))


def _ok(median, artifact=None, warnings=()):
    latency = {"n": 30, "mean_ms": median, "median_ms": median,
               "median_ci95_low_ms": median * 0.9, "median_ci95_high_ms": median * 1.1}  # fmt: skip
    return {"status": "ok", "latency": latency, "memory": {"peak_rss_mb": 300.0},
            "artifact": artifact or {}, "warnings": list(warnings)}  # fmt: skip


def test_the_report_names_the_best_runtime_per_board_with_its_cost():
    from farm.report import cells, markdown
    from farm.report import runtimes as report_runtimes
    from farm.states import JobState
    from farm.store import JobRecord

    job = JobRecord(id="j", name="j", source=None, spec={}, boards=[], priority=0,
                    state=JobState.DONE, created=0.0, updated=0.0)  # fmt: skip
    warning = "executorch int8 agrees with eager on top-1 for 90.6% of 32 seeded inputs"
    sweep = cells.Sweep(job, [
        _cell({"runtime": "eager", "precision": "fp32"}, TaskState.DONE, _ok(1.0)),
        _cell({"runtime": "onnxruntime", "precision": "fp32"}, TaskState.DONE,
              _ok(0.4, {"agreement": {"top1": 1.0, "max_abs_diff": 1e-8}})),
        _cell({"runtime": "executorch", "precision": "int8"}, TaskState.DONE,
              _ok(0.2, {"agreement": {"top1": 0.906, "max_abs_diff": 5e-4}}, [warning])),
        _cell({"runtime": "eager", "precision": "int8"}, TaskState.DOES_NOT_FIT, None,
              error="eager runs fp32 only (int8 cells are ...)"),
    ])  # fmt: skip
    view = report_runtimes.best_runtime(sweep)
    (row,) = [dict(zip(view.columns, r, strict=True)) for r in view.rows]
    assert row["best"] == "executorch int8" and row["x eager"] == "0.20"
    assert row["top-1 vs eager"] == "90.6%" and row["peak RSS MB"] == "300"
    assert "eager int8 (does not fit: eager runs fp32 only" in row["measured"]
    assert view.warnings[(0, 3)] == [warning]  # beside the time, as every table does
    assert warning in "\n".join(markdown.view(view))
    plain = cells.Sweep(job, [_cell({}, TaskState.DONE, _ok(1.0))])
    assert report_runtimes.best_runtime(plain) is None


def test_the_report_pairs_cells_across_sweeps_runtime_by_runtime():
    from farm.report import cells, compare
    from farm.states import JobState
    from farm.store import JobRecord

    job = JobRecord(id="j", name="j", source=None, spec={}, boards=[], priority=0,
                    state=JobState.DONE, created=0.0, updated=0.0)  # fmt: skip
    a = cells.Sweep(job, [
        _cell({"runtime": "eager", "precision": "fp32"}, TaskState.DONE, _ok(1.0)),
        _cell({"runtime": "onnxruntime", "precision": "fp32"}, TaskState.DONE, _ok(0.4)),
    ])  # fmt: skip
    b = cells.Sweep(job, [  # an older sweep without the axes: its cells ran eager fp32
        _cell({}, TaskState.DONE, _ok(2.0)),
        _cell({"runtime": "onnxruntime"}, TaskState.DONE, _ok(0.8)),
    ])  # fmt: skip
    rows = [dict(zip(v.columns, r, strict=True)) for v in [compare.against(a, b)] for r in v.rows]
    assert [(r["median time A (ms)"], r["median time B (ms)"]) for r in rows] == [
        ("1.000", "2.000"), ("0.400", "0.800"),
    ]  # fmt: skip
