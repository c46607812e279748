"""Benchmark: each runtime through farm, against its own API, and against eager.

For kws and alexnet, at 1 and 2 threads, every (runtime, precision) cell farm can
measure — eager fp32, ONNX Runtime fp32 and int8 (static QDQ, Conv/Gemm/MatMul),
ExecuTorch XNNPACK fp32 and int8 (PT2E static per-channel), AOTInductor fp32 and
int8 (PT2E, X86InductorQuantizer; the "export s" column is its g++ compile) — as exported by
`farm.export` (made once, cached in ``~/.cache/farm/bench-runtimes``).

(a) The engine adds nothing. Blocks of farm's engine (a real ``run_task``, latency
    pass only, the model warm in its cache) and of a plain ``perf_counter`` loop
    over the runtime's own API (``InferenceSession.run``, the ExecuTorch module's
    ``forward``, the AOTInductor package's runner, the torch module under
    ``inference_mode``; garbage collector paused in both) on the same loaded model
    (AOTInductor: a second load of its package) alternate in one process, which goes
    first alternating too. What farm's loop adds is its per-inference CPU-time
    reads (docs/internals.md, "What the timed loop adds").
    Figure ``engine_vs_plain_<model>_<runtime>_<precision>_t<threads>``: |r − 1| in %,
    r the median over block pairs of farm's median over the plain loop's; target ≤ 2.
(b) Every runtime's ratio to eager (farm's medians, same threads, same process),
    printed; targets: ONNX Runtime fp32 ≤ 0.5× eager on kws at 1 thread, ExecuTorch
    int8 ≤ 0.5× eager on alexnet at 1 thread.
(c) The load average before and after: on a machine busier than its cores the
    targets are not expected to hold, and the figures say why.

ExecuTorch's thread pool is sized once per process, so each thread count runs in a
child process of its own (``--child N``). Run: ``python benchmarks/runtimes.py``
(``--models kws`` for the quick part; ``--blocks``, ``--threads 1,2``). Prints a table
and one JSON line; exits 1 when a target is missed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/farm.py sits beside this script: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

CELLS = [
    ("eager", "fp32"),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
    ("executorch", "fp32"),
    ("executorch", "int8"),
    ("aoti", "fp32"),
    ("aoti", "int8"),
]
ITERATIONS = {"kws": 400, "alexnet": 24, "svhn": 200, "deepear": 200}
CACHE = Path("~/.cache/farm/bench-runtimes").expanduser()


def plain_loop(run_once: Callable[[], Any], n: int, mode: Any = None) -> float:
    """Median ms of ``n`` calls, each timed on its own, collector paused, inside ``mode``
    (torch's inference mode for eager, entered once around the loop as the engine does)."""
    clock = time.perf_counter_ns
    times = [0] * n
    gc.collect()
    gc.disable()
    try:
        with mode if mode is not None else contextlib.nullcontext():
            for i in range(n):
                t0 = clock()
                run_once()
                times[i] = clock() - t0
    finally:
        gc.enable()
    return statistics.median(times) / 1e6


def own_api(runtime: str, path: Path, cache: Any) -> Callable[[], Any]:
    """One inference through the runtime's own API, called here, not by farm's loop, on
    the very model farm's cache holds (ORT's ``InferenceSession``, ExecuTorch's module,
    the torch module): two loads of one model differ by their memory placement, and on
    kws two ORT sessions built alike run 0.3-1.8% apart, as much as the target."""
    import torch

    from farm.engine import bundle, runtimes

    manifest = bundle.read_manifest(path)
    if runtime == "eager":
        model, fresh = cache.get(str(path), torch.device("cpu"))
        assert not fresh, "farm's run loaded it first"
        x = model.example_input("cpu")
        module = model.module
        return lambda: module(x)  # plain_loop enters inference mode around the loop
    session, fresh = cache.session(str(path), runtimes.get(runtime), manifest)
    assert not fresh, "farm's run loaded it first"
    inputs = bundle.example_inputs(manifest)
    if runtime == "onnxruntime":
        ort_session = session.handle
        feed = {ort_session.get_inputs()[0].name: inputs[0]}
        return lambda: ort_session.run(None, feed)
    if runtime == "aoti":  # its session gives no handle: the package loaded a second time
        from torch._inductor import aoti_load_package

        runner = aoti_load_package(bundle.extract(path, "model.pt2"))
        aoti_args = tuple(torch.from_numpy(a) for a in inputs)
        return lambda: runner(*aoti_args)
    forward = session.handle.forward
    args = tuple(torch.from_numpy(a) for a in inputs)
    return lambda: forward(args)


def child(threads: int, models: list[str], blocks: int, cache_dir: Path) -> list[dict]:
    """One thread count, every cell, farm and plain blocks interleaved."""
    import torch

    from farm import export
    from farm.engine import runtimes
    from farm.engine.request import parse_request
    from farm.engine.runner import ModelCache, run_task

    runtimes.get("executorch").set_threads(threads)  # before any program is loaded
    rows = []
    for model in models:
        n = ITERATIONS[model]
        cells = []
        for runtime, precision in CELLS:
            made = export.export(model, runtime=runtime, precision=precision, cache_dir=cache_dir)
            cache = ModelCache(capacity=1)
            request = parse_request({
                "artifact": str(made.path), "runtime": runtime, "precision": precision,
                "threads": threads, "iterations": n, "warmup": 3, "layers": False,
                "memory": False,
            })  # fmt: skip
            first = run_task(request, cache)  # loads it; warm from here on
            if first["status"] != "ok":
                raise SystemExit(f"{model} {runtime} {precision}: {first['error']}")
            plain = own_api(runtime, made.path, cache)
            with torch.inference_mode():
                for _ in range(3):
                    plain()
            cells.append((runtime, precision, request, cache, plain, made))
        results: dict[tuple, dict[str, list[float]]] = {
            (c[0], c[1]): {"farm": [], "plain": []} for c in cells
        }
        for block in range(blocks):
            for runtime, precision, request, cache, plain, _ in cells:
                sides = ["farm", "plain"] if block % 2 == 0 else ["plain", "farm"]
                for side in sides:
                    if side == "farm":
                        r = run_task(request, cache)
                        results[(runtime, precision)]["farm"].append(r["latency"]["median_ms"])
                    else:
                        mode = torch.inference_mode() if runtime == "eager" else None
                        results[(runtime, precision)]["plain"].append(plain_loop(plain, n, mode))
        eager = statistics.median(results[("eager", "fp32")]["farm"])
        for runtime, precision, *_, made in cells:
            got = results[(runtime, precision)]
            pairs = [f / p for f, p in zip(got["farm"], got["plain"], strict=True)]
            farm_ms = statistics.median(got["farm"])
            rows.append({
                "model": model, "threads": threads, "runtime": runtime,
                "precision": precision, "farm_ms": farm_ms,
                "plain_ms": statistics.median(got["plain"]),
                "engine_vs_plain": statistics.median(pairs),
                "vs_eager": farm_ms / eager,
                "agreement": made.agreement, "export_s": made.export_s,
                "size_bytes": made.size_bytes,
            })  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="kws,alexnet")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--cache", default=str(CACHE), help="where the exports are kept")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = args.models.split(",")
    if args.child is not None:
        print(json.dumps(child(args.child, models, args.blocks, Path(args.cache))))
        return 0
    load_before = os.getloadavg()[0]
    rows: list[dict] = []
    for threads in (int(t) for t in args.threads.split(",")):
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(threads), "--models", args.models,
             "--blocks", str(args.blocks), "--cache", args.cache],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 2
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    load_after = os.getloadavg()[0]
    print(f"{'model':8} {'thr':>3} {'runtime':12} {'prec':5} {'farm ms':>10} {'plain ms':>10} "
          f"{'farm/plain':>10} {'x eager':>8} {'top1':>6} {'max|diff|':>9} {'export s':>8} {'MB':>6}")  # fmt: skip
    figures = []
    for r in rows:
        agreement = r["agreement"] or {}
        print(f"{r['model']:8} {r['threads']:>3} {r['runtime']:12} {r['precision']:5} "
              f"{r['farm_ms']:>10.4f} {r['plain_ms']:>10.4f} {r['engine_vs_plain']:>10.3f} "
              f"{r['vs_eager']:>8.2f} {agreement.get('top1', 1.0):>6.2f} "
              f"{agreement.get('max_abs_diff', 0.0):>9.1e} {r['export_s'] or 0:>8.1f} "
              f"{r['size_bytes'] / 2**20:>6.1f}")  # fmt: skip
        name = f"{r['model']}_{r['runtime']}_{r['precision']}_t{r['threads']}"
        figures.append({"name": f"engine_vs_plain_{name}", "unit": "%", "target": "<= 2",
                        "value": round(abs(r["engine_vs_plain"] - 1) * 100, 2)})  # fmt: skip
        figures.append({"name": f"vs_eager_{name}", "unit": "x", "value": round(r["vs_eager"], 3)})
    for f in figures:
        if f["name"] in ("vs_eager_kws_onnxruntime_fp32_t1", "vs_eager_alexnet_executorch_int8_t1"):
            f["target"] = "<= 0.5"
    figures += [
        {"name": "load_before_1m", "value": round(load_before, 2), "unit": "load"},
        {"name": "load_after_1m", "value": round(load_after, 2), "unit": "load"},
    ]
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    missed = [f["name"] for f in figures if "target" in f and f["value"] > float(f["target"][3:])]
    if missed:
        print("missed: " + ", ".join(missed))
    print(json.dumps({"benchmark": "farm", "figures": figures}))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
