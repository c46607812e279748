"""The study's views of a sweep: Tables 1-7, the CI detail, provenance, and the
comparison with the study's own numbers, as plain ``View`` records.

Views hold text only; ``markdown``, ``html`` and the terminal render them, so
every format shows the same numbers. A cell without a value shows ``-`` and the
reason (does not fit, failed, no power monitor), never a blank.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from farm.report.cells import Cell, Estimate, Sweep
from farm.report.paper import METRIC_TABLES, Reference, ratio

ACTIVATIONS = ("sigmoid", "tanh", "relu")  # the study's Table 7 columns

METRICS = {
    # metric: (table number, title, unit, format)
    "energy": ("2", "Energy per inference (net of idle)", "mJ", "{:.3f}"),
    "time": ("3", "Execution time per inference", "ms", "{:.3f}"),
    "battery": ("4", "Battery life, one inference per period", "h", "{:.1f}"),
}


@dataclass
class View:
    """One table: a title, column names, rows of text, hover tips and notes."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    tips: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, column) -> text
    notes: list[str] = field(default_factory=list)
    line_before: int | None = None  # HTML draws the study's line above this row (Tables 5, 6)


def _fmt(x: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def estimate(cell: Cell, metric: str) -> Estimate | None:
    """A cell's value of ``metric`` (``time``, ``energy``, ``battery``), if it has one."""
    return {"time": cell.time_ms, "energy": cell.energy_mj, "battery": cell.battery_h}[metric]()


def zoo_name(cell: Cell) -> str:
    """The zoo model behind a cell (a job may rename it, e.g. ``deepear-emotion``)."""
    return (cell.env.get("model") or {}).get("zoo") or cell.model


def is_cnn(layers: list[dict[str, Any]]) -> bool:
    return any(row["type"].startswith("Conv") for row in layers)


def split(layers: list[dict[str, Any]]) -> int:
    """Where the study draws its line: the first fully-connected layer of a CNN. Layers
    before it extract features (convolution-oriented), it and the rest classify
    (feed-forward). A DNN is feed-forward throughout: its line is before its first layer."""
    if not is_cnn(layers):
        return 0
    return next((i for i, row in enumerate(layers) if row["type"] == "Linear"), len(layers))


def shares(layers: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """{group: (share of time, share of parameters)} for the two sides of the line."""
    cut = split(layers)
    total_t = sum(r.get("time_ms") or 0 for r in layers) or 1.0
    total_p = sum(r.get("params") or 0 for r in layers) or 1
    out = {}
    for name, part in (("feature extraction", layers[:cut]), ("classification", layers[cut:])):
        out[name] = (
            sum(r.get("time_ms") or 0 for r in part) / total_t,
            sum(r.get("params") or 0 for r in part) / total_p,
        )
    return out


def type_shares(layers: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Share of time by layer type, largest first."""
    total = sum(r.get("time_ms") or 0 for r in layers) or 1.0
    by_type: Counter[str] = Counter()
    for r in layers:
        by_type[r["type"]] += (r.get("time_ms") or 0) / total
    return by_type.most_common()


def pick(sweep: Sweep, cnn: bool) -> Cell | None:
    """The cell whose layers Table 5 (a CNN) or Table 6 (a DNN) shows: the study's own
    choice (AlexNet; DeepEar's emotion DNN) when the sweep has it, else the first one."""
    preferred = ("alexnet",) if cnn else ("deepear-emotion", "deepear", "kws")
    done = [
        c for c in sweep.cells
        if c.layers and is_cnn(c.layers) == cnn and c.activation == "relu"
    ]  # fmt: skip
    for name in preferred:
        for c in done:
            if c.model == name:
                return c
    return done[0] if done else None


# -- the tables --------------------------------------------------------------------


def table1(sweep: Sweep) -> View:
    view = View(
        "table1", "Table 1: models", ["model", "type", "parameters", "architecture", "input"]
    )
    for model in sweep.models():
        cell = next((c for c in sweep.cells if c.model == model and c.layers), None)
        meta = (cell.env.get("model") or {}) if cell else {}
        if cell is None:
            view.rows.append([model, "-", "-", "- (no layer pass stored)", "-"])
            continue
        kinds = Counter(r["type"] for r in cell.layers)
        arch = ", ".join(f"{n}× {t}" for t, n in kinds.most_common())
        params = meta.get("params") or sum(r.get("params") or 0 for r in cell.layers)
        shape = "×".join(str(d) for d in meta.get("input_shape") or []) or "-"
        kind = "CNN" if is_cnn(cell.layers) else "DNN"
        view.rows.append([model, kind, f"{params:,}", arch, shape])
    return view


def metric_table(sweep: Sweep, metric: str) -> View:
    """Tables 2, 3, 4: models × board/processor, the default (ReLU) variant."""
    number, title, unit, fmt = METRICS[metric]
    places = sweep.places()
    view = View(f"table{number}", f"Table {number}: {title} ({unit})", ["model", *places])
    for model in sweep.models():
        row = [model]
        for j, place in enumerate(places, start=1):
            cell = sweep.cell(model, place)
            est = estimate(cell, metric) if cell else None
            if cell is None:
                row.append("")
            elif est is None:
                row.append(f"- ({cell.reason(metric)})")
            else:
                row.append(fmt.format(est.mean))
                if est.low is not None and est.high is not None:
                    view.tips[(len(view.rows), j)] = (
                        f"95% CI {fmt.format(est.low)} to {fmt.format(est.high)} {unit}"
                        + (f", n={est.n}" if est.n else "")
                    )
        view.rows.append(row)
    if view.tips:
        view.notes.append("Hover a value (HTML) or see the detail table for its 95% CI.")
    twice = len(sweep.cells) - len({c.key for c in sweep.cells})
    if twice:
        view.notes.append(
            f"{twice} cell(s) ran where another cell of the same model and variant ran "
            "(a retried task migrated to a sibling board): the table shows the first; the "
            "detail table lists every cell. Set `migrate: false` in the job to prevent it."
        )
    if metric == "battery" and any(estimate(c, metric) for c in sweep.cells):
        view.notes.append(
            "From the inventory's power.battery (capacity, voltage, one inference every "
            "period_s) and the measured idle and inference power: idle dominates when "
            "inferences are rare."
        )
    return view


def ci_detail(sweep: Sweep) -> View:
    """Every cell's mean and 95% confidence interval, time and energy."""
    view = View(
        "ci",
        "Detail: 95% confidence intervals",
        [
            "model",
            "board/processor",
            "activation",
            "metric",
            "mean",
            "95% CI low",
            "95% CI high",
            "n",
        ],
    )
    for cell in sweep.cells:
        for metric in ("time", "energy"):
            est = estimate(cell, metric)
            unit = METRICS[metric][2]
            if est is None:
                if metric == "time":
                    view.rows.append(
                        [cell.model, cell.place, cell.activation, f"time ({unit})",
                         f"- ({cell.reason(metric)})", "-", "-", "-"]
                    )  # fmt: skip
                continue
            view.rows.append(
                [cell.model, cell.place, cell.activation, f"{metric} ({unit})", _fmt(est.mean),
                 _fmt(est.low), _fmt(est.high), str(est.n or "-")]
            )  # fmt: skip
    return view


def layer_table(cell: Cell, number: str) -> View:
    """Tables 5 and 6: per-layer type, parameters and share of time, with the line
    between feature extraction and classification, and each side's totals."""
    kind = "CNN" if number == "5" else "DNN"
    view = View(
        f"table{number}",
        f"Table {number}: layer by layer, a {kind} ({cell.model} on {cell.place})",
        ["#", "layer", "type", "parameters", "time (ms)", "time (%)", "group"],
    )
    cut = split(cell.layers)
    view.line_before = cut if 0 < cut < len(cell.layers) else None
    for i, r in enumerate(cell.layers):
        group = "feature extraction" if i < cut else "classification"
        view.rows.append(
            [str(r["index"]), r["name"], r["type"], f"{r.get('params') or 0:,}",
             _fmt(r.get("time_ms"), "{:.4f}"), _fmt(r.get("share"), "{:.1%}"), group]
        )  # fmt: skip
    for group, (t, p) in shares(cell.layers).items():
        view.notes.append(f"{group}: {t:.1%} of the time, {p:.1%} of the parameters")
    view.notes.append(
        "The line falls before the first fully-connected layer, as in the study; "
        "times are the layer pass's (hook cost subtracted), shares of its total."
    )
    return view


def table7(sweep: Sweep) -> View:
    """Table 7: the share of runtime in non-linear layers under each activation."""
    view = View(
        "table7",
        "Table 7: share of runtime in non-linear layers",
        ["model", "board/processor", *ACTIVATIONS],
    )
    measured = {c.activation for c in sweep.cells}
    for model in sweep.models():
        for place in sweep.places():
            cells = [sweep.cell(model, place, a) for a in ACTIVATIONS]
            if not any(cells):
                continue
            row = [model, place]
            for c in cells:
                if c is None:
                    row.append("- (not in this sweep)")
                elif c.nonlinear_share is None:
                    row.append(f"- ({c.reason('time')})")
                else:
                    row.append(f"{c.nonlinear_share:.1%}")
            view.rows.append(row)
    missing = [a for a in ACTIVATIONS if a not in measured]
    if missing:
        view.notes.append(
            f"{', '.join(missing)}: no cell ran with it; give the model "
            "`variants: {activation: [relu, sigmoid, tanh]}` (as jobs/paper.yaml does)."
        )
    return view


def beside(sweep: Sweep, ref: Reference) -> View:
    """farm's figure beside the study's, wherever a processor stands for one of the study's."""
    view = View(
        "beside",
        "Beside the study: this sweep's figures and the study's",
        [
            "model",
            "board/processor",
            "study's processor",
            "metric",
            "farm",
            "study",
            "farm / study",
        ],
    )
    for cell in sweep.cells:
        if cell.paper is None or cell.activation != "relu":
            continue
        for metric, number in METRIC_TABLES.items():
            _, _, unit, fmt = METRICS[metric]
            est = estimate(cell, metric)
            mine = est.mean if est else None
            theirs, where = ref.value(number, zoo_name(cell), cell.paper)
            if ref.missing(number):
                where = f"Table {number} not in the reference data"
            r = ratio(mine, theirs)
            view.rows.append(
                [cell.model, cell.place, ref.processor_label(cell.paper), f"{metric} ({unit})",
                 fmt.format(mine) if mine is not None else f"- ({cell.reason(metric)})",
                 fmt.format(theirs) if theirs is not None else f"- ({where})",
                 "-" if r is None else f"{r:.2f}×"]
            )  # fmt: skip
    for number in sorted({n for n in METRIC_TABLES.values() if view.rows and ref.missing(n)}):
        view.notes.append(f"Table {number}: {ref.missing(number)}.")
    if not view.rows:
        view.notes.append(
            "No board/processor of this sweep says which of the study's processors it stands "
            "for: set `paper:` on a processor in the inventory (e.g. `paper: tegra-k1-cpu`)."
        )
    return view


def provenance(sweep: Sweep) -> View:
    """Where every number comes from: the cell, its artifact and engine, and the
    environment recorded with the result (whatever keys that result has)."""
    fixed = [
        ("artifact sha256", lambda c: ((c.env.get("model") or {}).get("sha256") or "-")[:12]),
        ("engine", lambda c: _short(c.env.get("engine"))),
        ("torch", lambda c: c.env.get("torch")),
        ("threads", lambda c: c.env.get("threads")),
        ("iterations", lambda c: (c.result.get("latency") or {}).get("n")),
    ]
    extra = [
        "cpu_model", "governor", "freq_mhz", "nice", "loadavg_before", "loadavg_after",
        "temp_c_before", "temp_c_after", "kernel", "hostname",
    ]  # fmt: skip
    present = [k for k in extra if any(k in c.env for c in sweep.cells)]
    view = View(
        "provenance",
        "Provenance",
        ["model", "board/processor", "activation", "state", *[n for n, _ in fixed], *present],
    )
    for c in sweep.cells:
        values = [f(c) for _, f in fixed] + [c.env.get(k) for k in present]
        view.rows.append([c.model, c.place, c.activation, c.state, *[_short(v) for v in values]])
    view.notes.append(
        f"Job {sweep.id} ({sweep.job.name}), created {_date(sweep.job.created)}, "
        f"state {sweep.job.state}. The full environment of each result is in cells.json."
    )
    return view


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "/".join(_short(v) for v in value)
    return str(value)


def _date(ts: float | None) -> str:
    import datetime as dt

    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
