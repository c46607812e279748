"""Clock synchronisation: where a board time lands on a monitor trace.

Two steps, each improving on the last:

1. **exchange**: the station asks the board's engine for its clock
   (``(host send ns, board ns, host receive ns)``) before and after the task.
   Keeping only the exchanges with the smallest round trip (the least delayed
   by scheduling), the board time is paired with the middle of the host's
   interval and fitted as ``t_trace = a·t_board + b`` (drift and offset). Its
   uncertainty is half the worst kept round trip. It maps onto the *host's*
   clock, so the monitor's own start latency and crystal drift remain.
2. **pulse**: the engine drew a pseudo-random busy/idle pattern at the start
   and end of the task and marked every edge. Mapped through step 1, the
   pattern is located in the trace by cross-correlation (integer samples),
   then refined to a fraction of a sample against the pattern's exact
   sample-averaged shape. The two bursts give offset and drift.

Every fit says which method produced it and how uncertain it is: ``pulse``,
``exchange`` or ``none`` (no information: the board's clock is assumed to be
the host's, true only for a local board).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from farm.power.base import Trace
from farm.power.markers import Windows

Exchange = tuple[int, int, int]  # host send ns, board ns, host receive ns
MIN_PULSE_CORRELATION = 0.5


@dataclass(frozen=True)
class ClockFit:
    """``t_trace_s = a·(t_board_ns − ref_ns)/1e9 + b_s``."""

    a: float
    b_s: float
    ref_ns: int
    method: str  # "pulse" | "exchange" | "none"
    uncertainty_s: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_trace_s(self, t_board_ns: np.ndarray | int) -> np.ndarray:
        rel = (np.asarray(t_board_ns, dtype=np.int64) - self.ref_ns).astype(np.float64)
        return self.a * rel / 1e9 + self.b_s

    @property
    def drift_ppm(self) -> float:
        return (self.a - 1.0) * 1e6

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "uncertainty_s": self.uncertainty_s,
            "drift_ppm": self.drift_ppm,
            "offset_s": self.b_s,
            "ref_ns": self.ref_ns,
            **self.details,
        }


def no_sync(trace: Trace, ref_ns: int) -> ClockFit:
    """Assume the board's clock is the host's (a local board): the trace's host anchor."""
    return ClockFit(1.0, (ref_ns - trace.t0_host_ns) / 1e9, ref_ns, "none", None)


def _clusters(mid: np.ndarray) -> list[np.ndarray]:
    """Split exchanges in time (before / after the task) at the biggest gap."""
    if len(mid) < 2:
        return [np.arange(len(mid))]
    order = np.argsort(mid)
    gaps = np.diff(mid[order])
    cut = int(np.argmax(gaps))
    if gaps[cut] <= 10 * max(float(np.median(gaps)), 1.0):
        return [order]
    return [order[: cut + 1], order[cut + 1 :]]


def fit_exchanges(trace: Trace, exchanges: Sequence[Exchange], keep: float = 0.25) -> ClockFit:
    """Least-squares ``t_trace = a·t_board + b`` over the lowest-RTT exchanges of each cluster."""
    ex = np.asarray(exchanges, dtype=np.int64).reshape(-1, 3)
    if len(ex) == 0:
        raise ValueError("no clock exchanges")
    rtt = ex[:, 2] - ex[:, 0]
    if np.any(rtt < 0):
        raise ValueError("clock exchange received before it was sent")
    mid = ex[:, 0] + rtt // 2
    chosen: list[np.ndarray] = []
    for cluster in _clusters(mid):
        k = max(1, int(np.ceil(keep * len(cluster))))
        chosen.append(cluster[np.argsort(rtt[cluster], kind="stable")[:k]])
    idx = np.concatenate(chosen)
    ref = int(ex[idx, 1].min())
    x = (ex[idx, 1] - ref).astype(np.float64) / 1e9
    y = (mid[idx] - trace.t0_host_ns).astype(np.float64) / 1e9
    if len(chosen) >= 2 and np.ptp(x) > 0:
        a, b = np.polyfit(x, y, 1)
        residual = float(np.max(np.abs(y - (a * x + b))))
    else:
        a, b = 1.0, float(np.median(y - x))
        residual = 0.0
    half_rtt = float(rtt[idx].max()) / 2e9
    return ClockFit(
        float(a),
        float(b),
        ref,
        "exchange",
        half_rtt + residual,
        {"exchanges": len(ex), "kept": len(idx), "min_rtt_s": float(rtt.min()) / 1e9},
    )


def _highs(burst: np.ndarray) -> np.ndarray:
    """(k, 2) board ns of each high interval of a burst."""
    rising = np.flatnonzero(burst[:-1, 1] == 1)
    return np.stack([burst[rising, 0], burst[rising + 1, 0]], 1)


def _template(starts: np.ndarray, stops: np.ndarray, grid: np.ndarray, dt: float) -> np.ndarray:
    """Fraction of each sample interval ``[g, g+dt)`` during which the pattern is high."""
    lo = grid[:, None]
    covered = np.clip(np.minimum(lo + dt, stops) - np.maximum(lo, starts), 0.0, None)
    return covered.sum(axis=1) / dt


def _uniform(trace: Trace, t0: float, n: int) -> np.ndarray:
    """The trace on the grid ``t0 + k/rate`` (sample-and-hold across dropped samples)."""
    dt = 1.0 / trace.rate_hz
    t, p = trace.segment(t0 - 4 * dt, t0 + (n + 4) * dt)
    if len(t) == 0:
        return np.zeros(0)
    grid = t0 + np.arange(n) * dt
    i = np.clip(np.searchsorted(t, grid + dt / 2, side="right") - 1, 0, len(t) - 1)
    return p[i]


def locate_burst(
    trace: Trace, fit: ClockFit, burst: np.ndarray, search_s: float
) -> dict[str, Any] | None:
    """Find one pulse burst: the lag (s) to add to ``fit`` at the burst's middle."""
    dt = 1.0 / trace.rate_hz
    highs = fit.to_trace_s(_highs(burst))
    if len(highs) == 0:
        return None
    first = float(fit.to_trace_s(burst[0, 0]))
    last = float(fit.to_trace_s(burst[-1, 0]))
    pad = 5 * dt
    m = int(np.ceil((last - first + 2 * pad) / dt))
    lags = int(np.ceil(search_s / dt))
    t_begin = np.floor((first - pad) / dt) * dt  # on the trace's own sample grid
    seg = _uniform(trace, t_begin - lags * dt, m + 2 * lags)
    if len(seg) < m + 2 * lags:
        return None
    grid = t_begin + np.arange(m) * dt

    def shaped(shift: float) -> np.ndarray:
        tmpl = _template(highs[:, 0] + shift, highs[:, 1] + shift, grid + shift, dt)
        return tmpl - tmpl.mean()

    base = shaped(0.0)
    scores = np.correlate(seg - seg.mean(), base, mode="valid")
    j = int(np.argmax(scores))
    coarse = (j - lags) * dt
    # sub-sample: score the exactly shaped pattern at fractional shifts around the peak
    window_grid = grid + coarse
    best, best_score = 0.0, -np.inf
    for frac in np.linspace(-1.0, 1.0, 81):
        shift = coarse + frac * dt
        tmpl = _template(highs[:, 0] + shift, highs[:, 1] + shift, window_grid, dt)
        tmpl -= tmpl.mean()
        score = float(np.dot(seg[j : j + m], tmpl))
        if score > best_score:
            best, best_score = shift, score
    window = seg[j : j + m] - seg[j : j + m].mean()
    denom = float(np.linalg.norm(window) * np.linalg.norm(base)) or 1.0
    sigma = _shift_sigma(seg[j : j + m], highs, window_grid, best - coarse, dt)
    # The template is laid out with ``fit``'s rate, which may be off by the drift still
    # to be found (40 ppm stretch a 0.3-s burst by 12 µs). The one best lag then fits
    # the burst's middle, where that stretch averages out, not its first edge.
    centre_ns = (int(burst[0, 0]) + int(burst[-1, 0])) // 2
    return {
        "board_ns": centre_ns,
        "trace_s": float(fit.to_trace_s(centre_ns)) + best,
        "lag_s": best,
        "correlation": float(np.dot(window, base) / denom),
        "sigma_s": sigma,
        "span_s": last - first,
    }


def _shift_sigma(
    window: np.ndarray, highs: np.ndarray, grid: np.ndarray, shift: float, dt: float
) -> float:
    """One standard error of the located shift (s), from what the fit leaves unexplained.

    The window is fitted as ``α·template + β`` at the best shift; the residual's
    spread (noise, edges the markers placed a little off, a sensor that smooths)
    divided by how fast the template changes with the shift is the least-squares
    error of the shift. A clean trace gives a small number, a noisy one a large one.
    """
    tmpl = _template(highs[:, 0] + shift, highs[:, 1] + shift, grid, dt)
    step = dt / 40
    slope = (
        _template(highs[:, 0] + shift + step, highs[:, 1] + shift + step, grid, dt)
        - _template(highs[:, 0] + shift - step, highs[:, 1] + shift - step, grid, dt)
    ) / (2 * step)
    design = np.stack([tmpl, np.ones_like(tmpl)], 1)
    (alpha, beta), *_ = np.linalg.lstsq(design, window, rcond=None)
    residual = window - (alpha * tmpl + beta)
    dof = max(len(window) - 3, 1)
    noise = float(np.sqrt(np.dot(residual, residual) / dof))
    sensitivity = abs(alpha) * float(np.linalg.norm(slope - slope.mean()))
    return noise / sensitivity if sensitivity > 0 else float("inf")


COVERAGE_SIGMAS = 3.0  # the reported uncertainty is this many standard errors (+ the floor)


def refine_with_pulses(
    trace: Trace, windows: Windows, fit: ClockFit, search_s: float | None = None
) -> ClockFit:
    """Improve ``fit`` with the sync bursts; returns ``fit`` unchanged if none is found.

    The bursts are located twice: first through ``fit`` (the exchanges, whose
    rate may be off by hundreds of ppm on a loaded host, stretching the template
    across a burst), then again through the fit the first pass found, so the
    template is laid out at the rate the pulses themselves measured.

    The uncertainty covers, at the reference time: the sampling floor (half a
    sample or half the sensor's update period), ``COVERAGE_SIGMAS`` standard
    errors of each burst's placement (from its residual), and what is left of
    the template stretch.
    """
    if not windows.pulses:
        return fit
    if search_s is None:
        search_s = 0.5 if fit.uncertainty_s is None else min(2.0, max(0.05, 4 * fit.uncertainty_s))
    dt = 1.0 / trace.rate_hz
    found = _locate_all(trace, windows, fit, search_s)
    details = {**fit.details, "pulses_found": len(found), "pulses": len(windows.pulses)}
    if not found:
        return replace(fit, details=details)
    first_pass = _line(found, fit)
    again = _locate_all(trace, windows, first_pass, 4 * dt)
    if len(again) == len(found):
        found = again
    a, b = _line(found, fit).a, _line(found, fit).b_s
    floor = max(dt / 2, trace.update_period_s / 2)
    sigma = max(h["sigma_s"] for h in found)
    stretch = max(abs(a - first_pass.a) * h["span_s"] / 2 for h in found)
    uncertainty = floor + COVERAGE_SIGMAS * sigma + stretch
    if len(found) >= 2:  # the rate's error, carried from the first burst back to ref_ns
        span = (found[-1]["board_ns"] - found[0]["board_ns"]) / 1e9
        lever = abs(found[0]["board_ns"] - fit.ref_ns) / 1e9
        uncertainty += 2 * (floor + COVERAGE_SIGMAS * sigma) / span * lever
    details["pulse_correlation"] = min(h["correlation"] for h in found)
    details["pulse_sigma_s"] = sigma
    return ClockFit(float(a), float(b), fit.ref_ns, "pulse", float(uncertainty), details)


def _locate_all(
    trace: Trace, windows: Windows, fit: ClockFit, search_s: float
) -> list[dict[str, Any]]:
    found = []
    for burst in windows.pulses:
        hit = locate_burst(trace, fit, burst, search_s)
        if hit is not None and hit["correlation"] >= MIN_PULSE_CORRELATION:
            found.append(hit)
    return found


def _line(found: list[dict[str, Any]], fit: ClockFit) -> ClockFit:
    """The fit through the located bursts (one burst: ``fit``'s rate, the burst's offset)."""
    first, last = found[0], found[-1]
    if len(found) >= 2:
        span = (last["board_ns"] - first["board_ns"]) / 1e9
        a = (last["trace_s"] - first["trace_s"]) / span
    else:
        a = fit.a
    b = first["trace_s"] - a * (first["board_ns"] - fit.ref_ns) / 1e9
    return ClockFit(float(a), float(b), fit.ref_ns, "pulse", None)


def synchronize(
    trace: Trace, windows: Windows, exchanges: Sequence[Exchange] | None = None
) -> ClockFit:
    """Best available fit: exchanges if given, refined by the sync pulses if present."""
    if exchanges:
        fit = fit_exchanges(trace, exchanges)
    else:
        ref = (
            windows.task[0] if windows.task else int(windows.all_t_ns.min(initial=trace.t0_host_ns))
        )
        fit = no_sync(trace, ref)
    return refine_with_pulses(trace, windows, fit)
