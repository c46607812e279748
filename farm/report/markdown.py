"""The report as Markdown (``report.md``), its figures linked beside it, and as
rich tables for the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from farm.report.build import FIGURE_CAPTIONS, Report
from farm.report.findings import Finding
from farm.report.study import View

MARK = {True: "agrees", False: "differs", None: ""}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def finding_line(f: Finding) -> str:
    return f"[{MARK[f.agrees]}] {f.text}" if f.agrees is not None else f.text


def view(v: View) -> list[str]:
    lines = [f"**{v.title}**", ""]
    lines.append("| " + " | ".join(_cell(c) for c in v.columns) + " |")
    lines.append("|" + "|".join("---" for _ in v.columns) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in v.rows]
    if not v.rows:
        lines.append("| " + " | ".join(["-"] * len(v.columns)) + " |")
    lines += ["", *[f"*{n}*  " for n in v.notes], ""]
    return lines


def render(report: Report) -> str:
    lines = [f"# {report.title}", ""]
    for s in report.sections:
        lines += [f"## {s.title}", ""]
        for p in s.paragraphs:
            lines += [p, ""]
        if s.findings:
            lines += [f"- {finding_line(f)}" for f in s.findings] + [""]
        for v in s.views:
            lines += view(v)
        for name in s.figures:
            lines += [
                f"![{FIGURE_CAPTIONS[name]}]({name}.png)",
                "",
                f"*{FIGURE_CAPTIONS[name]}*",
                "",
            ]
    return "\n".join(lines)


def to_terminal(report: Report, console: Console) -> None:
    """The report's tables and findings in the terminal (figures need ``--out``)."""
    console.print(f"[bold]{report.title}[/]")
    for s in report.sections:
        if s.figures:
            console.print(f"\n[dim]{s.title}: written with --out DIR[/]")
            continue
        # in a pipe the console is as wide as the widest table; a rule is kept to a screen's
        console.print(Rule(s.title), width=min(console.width, 120))
        for p in s.paragraphs:
            console.print(p)
        for f in s.findings:
            console.print(f"• {finding_line(f)}")
        for v in s.views:
            table = Table(title=v.title, header_style="bold", title_justify="left")
            for c in v.columns:
                table.add_column(c)
            for row in v.rows:
                table.add_row(*row)
            console.print(table)
            for n in v.notes:
                console.print(f"[dim]{n}[/]")
