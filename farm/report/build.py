"""A whole report: its sections in order, and the files ``farm report --out DIR`` writes.

The report is assembled once, as ``Section`` records of views, findings and
figures (the document model, ``farm.report.document``); ``markdown``, ``html``
and the terminal only render it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from farm.report import compare, figures, runtimes, study
from farm.report.cells import Sweep, layer_records, records
from farm.report.document import FIGURE_CAPTIONS, Report, Section
from farm.report.findings import findings
from farm.report.paper import Reference, reference
from farm.report.tables import csv_text


def busy_note(sweep: Sweep) -> str | None:
    """One sentence for every section that compares numbers: how many cells were measured
    on a busy board, and how busy (the loads the engine's warnings name)."""
    busy = [c for c in sweep.cells if c.busy]
    if not busy:
        return None
    loads = [float(m.group(1)) for c in busy for w in c.warnings
             if (m := re.match(r"board busy: load ([\d.]+) on", w))]  # fmt: skip
    span = f" (load {min(loads):.1f} to {max(loads):.1f})" if loads else ""
    return (
        f"⚠ {len(busy)} of {len(sweep.cells)} cells were measured on a busy board{span}: "
        "their figures, and the comparisons below, carry that noise (each is marked busy)."
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def assemble(sweep: Sweep, against: Sweep | None = None, ref: Reference | None = None) -> Report:
    ref = ref or reference()
    said = findings(sweep, ref)
    states = Counter(c.state for c in sweep.cells)
    busy = sum(c.busy for c in sweep.cells)
    warned = sum(bool(c.warnings) for c in sweep.cells)
    summary = Section(
        "Summary",
        [
            f"Job {sweep.id} ({sweep.job.name}): {len(sweep.cells)} cells "
            f"({', '.join(f'{n} {s}' for s, n in states.most_common())}) of "
            f"{_count(len(sweep.models()), 'model')} on "
            f"{_count(len(sweep.places()), 'board/processor')}.",
            f"{_count(warned, 'cell')} carry warnings, shown beside their values"
            + (f"; {busy} were measured on a busy board." if busy else "."),
            "Times are medians with their 95% CI; the mean is beside them.",
        ],
    )
    layer_views = [
        study.layer_table(cell, number, ref)
        for cell, number in (
            (study.pick(sweep, study.TABLE5_MODEL, cnn=True), "5"),
            (study.pick(sweep, study.TABLE6_MODEL, cnn=False), "6"),
        )
        if cell is not None
    ]
    note = busy_note(sweep)
    noted = [note] if note else []
    sections = [
        summary,
        Section(
            "Beside the study",
            [
                f"The study: {ref.citation} ({ref.url}). {ref.provenance['source']}",
                *noted,
                "Per table, where this hardware agrees with the study and where it does not:",
            ],
            [f for key in said for f in said[key]],
        ),
        Section("Table 1: models", findings=said["table1"], views=[study.table1(sweep, ref)]),
        Section(
            "Tables 2, 3, 4: energy, time, battery life",
            noted,
            findings=said["table2"] + said["table3"] + said["table4"],
            views=[study.metric_table(sweep, m, ref) for m in ("energy", "time", "battery")]
            + [study.ci_detail(sweep)],
        ),
        Section(
            "Tables 5 and 6: layer by layer",
            noted,
            findings=said["table5"] + said["table6"],
            views=layer_views,
        ),
        Section(
            "Table 7: activation layers",
            noted,
            findings=said["table7"],
            views=[study.table7(sweep, ref), study.apart(sweep)],
        ),
        Section("Figures", noted, said["figure4"] + said["figure5"], figures=list(FIGURE_CAPTIONS)),
    ]
    best = runtimes.best_runtime(sweep)  # a sweep with runtime/precision variants
    if best is not None:
        sections.append(Section("Runtimes: the best per board", views=[best]))
    if against is not None:
        sections.append(Section("Against another sweep", views=[compare.against(sweep, against)]))
    sections.append(Section("Provenance", views=[study.provenance(sweep)]))
    return Report(f"farm report: {sweep.id}", sections, ref)


def write(report: Report, sweep: Sweep, out: Path) -> dict[str, Path]:
    """Write report.md, report.html, cells.csv, cells.json, layers.csv and the figures."""
    from farm.report import html, markdown  # renderers: only needed when writing files

    out.mkdir(parents=True, exist_ok=True)
    paths = figures.write(sweep, out, report.ref or reference())
    paths["report.md"] = out / "report.md"
    paths["report.md"].write_text(markdown.render(report))
    paths["report.html"] = out / "report.html"
    paths["report.html"].write_text(html.render(report, {n: paths[n] for n in FIGURE_CAPTIONS}))
    rows = records(sweep)
    paths["cells.csv"] = out / "cells.csv"
    paths["cells.csv"].write_text(csv_text(rows))
    paths["layers.csv"] = out / "layers.csv"
    paths["layers.csv"].write_text(csv_text(layer_records(sweep)))
    paths["cells.json"] = out / "cells.json"
    paths["cells.json"].write_text(
        json.dumps(
            {
                "job": {k: getattr(sweep.job, k) for k in ("id", "name", "created", "updated")}
                | {"state": str(sweep.job.state)},
                "cells": [
                    {
                        **rec,
                        "warnings": c.warnings,
                        "env": c.env.model_dump(mode="json", exclude_none=True),
                        "layers": c.layers,
                    }
                    for rec, c in zip(rows, sweep.cells, strict=True)
                ],
            },
            indent=1,
        )
    )
    return paths
