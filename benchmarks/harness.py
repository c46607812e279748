"""Benchmark: what the engine's measuring costs the thing it measures.

(a) Timing overhead. The engine's timed loop (``farm.engine.timing``) against a
    bare ``for`` loop under ``torch.inference_mode()`` on the same loaded model,
    same threads, garbage collector paused in both. Rounds of the two are
    interleaved (alternating which goes first) and medians taken, so drift and
    neighbours on the machine hit both alike. The engine's per-inference time is
    its own first-begin to last-end span over n; the bare loop's is its wall
    time over n. Figures ``engine_overhead_kws`` / ``engine_overhead_alexnet``.

(b) The per-layer pass. A full engine task per model: the sum of per-layer
    times (net of calibrated hook cost) against the hook-free whole-model median
    from the latency pass (``layer_sum_vs_whole_*``), and how much slower a
    hooked forward is than an unhooked one (``layer_pass_overhead_*``).

Run: ``python benchmarks/harness.py`` (about a minute here). Prints a table, then
one JSON line.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/farm.py sits beside this script: keep this folder off the import path,
# or `import farm` would import that script instead of the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import gc
import json
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

from farm import zoo
from farm.engine import artifact, stats
from farm.engine.request import parse_request
from farm.engine.runner import ModelCache, run_task
from farm.engine.timing import forward_fn, time_inferences

# model -> (inferences per round, rounds) for (a); (iterations, layer iterations) for (b)
OVERHEAD_PLAN = {"kws": (3000, 21), "alexnet": (20, 11)}
LAYER_PLAN = {"kws": (1000, 200), "svhn": (500, 100), "deepear": (500, 100), "alexnet": (60, 30)}


def bare_per_inference_ns(module: torch.nn.Module, x: torch.Tensor, n: int) -> float:
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        with torch.inference_mode():
            t0 = clock()
            for _ in range(n):
                module(x)
            t1 = clock()
    finally:
        gc.enable()
    return (t1 - t0) / n


def engine_per_inference_ns(module: torch.nn.Module, x: torch.Tensor, n: int) -> float:
    with torch.inference_mode():
        timed = time_inferences(forward_fn(module, x), n)
    return (timed.perf_end[-1] - timed.perf_begin[0]) / n


def timing_overhead(path: str, n: int, rounds: int) -> dict:
    loaded = artifact.load(path)
    module, x = loaded.module, loaded.example_input("cpu")
    with torch.inference_mode():
        for _ in range(max(5, n // 10)):
            module(x)
    engine, bare = [], []
    for r in range(rounds):
        pair = [(engine, engine_per_inference_ns), (bare, bare_per_inference_ns)]
        for samples, measure in pair if r % 2 == 0 else pair[::-1]:
            samples.append(measure(module, x, n))
    e, b = stats.median(engine), stats.median(bare)
    return {"n": n, "rounds": rounds, "engine_us": e / 1e3, "bare_us": b / 1e3,
            "overhead_pct": 100 * (e / b - 1)}  # fmt: skip


def layer_pass(path: str, iterations: int, layer_iterations: int) -> dict:
    request = {"artifact": path, "iterations": iterations, "warmup": 10,
               "layer_iterations": layer_iterations}  # fmt: skip
    result = run_task(parse_request(request), ModelCache(capacity=0))
    if result["status"] != "ok":
        raise SystemExit(f"engine task failed: {result['error']}")
    return {"latency": result["latency"], **result["layer_pass"]}


def main() -> None:
    console = Console(file=sys.stdout, width=130)
    threads = torch.get_num_threads()
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: str(zoo.export(name, cache_dir=tmp).path) for name in LAYER_PLAN}
        over = {m: timing_overhead(paths[m], *plan) for m, plan in OVERHEAD_PLAN.items()}
        lay = {m: layer_pass(paths[m], *plan) for m, plan in LAYER_PLAN.items()}

    t = Table(title=f"(a) engine timed loop vs bare loop ({threads} threads, medians)")
    for col in ("model", "n x rounds", "bare us/inf", "engine us/inf", "overhead %"):
        t.add_column(col, justify="right")
    for m, o in over.items():
        t.add_row(m, f"{o['n']} x {o['rounds']}", f"{o['bare_us']:.2f}",
                  f"{o['engine_us']:.2f}", f"{o['overhead_pct']:+.2f}")  # fmt: skip
        figures.append({"name": f"engine_overhead_{m}", "value": round(o["overhead_pct"], 3),
                        "target": "<= 1", "unit": "%"})  # fmt: skip
    console.print(t)

    t = Table(title="(b) per-layer pass: layer sum vs hook-free whole-model median")
    for col in ("model", "n / layer n", "whole ms", "layer sum ms", "sum/whole",
                "hooked fwd ms", "pass overhead %", "hook ns"):  # fmt: skip
        t.add_column(col, justify="right")
    for m, p in lay.items():
        whole = p["latency"]["median_ms"]
        t.add_row(m, f"{p['latency']['n']} / {p['iterations']}", f"{whole:.4f}",
                  f"{p['layer_sum_ms']:.4f}", f"{p['layer_sum_vs_latency']:.3f}",
                  f"{p['layer_whole_ms']:.4f}", f"{p['overhead_pct']:+.1f}",
                  str(p["hook_cost_ns"]))  # fmt: skip
        figures.append({"name": f"layer_sum_vs_whole_{m}",
                        "value": round(p["layer_sum_vs_latency"], 4),
                        "target": ">= 0.95, <= 1.05", "unit": "x"})  # fmt: skip
        figures.append({"name": f"layer_pass_overhead_{m}", "value": round(p["overhead_pct"], 2),
                        "unit": "%"})  # fmt: skip
    console.print(t)
    print(json.dumps({"benchmark": "farm", "figures": figures}))


if __name__ == "__main__":
    main()
