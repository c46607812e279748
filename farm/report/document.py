"""The report as a document: its sections (paragraphs, findings, views, figures) and
the figures' captions. ``build`` assembles one; ``markdown`` and ``html`` render it,
importing only this, never ``build``."""

from __future__ import annotations

from dataclasses import dataclass, field

from farm.report.findings import Finding
from farm.report.paper import Reference
from farm.report.study import View

FIGURE_CAPTIONS = {
    "figure4": "Figure 4: each layer's share of the time of one inference, SVHN (4a, a CNN) and "
    "Deep KWS (4b, a DNN), as the study's Figure 4; coloured by the study's two groups, the "
    "dashed line where feature extraction ends.",
    "figure5": "Figure 5: each model's memory (log scale): what it requires (parameters + peak "
    "live activations) and the process's peak RSS, against the memory limit of the study's "
    "processor each board stands for (the board's own where it stands for none), and, last, "
    "against every limit the study gives.",
    "figure6": "Figure 6: memory resident while each layer runs (its parameters, input and "
    "output).",
}


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    views: list[View] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # names in FIGURE_CAPTIONS


@dataclass
class Report:
    title: str
    sections: list[Section]
    ref: Reference | None = None  # the study's numbers this report was set beside
