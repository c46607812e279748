"""The measurement families: the latest result of every cell, as gauges.

A cell is ``farm.spec.CellKey`` (``model``, ``board``, ``processor``, ``variant``):
those four labels and, for layer shares, ``layer``. Job and task ids never become
labels (each night would start new series); the variant is the key's one label
(``farm.spec.variant_label``: ``activation=tanh``, ``default`` for none).

The same builder serves the head and the standalone exporter (the latest
result, no timestamps), the pushgateway (one job's cells) and the backfill
(every result, stamped with when it was stored).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import fields
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from farm.metrics.source import StoreSource
from farm.result import EngineResult, Latency
from farm.spec import CellKey
from farm.store import Cell

MB = 1 << 20
CELL_LABELS = tuple(f.name for f in fields(CellKey))  # model, board, processor, variant
QUANTILES = (("0.5", "median_ms"), ("0.9", "p90_ms"), ("0.99", "p99_ms"))


def _ms(value: Any) -> float | None:
    return None if value is None else value / 1e3


def _mb(value: Any) -> float | None:
    return None if value is None else value * MB


def _values(result: EngineResult) -> dict[str, float | None]:
    """A result's one-number-per-cell figures, in base units."""
    latency, memory, energy = result.latency, result.memory, result.energy
    hours = (energy.battery or {}).get("hours") if energy else None
    return {
        "latency_mean_seconds": _ms(latency.mean_ms) if latency else None,
        "energy_per_inference_joules": _ms(energy.energy_per_inference_mj.net.mean)
        if energy
        else None,
        "power_watts": energy.average_power_w if energy else None,
        "battery_life_seconds": None if hours is None else hours * 3600.0,
        "memory_required_bytes": _mb(memory.required_mb),
        "memory_peak_rss_bytes": _mb(memory.peak_rss_mb),
        "memory_limit_bytes": _mb(memory.available_mb),
        "alignment_uncertainty_seconds": energy.alignment.get("uncertainty_s") if energy else None,
    }


_HELP = {
    "latency_mean_seconds": "Mean latency of one inference, latest result of the cell",
    "energy_per_inference_joules": "Energy of one inference net of idle power, latest result",
    "power_watts": "Average power over the measured task, latest result",
    "battery_life_seconds": "Battery-life estimate for the board's duty cycle, latest result",
    "memory_required_bytes": "Parameters plus peak live activations, latest result",
    "memory_peak_rss_bytes": "Measured peak resident set of the engine, latest result",
    "memory_limit_bytes": "Memory the processor may use (its declared or available memory)",
    "alignment_uncertainty_seconds": "Uncertainty of the power trace's alignment to the board clock",
}


def cell_families(cells: Iterable[Cell], *, stamped: bool = False) -> list[Metric]:
    """Gauge families for ``cells``; ``stamped``: each sample carries its result's time."""
    gauges = {
        key: GaugeMetricFamily(f"farm_cell_{key}", text, labels=CELL_LABELS)
        for key, text in _HELP.items()
    }
    quantiles = SummaryMetricFamily(
        "farm_cell_latency_seconds",
        "Latency of one inference over the latest result's timed runs: quantiles, count, sum",
        labels=CELL_LABELS,
    )
    layers = GaugeMetricFamily(
        "farm_cell_layer_time_ratio",
        "Each layer's share of the forward pass, latest result of the cell",
        labels=(*CELL_LABELS, "layer"),
    )
    measured = GaugeMetricFamily(
        "farm_cell_last_measured_timestamp_seconds",
        "When the cell's latest result was stored (for staleness alerts)",
        labels=CELL_LABELS,
    )
    for cell in cells:
        result = cell.result
        if result is None:
            continue
        key = cell.key
        labels = [getattr(key, name) for name in CELL_LABELS]
        at = cell.result_at or 0.0
        ts = at if stamped else None
        for key, value in _values(result).items():
            if value is not None:
                gauges[key].add_metric(labels, value, timestamp=ts)
        if result.latency is not None and result.latency.n:
            _add_summary(quantiles, labels, result.latency, ts)
        for row in result.layers:
            if row.share is not None:
                layers.add_metric([*labels, row.name], row.share, timestamp=ts)
        measured.add_metric(labels, at, timestamp=ts)
    return [*gauges.values(), quantiles, layers, measured]


def _add_summary(
    family: SummaryMetricFamily, labels: list[str], latency: Latency, ts: float | None
) -> None:
    """A result's latency statistics as a summary: its quantiles (p99 only with enough
    samples, as the engine reports it), ``_count`` inferences and their ``_sum``."""
    keys = dict(zip(CELL_LABELS, labels, strict=True))
    for quantile, field in QUANTILES:
        value = getattr(latency, field)
        if value is not None:
            family.samples.append(
                Sample(family.name, {**keys, "quantile": quantile}, value / 1e3, ts)
            )
    family.add_metric(labels, latency.n, latency.n * latency.mean_ms / 1e3, ts)


class MeasurementCollector(Collector):
    """The latest result of every cell, read through ``source``. The families are built
    again only when a result was stored since the last scrape: a scrape between
    nightly runs costs one cheap query plus the exposition."""

    def __init__(self, source: StoreSource):
        self._source = source
        self._version: int | None = None
        self._families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        version = self._source.version()
        if version != self._version:
            self._families = cell_families(self._source.newest_cells())
            self._version = version
        yield from self._families
