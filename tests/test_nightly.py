"""Nightly tools on a real SQLite store: statistics checked against scipy and brute force,
verdicts, change points, the drift check, and the `farm compare` / `farm trend` commands."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from farmcli import run_farm
from scipy import stats as scipy_stats

from farm import nightly
from farm.engine.markers import INFERENCE_BEGIN, INFERENCE_END, KINDS, LAYER_BEGIN, LAYER_END
from farm.nightly import drift, samples, stats, trend
from farm.power import analyze, series
from farm.power.synthetic import PowerModel, fake_task_markers, synthesize
from farm.result import EngineResult
from farm.spec import CellKey, Measure, ModelRef, PlannedTask
from farm.states import JobState, TaskState
from farm.store import Store

# -- statistics ------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), [(7, 9), (40, 30), (300, 250)])
def test_mann_whitney_and_hodges_lehmann_match_scipy_and_brute_force(n, m):
    rng = np.random.default_rng(n)
    a = [rng.lognormal(0, 0.2, n) for _ in range(4)]
    b = [rng.lognormal(0.05, 0.3, m) for _ in range(4)]
    a[0], b[0] = np.round(a[0], 1) + 0.1, np.round(b[0], 1) + 0.1  # heavy ties
    got = stats.shift_test(a, b)
    for k in range(4):
        want_p = scipy_stats.mannwhitneyu(b[k], a[k], method="asymptotic").pvalue
        assert got.p[k] == pytest.approx(want_p, rel=1e-9)
        diffs = np.sort((np.log(b[k])[None, :] - np.log(a[k])[:, None]).ravel())
        nm = n * m
        assert got.shift[k] == pytest.approx(diffs[(nm + 1) // 2 - 1], abs=2e-5)
        # the distribution-free interval: order statistics C and nm+1-C of the differences
        sigma_u = np.sqrt(nm * (n + m + 1) / 12)
        assert got.low[k] <= got.shift[k] <= got.high[k]
        c = int(np.floor(nm / 2 - 1.959964 * sigma_u))
        if k > 0:  # without ties the bounds are exactly these order statistics
            assert got.low[k] == pytest.approx(diffs[c - 1], abs=2e-5)
            assert got.high[k] == pytest.approx(diffs[nm - c], abs=2e-5)


def test_shift_on_the_samples_own_scale_handles_values_near_zero():
    rng = np.random.default_rng(3)
    a = rng.normal(0.1, 0.5, 200)
    b = a + 0.4
    got = stats.shift_test([a], [b], log=False)
    assert got.shift[0] == pytest.approx(0.4, abs=1e-5)
    assert got.p[0] < 1e-6


def test_cells_of_different_sizes_and_empty_cells():
    rng = np.random.default_rng(4)
    a = [rng.lognormal(0, 0.1, 50), rng.lognormal(0, 0.1, 80), np.zeros(0)]
    b = [rng.lognormal(0, 0.1, 60), rng.lognormal(0.5, 0.1, 80), rng.lognormal(0, 0.1, 10)]
    got = stats.shift_test(a, b)
    assert got.p[1] < 1e-10 and got.shift[1] == pytest.approx(0.5, abs=0.05)
    assert np.isnan(got.p[2]) and list(got.n_a) == [50, 80, 0]


def test_holm_and_benjamini_hochberg():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.005])
    assert np.allclose(stats.adjust(p, "holm"), [0.03, 0.06, 0.06, np.nan, 0.02], equal_nan=True)
    assert np.allclose(stats.adjust(p, "bh"), [0.02, 0.04, 0.04, np.nan, 0.02], equal_nan=True)
    with pytest.raises(ValueError, match="unknown correction"):
        stats.adjust(p, "bonferroni")


# -- samples ---------------------------------------------------------------------


def _markers(latencies_ms, layer_pass: int = 0) -> dict:
    """Engine-shaped markers: a latency pass, then a hooked layer pass of ``layer_pass``
    inferences (numbered from 0 again, with a layer window inside each)."""
    t, kind, iteration, layer = [], [], [], []
    now = 1_000_000_000
    for i, ms in enumerate(latencies_ms):
        t += [now, now + round(ms * 1e6)]
        kind += [INFERENCE_BEGIN, INFERENCE_END]
        iteration += [i, i]
        layer += [-1, -1]
        now += round(ms * 1e6) + 50_000
    for i in range(layer_pass):
        t += [now, now + 10, now + 20, now + 5_000_000]
        kind += [INFERENCE_BEGIN, LAYER_BEGIN, LAYER_END, INFERENCE_END]
        iteration += [i] * 4
        layer += [-1, 0, 0, -1]
        now += 6_000_000
    return {"kinds": list(KINDS), "t_ns": t, "kind": kind, "iteration": iteration, "layer": layer,
            "layer_names": ["fc"], "clock": "monotonic_ns"}  # fmt: skip


def test_latencies_come_from_the_latency_pass_markers_only():
    want = [0.5, 0.75, 1.25, 0.5]
    got = samples.latencies_ms(_markers(want, layer_pass=3))
    assert got.tolist() == pytest.approx(want)
    assert len(samples.latencies_ms(None)) == 0


def test_energies_round_trip_through_the_report():
    values = np.array([0.25, 1.5, -0.01, 3.0])
    report = {
        "energy": {"per_inference_mj": {"encoding": series.ENCODING, "net": series.encode(values)}}
    }
    assert samples.energies_mj(report).tolist() == pytest.approx(values.tolist(), rel=1e-6)
    assert samples.energies_mj({"energy": {}}) is None
    with pytest.raises(ValueError, match="unknown series encoding"):
        series.decode(series.encode(values), "f64")


def test_the_energy_report_keeps_every_timed_inference():
    start = 50_000_000_000
    markers = fake_task_markers(
        start_ns=start + 1_000_000_000, iterations=40, layers=(4.0, 8.0), layer_iterations=6
    )
    duration = (markers["t_ns"][-1] - start) / 1e9 + 1.0
    trace = synthesize(PowerModel(noise_w=0.02), markers, t0_host_ns=start, duration_s=duration)
    report = analyze(trace, markers, None)
    net = samples.energies_mj({"energy": report})
    assert len(net) == len(samples.latencies_ms(markers)) == 40  # the layer pass left out
    assert net.mean() == pytest.approx(report["energy_per_inference_mj"]["net"]["mean"], rel=1e-5)


# -- a store with nights ---------------------------------------------------------

ENV = {"threads": 2, "torch": "2.13.0", "engine": "e1", "cpu_model": "X", "kernel": "6.1",
       "governor": "performance", "loadavg_before": [0.5, 0.4, 0.3]}  # fmt: skip


def _result(lat, *, env=None, energy=None, artifact="a" * 64, warnings=(), cpu=None):
    result = {
        "status": "ok",
        "latency": {
            "median_ms": float(np.median(lat)),
            "mean_ms": float(np.mean(lat)),
            "n": len(lat),
        },
        "memory": {"peak_rss_mb": 300.0},
        "markers": _markers(lat),
        "env": {**ENV, **(env or {})},
        "artifact": {"sha256": artifact},
        "warnings": list(warnings),
    }
    if cpu is not None:
        result["markers"]["inference_cpu_ns"] = [round(c * 1e6) for c in cpu]
    if energy is not None:
        result["energy"] = {
            "energy_per_inference_mj": {"net": {"mean": float(np.mean(energy))}},
            "per_inference_mj": {"encoding": series.ENCODING, "net": series.encode(energy)},
        }
    return result


def add_night(store: Store, name: str, cells: dict, *, tags=None, created=None) -> str:
    """A finished job whose task for each (model, board) in ``cells`` has the given result
    (a dict from ``_result``, or a state string such as ``failed``)."""
    job_id = f"{name}-{len(store.jobs(limit=1000))}"
    boards = sorted({board for _, board in cells})
    tasks = [
        PlannedTask(index=i, key=f"{model}/{board}/cpu/-", model=ModelRef(name=model, zoo=model),
                    board=board, processor="cpu", variant={"threads": None}, measure=Measure(),
                    candidates=[board])
        for i, (model, board) in enumerate(cells)
    ]  # fmt: skip
    specs = [{"name": b, "tags": (tags or {}).get(b, ["lab"])} for b in boards]
    store.add_job(job_id, name, {"name": name}, tasks, boards=specs)
    store.set_job_state(job_id, JobState.RUNNING)
    for i, value in enumerate(cells.values()):
        task_id, board = f"{job_id}.{i}", tasks[i].board
        store.transition(task_id, TaskState.DEPLOYING, board=board, attempt=1)
        store.transition(task_id, TaskState.RUNNING)
        if isinstance(value, str):
            store.finish(task_id, TaskState(value), board=board, error="boom")
        else:
            result = {k: v for k, v in value.items() if k != "markers"}
            store.finish(task_id, TaskState.DONE, board=board,
                         result=EngineResult.model_validate(result), markers=value["markers"])  # fmt: skip
    store.set_job_state(job_id, JobState.DONE)
    if created is not None:  # nights a day apart
        store._db.execute("UPDATE jobs SET created=? WHERE id=?", (created, job_id))
    return job_id


def _lat(rng, median, n=400, sigma=0.05):
    return median * rng.lognormal(0, sigma, n)


@pytest.fixture
def two_nights(db_path):
    rng = np.random.default_rng(7)
    store = Store(db_path)
    energy = rng.normal(2.0, 0.2, 400)
    a = add_night(store, "nightly", {
        ("kws", "b0"): _result(_lat(rng, 0.5), energy=energy),
        ("kws", "b1"): _result(_lat(rng, 0.5)),
        ("svhn", "b0"): _result(_lat(rng, 1.0)),
        ("svhn", "b1"): _result(_lat(rng, 1.0)),
        ("alexnet", "b0"): _result(_lat(rng, 90.0)),
    }, created=time.time() - 86400)  # fmt: skip
    b = add_night(store, "nightly", {
        ("kws", "b0"): _result(_lat(rng, 0.5), energy=energy * 1.3),  # hungrier, not slower
        ("kws", "b1"): _result(_lat(rng, 0.5 * 1.002), env={"torch": "2.14.0"}),
        ("svhn", "b0"): _result(_lat(rng, 1.4), artifact="b" * 64),  # 40% slower
        ("svhn", "b1"): _result(_lat(rng, 0.7)),  # 30% faster
        ("alexnet", "b0"): "failed",
        ("deepear", "b0"): _result(_lat(rng, 3.0)),
    })  # fmt: skip
    yield store, a, b
    store.close()


def test_compare_verdicts_changes_and_environment(two_nights):
    store, a, b = two_nights
    cmp = nightly.compare_jobs(store, [a, b])
    got = {str(c.cell): c for c in cmp.cells}
    assert {k: c.verdict.value for k, c in got.items()} == {
        "alexnet/b0/cpu/default": "incomparable",
        "deepear/b0/cpu/default": "incomparable",
        "kws/b0/cpu/default": "regression",  # by energy: +30% per inference
        "kws/b1/cpu/default": "unchanged",
        "svhn/b0/cpu/default": "regression",
        "svhn/b1/cpu/default": "improvement",
    }
    assert got["kws/b0/cpu/default"].energy.change == pytest.approx(0.3 * 2.0 / np.median(np.abs(
        got["kws/b0/cpu/default"].energy.a)), rel=0.1)  # fmt: skip
    svhn = got["svhn/b0/cpu/default"]
    assert svhn.latency.low < 0.4 < svhn.latency.high and svhn.latency.p_adjusted < 1e-10
    assert svhn.changed == ["artifact"]
    assert got["kws/b1/cpu/default"].changed == ["torch"]
    assert got["kws/b1/cpu/default"].environment["torch"] == ("2.13.0", "2.14.0")
    assert got["alexnet/b0/cpu/default"].why == "done → failed"
    assert got["deepear/b0/cpu/default"].why == "only in B"
    assert cmp.exit_code == 1
    # the previous night of the same name is the default baseline
    assert nightly.compare_jobs(store, [b]).baseline == a
    assert nightly.compare_jobs(store, [], baseline="last-nightly").baseline == a


def test_a_small_significant_change_is_not_a_regression(db_path):
    rng = np.random.default_rng(11)
    store = Store(db_path)
    a = add_night(store, "n", {("kws", "b0"): _result(_lat(rng, 1.0, n=3000, sigma=0.02))})
    b = add_night(store, "n", {("kws", "b0"): _result(_lat(rng, 1.01, n=3000, sigma=0.02))})
    (cell,) = nightly.compare_jobs(store, [a, b]).cells
    assert cell.latency.p_adjusted < 1e-6  # a real 1% slowdown, clearly significant...
    assert cell.latency.high < 0.05 and cell.verdict is nightly.Verdict.UNCHANGED  # ...and small
    (cell,) = nightly.compare_jobs(store, [a, b], threshold=0.005).cells
    assert cell.verdict is nightly.Verdict.REGRESSION


def test_compare_command_formats_and_exit_codes(two_nights):
    store, a, b = two_nights
    db = ["--db", str(store.path)]
    table = run_farm("compare", a, b, *db)
    assert table.returncode == 1, table.stderr
    assert "regression" in table.stdout and "artifact changed" in table.stdout
    data = json.loads(run_farm("compare", a, b, "--format", "json", *db).stdout)
    assert data["counts"] == {"regression": 2, "improvement": 1, "unchanged": 1, "incomparable": 2,
                              "unreliable": 0}  # fmt: skip
    csv_out = run_farm("compare", "--baseline", a, "--format", "csv", *db)
    assert csv_out.returncode == 1 and csv_out.stdout.count("\n") == 7
    ok = run_farm("compare", a, b, "--threshold", "0.9", "--format", "json", *db)
    assert ok.returncode == 0 and json.loads(ok.stdout)["counts"]["regression"] == 0
    for bad, message in [
        (["nope", b], "no job 'nope'"),
        ([a, b, "--format", "xml"], "--format"),
        ([a, b, "--threshold", "0"], "--threshold"),
        ([a, b, "--baseline", "previous"], "not both"),
        ([a, b, "--correction", "sidak"], "--correction"),
    ]:
        res = run_farm("compare", *bad, *db)
        assert res.returncode == 2 and message in res.stderr, (bad, res.stderr)
        assert "Traceback" not in res.stderr


def test_a_cell_measured_on_a_busy_board_is_unreliable_and_compare_cannot_judge(db_path):
    """Two identical runs, one on a busy board: no verdict, exit 3; a clean regression
    beside it still exits 1."""
    rng = np.random.default_rng(3)
    store = Store(db_path)
    busy = ["board busy: load 7.1 on 2 CPUs"]
    a = add_night(store, "n", {("kws", "b0"): _result(_lat(rng, 1.0)),
                               ("svhn", "b0"): _result(_lat(rng, 2.0))})  # fmt: skip
    # B's kws is 30% slower, but measured on a busy board: that is no regression
    b = add_night(store, "n", {("kws", "b0"): _result(_lat(rng, 1.3), warnings=busy),
                               ("svhn", "b0"): _result(_lat(rng, 2.0))})  # fmt: skip
    cmp = nightly.compare_jobs(store, [a, b])
    kws, svhn = cmp.cells
    assert kws.verdict is nightly.Verdict.UNRELIABLE and "B: board busy" in kws.why
    assert kws.latency.a == pytest.approx(1.0, rel=0.05) and kws.latency.p_adjusted is None
    assert svhn.verdict is nightly.Verdict.UNCHANGED
    assert cmp.exit_code == 3
    res = run_farm("compare", a, b, "--db", str(db_path))
    assert res.returncode == 3, res.stderr
    assert "unreliable" in res.stdout and "board busy" in res.stdout
    assert "wall-clock latency" in res.stdout  # what the verdicts rest on
    doc = json.loads(run_farm("compare", a, b, "--format", "json", "--db", str(db_path)).stdout)
    assert doc["counts"]["unreliable"] == 1 and doc["exit_code"] == 3
    # a layer sum or alignment warning on A voids it just the same
    for warning in (["layer sum 1.31x the plain forwards (outside 5%)"],):
        c = add_night(store, "n", {("kws", "b0"): _result(_lat(rng, 1.0), warnings=warning)})
        d = add_night(store, "n", {("kws", "b0"): _result(_lat(rng, 1.0))})
        (cell,) = nightly.compare_jobs(store, [c, d]).cells
        assert cell.verdict is nightly.Verdict.UNRELIABLE and cell.why.startswith("A: layer sum")
    unaligned = _result(_lat(rng, 1.0))
    unaligned["energy"] = {"quality": {"warnings": ["markers fall outside the capture"]}}
    e = add_night(store, "n", {("kws", "b0"): unaligned})
    (cell,) = nightly.compare_jobs(store, [d, e]).cells
    assert cell.verdict is nightly.Verdict.UNRELIABLE and "alignment" in cell.why
    # a clean regression beside an unreliable cell: exit 1, as before
    f = add_night(store, "n", {("kws", "b0"): _result(_lat(rng, 1.0), warnings=busy),
                               ("svhn", "b0"): _result(_lat(rng, 2.8))})  # fmt: skip
    assert nightly.compare_jobs(store, [b, f]).exit_code == 1
    store.close()


PAIR_INVENTORY = """\
version: 1
boards:
  - {name: b0, transport: local, processors: [{name: cpu, device: cpu, threads: 1}]}
"""


def _stored_job(store: Store, job_id: str, text: str, results: list[dict], created: float) -> None:
    """A job as ``farm submit`` stores it: parsed from YAML, planned on the inventory;
    its tasks finished with ``results`` (engine-shaped dicts from ``_result``)."""
    from farm import spec

    inventory = spec.parse_inventory(PAIR_INVENTORY, file="inv.yaml")
    job = spec.parse_job(text, file=f"{job_id}.yaml", inventory=inventory)
    planned = spec.plan(job, inventory)
    boards = [b.model_dump(mode="json") for b in planned.boards]
    store.add_job(job_id, job.name, job.model_dump(mode="json"), planned.tasks, boards=boards)
    store.set_job_state(job_id, JobState.RUNNING)
    assert len(planned.tasks) == len(results)
    for i, (task, value) in enumerate(zip(planned.tasks, results, strict=True)):
        task_id = f"{job_id}.{i}"
        store.transition(task_id, TaskState.DEPLOYING, board=task.board, attempt=1)
        store.transition(task_id, TaskState.RUNNING)
        result = EngineResult.model_validate({k: v for k, v in value.items() if k != "markers"})
        store.finish(task_id, TaskState.DONE, board=task.board, result=result,
                     markers=value["markers"])  # fmt: skip
    store.set_job_state(job_id, JobState.DONE)
    store._db.execute("UPDATE jobs SET created=? WHERE id=?", (created, job_id))


def test_a_job_naming_the_defaults_pairs_with_one_that_does_not(db_path):
    """One cell key (``farm.spec.CellKey``): a job without runtime/precision/activation
    axes and a job that says ``runtime: [eager]``, ``precision: [fp32]``,
    ``activation: [relu]`` measure the same cells, so nightly compare and trend, the
    report, the store's matching and metrics pair them, all under the label ``default``;
    a variant that does change something (onnxruntime) stays a cell of its own."""
    from farm.metrics.source import StoreSource
    from farm.report import cells as report_cells
    from farm.report import compare as report_compare

    rng = np.random.default_rng(11)
    plain = "version: 1\nname: nightly\nmodels: [kws]\ntargets: [{boards: [b0]}]\n"
    named = plain + (
        "variants: {runtime: [eager, onnxruntime], precision: [fp32], activation: [relu]}\n"
    )
    store = Store(db_path)
    now = time.time()
    _stored_job(store, "plain", plain, [_result(_lat(rng, 1.0))], now - 86400)
    _stored_job(store, "named", named, [_result(_lat(rng, 1.0)), _result(_lat(rng, 0.6))], now)
    tasks = {t.key: t for t in store.tasks("named")}
    assert set(tasks) == {
        "kws/b0/cpu/activation=relu,precision=fp32,runtime=eager",  # the task keeps its key
        "kws/b0/cpu/activation=relu,precision=fp32,runtime=onnxruntime",
    }
    (only,) = store.tasks("plain")
    eager = tasks["kws/b0/cpu/activation=relu,precision=fp32,runtime=eager"]
    assert only.cell == eager.cell == CellKey("kws", "b0", "cpu", "default")
    assert str(only.cell) == "kws/b0/cpu/default"

    # the store: matched side by side, and one newest result per cell
    pairs = {k: (a is not None, b is not None) for k, a, b in store.match_cells("named", "plain")}
    assert pairs == {
        CellKey("kws", "b0", "cpu", "default"): (True, True),
        CellKey("kws", "b0", "cpu", "runtime=onnxruntime"): (True, False),
    }
    source = StoreSource(db_path)
    newest = {c.key.variant: c.task.job_id for c in source.newest_cells()}
    source.close()
    assert newest == {"default": "named", "runtime=onnxruntime": "named"}  # one series each

    # nightly: compare judges the pair (not "only in A"), trend has one series of two nights
    got = {str(c.cell): c for c in nightly.compare_jobs(store, ["plain", "named"]).cells}
    assert got["kws/b0/cpu/default"].verdict is nightly.Verdict.UNCHANGED
    assert got["kws/b0/cpu/runtime=onnxruntime"].why == "only in B"
    doc = json.loads(
        run_farm("compare", "plain", "named", "--format", "json", "--db", str(db_path)).stdout
    )
    assert doc["counts"]["unchanged"] == 1 and doc["counts"]["incomparable"] == 1
    res = run_farm("trend", "--last", "2", "--format", "json", "--db", str(db_path))
    assert res.returncode == 0, res.stderr
    series = {c["variant"]: c for c in json.loads(res.stdout)["cells"]}
    assert (
        len(series["default"]["nights"]) == 2 and len(series["runtime=onnxruntime"]["nights"]) == 1
    )

    # the report pairs them the same way, by the same key
    a, b = report_cells.load(store, "named"), report_cells.load(store, "plain")
    assert [c.key for c in a.cells] == [
        eager.cell,
        CellKey("kws", "b0", "cpu", "runtime=onnxruntime"),
    ]
    rows = report_compare.against(a, b).rows
    assert [(r[3] != "- (not in A)", r[4] != "- (not in B)") for r in rows] == [
        (True, True),  # the eager cell, in both
        (True, False),  # onnxruntime: only in A
    ]
    store.close()


def test_both_sides_of_an_arrow_are_the_same_statistic():
    """The medians fell 70% while the shift estimate says +3% (two modes): the line says
    both, each named, never "89.58 → 27.02 ms +2.98%"."""
    from farm.nightly.compare import Change
    from farm.nightly.render import _change

    text = _change(Change(89.58, 27.02, change=0.0298, low=0.01, high=0.05), "ms")
    assert text.startswith("89.58 → 27.02 ms (-69.84%)")
    assert "shift +2.98% [+1.00%, +5.00%]" in text


def test_plain_compare_judges_the_latest_finished_job_and_shows_cpu_time(db_path):
    rng = np.random.default_rng(4)
    store = Store(db_path)
    a = add_night(store, "n", {("kws", "b0"): _result(_lat(rng, 1.0), cpu=[0.9] * 400)})
    b = add_night(store, "n", {("kws", "b0"): _result(_lat(rng, 1.0), cpu=[0.8] * 400)})
    late = add_night(store, "n", {("kws", "b0"): _result(_lat(rng, 1.0))})
    # a cancelled run is no night to judge
    store._db.execute("UPDATE jobs SET state=? WHERE id=?", (JobState.CANCELLED.value, late))
    cmp = nightly.compare_jobs(store, [])
    assert (cmp.baseline, cmp.candidate) == (a, b)
    cpu = cmp.cells[0].cpu
    assert (cpu.a, cpu.b) == pytest.approx((0.9, 0.8)) and cpu.p is None  # shown, not judged
    res = run_farm("compare", "--db", str(db_path), "--format", "json")
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout)["cells"][0]
    assert (row["cpu_a"], row["cpu_b"]) == pytest.approx((0.9, 0.8))


def test_a_verdict_on_cpu_time_is_not_voided_by_a_busy_board(db_path):
    """Wall time stretched by load (and a busy warning), CPU time 40% up: on CPU time
    that is a regression; on wall time it cannot be judged."""
    rng = np.random.default_rng(8)
    store = Store(db_path)
    busy = ["board busy: load 7.1 on 2 CPUs"]
    a = add_night(store, "n", {("kws", "b0"): _result(_lat(rng, 1.0), cpu=_lat(rng, 0.9))})
    b = add_night(store, "n", {("kws", "b0"): _result(_lat(rng, 3.0), warnings=busy,
                                                      cpu=_lat(rng, 0.9 * 1.4))})  # fmt: skip
    (wall,) = nightly.compare_jobs(store, [a, b]).cells
    assert wall.verdict is nightly.Verdict.UNRELIABLE
    on_cpu = nightly.compare_jobs(store, [a, b], statistic="cpu")
    (cell,) = on_cpu.cells
    assert cell.verdict is nightly.Verdict.REGRESSION and cell.cpu.low < 0.4 < cell.cpu.high
    assert cell.latency.p is None and "CPU time" in on_cpu.basis
    res = run_farm("compare", a, b, "--statistic", "cpu", "--db", str(db_path))
    assert res.returncode == 1 and "regression" in res.stdout, res.stderr
    # a hot board voids a CPU-time verdict too (the clock slows down)
    c = add_night(store, "n", {("kws", "b0"): _result(_lat(rng, 1.0), warnings=["board hot: 85 C"],
                                                      cpu=_lat(rng, 0.9))})  # fmt: skip
    (hot,) = nightly.compare_jobs(store, [a, c], statistic="cpu").cells
    assert hot.verdict is nightly.Verdict.UNRELIABLE
    bad = run_farm("compare", a, b, "--statistic", "gpu", "--db", str(db_path))
    assert bad.returncode == 2 and "--statistic" in bad.stderr
    store.close()


# -- trend -------------------------------------------------------------------------


def test_change_points_find_a_step_and_a_slow_drift_but_not_noise():
    rng = np.random.default_rng(5)
    flat = np.exp(rng.normal(0, 0.01, 30))
    assert trend.change_points(flat) == []
    step = flat.copy()
    step[18:] *= 1.08
    assert trend.change_points(step) == [18]
    # 1% a night from night 10: each pair of nights is below any 5% threshold
    ramp = np.exp(rng.normal(0, 0.004, 30) + np.r_[np.zeros(10), np.arange(1, 21) * 0.01])
    cuts = trend.change_points(ramp)
    assert cuts and 9 <= cuts[0] <= 16


def test_trend_command_dates_a_change(db_path):
    rng = np.random.default_rng(6)
    store = Store(db_path)
    start = time.time() - 20 * 86400
    ids = []
    for night in range(12):
        median = 1.0 if night < 7 else 1.25
        cells = {("svhn", "b0"): _result(_lat(rng, median * (1 + rng.normal(0, 0.005)), n=50)),
                 ("kws", "b0"): _result(_lat(rng, 0.5 * (1 + rng.normal(0, 0.005)), n=50))}  # fmt: skip
        ids.append(add_night(store, "nightly", cells, created=start + night * 86400))
    add_night(store, "adhoc", {("svhn", "b0"): _result(_lat(rng, 9.0, n=50))})
    (kws, svhn) = nightly.trend_jobs(store, last=12)
    assert kws.change_points == []
    assert [c.job_id for c in svhn.change_points] == [ids[7]]
    assert svhn.change_points[0].change == pytest.approx(0.25, abs=0.02)
    res = run_farm("trend", "--last", "12", "--format", "json", "--db", str(db_path))
    assert res.returncode == 0, res.stderr
    cells = {c["model"]: c for c in json.loads(res.stdout)["cells"]}
    assert len(cells["svhn"]["nights"]) == 12 and cells["svhn"]["change_points"][0]["index"] == 7
    table = run_farm("trend", "--db", str(db_path))
    assert ids[7] in table.stdout
    bad = run_farm("trend", "--name", "weekly", "--db", str(db_path))
    assert bad.returncode == 2 and "no finished job named 'weekly'" in bad.stderr
    assert "adhoc, nightly" in bad.stderr  # the names there are


# -- drift -------------------------------------------------------------------------


def test_a_board_slower_than_its_same_tag_peers_is_degraded():
    medians = [
        drift.BoardMedian(board, ("tk1",), cell, base * factor)
        for cell, base in (("kws", 0.5), ("svhn", 1.0), ("alexnet", 90.0))
        for board, factor in (("t0", 1.0), ("t1", 1.01), ("t2", 0.99), ("t3", 1.35))
    ]
    medians.append(drift.BoardMedian("pi", ("arm",), "kws", 5.0))  # no peers: not judged
    got = drift.board_drift(medians)
    assert {b for b, d in got.items() if d.degraded} == {"t3"}
    assert got["t3"].ratio == pytest.approx(1.35, rel=0.01) and got["t3"].cells == 3
    assert "pi" not in got
    assert not drift.board_drift(medians, k=50)["t3"].degraded


def _night_with_a_slow_board(db_path, seed: int) -> Store:
    """Four same-tag boards, two models each; t3 runs 1.5x slower than its peers."""
    rng = np.random.default_rng(seed)
    store = Store(db_path)
    cells = {}
    for board, factor in (("t0", 1.0), ("t1", 1.01), ("t2", 0.99), ("t3", 1.5)):
        for model, base in (("kws", 0.5), ("svhn", 1.0)):
            cells[(model, board)] = _result(_lat(rng, base * factor, n=30))
    add_night(store, "nightly", cells)
    return store


def test_status_names_a_degraded_board(db_path):
    store = _night_with_a_slow_board(db_path, seed=8)
    assert {b for b, d in nightly.degraded(store).items() if d.degraded} == {"t3"}
    res = run_farm("status", "--db", str(db_path))
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if "t3" in ln)
    assert "degraded" in line
    assert float(re.search(r"([+-][0-9.]+)% vs peers", line).group(1)) == pytest.approx(50, abs=8)
    assert "degraded" not in next(ln for ln in res.stdout.splitlines() if "t1 " in ln)


def test_the_exporter_names_a_degraded_board(db_path):
    from prometheus_client import CollectorRegistry, generate_latest

    from farm.metrics.fleet import FleetCollector
    from farm.metrics.source import StoreSource

    _night_with_a_slow_board(db_path, seed=9)
    registry = CollectorRegistry()
    registry.register(FleetCollector(StoreSource(db_path)))
    text = generate_latest(registry).decode()
    assert 'farm_board_degraded{board="t3"} 1.0' in text
    assert 'farm_board_degraded{board="t0"} 0.0' in text
    ratio = re.search(r'farm_board_performance_ratio\{board="t3"\} ([0-9.]+)', text)
    assert ratio and float(ratio.group(1)) == pytest.approx(1.5, rel=0.1)
