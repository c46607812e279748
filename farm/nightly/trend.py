"""Change points in each cell's nightly medians: the slow drift no pairwise test catches.

A cell that gets 1% slower every night never fails a night-to-night
comparison at a 5% threshold, yet is 20% slower after three weeks. Here each
cell's series of nightly medians (log scale, so changes are relative) is cut
into segments of constant level by PELT (``ruptures``, least-squares cost),
and every cut is reported with the job where the new level starts.

The series is first scaled by a robust estimate of its night-to-night noise
(the MAD of first differences, which a level shift barely moves), so one
penalty serves every cell; ``PENALTY`` is chosen so that a cell whose nights
only vary by noise gets a false change point in about 1% of 30-night
series (``benchmarks/regress.py`` measures the rate). ``NOISE_FLOOR`` keeps a
cell measured to 0.1% from turning every 0.3% wobble into a change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import ruptures  # type: ignore[import-untyped]

from farm.nightly.source import Measured
from farm.spec import CellKey
from farm.states import TaskState

PENALTY = 25.0  # × the noise variance: well under 1% false alarms per stationary 30-night series
MIN_SIZE = 2  # nights in a segment: one odd night is not a new level
NOISE_FLOOR = 0.005  # smallest night-to-night noise assumed (log scale: 0.5%)


@dataclass(frozen=True)
class ChangePoint:
    index: int  # first night of the new level
    job_id: str
    at: float  # that job's creation time
    before_ms: float  # median of the segment before
    after_ms: float  # median of the segment after
    change: float  # after / before - 1


@dataclass
class Series:
    cell: CellKey
    job_ids: list[str]
    times: list[float]
    medians_ms: np.ndarray
    change_points: list[ChangePoint] = field(default_factory=list)


def noise(log_values: np.ndarray) -> float:
    """Night-to-night noise (standard deviation) from the MAD of first differences."""
    if len(log_values) < 3:
        return NOISE_FLOOR
    steps = np.diff(log_values)
    mad = float(np.median(np.abs(steps - np.median(steps))))
    return max(1.4826 * mad / np.sqrt(2.0), NOISE_FLOOR)


def change_points(medians: np.ndarray, *, penalty: float = PENALTY) -> list[int]:
    """Indices where a new level starts in a series of positive medians."""
    values = np.log(np.asarray(medians, dtype=np.float64))
    if len(values) < 2 * MIN_SIZE:
        return []
    scaled = (values - np.median(values)) / noise(values)
    algo = ruptures.Pelt(model="l2", min_size=MIN_SIZE, jump=1).fit(scaled.reshape(-1, 1))
    return [int(i) for i in algo.predict(pen=penalty)[:-1]]  # the last "cut" is the end


def trend(nights: list[list[Measured]], *, penalty: float = PENALTY) -> list[Series]:
    """Each cell's nightly medians (oldest night first) and their change points.

    ``nights`` holds the measured cells of each job, oldest first; a night where
    a cell has no done result is left out of that cell's series.
    """
    by_cell: dict[CellKey, Series] = {}
    for night in nights:
        for m in night:
            median = ((m.result or {}).get("latency") or {}).get("median_ms")
            if m.state is not TaskState.DONE or not median or median <= 0:
                continue
            s = by_cell.setdefault(m.cell, Series(m.cell, [], [], np.zeros(0)))
            s.job_ids.append(m.job_id)
            s.times.append(m.created)
            s.medians_ms = np.append(s.medians_ms, median)
    for s in by_cell.values():
        cuts = change_points(s.medians_ms, penalty=penalty)
        edges = [0, *cuts, len(s.medians_ms)]
        for k, cut in enumerate(cuts):
            before = float(np.median(s.medians_ms[edges[k] : cut]))
            after = float(np.median(s.medians_ms[cut : edges[k + 2]]))
            s.change_points.append(
                ChangePoint(cut, s.job_ids[cut], s.times[cut], before, after, after / before - 1)
            )
    return [by_cell[c] for c in sorted(by_cell)]
