"""What a Prometheus scrape of a large farm costs.

A store holding the latest results of 256 boards × 4 models × 3 processors × 2
variants (6,144 cells, each with latency, memory, energy and per-layer rows) is
served by farm's collectors. Compared, interleaved, in this process:

- ``farm``: ``generate_latest`` over a registry with farm's store-backed
  collectors (measurement families cached until a result is stored, plus the
  queue/board/job gauges queried at each scrape);
- ``baseline``: ``generate_latest`` over a registry of plain prometheus-client
  ``Gauge``\\ s holding exactly the same series and values.

Also: the p99 latency of a scrape over HTTP (farm's exporter on a loopback
port), the cost of the first scrape after new results (families rebuilt from
the store), and the series count. Prints a rich table and one JSON line; exits 1
on a missed target.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/farm.py sits beside this script: keep this folder off the import path,
# or `import farm` would import that script instead of the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import json
import os
import statistics
import tempfile
import time
import urllib.request

BOARDS, PROCESSORS, VARIANTS = 256, ("cpu", "gpu", "dsp"), ("relu", "tanh")
MODELS = {"kws": 8, "deepear": 6, "svhn": 10, "alexnet": 20}  # model -> leaf layers
ROUNDS = 10  # interleaved scrape pairs
HTTP_SCRAPES = 40
P99_TARGET_S = 2.0  # a fifth of Prometheus's default scrape_timeout (10 s)


def _fill(db: Path) -> int:
    from farm.result import EngineResult
    from farm.spec import Measure, ModelRef, PlannedTask
    from farm.states import TaskState
    from farm.store import Store

    store = Store(db)
    cells = [
        (b, m, p, v) for b in range(BOARDS) for m in MODELS for p in PROCESSORS for v in VARIANTS
    ]
    tasks = [
        PlannedTask(
            index=i,
            key=f"{m}/b{b:03d}/{p}/{v}",
            model=ModelRef(name=m, zoo=m),
            board=f"b{b:03d}",
            processor=p,
            variant={"activation": v},
            measure=Measure(),
            candidates=[f"b{b:03d}"],
        )
        for i, (b, m, p, v) in enumerate(cells)
    ]
    store.add_job("bench", "nightly", {}, tasks)
    for t in tasks:
        layers = MODELS[t.model.name]
        mean = 1.0 + t.index % 97 / 10
        result = EngineResult.model_validate({
            "status": "ok",
            "latency": {"n": 1000, "mean_ms": mean, "median_ms": mean * 0.98,
                        "p90_ms": mean * 1.1, "p99_ms": mean * 1.3},
            "memory": {"required_mb": 12.5, "peak_rss_mb": 310.0, "available_mb": 2048.0},
            "energy": {"energy_per_inference_mj": {"net": {"mean": mean * 1.7}},
                       "average_power_w": 2.1, "alignment": {"uncertainty_s": 2e-4},
                       "battery": {"hours": 31.0}},
            "layers": [{"index": k, "name": f"layer{k}", "type": "Linear", "share": 1 / layers}
                       for k in range(layers)],
        })  # fmt: skip
        task_id = f"bench.{t.index}"
        store.transition(task_id, TaskState.DEPLOYING, board=t.board, attempt=1)
        store.transition(task_id, TaskState.RUNNING)
        store.finish(task_id, TaskState.DONE, board=t.board, result=result)
    store.close()
    return len(tasks)


def _baseline_registry(text: str):
    """Plain gauges holding the same series as the exposition ``text``."""
    from prometheus_client import CollectorRegistry, Gauge
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    gauges: dict[str, Gauge] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = "base_" + s.name
            labels = sorted(s.labels)
            if name not in gauges:
                gauges[name] = Gauge(name, "baseline", labels, registry=registry)
            gauge = gauges[name]
            (gauge.labels(*[s.labels[k] for k in labels]) if labels else gauge).set(s.value)
    return registry


def _time(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> int:
    from prometheus_client import CollectorRegistry, generate_latest
    from rich.console import Console
    from rich.table import Table

    from farm.metrics.exporter import register_store_families, serve
    from farm.metrics.source import StoreSource

    console = Console(stderr=True)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "farm.db"
        started = time.perf_counter()
        cells = _fill(db)
        console.print(f"stored {cells:,} cells in {time.perf_counter() - started:.1f}s")
        source = StoreSource(db)
        registry = register_store_families(CollectorRegistry(), source)
        cold = _time(lambda: generate_latest(registry))  # the first scrape builds the families
        text = generate_latest(registry).decode()
        series = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
        baseline = _baseline_registry(text)
        ours, base = [], []
        for _ in range(ROUNDS):  # interleaved, so load changes hit both alike
            ours.append(_time(lambda: generate_latest(registry)))
            base.append(_time(lambda: generate_latest(baseline)))
        server = serve(registry, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        http = []
        for _ in range(HTTP_SCRAPES):
            http.append(_time(lambda: urllib.request.urlopen(url, timeout=30).read()))
        server.shutdown()
        source.close()

    ratio = statistics.median(ours) / statistics.median(base)
    p99 = sorted(http)[max(0, -(-99 * len(http) // 100) - 1)]  # nearest rank
    table = Table(
        title=f"metrics: one scrape of {cells:,} cells, {series:,} series (load {load:.2f})"
    )
    for col in ("what", "median s", "p99 s"):
        table.add_column(col, justify="right")
    table.add_row("farm collectors (cached families)", f"{statistics.median(ours):.3f}",
                  f"{sorted(ours)[-1]:.3f}")  # fmt: skip
    table.add_row("plain prometheus-client gauges", f"{statistics.median(base):.3f}",
                  f"{sorted(base)[-1]:.3f}")  # fmt: skip
    table.add_row("farm over HTTP", f"{statistics.median(http):.3f}", f"{p99:.3f}")
    table.add_row("farm, first scrape after new results", f"{cold:.3f}", "")
    console.print(table)
    figures = [
        {"name": "scrape_cost_vs_plain_gauges", "value": round(ratio, 3), "target": "<= 1.5", "unit": "x"},
        {"name": "scrape_http_p99", "value": round(p99, 4), "target": f"<= {P99_TARGET_S}", "unit": "s"},
        {"name": "scrape_after_new_results", "value": round(cold, 3), "target": "<= 10", "unit": "s"},
        {"name": "series", "value": series, "target": "", "unit": "series"},
        {"name": "cells", "value": cells, "target": "", "unit": "cells"},
        {"name": "load_average_1m", "value": round(load, 2), "target": "", "unit": ""},
    ]  # fmt: skip
    print(json.dumps({"benchmark": "farm", "figures": figures}))
    missed = ratio > 1.5 or p99 > P99_TARGET_S or cold > 10
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
