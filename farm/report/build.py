"""A whole report: its sections in order, and the files ``farm report --out DIR`` writes.

The report is assembled once, as ``Section`` records of views, findings and
figures; ``markdown``, ``html`` and the terminal only render it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from farm.report import compare, figures, study
from farm.report.cells import Sweep, records
from farm.report.findings import Finding, findings
from farm.report.paper import Reference, reference
from farm.report.tables import csv_text

FIGURE_CAPTIONS = {
    "figure4": "Figure 4: time per layer of one DNN and one CNN, coloured by the study's two "
    "groups; the dashed line is where feature extraction ends.",
    "figure5": "Figure 5: each model's memory on each processor (log scale): what it requires "
    "(parameters + peak live activations) and the process's peak RSS, against the memory the "
    "processor may use (dashed).",
    "figure6": "Figure 6: memory resident while each layer runs (its parameters, input and output).",
}


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    views: list[study.View] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # names in FIGURE_CAPTIONS


@dataclass
class Report:
    title: str
    sections: list[Section]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def assemble(sweep: Sweep, against: Sweep | None = None, ref: Reference | None = None) -> Report:
    ref = ref or reference()
    states = Counter(c.state for c in sweep.cells)
    summary = Section(
        "Summary",
        [
            f"Job {sweep.id} ({sweep.job.name}): {len(sweep.cells)} cells "
            f"({', '.join(f'{n} {s}' for s, n in states.most_common())}) of "
            f"{_count(len(sweep.models()), 'model')} on "
            f"{_count(len(sweep.places()), 'board/processor')}.",
            "Every number below is measured by farm; the study's (Lane et al. 2015) appear "
            "only where farm's reference data holds them, with where they were read.",
        ],
    )
    sections = [
        summary,
        Section(
            "Beside the study",
            [_reference_status(ref)],
            findings(sweep, ref),
            [study.beside(sweep, ref)],
        ),
        Section("Table 1: models", views=[study.table1(sweep)]),
        Section(
            "Tables 2, 3, 4: energy, time, battery life",
            views=[study.metric_table(sweep, m) for m in ("energy", "time", "battery")]
            + [study.ci_detail(sweep)],
        ),
        Section(
            "Tables 5 and 6: layer by layer",
            views=[
                study.layer_table(cell, number)
                for cell, number in (
                    (study.pick(sweep, True), "5"),
                    (study.pick(sweep, False), "6"),
                )
                if cell is not None
            ],
        ),
        Section("Table 7: non-linear layers", views=[study.table7(sweep)]),
        Section("Figures", figures=list(FIGURE_CAPTIONS)),
    ]
    if against is not None:
        sections.append(Section("Against another sweep", views=[compare.against(sweep, against)]))
    sections.append(Section("Provenance", views=[study.provenance(sweep)]))
    return Report(f"farm report: {sweep.id}", sections)


def _reference_status(ref: Reference) -> str:
    missing = [n for n in ("2", "3", "4", "5", "6", "7") if ref.missing(n)]
    text = f"The study: {ref.citation} ({ref.url})."
    if missing:
        text += (
            f" Tables {', '.join(missing)} of the study are not in farm's reference data: "
            f"{ref.provenance['how']}"
        )
    return text


def write(report: Report, sweep: Sweep, out: Path) -> dict[str, Path]:
    """Write report.md, report.html, cells.csv, cells.json and the figures into ``out``."""
    from farm.report import html, markdown  # renderers: only needed when writing files

    out.mkdir(parents=True, exist_ok=True)
    paths = figures.write(sweep, out)
    paths["report.md"] = out / "report.md"
    paths["report.md"].write_text(markdown.render(report))
    paths["report.html"] = out / "report.html"
    paths["report.html"].write_text(html.render(report, {n: paths[n] for n in FIGURE_CAPTIONS}))
    rows = records(sweep)
    paths["cells.csv"] = out / "cells.csv"
    paths["cells.csv"].write_text(csv_text(rows))
    paths["cells.json"] = out / "cells.json"
    paths["cells.json"].write_text(
        json.dumps(
            {
                "job": {k: getattr(sweep.job, k) for k in ("id", "name", "created", "updated")}
                | {"state": str(sweep.job.state)},
                "cells": [
                    {**rec, "env": c.env, "layers": c.layers}
                    for rec, c in zip(rows, sweep.cells, strict=True)
                ],
            },
            indent=1,
        )
    )
    return paths
