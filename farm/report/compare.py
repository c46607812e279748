"""``farm report A --against B``: the change of each cell from sweep B to sweep A.

Cells pair by ``farm.spec.CellKey``: model, board, processor and the options in
effect (a kws run with ``activation: relu`` or ``runtime: eager`` pairs with a kws
run with no variant: ReLU, eager and fp32 are the defaults). The change is A relative to B (``+10%``: A is 10% higher) in the
headline figure (the median time, the mean energy), marked ``†`` where B's value
lies outside A's 95% CI, so a reader can tell a shift from noise at a glance.
"""

from __future__ import annotations

from farm.report.cells import Cell, Estimate, Sweep
from farm.report.study import View, estimate

SHIFT = "†"


def _change(a: Estimate | None, b: Estimate | None) -> str:
    if a is None or b is None or not b.value:
        return "-"
    text = f"{(a.value - b.value) / b.value:+.1%}"
    if a.low is not None and a.high is not None and not a.low <= b.value <= a.high:
        text += f" {SHIFT}"
    return text


def _value(e: Estimate | None, reason: str) -> str:
    return f"{e.value:.3f}" if e else f"- ({reason})"


def against(a: Sweep, b: Sweep) -> View:
    """One row per cell of either sweep: time and energy in each, and the change."""
    view = View(
        "against",
        f"Change from {b.id} (B) to {a.id} (A)",
        ["model", "board/processor", "activation", "median time A (ms)", "median time B (ms)",
         "time change", "energy A (mJ)", "energy B (mJ)", "energy change"],
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
                _value(ea, ca.reason(metric) if ca else "not in A"),
                _value(eb, cb.reason(metric) if cb else "not in B"),
                _change(ea, eb),
            ]
        view.add(row, {3: ca, 4: cb})
    view.notes.append(f"{SHIFT} B's value lies outside A's 95% confidence interval.")
    view.notes.append(
        "Cells pair on model, board, processor and the options in effect (a default, "
        "ReLU, eager, fp32, whether named or not)."
    )
    return view
