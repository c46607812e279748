"""The store's history as OpenMetrics, for ``promtool tsdb create-blocks-from openmetrics``.

Every stored result becomes the measurement families' samples, stamped with
the time the result was stored, so a Grafana trend shows the nights measured
before Prometheus was set up. Within a series the samples go oldest first, as
the format requires.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.registry import Collector

from farm.metrics.cells import cell_families
from farm.metrics.source import StoreSource
from farm.store import Cell

FILE_NAME = "farm-history.om"


class _History(Collector):
    def __init__(self, cells: list[Cell]):
        self._cells = cells

    def collect(self):
        for family in cell_families(self._cells, stamped=True):
            # one series' points together, oldest first (OpenMetrics asks both)
            family.samples.sort(key=lambda s: (sorted(s.labels.items()), s.timestamp))
            yield family


def backfill(db: Path, out: Path) -> tuple[Path, int]:
    """Write ``out/farm-history.om``; returns its path and how many results it holds."""
    source = StoreSource(db)
    try:
        cells = source.history()
        registry = CollectorRegistry()
        registry.register(_History(cells))
        out.mkdir(parents=True, exist_ok=True)
        path = out / FILE_NAME
        path.write_bytes(generate_latest(registry))
    finally:
        source.close()
    return path, len(cells)
