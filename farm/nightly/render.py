"""Comparisons and trends as people read them (rich tables) and as programs do (JSON, CSV)."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict
from typing import Any

from rich.table import Table

from farm.nightly import environment
from farm.nightly.compare import Change, Comparison, Verdict
from farm.nightly.trend import Series

VERDICT_STYLE = {
    Verdict.REGRESSION: "bold red",
    Verdict.IMPROVEMENT: "green",
    Verdict.UNCHANGED: "dim",
    Verdict.INCOMPARABLE: "yellow",
    Verdict.UNRELIABLE: "bold yellow",
}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.2f}%"


def _change(c: Change | None, unit: str) -> str:
    """``A median → B median unit (their change); shift HL [CI]``: one statistic on each
    side of the arrow, and the shift the verdict rests on named as such."""
    if c is None or c.a is None:
        return "-"
    if c.b is None:
        return f"{c.a:.4g} → - {unit}"
    text = f"{c.a:.4g} → {c.b:.4g} {unit}"
    if c.a:
        text += f" ({_pct(c.b / c.a - 1)})"
    if c.change is not None:
        text += f"; shift {_pct(c.change)} [{_pct(c.low)}, {_pct(c.high)}]"
    return text


def _p(c: Change | None) -> str:
    return "-" if c is None or c.p_adjusted is None else f"{c.p_adjusted:.2g}"


def _memory(pair: tuple[float | None, float | None]) -> str:
    a, b = pair
    if a is None or b is None:
        return "-"
    return f"{a:.0f} → {b:.0f} MB ({_pct(b / a - 1) if a else '-'})"


def _what_changed(cell) -> str:
    parts = [
        f"{k} {environment.short(a)}→{environment.short(b)}"
        for k, (a, b) in cell.environment.items()
    ]
    parts += [f"warning: {environment.short(w)}" for w in cell.warnings]
    flags = f"[bold]{', '.join(cell.changed)} changed[/] " if cell.changed else ""
    return flags + "; ".join(parts) + (f" ({cell.why})" if cell.why else "")


def comparison_table(cmp: Comparison) -> Table:
    table = Table(
        "cell", "verdict", "latency: medians; HL shift [CI]", "p adj",
        "energy/inference: medians; shift", "p adj", "CPU/inference: medians; shift", "p adj",
        "peak RSS",
        "what differs",
        header_style="bold",
        title=f"{cmp.baseline} → {cmp.candidate}",
        caption=(
            f"threshold {100 * cmp.threshold:g}%, alpha {cmp.alpha:g} ({cmp.correction}): "
            + ", ".join(f"{cmp.count(v)} {v.value}" for v in Verdict)
            + f"\n{cmp.basis}"
        ),
    )  # fmt: skip
    for c in cmp.cells:
        table.add_row(
            str(c.cell),
            f"[{VERDICT_STYLE[c.verdict]}]{c.verdict.value}[/]",
            _change(c.latency, "ms"),
            _p(c.latency),
            _change(c.energy, "mJ"),
            _p(c.energy),
            _change(c.cpu, "ms"),
            _p(c.cpu),
            _memory(c.peak_rss_mb),
            _what_changed(c),
        )
    return table


def _flat(cmp: Comparison) -> list[dict[str, Any]]:
    rows = []
    for c in cmp.cells:
        row: dict[str, Any] = {
            "model": c.cell.model,
            "board": c.cell.board,
            "processor": c.cell.processor,
            "variant": c.cell.variant,
            "verdict": c.verdict.value,
            "why": c.why,
            "task_a": c.task_a,
            "task_b": c.task_b,
        }
        for name, change in (("latency", c.latency), ("energy", c.energy), ("cpu", c.cpu)):
            for key, value in asdict(change or Change(None, None)).items():
                row[f"{name}_{key}"] = value
        row["peak_rss_mb_a"], row["peak_rss_mb_b"] = c.peak_rss_mb
        row["changed"] = ",".join(c.changed)
        row["environment"] = {k: {"a": a, "b": b} for k, (a, b) in c.environment.items()}
        row["warnings"] = c.warnings
        rows.append(row)
    return rows


def comparison_json(cmp: Comparison) -> str:
    return json.dumps(
        {
            "baseline": cmp.baseline,
            "candidate": cmp.candidate,
            "threshold": cmp.threshold,
            "alpha": cmp.alpha,
            "correction": cmp.correction,
            "statistic": cmp.statistic,
            "basis": cmp.basis,
            "exit_code": cmp.exit_code,
            "counts": {v.value: cmp.count(v) for v in Verdict},
            "cells": _flat(cmp),
        },
        indent=2,
    )


def comparison_csv(cmp: Comparison) -> str:
    rows = _flat(cmp)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            row = dict(row)
            row["environment"] = "; ".join(
                f"{k}={v['a']}→{v['b']}" for k, v in row["environment"].items()
            )
            row["warnings"] = "; ".join(row["warnings"])
            writer.writerow(row)
    return buf.getvalue()


def _day(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(t))


def trend_table(series: list[Series], title: str) -> Table:
    table = Table(
        "cell", "nights", "first → last median", "change points", header_style="bold", title=title
    )
    for s in series:
        points = "; ".join(
            f"[bold]{_day(c.at)}[/] {c.job_id}: {c.before_ms:.4g} → {c.after_ms:.4g} ms ({_pct(c.change)})"
            for c in s.change_points
        )
        table.add_row(
            str(s.cell),
            str(len(s.medians_ms)),
            f"{s.medians_ms[0]:.4g} → {s.medians_ms[-1]:.4g} ms",
            points or "[dim]none[/]",
        )
    return table


def _series_rows(series: list[Series]) -> list[dict[str, Any]]:
    return [
        {
            "model": s.cell.model,
            "board": s.cell.board,
            "processor": s.cell.processor,
            "variant": s.cell.variant,
            "nights": [
                {"job_id": j, "at": t, "median_ms": float(m)}
                for j, t, m in zip(s.job_ids, s.times, s.medians_ms, strict=True)
            ],
            "change_points": [asdict(c) for c in s.change_points],
        }
        for s in series
    ]


def trend_json(series: list[Series]) -> str:
    return json.dumps({"cells": _series_rows(series)}, indent=2)


def trend_csv(series: list[Series]) -> str:
    """One row per cell and night; ``change_point`` marks the first night of a new level."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        ["model", "board", "processor", "variant", "job_id", "at", "median_ms", "change_point"]
    )
    for s in series:
        starts = {c.index for c in s.change_points}
        for i, (j, t, m) in enumerate(zip(s.job_ids, s.times, s.medians_ms, strict=True)):
            writer.writerow(
                [
                    s.cell.model,
                    s.cell.board,
                    s.cell.processor,
                    s.cell.variant,
                    j,
                    t,
                    m,
                    int(i in starts),
                ]
            )
    return buf.getvalue()
