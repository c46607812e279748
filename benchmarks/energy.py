"""Trace-processing throughput and peak memory for a one-hour 5 kHz trace.

Builds a one-hour synthetic capture (18 M samples) from fake task markers
(~140 k inferences), stores it as a .npy file, then in fresh subprocesses
(so each peak is its own) loads it and processes it:

- ``stream``: ``farm.power.analyze`` over the trace (marker parsing, pulse sync,
  per-inference windows, idle baseline, quality), integrated in chunks;
- ``baseline``: ``numpy.trapezoid(p, dx=1/rate)`` over the same samples, the
  fastest way numpy has to the total energy (no time array, nothing but the
  trace in memory); it answers a smaller question (one total, no windows, no
  sync, no dropped samples), so it bounds what a trace pass can cost.

The two alternate for ``ROUNDS`` rounds, each run in a fresh subprocess so each
peak is its own; the medians are reported. Throughput is samples / wall second
on one core (OMP/BLAS threads pinned to 1); peak memory is tracemalloc's peak
over loading *and* processing (numpy reports its buffers to tracemalloc), so it
includes the 72 MB float32 trace. Prints a rich table and one JSON line; exits 1
when a target is missed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/farm.py sits beside this script: keep this folder off the import path,
# or `import farm` would import that script instead of the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import json
import os
import subprocess
import tempfile
import time

RATE = 5000.0
ROUNDS = 3
HOUR_S = 3600.0
T0 = 1_000_000_000


def _child(mode: str, workdir: str) -> dict:
    import tracemalloc

    import numpy as np

    from farm.power import Trace, analyze

    markers = json.loads((Path(workdir) / "markers.json").read_text())
    tracemalloc.start()  # the peak includes the trace itself (float32, 72 MB for an hour)
    power = np.load(Path(workdir) / "power.npy")
    started = time.perf_counter()
    if mode == "stream":
        trace = Trace(power_w=power, rate_hz=RATE, t0_host_ns=T0, source="synthetic")
        report = analyze(trace, markers, None)
        value = report["energy_per_inference_mj"]["gross"]["mean"]
    else:
        trapezoid = getattr(np, "trapezoid", None) or np.trapz
        value = float(trapezoid(power, dx=1.0 / RATE))
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    return {"samples": len(power), "seconds": elapsed, "peak_mb": peak / 2**20, "value": value}


def _prepare(workdir: Path) -> int:
    import numpy as np

    from farm.power.synthetic import PowerModel, fake_task_markers, synthesize

    iterations = int((HOUR_S - 4) / 0.025)
    markers = fake_task_markers(start_ns=T0 + 1_000_000_000, iterations=iterations)
    model = PowerModel(noise_w=0.05, offset_s=0.0031, drift_ppm=40)
    trace = synthesize(model, markers, t0_host_ns=T0, duration_s=HOUR_S)
    np.save(workdir / "power.npy", trace.power_w)
    (workdir / "markers.json").write_text(json.dumps(markers))
    return len(trace)


def _run_child(mode: str, workdir: Path) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(workdir)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median_run(runs: list[dict]) -> dict:
    """The run of median duration, with the largest peak of all (memory is a ceiling)."""
    ranked = sorted(runs, key=lambda r: r["seconds"])
    return {**ranked[len(ranked) // 2], "peak_mb": max(r["peak_mb"] for r in runs)}


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        n = _prepare(workdir)
        console.print(
            f"prepared a one-hour trace: {n:,} samples in {time.perf_counter() - started:.1f}s"
        )
        runs: dict[str, list[dict]] = {"stream": [], "baseline": []}
        load_before = os.getloadavg()
        for r in range(ROUNDS):
            for mode in ("stream", "baseline") if r % 2 == 0 else ("baseline", "stream"):
                runs[mode].append(_run_child(mode, workdir))
        load_after = os.getloadavg()
        stream, base = _median_run(runs["stream"]), _median_run(runs["baseline"])

    table = Table(title="energy: one-hour 5 kHz trace, one core")
    for col in ("method", "samples", "seconds", "samples/s", "peak MB"):
        table.add_column(col, justify="right")
    for name, r in (("farm.power.analyze (stream)", stream), ("numpy.trapezoid (baseline)", base)):
        table.add_row(
            name,
            f"{r['samples']:,}",
            f"{r['seconds']:.2f}",
            f"{r['samples'] / r['seconds']:,.0f}",
            f"{r['peak_mb']:.1f}",
        )
    console.print(table)
    console.print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    ratio = (stream["samples"] / stream["seconds"]) / (base["samples"] / base["seconds"])
    figures = [
        {
            "name": "analyze_throughput",
            "value": round(stream["samples"] / stream["seconds"]),
            "target": ">= 10000000",
            "unit": "samples/s",
        },
        {
            "name": "trapezoid_throughput_baseline",
            "value": round(base["samples"] / base["seconds"]),
            "target": "",
            "unit": "samples/s",
        },
        {
            "name": "analyze_peak_memory_1h",
            "value": round(stream["peak_mb"], 1),
            "target": "<= 200",
            "unit": "MB",
        },
        {
            "name": "trapezoid_peak_memory_1h_baseline",
            "value": round(base["peak_mb"], 1),
            "target": "",
            "unit": "MB",
        },
        {"name": "analyze_vs_trapezoid_throughput", "value": round(ratio, 3), "target": "",
         "unit": "x"},
        {"name": "load_before_1m", "value": round(load_before[0], 2), "target": "", "unit": "load"},
        {"name": "load_after_1m", "value": round(load_after[0], 2), "target": "", "unit": "load"},
    ]  # fmt: skip
    print(json.dumps({"benchmark": "farm", "figures": figures}))
    missed = stream["samples"] / stream["seconds"] < 10_000_000 or stream["peak_mb"] > 200
    return 1 if missed else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], sys.argv[3])))
    else:
        raise SystemExit(main())
