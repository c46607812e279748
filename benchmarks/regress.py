"""Benchmark: how far `farm compare` and `farm trend` can be trusted, and what they cost.

Samples are real: farm's engine times Deep KWS, the SVHN CNN and DeepEar on this
machine (one thread, ``SAMPLES`` inferences each; per-inference latencies read
back from the engine's markers, as `farm compare` reads them). Cells are then
drawn from those recordings by resampling:

(a) Error rates. Each round is one nightly comparison of ``CELLS`` cells of
    ``N`` samples a side: ``SHIFTED`` of them get B multiplied by 1.05 (a 5%
    median slowdown), the others are A/A (A and B drawn from the same
    recording). Verdicts come from ``farm.nightly.compare`` (Mann–Whitney,
    Benjamini–Hochberg across the cells, 5% threshold), detection also per model. ``aa_false_alarm_rate`` is the share of
    A/A cells given any verdict but unchanged; ``detection_5pct`` the share of
    shifted cells called a regression. The baseline on the same cells is a plain
    two-sided Welch t-test per cell at 0.05 (no correction, no threshold).
    ``aa_false_alarm_split_halves`` draws A from the first half of a recording and
    B from the second: real drift within a run on this machine, no target.

(b) Cost: the time to compare 1,000 cells of 1,000 samples a side (test,
    shift with its interval, correction, verdicts) against the t-test on the
    same arrays, interleaved, medians of ``TIMING_ROUNDS``.

(c) Trend: the share of stationary 30-night series where ``farm trend`` finds a
    change point at its chosen penalty, for Gaussian night-to-night noise (what
    the penalty was chosen on, target ≤ 1%) and for heavier-tailed nights
    (Student t, 4 d.o.f.), and the share of 8% steps it finds within a night.

Run: ``python benchmarks/regress.py`` (a few minutes here). Prints tables, then
one JSON line; exits 1 when a target is missed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/farm.py sits beside this script: keep this folder off the import path,
# or `import farm` would import that script instead of the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import json
import os
import tempfile
import time

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import stats as scipy_stats

from farm import zoo
from farm.engine.request import parse_request
from farm.engine.runner import ModelCache, run_task
from farm.nightly import compare, samples, trend

MODELS = ("kws", "svhn", "deepear")
SAMPLES = 4000  # recorded per model
N = 1000  # samples a side in a compared cell
CELLS = 1000  # cells per nightly comparison
SHIFTED = 100  # of which slowed down by SLOWDOWN
SLOWDOWN = 1.05
ROUNDS = 4
TIMING_ROUNDS = 5
NIGHTS = 30
TREND_SERIES = 2000


def record(console: Console) -> dict[str, np.ndarray]:
    """Per-inference latencies (ms) of each model, timed by farm's engine on this machine."""
    pools = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            path = str(zoo.export(name, cache_dir=tmp).path)
            request = {"artifact": path, "iterations": SAMPLES, "warmup": 50, "threads": 1,
                       "layers": False, "memory": False}  # fmt: skip
            result = run_task(parse_request(request), ModelCache(capacity=0))
            if result["status"] != "ok":
                raise SystemExit(f"engine task failed: {result['error']}")
            pools[name] = samples.latencies_ms(result["markers"])
            q = np.percentile(pools[name], [50, 90, 99])
            console.print(
                f"recorded {name}: {len(pools[name])} inferences, median {q[0]:.4f} ms,"
                f" p90 {q[1]:.4f}, p99 {q[2]:.4f}"
            )
    return pools


def farm_verdicts(a: list[np.ndarray], b: list[np.ndarray]) -> list:
    latency = compare.changes(list(zip(a, b, strict=True)), True, 0.95)
    return compare.judge(latency, [None] * len(a))


def ttest_regressions(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The baseline: a plain two-sided Welch t-test per cell; a regression if p < 0.05 and B
    is slower on average. Returns (is a regression, is any significant change)."""
    result = scipy_stats.ttest_ind(b, a, axis=1, equal_var=False)
    significant = result.pvalue < 0.05
    return np.stack([significant & (result.statistic > 0), significant])


def draw(rng, pools, cells: int, shifted: int, split: bool = False):
    names = [MODELS[i % len(MODELS)] for i in range(cells)]
    a, b = [], []
    for i, name in enumerate(names):
        pool = pools[name]
        half = len(pool) // 2
        src_a, src_b = (pool[:half], pool[half:]) if split else (pool, pool)
        a.append(rng.choice(src_a, N))
        b.append(rng.choice(src_b, N) * (SLOWDOWN if i < shifted else 1.0))
    return a, b


def error_rates(rng, pools) -> dict[str, float]:
    aa_farm = aa_t = det_farm = det_t = n_aa = n_det = 0
    split_alarms = split_cells = 0
    by_model = {m: [0, 0] for m in MODELS}  # detected, shifted
    for _ in range(ROUNDS):
        a, b = draw(rng, pools, CELLS, SHIFTED)
        verdicts = farm_verdicts(a, b)
        t_reg, t_any = ttest_regressions(np.array(a), np.array(b))
        shifted = np.arange(CELLS) < SHIFTED
        is_reg = np.array([v is compare.Verdict.REGRESSION for v in verdicts])
        not_unchanged = np.array([v is not compare.Verdict.UNCHANGED for v in verdicts])
        aa_farm += int(not_unchanged[~shifted].sum())
        aa_t += int(t_any[~shifted].sum())
        det_farm += int(is_reg[shifted].sum())
        det_t += int(t_reg[shifted].sum())
        n_aa += int((~shifted).sum())
        n_det += int(shifted.sum())
        for i in range(SHIFTED):
            by_model[MODELS[i % len(MODELS)]][0] += int(is_reg[i])
            by_model[MODELS[i % len(MODELS)]][1] += 1
        a, b = draw(rng, pools, CELLS, 0, split=True)
        split_alarms += sum(v is not compare.Verdict.UNCHANGED for v in farm_verdicts(a, b))
        split_cells += CELLS
    return {
        "aa_farm": aa_farm / n_aa,
        "aa_t": aa_t / n_aa,
        "det_farm": det_farm / n_det,
        "det_t": det_t / n_det,
        "split": split_alarms / split_cells,
        "n_aa": n_aa,
        "n_det": n_det,
        "by_model": {m: hit / max(n, 1) for m, (hit, n) in by_model.items()},
    }


def timing(rng, pools) -> dict[str, float]:
    a, b = draw(rng, pools, 1000, 0)
    arr_a, arr_b = np.array(a), np.array(b)
    ours, base = [], []
    for r in range(TIMING_ROUNDS):
        pair = [
            (ours, lambda: farm_verdicts(a, b)),
            (base, lambda: ttest_regressions(arr_a, arr_b)),
        ]
        for out, fn in pair if r % 2 == 0 else pair[::-1]:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return {"farm_s": float(np.median(ours)), "t_s": float(np.median(base))}


def trend_rates(rng) -> dict[str, float]:
    def alarms(noise) -> float:
        return float(
            np.mean([bool(trend.change_points(np.exp(noise()))) for _ in range(TREND_SERIES)])
        )

    gaussian = alarms(lambda: rng.normal(0, 0.02, NIGHTS))
    heavy = alarms(lambda: 0.02 * rng.standard_t(4, NIGHTS) / np.sqrt(2))
    found = 0
    for _ in range(TREND_SERIES // 4):
        x = np.exp(rng.normal(0, 0.02, NIGHTS))
        x[20:] *= 1.08
        found += any(abs(c - 20) <= 1 for c in trend.change_points(x))
    return {"gaussian": gaussian, "heavy": heavy, "step": found / (TREND_SERIES // 4)}


def main() -> int:
    console = Console(file=sys.stdout, width=130)
    rng = np.random.default_rng(20261128)
    load_before = os.getloadavg()[0]
    pools = record(console)
    rates = error_rates(rng, pools)
    times = timing(rng, pools)
    trends = trend_rates(rng)
    load = max(load_before, os.getloadavg()[0])

    t = Table(title=f"(a) verdicts on resampled real latencies: {CELLS} cells x {ROUNDS} rounds,"
              f" n = {N} a side (load average {load:.1f})")  # fmt: skip
    for col in ("", "A/A false alarms", "5% slowdowns detected", "A/A split halves"):
        t.add_column(col, justify="right")
    t.add_row("farm compare (MWU + HL, BH, 5%)", f"{100 * rates['aa_farm']:.2f}%",
              f"{100 * rates['det_farm']:.1f}%", f"{100 * rates['split']:.2f}%")  # fmt: skip
    t.add_row(
        "plain t-test (p < 0.05)", f"{100 * rates['aa_t']:.2f}%", f"{100 * rates['det_t']:.1f}%", ""
    )
    console.print(t)
    console.print(
        "5% slowdowns detected, by model: "
        + ", ".join(f"{m} {100 * r:.1f}%" for m, r in rates["by_model"].items())
    )
    t = Table(title="(b) time to compare 1,000 cells x 1,000 samples a side (median)")
    for col in ("farm compare s", "t-test s", "ratio"):
        t.add_column(col, justify="right")
    t.add_row(
        f"{times['farm_s']:.3f}", f"{times['t_s']:.3f}", f"{times['farm_s'] / times['t_s']:.1f}x"
    )
    console.print(t)
    t = Table(title=f"(c) trend: {NIGHTS}-night series, penalty {trend.PENALTY:g}")
    for col in ("false alarms, Gaussian", "false alarms, t(4)", "8% steps found"):
        t.add_column(col, justify="right")
    t.add_row(f"{100 * trends['gaussian']:.2f}%", f"{100 * trends['heavy']:.2f}%",
              f"{100 * trends['step']:.1f}%")  # fmt: skip
    console.print(t)

    figures = [
        {"name": "aa_false_alarm_rate", "value": round(rates["aa_farm"], 5), "target": "<= 0.01", "unit": "share"},
        {"name": "detection_5pct", "value": round(rates["det_farm"], 4), "target": ">= 0.95", "unit": "share"},
        {"name": "compare_1000x1000", "value": round(times["farm_s"], 3), "target": "<= 2", "unit": "s"},
        {"name": "ttest_aa_false_alarm_rate", "value": round(rates["aa_t"], 5), "unit": "share"},
        {"name": "ttest_detection_5pct", "value": round(rates["det_t"], 4), "unit": "share"},
        {"name": "ttest_1000x1000", "value": round(times["t_s"], 4), "unit": "s"},
        *({"name": f"detection_5pct_{m}", "value": round(r, 4), "unit": "share"}
          for m, r in rates["by_model"].items()),
        {"name": "aa_false_alarm_split_halves", "value": round(rates["split"], 5), "unit": "share"},
        {"name": "trend_false_alarm_rate", "value": round(trends["gaussian"], 4), "target": "<= 0.01", "unit": "share"},
        {"name": "trend_false_alarm_rate_t4", "value": round(trends["heavy"], 4), "unit": "share"},
        {"name": "trend_detection_8pct_step", "value": round(trends["step"], 4), "unit": "share"},
        {"name": "load_average", "value": round(load, 2), "unit": "1-min"},
    ]  # fmt: skip
    print(json.dumps({"benchmark": "farm", "figures": figures}))
    missed = (
        rates["aa_farm"] > 0.01
        or rates["det_farm"] < 0.95
        or times["farm_s"] > 2
        or trends["gaussian"] > 0.01
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
