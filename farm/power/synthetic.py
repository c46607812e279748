"""A trace generated from a known power model: the ground truth for tests and demos.

The board's true power is piecewise constant: ``idle_w`` plus ``inference_w``
extra inside each inference window, ``layer_w[l]`` extra inside layer ``l``'s
windows — or, with ``layer_type_w``, extra by the layer's *kind* (Conv2d,
Linear, ReLU...: a convolution draws more than an activation, so per-layer
attribution has something to recover; the markers' ``layer_types`` name each
layer's kind) — and ``pulse_w`` extra while a sync pulse is high. The monitor sees it
through its own clock, hidden from the analysis:

    t_trace = (1 + drift_ppm·1e-6) · (t_host − t0_host) + offset_s

and each sample is the *mean* power over its sample interval (an integrating
ADC), plus Gaussian noise, with a fraction of samples dropped. Because the
power is piecewise constant, every window's true energy is exact:
``expected_energy_j`` computes it for the tests.

``SyntheticMonitor`` is driven by a task's *real* markers: after the task, it
synthesizes the trace a meter would have recorded over the capture.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from farm.power import markers as mk
from farm.power.base import Monitor, Trace, register
from farm.spec.inventory import MonitorOptions


@dataclass
class PowerModel:
    idle_w: float = 2.0
    inference_w: float = 1.5  # extra over idle while an inference runs
    layer_w: Sequence[float] = ()  # extra per layer index while that layer runs
    layer_type_w: Mapping[str, float] = field(default_factory=dict)  # extra by layer kind
    pulse_w: float = 2.5  # extra while a sync pulse is high
    noise_w: float = 0.0
    rate_hz: float = 5000.0
    offset_s: float = 0.0  # hidden: monitor clock − host clock at capture start
    drift_ppm: float = 0.0  # hidden: monitor clock rate error
    drop_fraction: float = 0.0
    seed: int = 0
    board_to_host: tuple[float, float] = (1.0, 0.0)  # host_ns = a·board_ns + b (local: identity)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_trace_s(self, t_board_ns: np.ndarray, t0_host_ns: int) -> np.ndarray:
        """The hidden truth: where a board time lands on the monitor's timebase."""
        a, b = self.board_to_host
        host = (
            a * (np.asarray(t_board_ns, dtype=np.float64) - t0_host_ns) + b + (a - 1) * t0_host_ns
        )
        return (1.0 + self.drift_ppm * 1e-6) * host / 1e9 + self.offset_s


def _unmarked_forwards(windows: mk.Windows) -> np.ndarray:
    """(k, 2) spans of the layer pass's forwards that no inference window covers.

    The engine marks no inference around its hooked layer pass, yet those
    forwards draw inference power: from each iteration's first layer begin to
    its last layer end. (``fake_task_markers`` does mark them: nothing to add.)
    """
    if len(windows.layer) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    spans = np.array(
        [
            [windows.layer[sel, 0].min(), windows.layer[sel, 1].max()]
            for sel in (windows.layer_iter == i for i in np.unique(windows.layer_iter))
        ],
        dtype=np.int64,
    )
    if len(windows.inference) == 0:
        return spans
    order = np.argsort(windows.inference[:, 0])
    begins, ends = windows.inference[order, 0], windows.inference[order, 1]
    k = np.searchsorted(begins, spans[:, 0], side="right") - 1
    covered = (k >= 0) & (ends[np.clip(k, 0, None)] >= spans[:, 1])
    return spans[~covered]


def layer_power(model: PowerModel, windows: mk.Windows) -> np.ndarray:
    """Extra W per layer index: ``layer_w`` if given, else ``layer_type_w`` by kind."""
    if len(model.layer_w):
        return np.asarray(model.layer_w, dtype=np.float64)
    if model.layer_type_w:
        if len(windows.layer_types) < len(windows.layer_names):
            raise ValueError("layer_type_w needs markers that name each layer's type")
        return np.array([model.layer_type_w.get(t, 0.0) for t in windows.layer_types])
    return np.zeros(0)


def _steps(
    model: PowerModel, windows: mk.Windows, t0_host_ns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Times (trace s) where the power level changes, and the change in W at each."""
    times: list[np.ndarray] = []
    deltas: list[np.ndarray] = []

    def add(w: np.ndarray, extra: np.ndarray | float) -> None:
        if len(w) == 0:
            return
        extra_arr = np.broadcast_to(np.asarray(extra, dtype=np.float64), (len(w),))
        times.extend([model.to_trace_s(w[:, 0], t0_host_ns), model.to_trace_s(w[:, 1], t0_host_ns)])
        deltas.extend([extra_arr, -extra_arr])

    add(windows.inference, model.inference_w)
    add(_unmarked_forwards(windows), model.inference_w)
    table = layer_power(model, windows)
    if len(table) and len(windows.layer):
        add(windows.layer, table[np.clip(windows.layer_index, 0, len(table) - 1)])
    for burst in windows.pulses:
        highs = np.flatnonzero(burst[:-1, 1] == 1)
        add(np.stack([burst[highs, 0], burst[highs + 1, 0]], 1), model.pulse_w)
    if not times:
        return np.zeros(0), np.zeros(0)
    t = np.concatenate(times)
    order = np.argsort(t, kind="stable")
    return t[order], np.concatenate(deltas)[order]


def _integral(
    model: PowerModel, step_t: np.ndarray, step_d: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """∫₀ˣ power dt (J) at each x, exact for the piecewise-constant power."""
    level = model.idle_w + np.concatenate([[0.0], np.cumsum(step_d)])
    seg_energy = np.diff(np.concatenate([[0.0], step_t])) * level[:-1]
    cum = np.concatenate([[0.0], np.cumsum(seg_energy)])  # energy at each step time
    knots = np.concatenate([[0.0], step_t])
    i = np.searchsorted(knots, x, side="right") - 1
    i = np.clip(i, 0, len(knots) - 1)
    return cum[i] + level[i] * (x - knots[i])


def synthesize(
    model: PowerModel,
    markers: Mapping[str, Any] | None,
    *,
    t0_host_ns: int,
    duration_s: float,
    chunk: int = 1 << 20,
) -> Trace:
    """The trace a monitor started at host time ``t0_host_ns`` records for ``duration_s``."""
    windows = mk.parse(markers or {"t_ns": [], "kind": []})
    step_t, step_d = _steps(model, windows, t0_host_ns)
    n = int(duration_s * model.rate_hz)
    power = np.empty(n, dtype=np.float32)
    rng = np.random.default_rng(model.seed)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        edges = np.arange(start, stop + 1, dtype=np.float64) / model.rate_hz
        energy = _integral(model, step_t, step_d, edges)
        p = np.diff(energy) * model.rate_hz
        if model.noise_w:
            p += rng.normal(0.0, model.noise_w, len(p))
        power[start:stop] = p
    index = None
    dropped = 0
    if model.drop_fraction > 0 and n:
        keep = rng.random(n) >= model.drop_fraction
        keep[0] = True
        index = np.flatnonzero(keep).astype(np.int64)
        dropped = n - len(index)
        power = power[keep]
    return Trace(
        power_w=power,
        rate_hz=model.rate_hz,
        t0_host_ns=int(t0_host_ns),
        index=index,
        source="synthetic",
        dropped=dropped,
        host_stop_ns=int(t0_host_ns + duration_s * 1e9),
    )


def expected_energy_j(
    model: PowerModel, markers: Mapping[str, Any], t0_host_ns: int, windows_ns: np.ndarray
) -> np.ndarray:
    """The true energy (J) in each board-time window, measured on the monitor's timebase."""
    parsed = mk.parse(markers)
    step_t, step_d = _steps(model, parsed, t0_host_ns)
    w = np.asarray(windows_ns, dtype=np.int64).reshape(-1, 2)
    lo = _integral(model, step_t, step_d, model.to_trace_s(w[:, 0], t0_host_ns))
    hi = _integral(model, step_t, step_d, model.to_trace_s(w[:, 1], t0_host_ns))
    return hi - lo


def fake_task_markers(
    *,
    start_ns: int,
    iterations: int = 50,
    inference_ms: float = 20.0,
    gap_ms: float = 5.0,
    layers: Sequence[float] = (),
    layer_types: Sequence[str] = (),
    layer_iterations: int = 0,
    chips: int = 16,
    chip_ms: float = 20.0,
    seed: int = 1,
    jitter: float = 0.1,
    chip_jitter: float = 0.0,
) -> dict[str, Any]:
    """Markers in the engine's format for a made-up task, for machines without a board.

    Layout: task_begin, start pulse burst, ``iterations`` inferences, the layer
    pass (``layer_iterations`` inferences whose layers last ``layers`` ms each),
    end pulse burst, task_end. The pulse pattern is pseudo-random like the engine's;
    ``chip_jitter`` stretches each chip by up to that fraction, as a loaded board
    (its sleeps overrun) would.
    """
    rng = np.random.default_rng(seed)
    ms = 1_000_000
    rows: list[tuple[int, int, int, int]] = []
    t = float(start_ns)

    def mark(kind: str, it: int = -1, layer: int = -1) -> None:
        rows.append((round(t), mk.KINDS.index(kind), it, layer))

    def burst() -> None:
        nonlocal t
        if chips < 2:
            return
        pattern = rng.integers(0, 2, chips)
        pattern[0], pattern[-1] = 1, 0  # the burst starts high and ends low
        level = 0
        for chip in pattern:
            if chip != level:
                mark("pulse_high" if chip else "pulse_low")
                level = int(chip)
            t += chip_ms * ms * (1 + (chip_jitter * rng.uniform(0, 1) if chip_jitter else 0))
        t += 10 * chip_ms * ms  # settle before the work

    mark("task_begin")
    t += 50 * ms
    burst()
    for i in range(iterations):
        mark("inference_begin", i)
        t += inference_ms * ms * (1 + jitter * rng.uniform(-1, 1))
        mark("inference_end", i)
        t += gap_ms * ms
    for i in range(layer_iterations):
        mark("inference_begin", iterations + i)
        for j, dur in enumerate(layers):
            mark("layer_begin", iterations + i, j)
            t += dur * ms
            mark("layer_end", iterations + i, j)
        mark("inference_end", iterations + i)
        t += gap_ms * ms
    t += 10 * chip_ms * ms
    burst()
    t += 50 * ms
    mark("task_end")
    cols = list(zip(*rows, strict=True))
    return {
        "clock": "monotonic_ns",
        "kinds": list(mk.KINDS),
        "t_ns": list(cols[0]),
        "kind": list(cols[1]),
        "iteration": list(cols[2]),
        "layer": list(cols[3]),
        "layer_names": [f"layer{j}" for j in range(len(layers))],
        "layer_types": list(layer_types),
    }


class SyntheticOptions(MonitorOptions):
    """``backend: synthetic``: the :class:`PowerModel` a capture is synthesized from."""

    idle_w: float = Field(default=2.0, ge=0)
    inference_w: float = 1.5
    layer_w: list[float] = Field(default_factory=list)
    layer_type_w: dict[str, float] = Field(default_factory=dict)
    pulse_w: float = 2.5
    noise_w: float = Field(default=0.0, ge=0)
    rate_hz: float = Field(default=5000.0, gt=0)
    offset_s: float = 0.0
    drift_ppm: float = 0.0
    drop_fraction: float = Field(default=0.0, ge=0, lt=1)
    seed: int = 0
    board_to_host: list[float] = Field(default=[1.0, 0.0], min_length=2, max_length=2)
    extra: dict[str, Any] = Field(default_factory=dict)


@register("synthetic", options=SyntheticOptions)
class SyntheticMonitor(Monitor):
    """A meter that is not there: it records the host's clock and, at ``stop``,
    synthesizes from the task's markers what a meter would have seen."""

    def __init__(self, **options: Any):
        self.model = PowerModel(**options)
        self.update_period_s = 1.0 / self.model.rate_hz
        self._t0: int | None = None

    def start(self) -> None:
        self._t0 = time.monotonic_ns()

    def stop(self, markers: Mapping[str, Any] | None = None) -> Trace:
        if self._t0 is None:
            raise RuntimeError("stop() without start()")
        duration = (time.monotonic_ns() - self._t0) / 1e9
        trace = synthesize(self.model, markers, t0_host_ns=self._t0, duration_s=duration)
        self._t0 = None
        return trace
