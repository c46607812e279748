"""Results as people read them: rich tables, and flat rows for CSV and JSON.

The columns follow the paper: latency (Table 2/3), memory (Figure 5), energy per
inference and battery life (Table 4), per-layer time share (Tables 5 and 6).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rich.markup import escape
from rich.table import Table

from farm.result import EngineResult
from farm.states import TaskState
from farm.store import Cell, JobRecord, LayerRecord

STATE_STYLE = {
    TaskState.DONE: "green",
    TaskState.DOES_NOT_FIT: "yellow",
    TaskState.FAILED: "red",
    TaskState.CANCELLED: "dim",
}


BUSY_PREFIXES = ("board busy", "CPU steal")
"""How the engine's warnings for a board that was not quiet begin (farm.engine.board)."""


def is_busy(warning: str) -> bool:
    """A warning that says the board was busy while it measured."""
    return warning.startswith(BUSY_PREFIXES)


def warnings_of(result: EngineResult | None) -> list[str]:
    """Every warning a result carries: the engine's, then the power analysis's."""
    if result is None:
        return []
    power = (result.energy.quality.get("warnings") if result.energy else None) or []
    return list(dict.fromkeys([*result.warnings, *power]))


def _num(x: Any, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def _energy_fields(result: EngineResult | None) -> dict[str, Any]:
    """The energy columns of one result (all None for a board without a monitor).

    Net energy is the paper's figure (the inference's cost above idle); its 95%
    CI comes from the spread over inferences. The alignment method and its
    uncertainty say how far to trust the windows the energy was integrated over.
    """
    energy = result.energy if result is not None else None
    if energy is None:
        return dict.fromkeys(_ENERGY_COLUMNS)
    net = energy.energy_per_inference_mj.net
    ci = net.ci95 or [None, None]
    battery = energy.battery or {}
    warnings = energy.quality.get("warnings")
    return {
        "energy_net_mj": net.mean,
        "energy_net_ci95_lo_mj": ci[0],
        "energy_net_ci95_hi_mj": ci[1],
        "energy_gross_mj": energy.energy_per_inference_mj.gross.mean,
        "avg_power_w": energy.average_power_w,
        "idle_power_w": energy.idle_power_w,
        "alignment": energy.alignment.get("method"),
        "alignment_uncertainty_s": energy.alignment.get("uncertainty_s"),
        "power_warnings": None if warnings is None else "; ".join(warnings),
        "battery_hours": battery.get("hours"),
        "battery_inferences_on_share": battery.get("inferences_on_share"),
        "battery_share": battery.get("share"),
    }


_ENERGY_COLUMNS = (
    "energy_net_mj", "energy_net_ci95_lo_mj", "energy_net_ci95_hi_mj", "energy_gross_mj",
    "avg_power_w", "idle_power_w", "alignment", "alignment_uncertainty_s", "power_warnings",
    "battery_hours", "battery_inferences_on_share", "battery_share",
)  # fmt: skip


def flat(cell: Cell) -> dict[str, Any]:
    """One result as a flat record (CSV columns; JSON keeps the nested result too)."""
    task, result = cell.task, cell.result
    lat = result.latency if result is not None else None
    mem = result.memory if result is not None else None
    layer_pass = result.layer_pass if result is not None else None
    return {
        "task": task.id,
        "model": task.model,
        "board": task.board,
        "processor": task.processor,
        "variant": cell.key.variant,  # the cell's one label (farm.spec.variant_label)
        "state": str(task.state),
        "attempts": task.attempts,
        "n": lat.n if lat else None,
        "mean_ms": lat.mean_ms if lat else None,
        "ci95_lo_ms": lat.ci95_low_ms if lat else None,
        "ci95_hi_ms": lat.ci95_high_ms if lat else None,
        "median_ms": lat.median_ms if lat else None,
        "median_ci95_lo_ms": lat.median_ci95_low_ms if lat else None,
        "median_ci95_hi_ms": lat.median_ci95_high_ms if lat else None,
        "p90_ms": lat.p90_ms if lat else None,
        "p99_ms": lat.p99_ms if lat else None,
        "min_ms": lat.min_ms if lat else None,
        "max_ms": lat.max_ms if lat else None,
        "stdev_ms": lat.stdev_ms if lat else None,
        "cold_ms": lat.cold_ms if lat else None,
        "required_mb": mem.required_mb if mem else None,
        "available_mb": mem.available_mb if mem else None,
        "peak_rss_mb": mem.peak_rss_mb if mem else None,
        "nonlinear_share": layer_pass.nonlinear_share if layer_pass else None,
        **_energy_fields(result),
        "busy": any(is_busy(w) for w in warnings_of(result)),
        "warnings": "; ".join(warnings_of(result)) or None,
        "error": task.error,
    }


def _mean_ci(mean: float | None, lo: float | None, hi: float | None, fmt: str) -> str:
    """``mean ± half-width`` of a 95% CI, or the mean alone, or ``-``."""
    if mean is None:
        return "-"
    if lo is None or hi is None:
        return fmt.format(mean)
    return f"{fmt.format(mean)} ± {fmt.format((hi - lo) / 2)}"


def _alignment(method: str | None, uncertainty_s: float | None) -> str:
    if method is None:
        return "-"
    if uncertainty_s is None:
        return method
    return f"{method} ± {uncertainty_s * 1e3:.3f} ms"


def _median_ci(f: dict[str, Any]) -> str:
    """``median [low, high]``: the headline time with its 95% CI, or ``-``."""
    if f["median_ms"] is None:
        return "-"
    if f["median_ci95_lo_ms"] is None or f["median_ci95_hi_ms"] is None:
        return f"{f['median_ms']:.3f}"
    return f"{f['median_ms']:.3f} [{f['median_ci95_lo_ms']:.3f}, {f['median_ci95_hi_ms']:.3f}]"


def results_table(cells: list[Cell], title: str | None = None) -> Table:
    """One row per cell: the median with its CI as the headline time, the mean beside it,
    and every warning the result carries (numbered under the table; a busy board's cell
    says ``busy`` in its state)."""
    energy = any(c.result is not None and c.result.energy is not None for c in cells)
    table = Table(title=title, header_style="bold")
    for col, justify in [
        ("model", "left"), ("board/proc", "left"), ("variant", "left"), ("state", "left"),
        ("median ms [95% CI]", "right"), ("mean", "right"), ("p99", "right"),
        ("cold", "right"), ("mem MB", "right"), ("RSS MB", "right"), ("nonlin", "right"),
    ]:  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    if energy:
        table.add_column("mJ/inf net (95% CI)", justify="right")
        table.add_column("avg W", justify="right")
        table.add_column("aligned", justify="right")
        table.add_column("battery h", justify="right")
    table.add_column("warn", justify="left")
    notes: dict[str, int] = {}
    for cell in cells:
        f, task = flat(cell), cell.task
        style = STATE_STYLE.get(task.state, "none")  # "[]...[/]" is not markup rich reads
        if f["median_ms"] is not None:
            median = _median_ci(f)
        elif task.state is TaskState.DOES_NOT_FIT:
            why = (task.error or "").strip().splitlines()  # a runtime's own reason, if any
            median = f"- (does not fit: {escape(why[0][:60])})" if why else "- (does not fit)"
        else:
            median = "-"
        marks = [notes.setdefault(w, len(notes) + 1) for w in warnings_of(cell.result)]
        state = f"[{style}]{task.state}[/]" + (" [yellow]busy[/]" if f["busy"] else "")
        row = [
            task.model,
            f"{task.board}/{task.processor}",
            f["variant"],
            state,
            median,
            _num(f["mean_ms"]),
            _num(f["p99_ms"]),
            _num(f["cold_ms"], "{:.2f}"),
            _num(f["required_mb"], "{:.1f}"),
            _num(f["peak_rss_mb"], "{:.0f}"),
            _num(f["nonlinear_share"], "{:.1%}"),
        ]
        if energy:
            row += [
                _mean_ci(
                    f["energy_net_mj"],
                    f["energy_net_ci95_lo_mj"],
                    f["energy_net_ci95_hi_mj"],
                    "{:.4f}",
                ),
                _num(f["avg_power_w"], "{:.3f}"),
                _alignment(f["alignment"], f["alignment_uncertainty_s"]),
                _num(f["battery_hours"], "{:.2f}"),
            ]
        row.append(",".join(str(m) for m in marks) or "-")
        table.add_row(*row)
    if notes:
        table.caption = "\n".join(f"{n}: {escape(w)}" for w, n in notes.items())
        table.caption_justify = "left"
    return table


def layers_table(layers: list[LayerRecord], title: str | None = None) -> Table:
    """Per-layer time and share, the shape of the paper's Tables 5 and 6."""
    table = Table(title=title, header_style="bold")
    for col in ("#", "layer", "type", "params", "time ms", "share", "resident MB", "mJ"):
        table.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for row in layers:
        table.add_row(
            str(row.index + 1),
            row.name,
            row.type,
            f"{row.params:,}" if row.params is not None else "-",
            _num(row.time_ms, "{:.4f}"),
            _num(row.share, "{:.1%}"),
            _num((row.resident_bytes or 0) / 2**20, "{:.2f}"),
            _num(row.energy_mj, "{:.4f}"),
        )
    return table


def to_csv(cells: list[Cell]) -> str:
    return csv_text([flat(c) for c in cells])


def csv_text(records: list[dict[str, Any]]) -> str:
    """Flat records as CSV, the first record's keys as the header."""
    out = io.StringIO()
    if records:
        writer = csv.DictWriter(out, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return out.getvalue()


def to_json(job: JobRecord, cells: list[Cell]) -> str:
    return json.dumps(
        {
            "job": {"id": job.id, "name": job.name, "state": job.state, "created": job.created,
                    "updated": job.updated},
            "results": [
                {**flat(c), "result": c.result.to_json() if c.result is not None else None}
                for c in cells
            ],
        },
        indent=2,
    )  # fmt: skip
