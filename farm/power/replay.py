"""Replay a recorded trace from a file: CSV or .npz.

CSV: a header row naming ``power_w`` (or ``current_ma`` and ``voltage_v``), and
optionally ``time_s`` (explicit sample times; without it samples are
``1/rate_hz`` apart). .npz: arrays ``power_w`` and optionally ``index``,
``times_s``, scalars ``rate_hz`` and ``t0_host_ns`` (what ``save_npz`` writes).

As a monitor, ``stop`` hands back the file's trace anchored at the host time
``start`` was called, unless the file or the options fix ``t0_host_ns``.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from farm.errors import MonitorUnavailable
from farm.power.base import Monitor, Trace, register
from farm.spec.inventory import MonitorOptions


def load(path: str | Path, *, rate_hz: float | None = None, t0_host_ns: int = 0) -> Trace:
    path = Path(path).expanduser()
    if not path.is_file():
        raise MonitorUnavailable(f"replay: no trace file at {path}")
    if path.suffix == ".npz":
        with np.load(path) as npz:
            rate = float(npz["rate_hz"]) if "rate_hz" in npz else rate_hz
            t0 = int(npz["t0_host_ns"]) if "t0_host_ns" in npz else t0_host_ns
            return Trace(
                power_w=npz["power_w"].astype(np.float32),
                rate_hz=_need_rate(rate, path),
                t0_host_ns=t0,
                index=npz["index"].astype(np.int64) if "index" in npz else None,
                times_s=npz["times_s"].astype(np.float64) if "times_s" in npz else None,
                source=f"replay:{path.name}",
            )
    with path.open(newline="") as fh:
        header = [h.strip() for h in next(csv.reader(fh))]
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, usecols=range(len(header)))
    col = {name: data[:, i] for i, name in enumerate(header)}
    if "power_w" in col:
        power = col["power_w"]
    elif "current_ma" in col and "voltage_v" in col:
        power = col["current_ma"] * col["voltage_v"] / 1e3
    else:
        raise MonitorUnavailable(f"replay: {path} has neither power_w nor current_ma+voltage_v")
    times = col.get("time_s")
    if times is not None and rate_hz is None and len(times) > 1:
        rate_hz = float((len(times) - 1) / (times[-1] - times[0]))
    return Trace(
        power_w=power.astype(np.float32),
        rate_hz=_need_rate(rate_hz, path),
        t0_host_ns=t0_host_ns,
        times_s=None if times is None else times - times[0],
        source=f"replay:{path.name}",
    )


def save_npz(trace: Trace, path: str | Path) -> None:
    arrays: dict[str, Any] = {
        "power_w": trace.power_w,
        "rate_hz": trace.rate_hz,
        "t0_host_ns": trace.t0_host_ns,
    }
    if trace.index is not None:
        arrays["index"] = trace.index
    if trace.times_s is not None:
        arrays["times_s"] = trace.times_s
    np.savez_compressed(path, **arrays)


def _need_rate(rate: float | None, path: Path) -> float:
    if not rate:
        raise MonitorUnavailable(f"replay: {path} has no sample times; give options.rate_hz")
    return float(rate)


class ReplayOptions(MonitorOptions):
    """``backend: replay``: a recorded capture (CSV) played back as if measured."""

    path: str
    rate_hz: float | None = Field(default=None, gt=0)  # when the file has no sample times
    t0_host_ns: int | None = None  # where the capture starts on the host's clock


@register("replay", options=ReplayOptions)
class ReplayMonitor(Monitor):
    def __init__(self, path: str, rate_hz: float | None = None, t0_host_ns: int | None = None):
        self._trace = load(path, rate_hz=rate_hz, t0_host_ns=t0_host_ns or 0)
        self._fixed_t0 = t0_host_ns
        self.update_period_s = 1.0 / self._trace.rate_hz
        self._t0: int | None = None

    def start(self) -> None:
        self._t0 = time.monotonic_ns()

    def stop(self, markers: Mapping[str, Any] | None = None) -> Trace:
        trace = self._trace
        if self._fixed_t0 is None and self._t0 is not None and trace.t0_host_ns == 0:
            trace = Trace(
                power_w=trace.power_w,
                rate_hz=trace.rate_hz,
                t0_host_ns=self._t0,
                index=trace.index,
                times_s=trace.times_s,
                source=trace.source,
            )
        self._t0 = None
        return trace
