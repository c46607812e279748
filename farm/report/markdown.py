"""The report as Markdown (``report.md``), its figures linked beside it, and as
rich tables for the terminal.

A value whose result carries warnings gets a footnote mark (``⚠1``) and the
table lists each warning under it, once, by its number.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table

from farm.report.document import FIGURE_CAPTIONS, Report
from farm.report.findings import Finding
from farm.report.study import View
from farm.report.tables import is_busy

MARK = {True: "agrees", False: "differs", None: ""}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def finding_line(f: Finding) -> str:
    return f"[{MARK[f.agrees]}] {f.text}" if f.agrees is not None else f.text


def footnotes(v: View) -> tuple[dict[tuple[int, int], list[int]], list[tuple[int, str]]]:
    """Each warned cell's footnote numbers, and the numbered warnings (each text once)."""
    numbers: dict[str, int] = {}
    for w in v.table_warnings:
        numbers.setdefault(w, len(numbers) + 1)
    marks = {
        at: [numbers.setdefault(w, len(numbers) + 1) for w in ws]
        for at, ws in sorted(v.warnings.items())
    }
    return marks, [(n, w) for w, n in numbers.items()]


def _mark(numbers: list[int], texts: list[str] = ()) -> str:
    """`` ⚠1,2`` after a warned value, `` ⚠1,2 busy`` where the board was busy."""
    if not numbers:
        return ""
    return (
        " ⚠"
        + ",".join(str(n) for n in numbers)
        + (" busy" if any(is_busy(w) for w in texts) else "")
    )


def view(v: View) -> list[str]:
    marks, notes = footnotes(v)
    top = [n for n, w in notes if w in v.table_warnings]
    lines = [f"**{v.title}**{_mark(top, v.table_warnings)}", ""]
    lines.append("| " + " | ".join(_cell(c) for c in v.columns) + " |")
    lines.append("|" + "|".join("---" for _ in v.columns) + "|")
    for i, row in enumerate(v.rows):
        cells = [
            _cell(text) + _mark(marks.get((i, j), []), v.warnings.get((i, j), []))
            for j, text in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if not v.rows:
        lines.append("| " + " | ".join(["-"] * len(v.columns)) + " |")
    lines.append("")
    lines += [f"⚠{n}: {w}  " for n, w in notes]
    lines += [f"{n}  " for n in v.notes]
    lines.append("")
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
            lines += [f"![{FIGURE_CAPTIONS[name]}]({name}.png)", "", FIGURE_CAPTIONS[name], ""]
    return "\n".join(lines)


def to_terminal(report: Report, console: Console) -> None:
    """The report's tables and findings in the terminal (figures need ``--out``)."""
    console.print(f"[bold]{escape(report.title)}[/]")
    for s in report.sections:
        console.print(Rule(s.title), width=min(console.width, 120))
        for p in s.paragraphs:
            console.print(escape(p))
        for f in s.findings:
            console.print(f"• {escape(finding_line(f))}")
        if s.figures:
            console.print(f"[dim]{s.title}: written with --out DIR[/]")
        for v in s.views:
            marks, notes = footnotes(v)
            table = Table(title=escape(v.title), header_style="bold", title_justify="left")
            for c in v.columns:
                table.add_column(escape(c))
            for i, row in enumerate(v.rows):
                table.add_row(
                    *[
                        escape(t + _mark(marks.get((i, j), []), v.warnings.get((i, j), [])))
                        for j, t in enumerate(row)
                    ]
                )
            console.print(table)
            for n, w in notes:
                console.print(f"[yellow]⚠{n}[/]: {escape(w)}")
            for n in v.notes:
                console.print(f"[dim]{escape(n)}[/]")
