"""The study's Figures 4, 5 and 6 as PNG, drawn with matplotlib's Agg renderer.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, no
global backend), at fixed sizes so a report's pages line up and tests can check
them: ``SIZES`` in pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from farm.report import vocabulary
from farm.report.cells import Cell, Sweep
from farm.report.paper import PROCESSORS, Reference, reference
from farm.report.study import FIGURE4_MODELS, TABLE5_MODEL, TABLE6_MODEL, pick

DPI = 100
SIZES = {"figure4": (1200, 700), "figure5": (1200, 600), "figure6": (1200, 700)}
"""Each figure's size in pixels (width, height)."""

FEATURE, CLASSIFY, LIMIT, LOAD = "#0072B2", "#E69F00", "#D55E00", "#009E73"  # Okabe-Ito
WARN = "#B2182B"
MB = 2**20


def _figure(name: str, title: str) -> Figure:
    w, h = SIZES[name]
    fig = Figure(figsize=(w / DPI, h / DPI), dpi=DPI, layout="constrained")
    fig.suptitle(title, fontsize=13)
    return fig


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_axis_off()


def _layer_bars(ax: Axes, cell: Cell, value, xlabel: str, title: str) -> None:
    """Horizontal bars, one per layer in execution order (numbered from 1, first at the
    top), coloured by the study's two groups, with the line between them drawn."""
    layers = [r for r in cell.layers if not vocabulary.is_layer_of_the_graph(r)]
    groups = vocabulary.group(layers)
    values = [value(r, layers) for r in layers]
    ys = list(range(len(layers)))
    colours = [FEATURE if g == "feature extraction" else CLASSIFY for g in groups]
    ax.barh(ys, values, color=colours)
    ax.set_yticks(
        ys,
        [f"{r['index'] + 1} {r['name']} ({vocabulary.study_type(r) or r['type']})"
         for r in layers],
        fontsize=8,
    )  # fmt: skip
    ax.invert_yaxis()
    cut = next((i for i, g in enumerate(groups) if g == "classification"), len(groups))
    if 0 < cut < len(layers):
        ax.axhline(cut - 0.5, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    kind = "CNN" if vocabulary.is_cnn(layers) else "DNN"
    ax.set_title(f"{title}{cell.model} ({kind}) on {cell.place}", fontsize=11)
    if cell.warnings:  # a number is never shown without its warnings
        ax.text(0.5, 1.0, "⚠ " + "; ".join(cell.warnings), transform=ax.transAxes, ha="center",
                va="bottom", fontsize=8, color=WARN, wrap=True)  # fmt: skip
        ax.set_title(f"{title}{cell.model} ({kind}) on {cell.place}\n", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    handles = [
        Patch(color=c, label=lab)
        for c, lab in ((FEATURE, "feature extraction"), (CLASSIFY, "classification"))
        if kind == "CNN" or c == CLASSIFY
    ]
    ax.legend(handles=handles, loc="lower right", fontsize=8)


def _panels(fig: Figure, cells: list[tuple[str, Cell | None, str]], value, xlabel: str) -> None:
    axes = fig.subplots(1, len(cells), squeeze=False)[0]
    for ax, (title, cell, missing) in zip(axes, cells, strict=True):
        if cell is None:
            _empty(ax, f"{title}{missing}")
        else:
            _layer_bars(ax, cell, value, xlabel, title)


def _share(r: dict[str, Any], layers: list[dict[str, Any]]) -> float:
    total = sum(x.get("time_ms") or 0 for x in layers) or 1.0
    return 100 * (r.get("time_ms") or 0) / total


def figure4(sweep: Sweep) -> Figure:
    """The study's Figure 4: each layer's share of time, SVHN (4a) and Deep KWS (4b)."""
    fig = _figure("figure4", "Figure 4: share of one inference's time per layer")
    _panels(
        fig,
        [(f"({tag}) ", pick(sweep, model), f"no layer pass of {model} in this sweep")
         for tag, model in zip("ab", FIGURE4_MODELS, strict=True)],
        _share,
        "share of the layers' time (%)",
    )  # fmt: skip
    return fig


def figure6(sweep: Sweep) -> Figure:
    """Per-layer memory residency (the study's 6a is AlexNet): what is live while each
    layer runs."""
    fig = _figure("figure6", "Figure 6: memory resident while each layer runs")
    _panels(
        fig,
        [("(a) ", pick(sweep, TABLE5_MODEL, cnn=True), "no CNN with a layer pass"),
         ("(b) ", pick(sweep, TABLE6_MODEL, cnn=False), "no DNN with a layer pass")],
        lambda r, _layers: (r.get("resident_bytes") or 0) / MB,
        "resident memory (MB): parameters + input + output",
    )  # fmt: skip
    return fig


def limit(cell: Cell | None, ref: Reference) -> tuple[float, str]:
    """The memory limit a board's panel draws: the study's for the processor it stands
    for (where the study gives one), else the board's own; and its label."""
    if cell is not None and cell.paper:
        mb, _ = ref.limit_mb(cell.paper)
        if mb is not None:
            return mb, f"the study's {ref.processor_label(cell.paper)}: {_size(mb)}"
    own = _mb(cell, "available_mb")
    return own, f"this board's: {_size(own)}" if own else ""


def fits(cell: Cell | None, mb: float) -> bool | None:
    """Whether a cell's model fits ``mb`` (None: its requirement is unknown)."""
    need = _mb(cell, "required_mb")
    return None if not need or not mb else need <= mb


def _size(mb: float) -> str:
    return f"{mb / 1024:.3g} GB" if mb >= 1024 else f"{mb:,.0f} MB"


def figure5(sweep: Sweep, ref: Reference) -> Figure:
    """Whole-model memory on each processor against the limit it draws, and each model's
    requirement against every limit the study gives."""
    fig = _figure("figure5", "Figure 5: model memory against each processor's limit")
    places = sweep.places()
    axes = fig.subplots(1, len(places) + 1, squeeze=False, sharey=True)[0]
    models = sweep.models()
    highest = 1.0
    for ax, place in zip(axes, places, strict=False):
        cells = [sweep.cell(m, place) for m in models]
        series = [
            ([_mb(c, "required_mb") for c in cells], FEATURE, "required (params + activations)"),
            ([_mb(c, "peak_rss_mb") for c in cells], CLASSIFY, "peak RSS (whole process)"),
        ]
        tallest = _bars(ax, models, series)
        cap, label = limit(next((c for c in cells if c), None), ref)
        if cap:
            ax.axhline(cap, color=LIMIT, linestyle="--", linewidth=1.5, label="memory limit")
            ax.annotate(
                label, (0.99, cap), xycoords=("axes fraction", "data"), ha="right",
                va="bottom", fontsize=9, color=LIMIT,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
            )  # fmt: skip
        for x, c, top in zip(range(len(models)), cells, tallest, strict=True):
            if fits(c, cap) is False:  # decided against the limit this panel draws
                ax.annotate("does not fit", (x, top * 1.6), ha="center", va="bottom", fontsize=8,
                            weight="bold")  # fmt: skip
        highest = max(highest, *tallest, cap)
        ax.set_title(place, fontsize=11)
    ax = axes[-1]
    need = [max((_mb(c, "required_mb") for c in sweep.cells if c.model == m), default=0.0)
            for m in models]  # fmt: skip
    tallest = _bars(ax, models, [(need, FEATURE, "")])
    limits: dict[float, list[str]] = {}
    for p in PROCESSORS:
        mb, _ = ref.limit_mb(p)
        if mb is not None:
            limits.setdefault(mb, []).append(ref.processor_label(p))
    for mb, names in limits.items():
        ax.axhline(mb, color=LIMIT, linestyle=":", linewidth=1.2)
        ax.annotate(
            f"{' / '.join(names)}: {_size(mb)}", (0.99, mb), xycoords=("axes fraction", "data"),
            ha="right", va="bottom", fontsize=8, color=LIMIT,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
        )  # fmt: skip
        highest = max(highest, mb)
    for x, n, top in zip(range(len(models)), need, tallest, strict=True):
        over = [mb for mb in limits if n > mb]
        if over:  # decided against the limits this panel draws
            ax.annotate(f"does not fit\n{' or '.join(_size(mb) for mb in sorted(over))}",
                        (x, top * 1.6), ha="center", va="bottom", fontsize=8, weight="bold")  # fmt: skip
    ax.set_title("against the study's limits", fontsize=11)
    highest = max(highest, *tallest)
    warned = {c.model for c in sweep.cells if c.warnings}
    for k, a in enumerate(axes):
        a.set_yscale("log")
        if k < len(places):  # a board's panel: that cell's warnings; the last: any cell's
            flagged = {m for m in models if (c := sweep.cell(m, places[k])) and c.warnings}
        else:
            flagged = warned
        ticks = [m + (" ⚠" if m in flagged else "") for m in models]
        a.set_xticks(list(range(len(models))), ticks, rotation=30, ha="right")
        a.grid(axis="y", alpha=0.3, which="both")
    axes[0].set_ylim(bottom=0.1, top=highest * 12)  # shared: room for every label
    axes[0].set_ylabel("memory (MB, log scale)")
    handles, labels = axes[0].get_legend_handles_labels()
    if warned:
        handles.append(Patch(color="white", label="⚠ measured with warnings (see the tables)"))
        labels.append("⚠ measured with warnings (see the tables)")
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9)
    return fig


def _bars(ax: Axes, models: list[str], series: list[tuple[list[float], str, str]]) -> list[float]:
    """Grouped bars with their values; the tallest bar per model."""
    width = 0.8 / len(series)
    for k, (values, colour, label) in enumerate(series):
        dx = (k - (len(series) - 1) / 2) * width
        bars = ax.bar([x + dx for x in range(len(models))], values, width=width, color=colour,
                      label=label or None)  # fmt: skip
        ax.bar_label(bars, [f"{v:,.1f}" if v else "" for v in values], fontsize=8)
    return [max(v) for v in zip(*(values for values, _, _ in series), strict=True)]


def _mb(cell: Cell | None, name: str) -> float:
    value = cell.memory(name) if cell else None
    return float(value) if value else 0.0


def write(sweep: Sweep, out: Path, ref: Reference | None = None) -> dict[str, Path]:
    """Every figure as ``out/<name>.png``; returns their paths by name."""
    ref = ref or reference()
    drawn = {"figure4": figure4(sweep), "figure5": figure5(sweep, ref), "figure6": figure6(sweep)}
    paths = {}
    for name, fig in drawn.items():
        path = out / f"{name}.png"
        fig.savefig(path, dpi=DPI)
        paths[name] = path
    return paths
