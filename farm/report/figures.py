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

from farm.report.cells import Cell, Sweep
from farm.report.study import is_cnn, pick, split

DPI = 100
SIZES = {"figure4": (1200, 700), "figure5": (1200, 600), "figure6": (1200, 700)}
"""Each figure's size in pixels (width, height)."""

FEATURE, CLASSIFY, LIMIT, LOAD = "#0072B2", "#E69F00", "#D55E00", "#009E73"  # Okabe-Ito
MB = 2**20


def _figure(name: str, title: str) -> Figure:
    w, h = SIZES[name]
    fig = Figure(figsize=(w / DPI, h / DPI), dpi=DPI, layout="constrained")
    fig.suptitle(title, fontsize=13)
    return fig


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_axis_off()


def _layer_bars(ax: Axes, cell: Cell, values: list[float], xlabel: str) -> None:
    """Horizontal bars, one per layer in execution order (first at the top), coloured by
    the study's two groups, with the line between them drawn."""
    layers = cell.layers
    cut = split(layers)
    ys = range(len(layers))
    colours = [FEATURE if i < cut else CLASSIFY for i in ys]
    ax.barh(list(ys), values, color=colours)
    ax.set_yticks(list(ys), [f"{r['name']} ({r['type']})" for r in layers], fontsize=8)
    ax.invert_yaxis()
    if 0 < cut < len(layers):
        ax.axhline(cut - 0.5, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_title(
        f"{cell.model} ({'CNN' if is_cnn(layers) else 'DNN'}) on {cell.place}", fontsize=11
    )
    ax.grid(axis="x", alpha=0.3)
    handles = [
        Patch(color=c, label=lab)
        for c, lab in ((FEATURE, "feature extraction"), (CLASSIFY, "classification"))
    ]
    ax.legend(handles=handles, loc="lower right", fontsize=8)


def _per_layer(sweep: Sweep, name: str, title: str, value, xlabel: str) -> Figure:
    fig = _figure(name, title)
    cells = [c for c in (pick(sweep, cnn=False), pick(sweep, cnn=True)) if c is not None]
    axes = fig.subplots(1, max(len(cells), 1), squeeze=False)[0]
    if not cells:
        _empty(axes[0], "No cell of this sweep has a layer pass (measure.layers: true).")
    for ax, cell in zip(axes, cells, strict=False):
        _layer_bars(ax, cell, [value(r) for r in cell.layers], xlabel)
    return fig


def figure4(sweep: Sweep) -> Figure:
    """Per-layer time of one DNN and one CNN."""
    return _per_layer(
        sweep,
        "figure4",
        "Figure 4: time per layer, one inference",
        lambda r: r.get("time_ms") or 0.0,
        "time per inference (ms)",
    )


def figure6(sweep: Sweep) -> Figure:
    """Per-layer memory residency: what is live while each layer runs."""
    return _per_layer(
        sweep,
        "figure6",
        "Figure 6: memory resident while each layer runs",
        lambda r: (r.get("resident_bytes") or 0) / MB,
        "resident memory (MB): parameters + input + output",
    )


def figure5(sweep: Sweep) -> Figure:
    """Whole-model memory on each processor against that processor's limit."""
    fig = _figure("figure5", "Figure 5: model memory against each processor's limit")
    places = sweep.places()
    axes = fig.subplots(1, max(len(places), 1), squeeze=False, sharey=True)[0]
    models = sweep.models()
    highest = 1.0
    for ax, place in zip(axes, places, strict=False):
        cells = [sweep.cell(m, place) for m in models]
        xs = range(len(models))
        need = [_mb(c, "required_mb") for c in cells]
        rss = [_mb(c, "peak_rss_mb") for c in cells]
        series = [
            (need, FEATURE, "required (params + activations)"),
            (rss, CLASSIFY, "peak RSS (whole process)"),
        ]
        load = [_mb(c, "load_peak_rss_mb") for c in cells]
        if any(load):  # results that record the RSS peak while loading the model
            series.append((load, LOAD, "peak RSS while loading"))
        width = 0.8 / len(series)
        for k, (values, colour, label) in enumerate(series):
            dx = (k - (len(series) - 1) / 2) * width
            bars = ax.bar([x + dx for x in xs], values, width=width, color=colour, label=label)
            ax.bar_label(bars, [f"{v:,.1f}" if v else "" for v in values], fontsize=8)
        limit = next((_mb(c, "available_mb") for c in cells if _mb(c, "available_mb")), 0.0)
        if limit:
            ax.axhline(limit, color=LIMIT, linestyle="--", linewidth=1.5, label="memory limit")
            ax.annotate(
                f"limit {limit:,.0f} MB", (0.99, limit), xycoords=("axes fraction", "data"),
                ha="right", va="bottom", fontsize=9, color=LIMIT,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
            )  # fmt: skip
        tallest = [max(v) for v in zip(*(values for values, _, _ in series), strict=True)]
        for x, c, top in zip(xs, cells, tallest, strict=True):
            if c is not None and c.state == "does-not-fit":
                ax.annotate("does not fit", (x, top * 2.2), ha="center", fontsize=9, weight="bold")
        highest = max(highest, *tallest, limit)
        ax.set_yscale("log")
        ax.set_xticks(list(xs), models, rotation=30, ha="right")
        ax.set_title(place, fontsize=11)
        ax.grid(axis="y", alpha=0.3, which="both")
    axes[0].set_ylim(top=highest * 6)  # shared: room above every bar and limit for labels
    axes[0].set_ylabel("memory (MB, log scale)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9)
    return fig


def _mb(cell: Cell | None, name: str) -> float:
    value = cell.memory(name) if cell else None
    return float(value) if value else 0.0


FIGURES: dict[str, Any] = {"figure4": figure4, "figure5": figure5, "figure6": figure6}


def write(sweep: Sweep, out: Path) -> dict[str, Path]:
    """Every figure as ``out/<name>.png``; returns their paths by name."""
    paths = {}
    for name, draw in FIGURES.items():
        path = out / f"{name}.png"
        draw(sweep).savefig(path, dpi=DPI)
        paths[name] = path
    return paths
