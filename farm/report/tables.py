"""Results as people read them: rich tables, and flat rows for CSV and JSON.

The columns follow the paper: latency (Table 2/3), memory (Figure 5), energy per
inference and battery life (Table 4), per-layer time share (Tables 5 and 6).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rich.table import Table

from farm.store import TaskState

STATE_STYLE = {
    TaskState.DONE.value: "green",
    TaskState.DOES_NOT_FIT.value: "yellow",
    TaskState.FAILED.value: "red",
    TaskState.CANCELLED.value: "dim",
}


def _variant(v: dict[str, Any]) -> str:
    return ",".join(f"{k}={val}" for k, val in sorted(v.items()) if val is not None) or "-"


def _num(x: Any, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def _energy_fields(result: dict[str, Any]) -> dict[str, Any]:
    """The energy columns of one result (all None for a board without a monitor).

    Net energy is the paper's figure (the inference's cost above idle); its 95%
    CI comes from the spread over inferences. The alignment method and its
    uncertainty say how far to trust the windows the energy was integrated over.
    """
    energy = result.get("energy") or {}
    per_inference = energy.get("energy_per_inference_mj") or {}
    net = per_inference.get("net") or {}
    gross = per_inference.get("gross") or {}
    ci = net.get("ci95") or [None, None]
    alignment = energy.get("alignment") or {}
    battery = energy.get("battery") or {}
    warnings = (energy.get("quality") or {}).get("warnings")
    return {
        "energy_net_mj": net.get("mean"),
        "energy_net_ci95_lo_mj": ci[0],
        "energy_net_ci95_hi_mj": ci[1],
        "energy_gross_mj": gross.get("mean"),
        "avg_power_w": energy.get("average_power_w"),
        "idle_power_w": energy.get("idle_power_w"),
        "alignment": alignment.get("method"),
        "alignment_uncertainty_s": alignment.get("uncertainty_s"),
        "power_warnings": None if warnings is None else "; ".join(warnings),
        "battery_hours": battery.get("hours"),
        "battery_inferences_on_share": battery.get("inferences_on_share"),
        "battery_share": battery.get("share"),
    }


def flat(row: dict[str, Any]) -> dict[str, Any]:
    """One result as a flat record (CSV columns; JSON keeps the nested result too)."""
    result = row.get("result") or {}
    lat = result.get("latency") or {}
    mem = result.get("memory") or {}
    return {
        "task": row["id"],
        "model": row["model"],
        "board": row["board"],
        "processor": row["processor"],
        "variant": _variant(row.get("variant") or {}),
        "state": row["state"],
        "attempts": row.get("attempts"),
        "n": lat.get("n"),
        "mean_ms": lat.get("mean_ms"),
        "ci95_lo_ms": lat.get("ci95_low_ms"),
        "ci95_hi_ms": lat.get("ci95_high_ms"),
        "median_ms": lat.get("median_ms"),
        "p90_ms": lat.get("p90_ms"),
        "p99_ms": lat.get("p99_ms"),
        "min_ms": lat.get("min_ms"),
        "max_ms": lat.get("max_ms"),
        "stdev_ms": lat.get("stdev_ms"),
        "cold_ms": lat.get("cold_ms"),
        "required_mb": mem.get("required_mb"),
        "available_mb": mem.get("available_mb"),
        "peak_rss_mb": mem.get("peak_rss_mb"),
        "nonlinear_share": (result.get("layer_pass") or {}).get("nonlinear_share"),
        **_energy_fields(result),
        "error": row.get("error"),
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


def results_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    energy = any((r.get("result") or {}).get("energy") for r in rows)
    table = Table(title=title, header_style="bold")
    for col, justify in [
        ("model", "left"), ("board/proc", "left"), ("variant", "left"), ("state", "left"),
        ("mean ms (95% CI)", "right"), ("median", "right"), ("p99", "right"),
        ("cold", "right"), ("mem MB", "right"), ("RSS MB", "right"), ("nonlin", "right"),
    ]:  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    if energy:
        table.add_column("mJ/inf net (95% CI)", justify="right")
        table.add_column("avg W", justify="right")
        table.add_column("aligned", justify="right")
        table.add_column("battery h", justify="right")
    for row in rows:
        f = flat(row)
        style = STATE_STYLE.get(row["state"], "")
        if f["mean_ms"] is not None:
            mean = _mean_ci(f["mean_ms"], f["ci95_lo_ms"], f["ci95_hi_ms"], "{:.3f}")
        elif row["state"] == TaskState.DOES_NOT_FIT.value:
            mean = "- (does not fit)"
        else:
            mean = "-"
        cells = [
            row["model"],
            f"{row['board']}/{row['processor']}",
            f["variant"],
            f"[{style}]{row['state']}[/]",
            mean,
            _num(f["median_ms"]),
            _num(f["p99_ms"]),
            _num(f["cold_ms"], "{:.2f}"),
            _num(f["required_mb"], "{:.1f}"),
            _num(f["peak_rss_mb"], "{:.0f}"),
            _num(f["nonlinear_share"], "{:.1%}"),
        ]
        if energy:
            cells += [
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
        table.add_row(*cells)
    return table


def layers_table(layers: list[dict[str, Any]], title: str | None = None) -> Table:
    """Per-layer time and share, the shape of the paper's Tables 5 and 6."""
    table = Table(title=title, header_style="bold")
    for col in ("#", "layer", "type", "params", "time ms", "share", "resident MB", "mJ"):
        table.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for row in layers:
        table.add_row(
            str(row["idx"]),
            row["name"],
            row["type"],
            f"{row['params']:,}" if row.get("params") is not None else "-",
            _num(row.get("time_ms"), "{:.4f}"),
            _num(row.get("share"), "{:.1%}"),
            _num((row.get("resident_bytes") or 0) / 2**20, "{:.2f}"),
            _num(row.get("energy_mj"), "{:.4f}"),
        )
    return table


def to_csv(rows: list[dict[str, Any]]) -> str:
    return csv_text([flat(r) for r in rows])


def csv_text(records: list[dict[str, Any]]) -> str:
    """Flat records as CSV, the first record's keys as the header."""
    out = io.StringIO()
    if records:
        writer = csv.DictWriter(out, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return out.getvalue()


def to_json(job: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "job": {k: job[k] for k in ("id", "name", "state", "created", "updated")},
            "results": [{**flat(r), "result": r.get("result")} for r in rows],
        },
        indent=2,
    )
