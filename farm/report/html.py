"""The report as one self-contained HTML page (``report.html``).

Figures are embedded as base64 PNG, the style is inline, and there is no script
and no network reference: the file reads the same offline, in any browser, or
attached to an e-mail. A value's 95% CI is its cell's ``title`` (shown on hover); a value
whose result carries warnings gets a badge (red where the board was busy) and the
warnings are listed, numbered, under its table.
"""

from __future__ import annotations

import base64
import re
from html import escape
from pathlib import Path

from farm.report.document import FIGURE_CAPTIONS, Report
from farm.report.findings import Finding
from farm.report.markdown import footnotes
from farm.report.study import View
from farm.report.tables import is_busy

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1240px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
caption { text-align: left; font-weight: 600; padding: .3em 0; white-space: nowrap; }
th, td { border: 1px solid #ddd; padding: .25em .55em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tr.line td { border-top: 3px solid #222; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td[title] { text-decoration: underline dotted #888; cursor: help; }
.note { color: #555; font-size: 13px; margin: .1em 0; }
.agrees { color: #1b7837; font-weight: 600; } .differs { color: #b2182b; font-weight: 600; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 13px; }
.scroll { overflow-x: auto; }
td.warned { background: #fff4d6; }
.badge { display: inline-block; margin-left: .3em; padding: 0 .35em; border-radius: .6em;
         background: #e69f00; color: #fff; font-size: 11px; font-weight: 600; cursor: help; }
.badge.busy { background: #b2182b; }
.warnnote { color: #7a4d00; }
"""


NUMBER = re.compile(r"[+-]?[\d,.]+(%|×)?( †)?( \[[\d,. ]+\])?( \([\d.e+-]+×\))?")


def _numeric(text: str) -> bool:
    """A number (right-aligned), as opposed to text that starts with one."""
    return NUMBER.fullmatch(text) is not None


def _badge(numbers: list[int], texts: list[str]) -> str:
    """A warning badge: its numbers, the warnings on hover; red where the board was busy."""
    if not numbers:
        return ""
    busy = " busy" if any(is_busy(w) for w in texts) else ""
    label = ("busy " if busy else "") + "⚠" + ",".join(str(n) for n in numbers)
    return f'<span class="badge{busy}" title="{escape("; ".join(texts))}">{label}</span>'


def _view(v: View) -> str:
    marks, notes = footnotes(v)
    head = "".join(f"<th>{escape(c)}</th>" for c in v.columns)
    body = []
    for i, row in enumerate(v.rows):
        cells = []
        for j, text in enumerate(row):
            classes = ["num"] if _numeric(text) else []
            warned = v.warnings.get((i, j), [])
            classes += ["warned"] if warned else []
            attrs = f' class="{" ".join(classes)}"' if classes else ""
            if (i, j) in v.tips:
                attrs += f' title="{escape(v.tips[(i, j)])}"'
            badge = _badge(marks.get((i, j), []), warned)
            cells.append(f"<td{attrs}>{escape(text)}{badge}</td>")
        line = ' class="line"' if i == v.line_before else ""
        body.append(f"<tr{line}>" + "".join(cells) + "</tr>")
    top = [n for n, w in notes if w in v.table_warnings]
    caption = escape(v.title) + _badge(top, v.table_warnings)
    warned = "".join(f'<p class="note warnnote">⚠{n}: {escape(w)}</p>' for n, w in notes)
    texts = "".join(f'<p class="note">{escape(n)}</p>' for n in v.notes)
    return (
        f'<div class="scroll"><table id="{escape(v.key)}"><caption>{caption}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        f"{warned}{texts}"
    )


def _finding(f: Finding) -> str:
    if f.agrees is None:
        return f"<li>{escape(f.text)}</li>"
    mark = "agrees" if f.agrees else "differs"
    return f'<li><span class="{mark}">[{mark}]</span> {escape(f.text)}</li>'


def _figure(name: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = escape(FIGURE_CAPTIONS[name])
    return (
        f'<figure id="{name}"><img alt="{caption}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def render(report: Report, figures: dict[str, Path]) -> str:
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(report.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(report.title)}</h1>",
        "<nav><ul>"
        + "".join(
            f'<li><a href="#s{i}">{escape(s.title)}</a></li>' for i, s in enumerate(report.sections)
        )
        + "</ul></nav>",
    ]
    for i, s in enumerate(report.sections):
        parts.append(f'<section id="s{i}"><h2>{escape(s.title)}</h2>')
        parts += [f"<p>{escape(p)}</p>" for p in s.paragraphs]
        if s.findings:
            parts.append("<ul>" + "".join(_finding(f) for f in s.findings) + "</ul>")
        parts += [_view(v) for v in s.views]
        parts += [_figure(n, figures[n]) for n in s.figures]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
