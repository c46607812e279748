"""Two-sample statistics for many cells at once: Mann–Whitney U, Hodges–Lehmann shift, corrections.

A nightly comparison asks, for hundreds of cells, "is B slower than A?" on a
thousand per-inference samples each. Latencies are skewed and carry outliers,
so the test is rank-based (Mann–Whitney U) and the effect is the
Hodges–Lehmann shift of the *log* latencies: the median of all pairwise
log-ratios ``log(b_j / a_i)``, i.e. a relative change that is the same for a
0.1 ms and a 100 ms model. Its confidence interval is the distribution-free
one obtained by inverting the U test (two order statistics of the pairwise
differences).

Nothing builds the ``n × m`` pairwise differences: the number of differences
at or below ``d`` is a sum of binary searches of ``b - d`` in sorted ``a``
(``O(m log n)``), so each order statistic is bracketed from a small sketch of
the two samples and then found by an interpolating bisection on that count, a
few counts per cell. Cells of equal sample counts are computed as one block.

The p-values use the normal approximation with tie and continuity corrections
(exact enough for the sample sizes farm records, tens to thousands). They
assume independent samples: per-inference latencies within a run are mildly
autocorrelated, which makes p-values optimistic; this is why a verdict also
needs a practical threshold (see ``compare``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import ndtr, ndtri  # type: ignore[import-untyped]

TOLERANCE = 1e-5  # shifts and bounds are exact to this: 0.001% on the log scale, else relative


@dataclass(frozen=True)
class Shift:
    """Per-cell results, arrays of one length (NaN where a cell has no samples)."""

    p: np.ndarray  # two-sided Mann–Whitney p-value
    shift: np.ndarray  # Hodges–Lehmann estimate of b - a (of log b - log a with ``log``)
    low: np.ndarray  # its confidence interval
    high: np.ndarray
    n_a: np.ndarray
    n_b: np.ndarray


def shift_test(
    a: Sequence[np.ndarray], b: Sequence[np.ndarray], *, confidence: float = 0.95, log: bool = True
) -> Shift:
    """Test and estimate the shift from ``a[k]`` to ``b[k]`` for every cell ``k``.

    With ``log`` (latencies) samples must be positive and the shift is of
    their logarithms; without it (net energies, which can be near zero) the
    shift is in the samples' own unit. Cells are grouped by their sample
    counts so each group is computed as one block.
    """
    if len(a) != len(b):
        raise ValueError("shift_test: a and b hold different numbers of cells")
    k = len(a)
    out = {name: np.full(k, np.nan) for name in ("p", "shift", "low", "high")}
    n_a = np.array([len(x) for x in a], dtype=np.int64)
    n_b = np.array([len(y) for y in b], dtype=np.int64)
    groups: dict[tuple[int, int], list[int]] = {}
    for i in range(k):
        if n_a[i] > 0 and n_b[i] > 0:
            groups.setdefault((int(n_a[i]), int(n_b[i])), []).append(i)
    z = float(ndtri(0.5 + confidence / 2))
    for rows in groups.values():
        x = np.stack([np.asarray(a[i], dtype=np.float64) for i in rows])
        y = np.stack([np.asarray(b[i], dtype=np.float64) for i in rows])
        x, y = (np.log(x), np.log(y)) if log else (x, y)
        x, y = np.sort(x, axis=1), np.sort(y, axis=1)
        scale = 1.0 if log else float(np.median(np.abs(x))) or 1.0
        block = _Block(x, y, TOLERANCE * scale)
        p, sigma = block.mann_whitney()
        nm = block.n * block.m
        # order statistics of the n·m differences (1-based ranks): the median and the bounds
        c = np.clip(np.floor(nm / 2 - z * sigma), 1, nm)
        out["p"][rows] = p
        mid, low, high = block.order_stats(
            [np.full(len(rows), float((nm + 1) // 2)), c, nm + 1 - c]
        )
        out["shift"][rows] = mid
        out["low"][rows] = np.minimum(low, mid)  # ties can put all three within TOLERANCE
        out["high"][rows] = np.maximum(high, mid)
    return Shift(n_a=n_a, n_b=n_b, **out)


class _Block:
    """Cells with ``n`` sorted samples in ``x`` and ``m`` in ``y`` (rows), on the log scale."""

    SKETCH = 64  # points per sample in the sketch that brackets each order statistic

    def __init__(self, x: np.ndarray, y: np.ndarray, tolerance: float):
        self.x, self.y, self.tol = x, y, tolerance
        self.rows, self.n = x.shape
        self.m = y.shape[1]

    def count(self, d: np.ndarray, rows: np.ndarray, *, strict: bool) -> np.ndarray:
        """For each row, how many pairs have ``y_j - x_i < d`` (``strict``) or ``<= d``.

        Row by row: one row's sorted sample stays in the CPU cache while its
        ``m`` sorted queries are searched, which beats one search in all rows
        laid end to end.
        """
        side: Literal["left", "right"] = "right" if strict else "left"  # x > y - d | x >= y - d
        out = np.empty(len(rows))
        for k, r in enumerate(rows):
            out[k] = self.n * self.m - np.searchsorted(self.x[r], self.y[r] - d[k], side).sum()
        return out

    def mann_whitney(self) -> tuple[np.ndarray, np.ndarray]:
        """Two-sided p-value of U (pairs with y > x, ties half) and U's standard deviation."""
        rows, zero = np.arange(self.rows), np.zeros(self.rows)
        below = self.count(zero, rows, strict=True)  # pairs with y < x
        at_or_below = self.count(zero, rows, strict=False)
        nm = self.n * self.m
        u = nm - (below + at_or_below) / 2.0
        big_n = self.n + self.m
        # a row has ties if a sample repeats a value or the two share one (tied pairs)
        tied = (at_or_below > below) | _repeats(self.x) | _repeats(self.y)
        ties = _tie_term(self.x, self.y, np.flatnonzero(tied))
        sigma = np.sqrt(nm / 12.0 * ((big_n + 1) - ties / (big_n * (big_n - 1))))
        dev = np.maximum(np.abs(u - nm / 2.0) - 0.5, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(sigma > 0, 2 * ndtr(-dev / sigma), 1.0)
        return np.minimum(p, 1.0), sigma

    def order_stats(self, ranks: list[np.ndarray]) -> list[np.ndarray]:
        """The ``rank``-th smallest (1-based) of each row's differences ``y_j - x_i``, per rank.

        ``ranks`` are ascending (a lower bound, the median, an upper bound). A
        sketch (``SKETCH`` evenly spaced order statistics of each sample, so
        ``SKETCH²`` differences) gives three probes: below the lowest rank, at
        the middle one, above the highest. Their counts (with the extreme
        differences, whose counts are 0 and n·m) bracket every rank; ``_narrow``
        does the rest.
        """
        kx, ky = min(self.SKETCH, self.n), min(self.SKETCH, self.m)
        sx = self.x[:, ((np.arange(kx) + 0.5) * self.n / kx).astype(int)]
        sy = self.y[:, ((np.arange(ky) + 0.5) * self.m / ky).astype(int)]
        diffs = (sy[:, None, :] - sx[:, :, None]).reshape(self.rows, -1)
        nm, size = self.n * self.m, kx * ky
        margin = 3 * max(kx, ky)  # in sketch positions: its ranks are off by < 2/SKETCH
        every = np.arange(self.rows)

        def position(rank: np.ndarray, offset: int) -> np.ndarray:
            return np.clip(np.round(rank / nm * size).astype(int) + offset, 0, size - 1)

        wanted = [
            position(ranks[0], -margin),
            position(ranks[len(ranks) // 2], 0),
            position(ranks[-1], margin),
        ]
        # only these order statistics of the sketch are needed: partition, do not sort
        diffs.partition(np.unique(np.concatenate(wanted)), axis=1)

        def at(pos: np.ndarray) -> np.ndarray:
            return diffs[every, pos]

        probes = [
            self.y[:, 0] - self.x[:, -1] - self.tol,  # below every difference: count 0
            *(at(pos) for pos in wanted),
            self.y[:, -1] - self.x[:, 0],  # the largest difference: count n·m
        ]
        inner = [self.count(p, every, strict=False) for p in probes[1:-1]]
        points = np.stack(probes, axis=1)
        counts = np.stack([np.zeros(self.rows), *inner, np.full(self.rows, float(nm))], axis=1)
        out = []
        for rank in ranks:
            above = np.maximum.accumulate(counts, axis=1) >= rank[:, None]
            first = np.argmax(above, axis=1)  # the first probe whose count reaches the rank
            lo, hi = points[every, first - 1], points[every, first]
            c_lo, c_hi = counts[every, first - 1], counts[every, first]
            out.append(self._narrow(rank, lo.copy(), hi.copy(), c_lo, c_hi))
        return out

    def _narrow(self, rank, lo, hi, c_lo, c_hi) -> np.ndarray:
        """Shrink ``count(lo) < rank <= count(hi)`` until the bracket is narrower than ``tol``.

        The Illinois variant of regula falsi: place ``d`` where the count would
        reach ``rank`` if it were linear between the ends, and when the same end
        moves twice running, halve the other end's weight so a curved count
        cannot make the bracket crawl from one side.
        """
        # aim half a pair below the rank: the count is a step function, and a count
        # that equals its aim exactly would pin one end where it is
        aim = rank - 0.5
        f_lo, f_hi = c_lo - aim, c_hi - aim  # f_lo < 0 < f_hi
        last = np.zeros(self.rows, dtype=np.int8)  # which end moved last: -1 lo, +1 hi
        while True:
            active = np.flatnonzero(hi - lo > self.tol)
            if len(active) == 0:
                return hi
            a_lo, a_hi = lo[active], hi[active]
            frac = np.clip(-f_lo[active] / (f_hi[active] - f_lo[active]), 1e-3, 1 - 1e-3)
            d = a_lo + frac * (a_hi - a_lo)
            f = self.count(d, active, strict=False) - aim[active]
            up = f >= 0
            moved = np.where(up, 1, -1).astype(np.int8)
            again = moved == last[active]
            hi[active[up]], f_hi[active[up]] = d[up], f[up]
            lo[active[~up]], f_lo[active[~up]] = d[~up], f[~up]
            f_lo[active[up & again]] /= 2  # Illinois: the end that stayed counts for less
            f_hi[active[~up & again]] /= 2
            last[active] = moved


def _repeats(sorted_rows: np.ndarray) -> np.ndarray:
    return (sorted_rows[:, 1:] == sorted_rows[:, :-1]).any(axis=1)


def _tie_term(x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Σ (t³ − t) over groups of tied values in the pooled sample of each of ``rows``
    (0 elsewhere: ties are rare in nanosecond timings)."""
    out = np.zeros(len(x))
    for r in rows:
        _, counts = np.unique(np.concatenate([x[r], y[r]]), return_counts=True)
        out[r] = float(np.sum(counts.astype(np.float64) ** 3 - counts))
    return out


def adjust(p: np.ndarray, method: str = "holm") -> np.ndarray:
    """Multiplicity-adjusted p-values (NaN entries are left out and stay NaN).

    ``holm`` controls the chance of any false regression across the cells
    (family-wise); ``bh`` (Benjamini–Hochberg) the expected share of false ones
    among those flagged, which keeps more power when many cells really moved.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    elif method == "bh":
        adj = np.minimum.accumulate(m / np.arange(m, 0, -1) * ranked[::-1])[::-1]
        adj = np.minimum(adj, 1.0)
    else:
        raise ValueError(f"unknown correction {method!r}: expected holm or bh")
    out[order] = adj
    return out
