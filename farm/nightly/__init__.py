"""Nightly sweeps: compare two jobs, follow each cell across nights, spot a sick board.

- ``compare_jobs`` / ``compare_cells`` — cell-by-cell verdicts between two jobs
  (``compare``, ``stats``);
- ``trend_jobs`` / ``cell_trends`` — change points in each cell's nightly medians (``trend``);
- ``degraded`` / ``board_drift`` — boards slower than their same-tag peers (``drift``).

Store reads (the store's read API) live in ``source`` alone.
"""

from __future__ import annotations

from typing import Any

from farm.errors import UserError
from farm.nightly import source
from farm.nightly.compare import (
    ALPHA,
    CORRECTION,
    STATISTICS,
    THRESHOLD,
    CellComparison,
    Comparison,
    Verdict,
)
from farm.nightly.compare import compare as compare_cells
from farm.nightly.drift import BoardDrift, BoardMedian, K, board_drift
from farm.nightly.source import NIGHTLY, Measured
from farm.nightly.trend import Series
from farm.nightly.trend import trend as cell_trends

__all__ = [
    "ALPHA", "NIGHTLY", "THRESHOLD", "BoardDrift", "BoardMedian", "CellComparison",
    "Comparison", "Measured", "Series", "Verdict", "board_drift", "cell_trends", "compare_cells",
    "compare_jobs", "degraded", "trend_jobs",
]  # fmt: skip

BASELINES = ("previous", "last-nightly")


def compare_jobs(
    store: Any,
    jobs: list[str],
    *,
    baseline: str | None = None,
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
    correction: str = CORRECTION,
    statistic: str = "wall",
) -> Comparison:
    """``farm compare``: ``jobs`` is ``[A, B]``, ``[B]`` or ``[]`` (B = the latest finished
    job); with fewer than two, A is ``baseline``: ``previous`` (the last finished job of
    B's name before it, the default), ``last-nightly`` (the last finished job named
    nightly before B) or a job id."""
    if len(jobs) > 2:
        raise UserError(f"compare takes at most two jobs, got {len(jobs)}")
    if len(jobs) == 2:
        if baseline is not None:
            raise UserError("give two jobs or --baseline, not both")
        a, b = source.find_job(store, jobs[0]), source.find_job(store, jobs[1])
    else:
        b = source.find_job(store, jobs[0]) if jobs else source.latest_finished(store)
        baseline = baseline or "previous"
        if baseline == "previous":
            a = source.previous_job(store, b)
        elif baseline == "last-nightly":
            a = source.previous_job(store, b, name=NIGHTLY)
        else:
            a = source.find_job(store, baseline)
    if a.id == b.id:
        raise UserError(f"compare: both sides are {a.id}")
    if correction not in ("holm", "bh"):
        raise UserError(f"--correction: expected holm or bh, got {correction!r}")
    if not threshold > 0:
        raise UserError(f"--threshold: expected a fraction above 0 (0.05 = 5%), got {threshold}")
    if not 0 < alpha < 1:
        raise UserError(f"--alpha: expected a level between 0 and 1, got {alpha}")
    if statistic not in STATISTICS:
        raise UserError(f"--statistic: expected wall or cpu, got {statistic!r}")
    return compare_cells(
        source.measured(store, a),
        source.measured(store, b),
        baseline=a.id,
        candidate=b.id,
        threshold=threshold,
        alpha=alpha,
        correction=correction,
        statistic=statistic,
    )


def trend_jobs(store: Any, *, name: str = NIGHTLY, last: int = 30) -> list[Series]:
    """``farm trend``: the last ``last`` finished jobs named ``name``, cell by cell."""
    if last < 2:
        raise UserError(f"--last: a trend needs at least 2 nights, got {last}")
    jobs = source.jobs_named(store, name, last)
    if not jobs:
        names = source.job_names(store)
        there = f"the finished jobs are named: {', '.join(names)}" if names else "none finished"
        raise UserError(f"no finished job named {name!r} ({there}; --name NAME picks one)")
    return cell_trends([source.measured(store, job) for job in jobs])


def degraded(store: Any, *, jobs: int = 20, k: float = K) -> dict[str, BoardDrift]:
    """The drift check over the newest result of every cell in the last ``jobs`` jobs."""
    newest = source.latest_per_cell(store, source.recent_jobs(store, jobs))
    medians = []
    for m in newest:
        median = ((m.result or {}).get("latency") or {}).get("median_ms")
        if m.tags is not None and median:
            medians.append(BoardMedian(m.cell.board, m.tags, m.cell.peers_key, median))
    return board_drift(medians, k=k)
