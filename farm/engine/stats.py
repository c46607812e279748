"""Latency statistics, pure standard library (the engine ships without numpy).

Every figure is in milliseconds. Percentiles interpolate linearly between
closest ranks (numpy's default "linear" method), so the numbers here match what
an analyst gets from ``numpy.percentile`` on the same samples.

The 95% confidence interval of the mean uses Student's t: a table for small
samples, where the normal approximation would make the interval too narrow,
and the Cornish-Fisher expansion of the t quantile above that. The median's
95% interval is distribution-free: the two order statistics whose ranks the
binomial(n, 1/2) normal approximation puts 1.96 standard deviations either side
of n/2 (reported from ``MEDIAN_CI_MIN_SAMPLES`` samples on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# The 99th percentile is reported only from this many samples on: with fewer,
# fewer than ~7 samples lie above it and one stray scheduler hiccup moves it.
P99_MIN_SAMPLES = 662
# Below this many samples the median's order-statistic interval is the whole range.
MEDIAN_CI_MIN_SAMPLES = 10

# Two-sided 95% critical values of Student's t, indexed by degrees of freedom.
_T95 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z975 = 1.959963984540054


def t_critical_95(df: int) -> float:
    """Two-sided 95% critical value of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("degrees of freedom must be >= 1")
    if df <= len(_T95):
        return _T95[df - 1]
    # Cornish-Fisher expansion around the normal quantile: exact to ~1e-5 here.
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linear interpolation."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    h = (len(sorted_values) - 1) * q / 100
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def median_ci95(sorted_values: Sequence[float]) -> tuple[float | None, float | None]:
    """A distribution-free 95% confidence interval of the median of sorted values: the
    order statistics of ranks n/2 - 1.96 sqrt(n)/2 and 1 + n/2 + 1.96 sqrt(n)/2 (1-based,
    rounded to the nearest)."""
    n = len(sorted_values)
    if n < MEDIAN_CI_MIN_SAMPLES:
        return None, None
    half = _Z975 * math.sqrt(n) / 2
    lo = max(round(n / 2 - half), 1)
    hi = min(round(n / 2 + half + 1), n)
    return sorted_values[lo - 1], sorted_values[hi - 1]


def summarize(
    samples_ms: Sequence[float], cold_ms: float | None = None, cpu_ns: Sequence[int] | None = None
) -> dict:
    """Summary of per-inference latencies (ms) as the engine reports it; with ``cpu_ns``
    (each inference's process CPU time) also their median CPU time, ``cpu_median_ms``.

    ``stdev_ms`` is the sample standard deviation (n - 1). Fields that need more
    samples than there are (stdev and CI for one sample, p99 below
    ``P99_MIN_SAMPLES``) are ``None`` rather than a misleading number.
    """
    n = len(samples_ms)
    if n == 0:
        raise ValueError("no samples to summarize")
    xs = sorted(samples_ms)
    mean = math.fsum(xs) / n
    stdev = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    if stdev is not None:
        half = t_critical_95(n - 1) * stdev / math.sqrt(n)
        ci_low, ci_high = mean - half, mean + half
    else:
        ci_low = ci_high = None
    q1, q3 = percentile(xs, 25), percentile(xs, 75)
    median_lo, median_hi = median_ci95(xs)
    iqr = q3 - q1
    low_fence, high_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    return {
        "n": n,
        "mean_ms": mean,
        "ci95_low_ms": ci_low,
        "ci95_high_ms": ci_high,
        "median_ms": percentile(xs, 50),
        "median_ci95_low_ms": median_lo,
        "median_ci95_high_ms": median_hi,
        "p90_ms": percentile(xs, 90),
        "p99_ms": percentile(xs, 99) if n >= P99_MIN_SAMPLES else None,
        "min_ms": xs[0],
        "max_ms": xs[-1],
        "stdev_ms": stdev,
        "q1_ms": q1,
        "q3_ms": q3,
        "iqr_ms": iqr,
        "outliers": sum(1 for x in xs if x < low_fence or x > high_fence),
        "cold_ms": cold_ms,
        "cpu_median_ms": median([c / 1e6 for c in cpu_ns]) if cpu_ns else None,
    }


def median(values: Sequence[float]) -> float:
    """Median of unsorted values (linear interpolation for even counts)."""
    return percentile(sorted(values), 50)


def fast_mean(values: Sequence[float]) -> float:
    """Mean of the faster half of ``values`` (the statistic the layer pass compares)."""
    fast = sorted(values)[: (len(values) + 1) // 2]
    return sum(fast) / len(fast)
