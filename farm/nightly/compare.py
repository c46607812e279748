"""Compare two jobs cell by cell: what got slower or hungrier, and how sure we are.

For each cell measured in both jobs (matched by model, board, processor and
variant), latency and energy per inference are compared on their
per-inference samples: a Mann–Whitney U test, and the Hodges–Lehmann shift
with its confidence interval (``stats``). The p-values of every test made
(latency and energy, every cell) are adjusted together: Benjamini–Hochberg by
default, which bounds the expected share of false regressions among those
flagged (when nothing changed, the chance of any flag at all), and keeps the
power to see real ones among hundreds of cells that Holm's family-wise bound
gives away; ``holm`` is there for those who want that bound.

A verdict needs two things. *Significance*: the adjusted p-value is below
``alpha``. *Practical size*: the confidence interval reaches the
``threshold`` (default 5%) in the direction of the change, i.e. the data do
not rule out a change at least that large. With a thousand samples a 0.5%
change is significant, and it is not a regression anyone should be woken for;
a true 5% slowdown, on the other hand, has its interval's upper end above 5%
nearly always, so it is caught rather than missed half the time, as a rule on
the point estimate alone would. Mann–Whitney assumes independent samples;
per-inference latencies are mildly autocorrelated, which the threshold absorbs.

A cell whose engine, torch, artifact or board changed is flagged with what
changed; the verdict stands (a new engine that is slower is exactly what a
nightly run is for), and the differing environment values are listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from farm.nightly import environment, stats
from farm.nightly.source import Cell, Measured

THRESHOLD = 0.05
ALPHA = 0.05
CORRECTION = "bh"  # Benjamini–Hochberg: see the module docstring


class Verdict(StrEnum):
    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    UNCHANGED = "unchanged"
    INCOMPARABLE = "incomparable"


@dataclass
class Change:
    """One metric's change from A to B (relative changes: 0.05 = 5% more)."""

    a: float | None  # A's median (ms or mJ)
    b: float | None
    change: float | None = None  # Hodges–Lehmann shift, relative to A's median
    low: float | None = None  # its confidence interval, relative
    high: float | None = None
    p: float | None = None
    p_adjusted: float | None = None
    n_a: int = 0
    n_b: int = 0

    def direction(self, threshold: float, alpha: float) -> int:
        """+1 a significant change that may be at least ``threshold`` worse, -1 better, else 0."""
        if self.p_adjusted is None or self.change is None or not self.p_adjusted < alpha:
            return 0
        if self.low is None or self.high is None:
            return 0
        reach = np.log1p(threshold)  # symmetric on the log scale: +5% worse, -4.76% better
        if self.change > 0 and np.log1p(self.high) >= reach:
            return 1
        if self.change < 0 and np.log1p(max(self.low, -0.999999)) <= -reach:
            return -1
        return 0


@dataclass
class CellComparison:
    cell: Cell
    verdict: Verdict
    why: str = ""  # for incomparable cells: what is missing
    latency: Change | None = None
    energy: Change | None = None
    peak_rss_mb: tuple[float | None, float | None] = (None, None)
    changed: list[str] = field(default_factory=list)  # engine, torch, artifact, board
    environment: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # B's own warnings
    task_a: str | None = None
    task_b: str | None = None


@dataclass
class Comparison:
    baseline: str  # job ids
    candidate: str
    threshold: float
    alpha: float
    correction: str
    cells: list[CellComparison]

    def count(self, verdict: Verdict) -> int:
        return sum(c.verdict is verdict for c in self.cells)

    @property
    def exit_code(self) -> int:
        """1 when any cell regressed, else 0 (the CLI's contract)."""
        return 1 if self.count(Verdict.REGRESSION) else 0


def compare(
    a: list[Measured],
    b: list[Measured],
    *,
    baseline: str = "A",
    candidate: str = "B",
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
    correction: str = CORRECTION,
    confidence: float = 0.95,
) -> Comparison:
    """Compare the measured cells of job A (baseline) with job B (candidate)."""
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    by_a = {m.cell: m for m in a}
    by_b = {m.cell: m for m in b}
    cells: list[CellComparison] = []
    pairs: list[tuple[CellComparison, Measured, Measured]] = []
    for cell in sorted(by_a.keys() | by_b.keys()):
        ma, mb = by_a.get(cell), by_b.get(cell)
        out = CellComparison(cell, Verdict.INCOMPARABLE)
        out.task_a, out.task_b = getattr(ma, "task_id", None), getattr(mb, "task_id", None)
        cells.append(out)
        if ma is None or mb is None:
            out.why = f"only in {'B' if ma is None else 'A'}"
            continue
        fa, fb = environment.facts(ma.result), environment.facts(mb.result)
        out.environment = environment.differences(fa, fb)
        out.changed = environment.changed(out.environment)
        out.warnings = list((mb.result or {}).get("warnings") or [])
        out.peak_rss_mb = (_peak_rss(ma.result), _peak_rss(mb.result))
        if ma.state != "done" or mb.state != "done":
            out.why = f"{ma.state} → {mb.state}"
            continue
        pairs.append((out, ma, mb))

    latency = changes([(m.latencies_ms(), n.latencies_ms()) for _, m, n in pairs], True, confidence)
    energy = changes([(m.energies_mj(), n.energies_mj()) for _, m, n in pairs], False, confidence)
    verdicts = judge(latency, energy, threshold=threshold, alpha=alpha, correction=correction)
    for (out, _, _), lat, en, verdict in zip(pairs, latency, energy, verdicts, strict=True):
        out.latency, out.energy = lat, en
        if verdict is None:
            out.why = "no latency samples"
        else:
            out.verdict = verdict
    return Comparison(baseline, candidate, threshold, alpha, correction, cells)


def changes(
    samples: list[tuple[np.ndarray | None, np.ndarray | None]], log: bool, confidence: float
) -> list[Change | None]:
    """One ``Change`` per (A, B) pair of samples (None where neither side has any), all
    tested in one block.

    Latencies are compared on the log scale (a relative shift); net energies,
    which may sit near zero, on their own scale, relative to A's median.
    """
    out: list[Change | None] = []
    usable: list[tuple[Change, np.ndarray, np.ndarray]] = []
    for x, y in samples:
        if x is None and y is None:
            out.append(None)
            continue
        x = np.zeros(0) if x is None else x
        y = np.zeros(0) if y is None else y
        change = Change(
            float(np.median(x)) if len(x) else None,
            float(np.median(y)) if len(y) else None,
            n_a=len(x),
            n_b=len(y),
        )
        out.append(change)
        positive = x.min() > 0 and y.min() > 0 if log else (change.a or 0) > 0
        if len(x) >= 2 and len(y) >= 2 and positive:
            usable.append((change, x, y))
    if not usable:
        return out
    result = stats.shift_test(
        [x for _, x, _ in usable], [y for _, _, y in usable], confidence=confidence, log=log
    )
    for k, (change, _, _) in enumerate(usable):
        bounds = np.array([result.shift[k], result.low[k], result.high[k]])
        rel = np.expm1(bounds) if log else bounds / change.a
        change.change, change.low, change.high = (float(v) for v in rel)
        change.p = float(result.p[k])
    return out


def judge(
    latency: list[Change | None],
    energy: list[Change | None],
    *,
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
    correction: str = CORRECTION,
) -> list[Verdict | None]:
    """Each cell's verdict from its latency and energy changes (None: no latency test).

    The p-values of every test (both metrics, all cells) are adjusted together
    and written back into the changes. A cell regressed if either metric did;
    it improved if one improved and neither regressed.
    """
    tested = [c for c in latency + energy if c is not None and c.p is not None]
    adjusted = stats.adjust(np.array([c.p for c in tested]), correction)
    for change, p in zip(tested, adjusted, strict=True):
        change.p_adjusted = float(p)
    out: list[Verdict | None] = []
    for lat, en in zip(latency, energy, strict=True):
        if lat is None or lat.p is None:
            out.append(None)
            continue
        directions = [c.direction(threshold, alpha) for c in (lat, en) if c is not None]
        if 1 in directions:
            out.append(Verdict.REGRESSION)
        elif -1 in directions:
            out.append(Verdict.IMPROVEMENT)
        else:
            out.append(Verdict.UNCHANGED)
    return out


def _peak_rss(result: dict[str, Any] | None) -> float | None:
    return ((result or {}).get("memory") or {}).get("peak_rss_mb")
