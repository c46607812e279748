"""Energy per inference and per layer from a trace, the task's markers and a clock fit.

Integration is one streaming pass: for each chunk of samples, the cumulative
energy at every sample (cumulative sum of power × sample duration, carried
across chunks) is evaluated at the window edges falling inside the chunk with
``searchsorted``; a window's energy is the difference at its two edges. Memory
stays bounded by the chunk size however long the capture, and all windows (idle,
task, inferences, layers) are served by the same pass.

*Gross* energy is what the meter saw in the window; *net* subtracts the idle
baseline (mean of the pre- and post-task idle power) over the window's length,
i.e. the energy the inference cost above doing nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from farm.engine.stats import t_critical_95  # one Student t for latency and energy
from farm.power import markers as mk
from farm.power import quality, series
from farm.power.base import CHUNK_SAMPLES, Trace
from farm.power.sync import ClockFit, Exchange, synchronize

IDLE_MARGIN_S = 0.05  # keep the idle windows clear of the task's edges
# A layer's energy is reported only when its window holds this many meter periods
# (samples, or sensor updates where the sensor is slower): below that, where its
# edges fall inside a sample decides the figure more than the layer does
# (Deep KWS's 7–24 µs layers at 50 kHz were off by −15% and +12%).
MIN_LAYER_PERIODS = 10


class Stat(TypedDict):
    mean: float | None
    std: float | None
    ci95: list[float] | None
    n: int


class EnergyReport(TypedDict):
    """What ``analyze`` returns: plain JSON types only."""

    inferences: int
    energy_per_inference_mj: dict[str, Stat]  # "gross", "net"
    per_inference_mj: dict[str, str]  # "encoding", "net": every timed inference, see series
    layers: list[dict[str, Any]]
    average_power_w: float | None
    busy_power_w: float | None
    idle_power_w: float | None
    idle_pre_w: float | None
    idle_post_w: float | None
    task_energy_j: float | None
    alignment: dict[str, Any]
    quality: dict[str, Any]
    monitor: dict[str, Any]


def energy_at(
    trace: Trace, edges_s: np.ndarray, chunk: int = CHUNK_SAMPLES, *, edge_aware: bool = True
) -> np.ndarray:
    """Energy (J) from the capture start to each time in ``edges_s``; NaN outside the capture.

    Sample ``k`` holds its power until sample ``k+1`` (so across a dropped sample
    the last power is held), the last one for one sample period.

    An edge inside a sample splits that sample's energy. Spreading it evenly
    (``edge_aware=False``) biases every window low: window edges are where the
    power steps, so the part of the edge sample inside the window was at the
    window's power, not the sample's average. With ``edge_aware`` the split
    assumes the step happens at the edge, the two sides at the power of the
    neighbouring samples (``p[k-1]`` before, ``p[k+1]`` after), scaled so the
    sample's energy is conserved; with equal neighbours it is the even split.
    """
    edges = np.asarray(edges_s, dtype=np.float64).ravel()
    order = np.argsort(edges, kind="stable")
    x = edges[order]
    out = np.full(len(x), np.nan)
    sample = np.full(len(x), -1, dtype=np.int64)  # the sample each edge falls in
    base = 0.0
    offset = 0  # position in the trace of the chunk's first sample
    carry_t: np.ndarray | None = None
    carry_p: np.ndarray | None = None
    for t, p in trace.chunks(chunk):
        n_new = len(t)
        if carry_t is not None and carry_p is not None:
            t = np.concatenate([carry_t, t])
            p = np.concatenate([carry_p, p])
        first = offset - (len(t) - n_new)
        cum = np.empty(len(t))
        cum[0] = base
        np.cumsum(p[:-1] * np.diff(t), out=cum[1:])
        cum[1:] += base
        lo, hi = np.searchsorted(x, [t[0], t[-1]], side="left")
        if hi > lo:
            i = np.searchsorted(t, x[lo:hi], side="right") - 1
            out[lo:hi] = cum[i] + p[i] * (x[lo:hi] - t[i])
            sample[lo:hi] = first + i
        base = float(cum[-1])
        carry_t, carry_p = t[-1:], p[-1:]
        offset += n_new
    if carry_t is not None and carry_p is not None:
        last_t, last_p = float(carry_t[0]), float(carry_p[0])
        lo = np.searchsorted(x, last_t, side="left")
        hi = np.searchsorted(x, last_t + trace._last_dt(), side="right")
        out[lo:hi] = base + last_p * (x[lo:hi] - last_t)
    if edge_aware:
        _split_edge_samples(trace, x, sample, out)
    result = np.empty_like(out)
    result[order] = out
    return result


def _split_edge_samples(trace: Trace, x: np.ndarray, k: np.ndarray, out: np.ndarray) -> None:
    """Re-split each edge sample's energy as if the power stepped at the edge (in place)."""
    ok = (k >= 1) & (k + 2 < len(trace))
    if not np.any(ok):
        return
    k = k[ok]
    power = trace.power_w
    before = np.asarray(power[k - 1], dtype=np.float64)
    mid = np.asarray(power[k], dtype=np.float64)
    after = np.asarray(power[k + 1], dtype=np.float64)
    t_k = _times_at(trace, k)
    dt = _times_at(trace, k + 1) - t_k
    f = np.clip((x[ok] - t_k) / dt, 0.0, 1.0)
    even = mid * f * dt  # what the even split put before the edge
    weight = before * f + after * (1.0 - f)
    good = (before > 0) & (after > 0) & (weight > 0)
    split = np.where(good, mid * dt * before * f / np.where(good, weight, 1.0), even)
    out[ok] += split - even


def _times_at(trace: Trace, k: np.ndarray) -> np.ndarray:
    if trace.times_s is not None:
        return np.asarray(trace.times_s[k], dtype=np.float64)
    if trace.index is not None:
        return trace.index[k].astype(np.float64) / trace.rate_hz
    return k.astype(np.float64) / trace.rate_hz


def stat(values: np.ndarray) -> Stat:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "std": None, "ci95": None, "n": 1}
    std = float(v.std(ddof=1))
    half = t_critical_95(len(v) - 1) * std / math.sqrt(len(v))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": len(v)}


def _mj(values: np.ndarray) -> Stat:
    return stat(np.asarray(values) * 1e3)


def _none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _layer_rows(
    trace: Trace, windows: mk.Windows, energy: np.ndarray, duration: np.ndarray, idle: float
) -> list[dict[str, Any]]:
    """Per-layer energy, or none with the reason where the windows are too short to meter."""
    period = max(1.0 / trace.rate_hz, trace.update_period_s)
    rows = []
    for index in np.unique(windows.layer_index):
        sel = windows.layer_index == index
        name = windows.layer_names[index] if 0 <= index < len(windows.layer_names) else str(index)
        periods = float(duration[sel].mean()) / period
        row: dict[str, Any] = {
            "index": int(index),
            "name": name,
            "type": windows.layer_types[index] if index < len(windows.layer_types) else None,
            "duration_ms": stat(duration[sel] * 1e3),
            "samples_per_window": periods,
            "why": None,
        }
        if periods < MIN_LAYER_PERIODS:
            row["gross_mj"] = row["net_mj"] = stat(np.array([]))
            row["why"] = (
                f"{periods:.1f} meter periods per window, fewer than {MIN_LAYER_PERIODS}: "
                "too short for this meter"
            )
        else:
            row["gross_mj"] = _mj(energy[sel])
            net = energy[sel] - idle * duration[sel] if np.isfinite(idle) else np.array([])
            row["net_mj"] = _mj(net)
        rows.append(row)
    return rows


def analyze(
    trace: Trace,
    markers: Mapping[str, Any] | mk.Windows,
    sync: ClockFit | Sequence[Exchange] | None = None,
    *,
    chunk: int = CHUNK_SAMPLES,
) -> EnergyReport:
    """Energy per inference (gross and net, mJ, with 95% CI), per layer, power and quality.

    ``sync`` is a ready ``ClockFit``, or the clock exchanges to fit (then refined
    with the sync pulses), or None (pulses only, else no alignment).
    """
    windows = markers if isinstance(markers, mk.Windows) else mk.parse(markers)
    fit = sync if isinstance(sync, ClockFit) else synchronize(trace, windows, sync)

    inf_s = fit.to_trace_s(windows.timed_inferences()).reshape(-1, 2)
    lay_s = fit.to_trace_s(windows.layer).reshape(-1, 2)
    duration = trace.duration_s
    if windows.task is not None:
        task_s = fit.to_trace_s(np.array(windows.task))
    elif len(windows.all_t_ns):
        task_s = fit.to_trace_s(np.array([windows.all_t_ns.min(), windows.all_t_ns.max()]))
    else:
        task_s = np.array([0.0, duration])
    pre = np.array([0.0, task_s[0] - IDLE_MARGIN_S])
    post = np.array([task_s[1] + IDLE_MARGIN_S, duration])

    edges = np.concatenate([pre, post, task_s, inf_s.ravel(), lay_s.ravel()])
    energy = energy_at(trace, edges, chunk)
    e_pre, e_post, e_task = (
        (energy[1] - energy[0]),
        (energy[3] - energy[2]),
        (energy[5] - energy[4]),
    )
    n_inf = len(inf_s)
    gross = energy[6 : 6 + 2 * n_inf : 2]
    gross = energy[7 : 6 + 2 * n_inf : 2] - gross
    lay_e = energy[6 + 2 * n_inf :: 2]
    lay_e = energy[7 + 2 * n_inf :: 2] - lay_e

    idle_pre = e_pre / (pre[1] - pre[0]) if pre[1] - pre[0] > 0 else np.nan
    idle_post = e_post / (post[1] - post[0]) if post[1] - post[0] > 0 else np.nan
    idles = [w for w in (idle_pre, idle_post) if np.isfinite(w)]
    idle = float(np.mean(idles)) if idles else np.nan
    inf_dur = inf_s[:, 1] - inf_s[:, 0]
    net = gross - idle * inf_dur if np.isfinite(idle) else np.full(n_inf, np.nan)

    layers = _layer_rows(trace, windows, lay_e, lay_s[:, 1] - lay_s[:, 0], idle)

    all_marks = fit.to_trace_s(windows.all_t_ns)
    q = quality.check(
        trace,
        fit,
        marker_times_s=all_marks,
        markers_monotonic=windows.monotonic,
        window_s=inf_dur,
        idle_pre_w=_none(idle_pre),
        idle_post_w=_none(idle_post),
    )
    busy = float(np.nansum(gross) / inf_dur.sum()) if n_inf and inf_dur.sum() > 0 else np.nan
    return {
        "inferences": n_inf,
        "energy_per_inference_mj": {"gross": _mj(gross), "net": _mj(net)},
        "per_inference_mj": {"encoding": series.ENCODING, "net": series.encode(net * 1e3)},
        "layers": layers,
        "average_power_w": _none(e_task / (task_s[1] - task_s[0]))
        if task_s[1] > task_s[0]
        else None,
        "busy_power_w": _none(busy),
        "idle_power_w": _none(idle),
        "idle_pre_w": _none(idle_pre),
        "idle_post_w": _none(idle_post),
        "task_energy_j": _none(e_task),
        "alignment": fit.to_dict(),
        "quality": q,
        "monitor": {
            "source": trace.source,
            "rate_hz": trace.rate_hz,
            "samples": len(trace),
            "duration_s": duration,
            "rails": list(trace.rails) if trace.rails is not None else None,
        },
    }
