"""Quality checks recorded beside every energy result.

A number without its caveats misleads: each check below names a way a power
measurement silently goes wrong, and ``check`` returns the measured values
plus a list of human-readable ``warnings`` (empty when all is well).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from farm.power.base import Trace
from farm.power.sync import ClockFit

MAX_DROPPED = 0.001  # warn above 0.1% dropped samples
MAX_RATE_ERROR = 0.001  # achieved rate within ±0.1% of nominal
MAX_IDLE_MISMATCH = 0.05  # pre- and post-task idle within ±5%
MIN_UPDATES_PER_WINDOW = 10  # a window must span this many sensor updates


def achieved_rate_hz(trace: Trace, fit: ClockFit) -> tuple[float | None, str]:
    """Samples per second of real time, and what it was measured against.

    Only the pulse fit relates the monitor's own clock to the board's; otherwise
    the host's start/stop times give a coarse figure.
    """
    if fit.method == "pulse":
        return trace.rate_hz * fit.a, "pulse"
    if trace.host_stop_ns and trace.host_stop_ns > trace.t0_host_ns and trace.times_s is None:
        return trace.nominal_samples / ((trace.host_stop_ns - trace.t0_host_ns) / 1e9), "host"
    return None, "unknown"


def check(
    trace: Trace,
    fit: ClockFit,
    *,
    marker_times_s: np.ndarray,
    markers_monotonic: bool,
    window_s: np.ndarray,
    idle_pre_w: float | None,
    idle_post_w: float | None,
) -> dict[str, Any]:
    warnings: list[str] = []
    nominal = max(trace.nominal_samples, 1)
    dropped_fraction = trace.dropped / nominal
    if dropped_fraction > MAX_DROPPED:
        warnings.append(
            f"dropped {trace.dropped} samples ({dropped_fraction:.3%} > {MAX_DROPPED:.1%})"
        )

    rate, rate_basis = achieved_rate_hz(trace, fit)
    rate_error = None if rate is None else rate / trace.rate_hz - 1.0
    if rate_error is not None and abs(rate_error) > MAX_RATE_ERROR:
        warnings.append(
            f"achieved rate {rate:.1f} Hz is {rate_error:+.3%} off nominal {trace.rate_hz:g} Hz"
        )

    idle_mismatch = None
    if idle_pre_w is not None and idle_post_w is not None:
        mean = (idle_pre_w + idle_post_w) / 2
        idle_mismatch = abs(idle_pre_w - idle_post_w) / mean if mean else None
        if idle_mismatch is not None and idle_mismatch > MAX_IDLE_MISMATCH:
            warnings.append(
                f"idle before/after differ by {idle_mismatch:.1%} (> {MAX_IDLE_MISMATCH:.0%})"
            )
    else:
        warnings.append("no idle window on one side of the task: net energy uses what there is")

    inside = bool(
        len(marker_times_s) == 0
        or (np.min(marker_times_s) >= 0 and np.max(marker_times_s) <= trace.duration_s)
    )
    if not inside:
        warnings.append("markers fall outside the capture")
    if not markers_monotonic:
        warnings.append("markers are not monotonic")

    sensor_period = max(trace.update_period_s, 1.0 / trace.rate_hz)
    min_window = float(np.min(window_s)) if len(window_s) else None
    if min_window is not None and min_window < MIN_UPDATES_PER_WINDOW * sensor_period:
        warnings.append(
            f"shortest window {min_window * 1e3:.2f} ms spans fewer than "
            f"{MIN_UPDATES_PER_WINDOW} sensor updates ({sensor_period * 1e3:.2f} ms each)"
        )
    if trace.rails is not None:
        warnings.append(f"covers only the rails read: {', '.join(trace.rails)}")
    warnings.extend(f"monitor: {h}" for h in trace.hazards)
    if fit.method == "none":
        warnings.append("no clock alignment: board clock assumed equal to the host's")

    return {
        "dropped_samples": int(trace.dropped),
        "dropped_fraction": dropped_fraction,
        "nominal_rate_hz": trace.rate_hz,
        "achieved_rate_hz": rate,
        "achieved_rate_basis": rate_basis,
        "rate_error": rate_error,
        "idle_mismatch": idle_mismatch,
        "markers_inside_capture": inside,
        "markers_monotonic": markers_monotonic,
        "min_window_s": min_window,
        "sensor_update_s": sensor_period,
        "rails": list(trace.rails) if trace.rails is not None else None,
        "hazards": list(trace.hazards),
        "warnings": warnings,
        "ok": not warnings,
    }
