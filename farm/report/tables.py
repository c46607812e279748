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


def flat(row: dict[str, Any]) -> dict[str, Any]:
    """One result as a flat record (CSV columns; JSON keeps the nested result too)."""
    result = row.get("result") or {}
    lat = result.get("latency") or {}
    mem = result.get("memory") or {}
    energy = result.get("energy") or {}
    net = (energy.get("energy_per_inference_mj") or {}).get("net") or {}
    battery = energy.get("battery") or {}
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
        "energy_net_mj": net.get("mean"),
        "energy_ci95_mj": net.get("ci95"),
        "avg_power_w": energy.get("average_power_w"),
        "alignment": (energy.get("alignment") or {}).get("method"),
        "alignment_uncertainty_s": (energy.get("alignment") or {}).get("uncertainty_s"),
        "battery_hours": battery.get("hours"),
        "error": row.get("error"),
    }


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
        table.add_column("mJ/inf (net)", justify="right")
        table.add_column("± sync", justify="right")
        table.add_column("battery h", justify="right")
    for row in rows:
        f = flat(row)
        style = STATE_STYLE.get(row["state"], "")
        if f["mean_ms"] is not None:
            half = (f["ci95_hi_ms"] - f["ci95_lo_ms"]) / 2 if f["ci95_hi_ms"] is not None else None
            mean = f"{f['mean_ms']:.3f} ± {half:.3f}" if half is not None else f"{f['mean_ms']:.3f}"
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
            unc = f["alignment_uncertainty_s"]
            cells += [
                _num(f["energy_net_mj"], "{:.3f}"),
                "-" if unc is None else f"{unc * 1e3:.2f} ms ({f['alignment']})",
                _num(f["battery_hours"], "{:.1f}"),
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
    records = [flat(r) for r in rows]
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
