"""Benchmark: does the engine report what the model did?

(a) Latency. The engine's reported median (a real ``run_task``, latency pass
    only, the model kept warm in its cache) against the median of a plain
    ``perf_counter`` loop over the same module and input, at the same threads,
    garbage collector paused in both. Blocks of the two alternate in one process
    (which goes first alternates too), so drift and neighbours hit both alike.
    Figure ``median_vs_plain_<model>``: |r − 1| in %, r the median over block
    pairs of the engine's median over the plain block's next to it (a pair ran
    back to back, so the machine's drift between pairs cancels), target ≤ 1 for
    the zoo. Besides the zoo, two users' models given as ``module:`` models
    (``benchmarks/users/benchnets.py``): a residual CNN with functional ReLUs and a
    skip addition, and a two-layer ``nn.TransformerEncoder``. The engine runs the
    user's eager code from the package it shipped (``model_form`` must say
    ``eager``, ``env.model_class`` the user's class, or the run stops), the plain
    loop the same model as its user builds it (their factory, the same seed), at
    the threads the engine task set; target ≤ 3.

(b) Per-layer shares. The engine's layer pass at the job's default layer
    iterations (20) against a hook-free reference: prefix differencing, i.e. the
    zoo graph cut after each node, every prefix timed without hooks, round
    robin, each right after an untimed forward of the whole model (so every
    prefix starts from the caches a forward leaves, as the engine's forwards
    do); the graph's own entry/exit is a one-identity graph minus the identity
    called alone, the first layer the first prefix minus that, and layer k's
    time prefix k minus prefix k−1. Both sides take
    the mean of the faster half of their forwards (``fast_mean``). Engine tasks and
    reference rounds alternate. Figure ``share_error_<model>``: the largest
    absolute difference in share over the layers, in points, target ≤ 3; and
    the engine's own layer sum against its interleaved unhooked forwards,
    ``layer_sum_vs_whole_<model>``, target within 5%.

(c) The load average before and after (``load_before_1m``/``load_after_1m``):
    on a busy machine (load near or above the core count) the targets are not
    expected to hold, and the figures say why.

Run: ``python benchmarks/harness.py`` (a few minutes). ``--only m1,m2`` runs those
models' parts alone (e.g. ``--only user_transformer,user_resnet``); ``--threads N``
sets the engine's (and so the plain loop's) intra-op threads, default one per usable
CPU. Prints tables, then one JSON line; exits 1 when a target is missed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/farm.py sits beside this script: keep this folder off the import path,
# or `import farm` would import that script instead of the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import gc
import json
import os
import tempfile
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from farm import zoo
from farm.engine import artifact, package, stats
from farm.engine.layers import GRAPH_ROW, fast_mean
from farm.engine.request import parse_request
from farm.engine.runner import ModelCache, run_task
from farm.spec.job import ModelRef

# model -> (inferences per block, blocks) for (a); the last two are users' models given
# as ``module:`` models (model_form "eager"): the plain loop runs the user's own module
LATENCY_PLAN = {"kws": (400, 100), "svhn": (100, 60), "alexnet": (10, 30),
                "user_transformer": (200, 40), "user_resnet": (200, 40)}  # fmt: skip
# |engine / plain - 1| in % for (a): the zoo's, and users' models'
ZOO_TARGET_PCT, USER_TARGET_PCT = 1.0, 3.0
# model -> (engine tasks = reference rounds, forwards of each prefix per round) for (b)
SHARE_PLAN = {"kws": (60, 60), "svhn": (15, 30), "deepear": (20, 40), "alexnet": (4, 8)}
LAYER_ITERATIONS = 20  # the job's default (farm.spec: measure.layer_iterations)


def _plain_block(run_once: Callable[[], object], n: int) -> list[float]:
    """One inference at a time between two perf_counter reads: the reference loop."""
    clock = time.perf_counter
    out = [0.0] * n
    gc.collect()
    gc.disable()
    try:
        with torch.inference_mode():
            for i in range(n):
                t0 = clock()
                run_once()
                out[i] = clock() - t0
    finally:
        gc.enable()
    return [x * 1e3 for x in out]


def latency(
    path: str, n: int, blocks: int, threads: int | None, own: nn.Module | None = None
) -> dict:
    """The engine's median against a plain loop over ``own`` (the model as its user
    built it), or else the module the engine loaded."""
    cache = ModelCache(capacity=1)
    request = parse_request({"artifact": path, "iterations": n, "warmup": 5, "layers": False,
                             "memory": False, "threads": threads})  # fmt: skip
    engine_medians, plain_medians, forms, classes = [], [], set(), set()
    loaded, _ = cache.get(path, torch.device("cpu"))
    x = loaded.example_input("cpu")
    reference_module = own if own is not None else loaded.module
    for block in range(blocks):

        def engine() -> None:
            result = run_task(request, cache)
            if result["status"] != "ok":
                raise SystemExit(f"engine task failed: {result['error']}")
            engine_medians.append(result["latency"]["median_ms"])
            forms.add(result["model_form"])
            classes.add(result["env"]["model_class"])

        def reference() -> None:  # same threads: the engine task just set them
            plain_medians.append(stats.median(_plain_block(lambda: reference_module(x), n)))

        for step in (engine, reference) if block % 2 == 0 else (reference, engine):
            step()
    # each block's engine median over its neighbour plain block's: the pair ran back to
    # back, so a drift of the machine's speed between blocks cancels in the ratio
    ratios = [e / p for e, p in zip(engine_medians, plain_medians, strict=True)]
    ratio = stats.median(ratios)
    e, p = stats.median(engine_medians), stats.median(plain_medians)
    return {"n": n, "blocks": blocks, "engine_ms": e, "plain_ms": p,
            "error_pct": 100 * abs(ratio - 1), "threads": torch.get_num_threads(),
            "form": "/".join(sorted(forms)), "model_class": "/".join(sorted(classes)),
            "plain_class": f"{type(reference_module).__module__}."
                           f"{type(reference_module).__qualname__}"}  # fmt: skip


# model -> (factory in benchmarks/users/benchnets.py, input shape)
USER_MODELS = {"user_transformer": ("benchnets:transformer", [1, 16, 64]),
               "user_resnet": ("benchnets:Residual", [1, 3, 32, 32])}  # fmt: skip


def _user_artifacts(folder: str, names: set[str]) -> dict[str, tuple[str, nn.Module]]:
    """Each user's model exported as ``farm submit`` exports a ``module:`` model, and the
    same model as the user builds it (their factory, the export's seed 0): the reference."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "users"))
    out = {}
    for name, (factory, shape) in USER_MODELS.items():
        if name in names:
            ref = zoo.export(
                ModelRef(name=name, module=factory, input_shape=shape), cache_dir=folder
            )
            own = package.seeded_call(package.resolve(factory), {}, 0).eval()
            out[name] = (str(ref.path), own)
    return out


def _prefixes(module: artifact.GraphModule) -> list[nn.Module]:
    """The graph cut after each node (index k: the first k+1 nodes), plus the empty graph."""
    steps = [(name, module._modules[name], source) for name, source in module._steps]
    cuts = [artifact.GraphModule(steps[: k + 1], inputs=module.inputs) for k in range(len(steps))]
    return [artifact.GraphModule([("noop", nn.Identity(), module.inputs[0])]), *cuts]


def _reference_round(
    whole: nn.Module, prefixes: list[nn.Module], x: torch.Tensor, reps: int
) -> list[list[int]]:
    """``reps`` hook-free forwards of every prefix, round robin; ns per prefix.

    Each timed prefix follows an untimed forward of the whole model, so it starts from
    the caches a forward of the model leaves behind, as every forward of the engine's
    passes does; timed right after the previous (shorter) prefix, a layer would find
    the next one's weights evicted or not, depending on its neighbours in the round.
    A prefix's output is freed after the clock is read: in a forward a layer's output
    is freed by the graph right after its last reader ran, inside that reader's time
    (the engine's convention too), so prefix k less prefix k−1 is layer k plus
    freeing its input, never plus freeing its own output.
    """
    clock = time.perf_counter_ns
    identity = nn.Identity()
    times: list[list[int]] = [[] for _ in range(len(prefixes) + 1)]
    gc.collect()
    gc.disable()
    try:
        with torch.inference_mode():
            for _ in range(reps):
                whole(x)
                t0 = clock()
                identity(x)
                times[0].append(clock() - t0)
                for k, prefix in enumerate(prefixes):
                    whole(x)
                    t0 = clock()
                    out = prefix(x)
                    t1 = clock()
                    del out  # freed after the clock: see the docstring
                    times[k + 1].append(t1 - t0)
    finally:
        gc.enable()
    return times


def shares(path: str, tasks: int, reps: int, threads: int | None = None) -> dict:
    loaded = artifact.load(path)
    x = loaded.example_input("cpu")
    prefixes = _prefixes(loaded.module)
    request = parse_request({"artifact": path, "iterations": 10, "warmup": 3, "memory": False,
                             "layer_iterations": LAYER_ITERATIONS, "threads": threads})  # fmt: skip
    cache = ModelCache(capacity=1, loader=lambda _p: loaded)
    engine_rows: list[list[dict]] = []
    ratios: list[float] = []
    ref: list[list[int]] = [[] for _ in range(len(prefixes) + 1)]
    for t in range(tasks):

        def engine() -> None:
            result = run_task(request, cache)
            if result["status"] != "ok":
                raise SystemExit(f"engine task failed: {result['error']}")
            engine_rows.append(result["layers"])
            ratios.append(result["layer_pass"]["layer_sum_vs_whole"])

        def reference() -> None:
            for k, values in enumerate(_reference_round(loaded.module, prefixes, x, reps)):
                ref[k].extend(values)

        for step in (engine, reference) if t % 2 == 0 else (reference, engine):
            step()
    # the same statistic the engine uses: another process only ever adds time
    med = [fast_mean(v) for v in ref]  # identity, empty graph, prefix 1..n
    # the graph's own entry/exit: the one-identity graph less the identity's own call;
    # the first layer is the first prefix less that (not less the one-identity graph,
    # which would take an identity's call from it), every later one prefix k - (k-1)
    graph_ns = max(0.0, med[1] - med[0])
    layer_ns = [med[2] - graph_ns] + [med[k + 2] - med[k + 1] for k in range(1, len(prefixes) - 1)]
    whole = med[-1]
    names = [row["name"] for row in engine_rows[0]]
    reference_share = {name: ns / whole for name, ns in zip(names[:-1], layer_ns, strict=True)}
    reference_share[GRAPH_ROW] = graph_ns / whole
    engine_share = {
        name: stats.median([rows[i]["share"] for rows in engine_rows])
        for i, name in enumerate(names)
    }
    diffs = {name: 100 * (engine_share[name] - reference_share[name]) for name in names}
    worst = max(diffs, key=lambda name: abs(diffs[name]))
    return {"tasks": tasks, "reps": reps, "engine": engine_share, "reference": reference_share,
            "diff_points": diffs, "worst": worst, "max_abs_points": abs(diffs[worst]),
            "ratio": stats.median(ratios), "whole_ms": whole / 1e6,
            "engine_us": {name: 1e3 * stats.median([rows[i]["time_ms"] for rows in engine_rows])
                          for i, name in enumerate(names)},
            "reference_us": {name: ns / 1e3 for name, ns in
                             zip([*names[:-1], GRAPH_ROW], [*layer_ns, graph_ns], strict=True)},
            "engine_whole_us": 1e3 * stats.median([sum(r["time_ms"] for r in rows)
                                                   for rows in engine_rows])}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", help="comma-separated models (default: every model)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: engine's)")
    args = parser.parse_args()
    every = {*LATENCY_PLAN, *SHARE_PLAN}
    chosen = set(args.only.split(",")) if args.only else every
    if chosen - every:
        parser.error(f"unknown models {sorted(chosen - every)}; choose from {sorted(every)}")
    console = Console(file=sys.stdout, width=130)
    load_before = os.getloadavg()
    figures: list[dict] = []
    missed: list[str] = []

    def figure(name: str, value: float, target: str, unit: str, ok: bool | None) -> None:
        figures.append({"name": name, "value": round(value, 4), "target": target, "unit": unit})
        if ok is False:
            missed.append(name)

    with tempfile.TemporaryDirectory() as tmp:
        users = _user_artifacts(tmp, chosen)
        paths = {m: str(zoo.export(m, cache_dir=tmp).path) for m in chosen - set(users)}
        paths.update({name: path for name, (path, _) in users.items()})
        own = {name: module for name, (_, module) in users.items()}
        lat = {m: latency(paths[m], *plan, args.threads, own.get(m))
               for m, plan in LATENCY_PLAN.items() if m in chosen}  # fmt: skip
        sh = {m: shares(paths[m], *plan, args.threads)
              for m, plan in SHARE_PLAN.items() if m in chosen}  # fmt: skip
    load_after = os.getloadavg()

    t = Table(title="(a) the engine's reported median vs a plain perf_counter loop, interleaved")
    for col in ("model", "form", "n x blocks", "threads", "plain ms", "engine ms", "|diff| %"):
        t.add_column(col, justify="right")
    for m, r in lat.items():
        t.add_row(m, r["form"], f"{r['n']} x {r['blocks']}", str(r["threads"]),
                  f"{r['plain_ms']:.4f}", f"{r['engine_ms']:.4f}", f"{r['error_pct']:.2f}")  # fmt: skip
        if m in USER_MODELS and (r["form"], r["model_class"]) != ("eager", r["plain_class"]):
            raise SystemExit(f"{m}: the engine timed {r['form']} {r['model_class']}, "
                             f"not the user's eager {r['plain_class']}")  # fmt: skip
        target = USER_TARGET_PCT if m in USER_MODELS else ZOO_TARGET_PCT
        ok = r["error_pct"] <= target
        figure(f"median_vs_plain_{m}", r["error_pct"], f"<= {target:g}", "%", ok)
    if lat:
        console.print(t)
        figure("threads", float(next(iter(lat.values()))["threads"]), "", "threads", None)

    for m, r in sh.items():
        t = Table(title=f"(b) {m}: per-layer share, engine (layer iterations {LAYER_ITERATIONS}, "
                        f"median of {r['tasks']} tasks) vs prefix differencing")  # fmt: skip
        for col in ("layer", "engine µs", "reference µs", "engine %", "reference %",
                    "diff points"):  # fmt: skip
            t.add_column(col, justify="right")
        for name, diff in r["diff_points"].items():
            t.add_row(name, f"{r['engine_us'][name]:.2f}", f"{r['reference_us'][name]:.2f}",
                      f"{100 * r['engine'][name]:.2f}", f"{100 * r['reference'][name]:.2f}",
                      f"{diff:+.2f}")  # fmt: skip
        t.add_row("whole", f"{r['engine_whole_us']:.2f}", f"{1e3 * r['whole_ms']:.2f}", "", "", "")
        console.print(t)
        figure(f"share_error_{m}", r["max_abs_points"], "<= 3", "points", r["max_abs_points"] <= 3)
        ok = abs(r["ratio"] - 1) <= 0.05
        figure(f"layer_sum_vs_whole_{m}", r["ratio"], ">= 0.95, <= 1.05", "x", ok)

    figure("load_before_1m", load_before[0], "", "load", None)
    figure("load_after_1m", load_after[0], "", "load", None)
    figure("cpus", float(os.cpu_count() or 1), "", "CPUs", None)
    console.print(
        f"(c) load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f},"
        f" after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
        f" on {os.cpu_count()} CPUs"
        + (f"; missed: {', '.join(missed)}" if missed else "; every target met")
    )
    print(json.dumps({"benchmark": "farm", "figures": figures}))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
