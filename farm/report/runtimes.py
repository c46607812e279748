"""The best runtime per board: for each model on each board/processor, every runtime
and precision measured there, and the fastest done cell with its cost beside it —
time (median, 95% CI), its ratio to eager, energy per inference where a monitor
measured it, peak RSS, and its agreement with eager (top-1, largest difference).

Shown only for a sweep with a ``runtime`` or ``precision`` axis (`jobs/runtimes.yaml`).
"""

from __future__ import annotations

from farm.report.cells import Cell, Sweep
from farm.report.study import View, headline
from farm.spec.cell import effective, knob
from farm.states import TaskState

AXES = ("runtime", "precision")


def _label(cell: Cell) -> str:
    """``onnxruntime int8``: the runtime and precision, defaults filled in."""
    return " ".join(knob(cell.variant, axis) for axis in AXES)


def _place(cell: Cell) -> str:
    """board/processor plus the knobs the variant changes other than runtime, precision
    and activation."""
    task = cell.stored.task
    other = {k: v for k, v in effective(cell.variant).items() if k not in (*AXES, "activation")}
    base = f"{task.board}/{task.processor}"
    return base + (" " + ",".join(f"{k}={v}" for k, v in other.items()) if other else "")


def best_runtime(sweep: Sweep) -> View | None:
    """The table, or None where the sweep has no runtime/precision axis."""
    if not any(k in c.variant for c in sweep.cells for k in AXES):
        return None
    view = View(
        "best_runtime",
        "Best runtime per board (fastest median of the cells measured there)",
        ["model", "board/proc", "best", "median ms [95% CI]", "x eager", "mJ/inf net",
         "peak RSS MB", "top-1 vs eager", "max |diff|", "measured"],
    )  # fmt: skip
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in sweep.cells:
        if cell.activation == "relu":
            groups.setdefault((cell.model, _place(cell)), []).append(cell)
    for (model, place), cells in groups.items():
        done = [c for c in cells if c.state == TaskState.DONE.value and c.time_ms() is not None]
        measured = ", ".join(
            f"{_label(c)}" + ("" if c in done else f" ({c.reason('time')})") for c in cells
        )
        if not done:
            view.add([model, place, "-", "-", "-", "-", "-", "-", "-", measured])
            continue
        best = min(done, key=lambda c: c.time_ms().value)  # type: ignore[union-attr]
        eager = next((c for c in done if _label(c) == "eager fp32"), None)
        ratio = best.time_ms().value / eager.time_ms().value if eager else None  # type: ignore[union-attr]
        energy = best.energy_mj()
        rss = best.memory("peak_rss_mb")
        artifact = best.result.artifact if best.result is not None else None
        agreement = artifact.agreement if artifact is not None else None
        top1 = agreement.top1 if agreement is not None else None
        diff = agreement.max_abs_diff if agreement is not None else None
        view.add(
            [
                model,
                place,
                _label(best),
                headline(best.time_ms(), "{:.4f}"),  # type: ignore[arg-type]
                "-" if ratio is None else f"{ratio:.2f}",
                "-" if energy is None else headline(energy, "{:.3f}"),
                "-" if rss is None else f"{rss:.0f}",
                "eager itself" if _label(best) == "eager fp32" else
                ("-" if top1 is None else f"{top1:.1%}"),
                "-" if diff is None else f"{diff:.1e}",
                measured,
            ],
            warned={3: best},
        )  # fmt: skip
    view.notes.append(
        "Agreement is computed when the station exports the runtime's artifact: 32 seeded "
        "inputs through eager and the runtime. An int8 cell below 99% top-1 carries a warning."
    )
    return view
