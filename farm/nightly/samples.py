"""Per-inference samples of one result: latencies from its markers, energies from its report.

The engine marks the begin and end of every timed inference on the board's
monotonic clock, and the store keeps those markers compressed, so latencies
need no storage of their own: they are the widths of the latency pass's
inference windows (the layer pass's hooked inferences left out). Energies per
inference are computed once, by the energy analysis, and kept in the report
(``per_inference_mj``, see ``farm.power.series``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from farm.power import markers as mk
from farm.power import series


def latencies_ms(markers: Mapping[str, Any] | None) -> np.ndarray:
    """Each timed inference's latency (ms), in run order; empty without markers."""
    if not markers:
        return np.zeros(0)
    windows = mk.parse(markers).timed_inferences()
    return (windows[:, 1] - windows[:, 0]).astype(np.float64) / 1e6


def cpu_ms(markers: Mapping[str, Any] | None) -> np.ndarray | None:
    """Each timed inference's CPU time (ms, the engine's process clock), or None where
    the engine did not record it (older results)."""
    kept = (markers or {}).get("inference_cpu_ns")
    if not kept:
        return None
    return np.asarray(kept, dtype=np.float64) / 1e6


def energies_mj(result: Mapping[str, Any] | None) -> np.ndarray | None:
    """Each timed inference's net energy (mJ), or None where no monitor measured it."""
    report = (result or {}).get("energy") or {}
    kept = report.get("per_inference_mj")
    if not kept or not kept.get("net"):
        return None
    return series.decode(kept["net"], kept.get("encoding", series.ENCODING))
