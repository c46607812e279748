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

A cell either side of which was measured on a busy board, or whose layer sum
or power alignment check warned (``reliability``), is *unreliable*, with the
warning as its reason: it gets no verdict, and its tests stay out of the
correction. ``Comparison.exit_code``: 1 when a cleanly measured cell regressed,
else 3 ("could not judge") when any cell is unreliable, else 0.

What a verdict rests on (``BASIS``, ``statistic``): by default (``wall``) each
inference's wall-clock latency, and net energy per inference where a monitor
measured it; each inference's CPU time (the engine's process clock,
``farm.engine.timing``) is shown beside, as medians, not judged. With ``cpu``
the verdict rests on CPU time alone (wall time and energy shown, not judged):
a board shared with other work stretches wall times (the engine waits for a
CPU) far more than the CPU time an inference takes, so a busy board does not
void a CPU-time verdict; a hot board, steal, a layer sum off or a misaligned
trace still do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from farm.nightly import environment, reliability, stats
from farm.nightly.source import Measured
from farm.spec import CellKey
from farm.states import TaskState

THRESHOLD = 0.05
ALPHA = 0.05
CORRECTION = "bh"  # Benjamini–Hochberg: see the module docstring
STATISTICS = ("wall", "cpu")
BASIS = {
    "wall": "verdicts rest on each inference's wall-clock latency (Hodges–Lehmann shift on"
    " the log scale, Mann–Whitney test) and net energy per inference; medians on both sides"
    " of an arrow; CPU time (process clock) shown, not judged",
    "cpu": "verdicts rest on each inference's CPU time (process clock; Hodges–Lehmann shift on"
    " the log scale, Mann–Whitney test); medians on both sides of an arrow; wall-clock"
    " latency and energy shown, not judged",
}
EXIT_REGRESSION = 1
EXIT_UNJUDGED = 3  # "could not judge": a cell unreliable, none regressed cleanly


class Verdict(StrEnum):
    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    UNCHANGED = "unchanged"
    INCOMPARABLE = "incomparable"
    UNRELIABLE = "unreliable"  # measured on a busy board, or a check warned: not judged


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
    cell: CellKey
    verdict: Verdict
    why: str = ""  # incomparable: what is missing; unreliable: the warnings that void it
    latency: Change | None = None
    energy: Change | None = None
    cpu: Change | None = None  # CPU time per inference (tested only with statistic "cpu")
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
    statistic: str = "wall"

    def count(self, verdict: Verdict) -> int:
        return sum(c.verdict is verdict for c in self.cells)

    @property
    def basis(self) -> str:
        return BASIS[self.statistic]

    @property
    def exit_code(self) -> int:
        """The CLI's contract: 1 when a cleanly measured cell regressed, else 3 when a cell
        could not be judged (unreliable), else 0."""
        if self.count(Verdict.REGRESSION):
            return EXIT_REGRESSION
        return EXIT_UNJUDGED if self.count(Verdict.UNRELIABLE) else 0


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
    statistic: str = "wall",
) -> Comparison:
    """Compare the measured cells of job A (baseline) with job B (candidate); ``statistic``
    says what a verdict rests on (see the module docstring)."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    on_cpu = statistic == "cpu"
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    by_a = {m.cell: m for m in a}
    by_b = {m.cell: m for m in b}
    cells: list[CellComparison] = []
    pairs: list[tuple[CellComparison, Measured, Measured]] = []
    doubtful: list[tuple[CellComparison, Measured, Measured]] = []
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
        if ma.state is not TaskState.DONE or mb.state is not TaskState.DONE:
            out.why = f"{ma.state} → {mb.state}"
            continue
        why = reliability.why_unreliable(ma.result, mb.result, load_matters=not on_cpu)
        if on_cpu and why is None and (ma.cpu_ms() is None or mb.cpu_ms() is None):
            out.why = "no CPU times on " + ("A" if ma.cpu_ms() is None else "B")
            continue
        if why is not None:
            out.verdict, out.why = Verdict.UNRELIABLE, why
            doubtful.append((out, ma, mb))
        else:
            pairs.append((out, ma, mb))

    judged = [(m.cpu_ms() if on_cpu else m.latencies_ms(), n.cpu_ms() if on_cpu else
               n.latencies_ms()) for _, m, n in pairs]  # fmt: skip
    timing = changes(judged, True, confidence)
    energy = [None] * len(pairs) if on_cpu else changes(
        [(m.energies_mj(), n.energies_mj()) for _, m, n in pairs], False, confidence
    )  # fmt: skip
    verdicts = judge(timing, energy, threshold=threshold, alpha=alpha, correction=correction)
    for (out, ma, mb), tm, en, verdict in zip(pairs, timing, energy, verdicts, strict=True):
        _shown(out, ma, mb)
        if on_cpu:
            out.cpu = tm
        else:
            out.latency, out.energy = tm, en
        if verdict is None:
            out.why = "no CPU time samples" if on_cpu else "no latency samples"
        else:
            out.verdict = verdict
    # unreliable cells: their numbers are shown, outside the tested family (no adjusted p)
    for out, ma, mb in doubtful:
        _shown(out, ma, mb)
    return Comparison(baseline, candidate, threshold, alpha, correction, cells, statistic)


def _shown(out: CellComparison, ma: Measured, mb: Measured) -> None:
    """Both sides' medians of every metric, untested (a test result replaces its own)."""
    out.latency = _medians(ma.latencies_ms(), mb.latencies_ms())
    out.energy = _medians(ma.energies_mj(), mb.energies_mj())
    out.cpu = _medians(ma.cpu_ms(), mb.cpu_ms())


def _median(x: np.ndarray | None) -> float | None:
    return float(np.median(x)) if x is not None and len(x) else None


def _medians(x: np.ndarray | None, y: np.ndarray | None) -> Change | None:
    """Both sides' medians, untested."""
    if x is None and y is None:
        return None
    return Change(
        _median(x), _median(y), n_a=0 if x is None else len(x), n_b=0 if y is None else len(y)
    )


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
    latency: list[Change | None],  # or CPU time: the timing a verdict rests on
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
