"""``farm report A --against B``: the change of each cell from sweep B to sweep A.

Cells match on model, board, processor and variant. The change is A relative to
B (``+10%``: A is 10% higher), with whether B's mean lies outside A's 95% CI, so
a reader can tell a shift from noise at a glance.
"""

from __future__ import annotations

from farm.report.cells import Cell, Estimate, Sweep
from farm.report.study import View, estimate


def _change(a: Estimate | None, b: Estimate | None) -> str:
    if a is None or b is None or not b.mean:
        return "-"
    text = f"{(a.mean - b.mean) / b.mean:+.1%}"
    if a.low is not None and a.high is not None and not a.low <= b.mean <= a.high:
        text += " *"
    return text


def _mean(e: Estimate | None, reason: str) -> str:
    return f"{e.mean:.3f}" if e else f"- ({reason})"


def against(a: Sweep, b: Sweep) -> View:
    """One row per cell of either sweep: time and energy in each, and the change."""
    view = View(
        "against",
        f"Change from {b.id} (B) to {a.id} (A)",
        ["model", "board/processor", "activation", "time A (ms)", "time B (ms)", "time change",
         "energy A (mJ)", "energy B (mJ)", "energy change"],
    )  # fmt: skip
    theirs = {c.key: c for c in b.cells}
    mine = {c.key for c in a.cells}
    pairs: list[tuple[Cell | None, Cell | None]] = [(c, theirs.get(c.key)) for c in a.cells]
    pairs += [(None, c) for c in b.cells if c.key not in mine]
    for ca, cb in pairs:
        ref = ca or cb
        if ref is None:
            continue
        row = [ref.model, ref.place, ref.activation]
        for metric in ("time", "energy"):
            ea = estimate(ca, metric) if ca else None
            eb = estimate(cb, metric) if cb else None
            row += [
                _mean(ea, ca.reason(metric) if ca else "not in A"),
                _mean(eb, cb.reason(metric) if cb else "not in B"),
                _change(ea, eb),
            ]
        view.rows.append(row)
    view.notes.append("* B's mean lies outside A's 95% confidence interval.")
    return view
