"""The ExecuTorch C++ runner and a torch-free board, measured.

Three comparisons, each interleaved round by round so a busy machine slows both
sides alike (the load average is recorded before and after):

1. **The runner's timing adds nothing.** farm's C++ runner (farm/engine/native)
   times each inference between two CLOCK_MONOTONIC readings. ExecuTorch's own
   timing would be ETDump's, but the executorch wheel's runtime is compiled without
   the event tracer (no ETDump from it at all, see docs/internals.md), so the
   reference is ExecuTorch's ``Method::execute`` in a bare loop in the same runner
   process, timed as a whole (``bare 10``: ten inferences between two readings).
   Target: the median per-inference time within 5% of the median of the bare
   blocks' means, kws fp32 and int8, 1 thread.
2. **C++ against Python.** The same kws .pte through ExecuTorch's Python bindings
   (a loop over ``forward`` timed with ``perf_counter_ns``) and through the runner,
   1 thread. Target: the runner no slower (ratio ≤ 1).
3. **A torch-free board's memory.** AlexNet's peak RSS as farm's engine reads it
   (the larger of its load and inference peaks, VmHWM), one task of 5 inferences
   run as a board runs it (``python3 <engine>.zip run``): ONNX Runtime in the test
   bed's torch-free venv (onnxruntime + numpy, no torch) against eager in this
   Python. Target: ≤ 0.75× eager.

Prints a table, then one JSON line; exits 1 when a target is missed.
Run: ``python3 benchmarks/native.py`` (needs `deploy/install.sh`'s torch-free venv).
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/farm.py sits beside this script: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import json
import os
import statistics
import subprocess
import tempfile

ROUNDS = 7
PER_ROUND = {"fp32": 400, "int8": 1000}
RSS_ROUNDS = 3
BARE_BLOCK = 10

_PY_ET_CHILD = """
import statistics, sys, time
from executorch.extension.pybindings import portable_lib as pl
pl._unsafe_reset_threadpool(1)  # first: before any program is loaded
import numpy as np, torch
program = open(sys.argv[1], "rb").read()  # kept alive: the module reads from it
module = pl._load_for_executorch_from_buffer(program)
args = (torch.from_numpy(np.fromfile(sys.argv[2], dtype=np.float32).reshape(1, 40, 40)),)
forward, clock = module.forward, time.perf_counter_ns
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        t0 = clock(); forward(args); times.append(clock() - t0)
    print(statistics.median(times) / 1e3, flush=True)
"""

def _export(root: Path) -> dict[str, Path]:
    """kws .pte (fp32, int8) and its input, made here as a station makes them."""
    import numpy as np
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from farm import zoo

    torch.manual_seed(0)
    info = zoo.get("kws")
    model = info.build().eval()
    x = torch.randn(info.input_shape, generator=torch.Generator().manual_seed(2))
    out = {"input": root / "kws.in"}
    out["input"].write_bytes(x.numpy().astype(np.float32).tobytes())
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, (x,)).module(), quantizer)
    for _ in range(8):
        prepared(torch.randn(info.input_shape))
    for precision, m in (("fp32", model), ("int8", convert_pt2e(prepared))):
        lowered = to_edge_transform_and_lower(
            torch.export.export(m, (x,)), partitioner=[XnnpackPartitioner()]
        )
        out[precision] = root / f"kws-{precision}.pte"
        out[precision].write_bytes(lowered.to_executorch().buffer)
    return out


class Runner:
    """One runner process serving requests (``--serve``)."""

    def __init__(self, runner: Path, pte: Path, given: Path) -> None:
        argv = [str(runner), "--model", str(pte), "--threads", "1", "--serve", "--input", str(given)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)  # fmt: skip

    def ask(self, line: str) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def timed_median_us(self, n: int) -> float:
        a = self.ask(str(n))
        return statistics.median(e - b for b, e in zip(a["begin_ns"], a["end_ns"], strict=True)) / 1e3

    def bare_median_us(self, n: int) -> float:
        """The median over blocks of BARE_BLOCK inferences of each block's mean: a block
        the scheduler preempted is an outlier, as it is for the per-inference median."""
        blocks = [self.ask(f"bare {BARE_BLOCK}")["bare_ns"] for _ in range(n // BARE_BLOCK)]
        return statistics.median(blocks) / BARE_BLOCK / 1e3

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class PythonET:
    """ExecuTorch's Python bindings in a process of their own (its thread pool must be
    sized before anything else touches it), answering "N" with the median of N calls."""

    def __init__(self, pte: Path, given: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _PY_ET_CHILD, str(pte), str(given)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)  # fmt: skip

    def median_us(self, n: int) -> float:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _engine_peak_mb(python: str, engine: Path, artifact: Path, runtime: str) -> float:
    """The engine's own reading of its process's peak RSS (load and inference), for one
    alexnet task in ``python`` (``python3 <engine>.zip run``, as a board runs it)."""
    request = {"artifact": str(artifact), "runtime": runtime, "iterations": 5, "warmup": 1,
               "threads": 1, "layers": False, "memory": True}  # fmt: skip
    done = subprocess.run([python, str(engine), "run"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=900, check=True)  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok", result["error"]
    mem = result["memory"]
    return max(mem["load_peak_rss_mb"] or 0, mem["peak_rss_mb"] or 0)


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    from farm.engine import native
    from farm.testing import torchfree

    load_before = os.getloadavg()
    runner, _ = native.build()
    figures, rows = [], []
    with tempfile.TemporaryDirectory(prefix="farm-native-bench-") as tmp:
        files = _export(Path(tmp))
        for precision in ("fp32", "int8"):
            n = PER_ROUND[precision]
            r = Runner(runner, files[precision], files["input"])
            python = PythonET(files[precision], files["input"])
            r.timed_median_us(n), r.bare_median_us(n), python.median_us(n)  # warm-up, discarded
            timed, bare, py = [], [], []
            for _ in range(ROUNDS):  # interleaved: timed, bare, python, timed, ...
                timed.append(r.timed_median_us(n))
                bare.append(r.bare_median_us(n))
                py.append(python.median_us(n))
            r.close()
            python.close()
            t, b, p = (statistics.median(v) for v in (timed, bare, py))
            rows.append((f"kws {precision}", t, b, p))
            figures.append({"name": f"kws_{precision}_runner_vs_bare_loop_abs_diff",
                            "value": round(abs(t / b - 1), 4), "target": "<= 0.05",
                            "unit": "fraction"})  # fmt: skip
            figures.append({"name": f"kws_{precision}_cpp_over_python_executorch",
                            "value": round(t / p, 3), "target": "<= 1.0", "unit": "ratio"})  # fmt: skip
        from farm import deploy, export

        engine = deploy.build_engine_zip(Path(tmp) / "engine")
        made = {rt: export.export("alexnet", runtime=rt, cache_dir=Path(tmp) / "artifacts").path
                for rt in ("onnxruntime", "eager")}  # fmt: skip
        ort, eager = [], []
        for _ in range(RSS_ROUNDS):  # interleaved
            ort.append(_engine_peak_mb(str(torchfree.python()), engine, made["onnxruntime"],
                                       "onnxruntime"))  # fmt: skip
            eager.append(_engine_peak_mb(sys.executable, engine, made["eager"], "eager"))
        o, e = statistics.median(ort), statistics.median(eager)
        figures.append({"name": "alexnet_torch_free_ort_rss_over_eager", "value": round(o / e, 3),
                        "target": "<= 0.75", "unit": "ratio"})  # fmt: skip
    load_after = os.getloadavg()

    console = Console()
    table = Table("model", "runner median µs", "bare loop µs", "Python ET median µs",
                  "runner/bare", "C++/Python", title="ExecuTorch C++ runner, 1 thread")  # fmt: skip
    for name, t, b, p in rows:
        table.add_row(name, f"{t:.2f}", f"{b:.2f}", f"{p:.2f}", f"{t / b:.3f}", f"{t / p:.3f}")
    console.print(table)
    mem = Table("alexnet peak RSS (engine)", "MiB (median of 3)", title="torch-free board vs eager")
    mem.add_row("ONNX Runtime, torch-free venv", f"{o:.0f}")
    mem.add_row("PyTorch eager", f"{e:.0f}")
    mem.add_row("ratio", f"{o / e:.3f}")
    console.print(mem)
    console.print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
                  f" ({os.cpu_count()} CPUs)")  # fmt: skip
    print(json.dumps({"benchmark": "farm", "figures": figures,
                      "load_average": [load_before[0], load_after[0]]}))  # fmt: skip
    missed = [f for f in figures if f["value"] > float(f["target"].split()[-1])]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
