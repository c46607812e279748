"""The study's views of a sweep: Tables 1-7 with the study's columns beside farm's,
the CI detail and provenance, as plain ``View`` records.

Views hold text only; ``markdown``, ``html`` and the terminal render them, so
every format shows the same numbers. A cell without a value shows ``-`` and the
reason (does not fit, failed, no power monitor, not one of the study's rows),
never a blank; a cell whose result carries warnings carries them too.

Times are medians with their 95% CI (order statistics), the mean beside them:
a busy board's stray inferences move a mean, not a median. The study reports
means of 1,000 inferences; ratios to the study use farm's headline value.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from farm.report import vocabulary
from farm.report.cells import Cell, Estimate, Sweep
from farm.report.paper import PROCESSORS, Reference, ratio

ACTIVATIONS = ("sigmoid", "tanh", "relu")  # the study's Table 7 columns

METRICS = {
    # metric: (table number, title, unit, format)
    "energy": ("2", "Energy per inference (net of idle)", "mJ", "{:.3f}"),
    "time": ("3", "Execution time per inference", "ms", "{:.3f}"),
    "battery": ("4", "Battery life, one inference per period", "h", "{:.1f}"),
}

TABLE5_MODEL, TABLE6_MODEL = "alexnet", "deepear-emotion"  # the study's layer tables' models
FIGURE4_MODELS = ("svhn", "kws")  # the study's Figure 4a (a CNN) and 4b (a DNN)


@dataclass
class View:
    """One table: a title, column names, rows of text, hover tips, notes and warnings."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    tips: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, column) -> text
    notes: list[str] = field(default_factory=list)
    line_before: int | None = None  # HTML draws the study's line above this row (Tables 5, 6)
    warnings: dict[tuple[int, int], list[str]] = field(default_factory=dict)  # (row, col)
    table_warnings: list[str] = field(default_factory=list)  # of the one cell a table shows

    def add(self, row: list[str], warned: dict[int, Cell | None] | None = None) -> None:
        """Append a row; ``warned`` maps a column to the cell whose warnings it shows."""
        for j, cell in (warned or {}).items():
            if cell is not None and cell.warnings:
                self.warnings[(len(self.rows), j)] = cell.warnings
        self.rows.append(row)


def _fmt(x: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def estimate(cell: Cell, metric: str) -> Estimate | None:
    """A cell's value of ``metric`` (``time``, ``energy``, ``battery``), if it has one."""
    return {"time": cell.time_ms, "energy": cell.energy_mj, "battery": cell.battery_h}[metric]()


def headline(est: Estimate, fmt: str) -> str:
    """``value [low, high]`` (the interval where it is known)."""
    if est.low is None or est.high is None:
        return fmt.format(est.value)
    return f"{fmt.format(est.value)} [{fmt.format(est.low)}, {fmt.format(est.high)}]"


def study_name(cell: Cell | None, ref: Reference) -> str:
    return (ref.model_name(cell.study) if cell else None) or "-"


def rows_of(sweep: Sweep) -> list[tuple[str, str, Cell]]:
    """(model, place, cell) for every model and place with a default-activation cell."""
    out = []
    for model in sweep.models():
        for place in sweep.places():
            cell = sweep.cell(model, place)
            if cell is not None:
                out.append((model, place, cell))
    return out


def pick(sweep: Sweep, model: str | None, cnn: bool | None = None) -> Cell | None:
    """The default-activation cell with a layer pass of the study's ``model`` (prefer a
    board that stands for one of the study's processors); with ``cnn`` and no such
    cell, the first CNN (or DNN) of the sweep."""
    done = [c for c in sweep.cells if c.layers and c.activation == "relu"]
    done.sort(key=lambda c: c.paper is None)  # stable: boards standing for the study's first
    for c in done:
        if model is not None and c.study == model:
            return c
    if cnn is None:
        return None
    return next((c for c in done if vocabulary.is_cnn(c.layers) == cnn), None)


# -- Table 1 ---------------------------------------------------------------------------


def architecture(layers: list[dict[str, Any]]) -> str:
    """A model's layers counted in the study's words (``5 convolution, 3 pooling, ...``)."""
    kinds = Counter(
        vocabulary.study_type(r) for r in layers if not vocabulary.is_layer_of_the_graph(r)
    )
    named = [f"{kinds[t]} {t}" for t in vocabulary.STUDY_TYPES if kinds[t]]
    if kinds[None]:
        named.append(f"{kinds[None]} other")
    return ", ".join(named) or "-"


def study_params(ref: Reference, key: str | None) -> tuple[str, float | None]:
    """The study's parameter count of a model, as it prints it and as a number."""
    row = ref.row("1", key) if "1" in ref.model_tables(key) else None
    if row is not None:
        return row["parameters"], parse_size(row["parameters"])
    layers = ref.layers("6", key) or ref.layers("5", key)
    if layers:
        total = sum(r.get("params") or 0 for r in layers)
        return f"{total:,} (its Table {'6' if ref.layers('6', key) else '5'} layers)", float(total)
    return "-", None


def parse_size(text: str) -> float:
    """``60.9M`` -> 60.9e6, ``313K`` -> 313e3."""
    scale = {"K": 1e3, "M": 1e6}.get(text[-1:].upper(), 1.0)
    return float(text.rstrip("KkMm")) * scale


def table1(sweep: Sweep, ref: Reference) -> View:
    view = View(
        "table1",
        "Table 1: models",
        ["model", "zoo (options)", "study's model", "type", "study's type", "parameters",
         "study's parameters", "layers (the study's words)", "study's architecture", "input"],
    )  # fmt: skip
    for model in sweep.models():
        cell = next((c for c in sweep.cells if c.model == model and c.layers), None)
        cell = cell or next(c for c in sweep.cells if c.model == model)
        zoo = cell.zoo + (
            " (" + ", ".join(f"{k}={v}" for k, v in sorted(cell.options.items())) + ")"
            if cell.options
            else ""
        )
        kind = ("CNN" if vocabulary.is_cnn(cell.layers) else "DNN") if cell.layers else "-"
        params = cell.params or sum(r.get("params") or 0 for r in cell.layers) or None
        row1 = ref.row("1", cell.study) if "1" in ref.model_tables(cell.study) else None
        s_params, _ = study_params(ref, cell.study)
        s_type = row1["type"] if row1 else ("DNN" if cell.study == TABLE6_MODEL else "-")
        view.add(
            [model, zoo, study_name(cell, ref), kind, s_type, _fmt(params, "{:,}"), s_params,
             architecture(cell.layers) if cell.layers else "- (no layer pass stored)",
             row1["architecture"] if row1 else "-", cell.input_shape or "-"],
        )  # fmt: skip
    view.notes.append(
        "The study's columns are its Table 1 (for DeepEar's emotion DNN, which Table 1 does "
        "not list, the sum of its Table 6 layers). The study prints sizes truncated: "
        "60,965,224 parameters print as 60.9M."
    )
    return view


# -- Tables 2, 3, 4 -----------------------------------------------------------------------


def metric_table(sweep: Sweep, metric: str, ref: Reference) -> View:
    """Tables 2, 3, 4: each model on each board/processor (the default activation), farm's
    value beside the study's on each of its five processors, with farm ÷ study."""
    number, title, unit, fmt = METRICS[metric]
    head = "median [95% CI]" if metric == "time" else (
        "mean [95% CI]" if metric == "energy" else "farm"
    )  # fmt: skip
    columns = ["model", "study's model", "board/processor", "stands for", head]
    columns += ["mean"] if metric == "time" else []
    labels = [f"study: {ref.processor_label(p)}" for p in PROCESSORS]
    view = View(f"table{number}", f"Table {number}: {title} ({unit})", columns + labels)
    first_study = len(columns)
    elsewhere: dict[str, str] = {}
    for model, place, cell in rows_of(sweep):
        est = estimate(cell, metric)
        mine = est.value if est else None
        row = [model, study_name(cell, ref), place,
               ref.processor_label(cell.paper) if cell.paper else "-"]  # fmt: skip
        if est is None:
            row.append(f"- ({cell.reason(metric)})")
        else:
            row.append(headline(est, fmt))
            if est.low is not None:
                view.tips[(len(view.rows), 4)] = (
                    f"95% CI {fmt.format(est.low)} to {fmt.format(est.high)} {unit}"
                    + (f", n={est.n}" if est.n else "")
                )
        if metric == "time":
            row.append(_fmt(est.mean if est else None, fmt))
        in_table = number in ref.model_tables(cell.study)
        for p in PROCESSORS:
            theirs, where = ref.value(number, cell.study, p)
            if not in_table:
                row.append("-")
                elsewhere[model] = where
            elif theirs is None:
                row.append(f"- ({_short_reason(where)})")
            else:
                r = ratio(mine, theirs)
                text = f"{theirs:,.1f}" if metric != "battery" else f"{theirs:.2f}"
                row.append(text + (f" ({r:.2g}×)" if r is not None else ""))
                view.tips[(len(view.rows), first_study + PROCESSORS.index(p))] = where
        view.add(row, {4: cell})
    view.notes.append(
        "Each study column: the study's value (farm ÷ study in brackets). "
        + (
            "The study reports means of 1,000 inferences; farm's ratio is of its median."
            if metric == "time"
            else ""
        )
    )
    for model, why in elsewhere.items():
        view.notes.append(f"{model}: no study column, {why}.")
    twice = len(sweep.cells) - len({c.key for c in sweep.cells})
    if twice:
        view.notes.append(
            f"{twice} cell(s) ran where another cell of the same model and options ran "
            "(a retried task migrated to a sibling board): the table shows the first; the "
            "detail table lists every cell. Set `migrate: false` in the job to prevent it."
        )
    if metric == "battery":
        view.notes.append(
            "farm: from the inventory's power.battery (capacity, voltage, one inference every "
            "period_s) and the measured idle and inference power. The study: "
            + ref.table("4").get("assumptions", "")
            + "."
        )
    return view


def _short_reason(where: str) -> str:
    return "does not run there: 8 MB" if "8 MB" in where else where


def ci_detail(sweep: Sweep) -> View:
    """Every cell's headline value with its 95% CI, time and energy (the mean beside a
    median)."""
    view = View(
        "ci",
        "Detail: 95% confidence intervals",
        ["model", "board/processor", "activation", "metric", "value", "95% CI low",
         "95% CI high", "mean", "n"],
    )  # fmt: skip
    for cell in sweep.cells:
        for metric in ("time", "energy"):
            est = estimate(cell, metric)
            unit = METRICS[metric][2]
            name = f"{'median time' if metric == 'time' else 'mean energy'} ({unit})"
            if est is None:
                if metric == "time":
                    view.add(
                        [cell.model, cell.place, cell.activation, name,
                         f"- ({cell.reason(metric)})", "-", "-", "-", "-"], {4: cell}
                    )  # fmt: skip
                continue
            view.add(
                [cell.model, cell.place, cell.activation, name, _fmt(est.value),
                 _fmt(est.low), _fmt(est.high), _fmt(est.mean if est.mean is not None else
                                                     est.value), str(est.n or "-")],
                {4: cell},
            )  # fmt: skip
    return view


# -- Tables 5 and 6 -----------------------------------------------------------------------


def align(
    mine: list[dict[str, Any]], theirs: list[dict[str, Any]]
) -> list[tuple[int | None, int | None]]:
    """Pairs of (farm row, study row) indices, aligned by position and the study's type:
    rows of the same type in the same order pair; a row the other side lacks (a
    ``Flatten``) stands alone."""
    a = [vocabulary.study_type(r) or f"~{r['type']}" for r in mine]
    b = [vocabulary.study_type(r) for r in theirs]
    pairs: list[tuple[int | None, int | None]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            pairs += list(zip(range(i1, i2), range(j1, j2), strict=True))
            continue
        for i in range(i1, i2):
            pairs.append((i, None))
        for j in range(j1, j2):
            pairs.append((None, j))
    return pairs


def layer_table(cell: Cell, number: str, ref: Reference) -> View:
    """Tables 5 and 6: farm's layers beside the study's (aligned by position and type,
    numbered from 1), the line between feature extraction and classification, and each
    group's share of time and parameters beside the study's."""
    kind = "CNN" if number == "5" else "DNN"
    wanted = TABLE5_MODEL if number == "5" else TABLE6_MODEL
    own = cell.study == wanted
    study_layers = ref.layers(number, wanted) if own else []
    view = View(
        f"table{number}",
        f"Table {number}: layer by layer, a {kind} ({cell.model} on {cell.place})",
        ["#", "layer", "PyTorch type", "type", "parameters", "time (ms)", "time (%)", "group",
         "study #", "study's type", "study's parameters", "study's time (%)"],
    )  # fmt: skip
    view.table_warnings = cell.warnings
    layers = [r for r in cell.layers if not vocabulary.is_layer_of_the_graph(r)]
    graph_rows = [r for r in cell.layers if vocabulary.is_layer_of_the_graph(r)]
    groups = vocabulary.group(layers)
    total = sum(r.get("time_ms") or 0 for r in layers) or 1.0
    for i, j in align(layers, vocabulary.study_rows(study_layers)):
        row = ["", "", "", "", "", "", "", ""]
        if i is not None:
            r = layers[i]
            row = [str(r["index"] + 1), r["name"], r["type"], vocabulary.study_type(r) or "-",
                   f"{r.get('params') or 0:,}", _fmt(r.get("time_ms"), "{:.4f}"),
                   _fmt((r.get("time_ms") or 0) / total, "{:.1%}"), groups[i] or "-"]  # fmt: skip
            if view.line_before is None and kind == "CNN" and groups[i] == "classification":
                view.line_before = len(view.rows)
        if j is not None:
            s = study_layers[j]
            row += [str(s["layer"]), s["type"], _fmt(s.get("params"), "{:,}"),
                    f"{s['percent']:.2f}"]  # fmt: skip
        else:
            row += ["", "", "", ""]
        view.rows.append(row)
    for r in graph_rows:
        view.rows.append(
            ["-", r["name"], "between layers", "-", "-", _fmt(r.get("time_ms"), "{:.4f}"),
             _fmt((r.get("time_ms") or 0) / (total + (r.get("time_ms") or 0)), "{:.1%}"),
             "-", "", "", "", ""]
        )  # fmt: skip
    view.notes += split_notes(cell.layers, vocabulary.study_rows(study_layers))
    if graph_rows:
        view.notes.append(
            "(graph): the time between layers, billed to the graph; in no group, and left "
            "out of the layers' shares."
        )
    if not own:
        view.notes.append(
            f"No study columns: the study's Table {number} is "
            f"{ref.model_name(wanted)}'s, and this sweep has no layer pass of it."
        )
    view.notes.append(
        "Types in the study's words (farm.report.vocabulary); times are the layer pass's "
        "(the cost of timing subtracted), shares of the layers' total."
    )
    return view


def split_notes(mine: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[str]:
    """Each group's share of time and parameters, farm's and (where given) the study's."""
    out = []
    s_split = vocabulary.split(theirs) if theirs else {}
    split = vocabulary.split(mine)
    if "feature extraction" not in split:
        out.append(
            "A DNN has no feature extraction: every layer is feed-forward classification "
            "(100% of the time and parameters)."
        )
        return out
    for group, (t, p) in split.items():
        text = f"{group}: {t:.1%} of the time, {p:.1%} of the parameters"
        if group in s_split:
            st, sp = s_split[group]
            text += f" (the study: {st:.1%} and {sp:.1%}"
            if group == "feature extraction":
                text += ", which it prints as 3.7%, 2.3M of 60.9M truncated"
            text += ")"
        out.append(text + ".")
    out.append("The line falls before the first feed-forward layer, as in the study.")
    return out


# -- Table 7 ---------------------------------------------------------------------------


def table7(sweep: Sweep, ref: Reference) -> View:
    """Table 7: the activation layers' share of runtime under each activation, beside the
    study's (activation layers only: normalization and softmax are apart, below)."""
    view = View(
        "table7",
        "Table 7: share of runtime in the activation (non-linear) layers",
        ["model", "study's model", "board/processor", *ACTIVATIONS,
         *[f"study: {a}" for a in ACTIVATIONS]],
    )  # fmt: skip
    measured = {c.activation for c in sweep.cells}
    for model in sweep.models():
        for place in sweep.places():
            cells = [sweep.cell(model, place, a) for a in ACTIVATIONS]
            first = next((c for c in cells if c), None)
            if first is None or (
                sum(c is not None for c in cells) < 2 and "7" not in ref.model_tables(first.study)
            ):
                continue  # one activation, and not one of the study's Table 7 models
            row = [model, study_name(first, ref), place]
            warned = {}
            for k, c in enumerate(cells):
                if c is None:
                    row.append("- (not in this sweep)")
                elif c.activation_share is None:
                    row.append(f"- ({c.reason('time')})")
                else:
                    row.append(f"{c.activation_share:.1%}")
                    warned[3 + k] = c
            for a in ACTIVATIONS:
                share, _ = ref.activation_share(first.study, a)
                row.append("-" if share is None else f"{share:.1%}")
            view.add(row, warned)
    missing = [a for a in ACTIVATIONS if a not in measured]
    if missing:
        view.notes.append(
            f"{', '.join(missing)}: no cell ran with it; give the model "
            "`variants: {activation: [relu, sigmoid, tanh]}` (as jobs/paper.yaml does)."
        )
    view.notes.append(
        "Activation layers only, as the study's Table 7: normalization (AlexNet's local "
        "response normalization) and softmax are reported apart, in the next table. The "
        "study's columns: Deep KWS and DeepEar's emotion DNN only. Rows: models run under "
        "more than one activation, and the study's two."
    )
    return view


def apart(sweep: Sweep) -> View:
    """Normalization, softmax and dropout: shares of runtime the study lists as rows of
    their own, and the engine's non-linear share (which counts all of them)."""
    view = View(
        "apart",
        "Beside Table 7: normalization, softmax and dropout, apart",
        ["model", "board/processor", "activation", "normalization", "softmax", "dropout",
         "engine's non-linear share (with softmax, normalization)"],
    )  # fmt: skip
    for c in sweep.cells:
        if not c.layers:
            continue
        shares = vocabulary.type_shares(c.layers)
        engine = c.result.layer_pass.nonlinear_share if c.result and c.result.layer_pass else None
        view.add(
            [c.model, c.place, c.activation,
             *[f"{shares.get(t, 0.0):.1%}" for t in ("normalization", "softmax", "dropout")],
             _fmt(engine, "{:.1%}")],
            {3: c},
        )  # fmt: skip
    return view


# -- provenance -------------------------------------------------------------------------


def _artifact_sha(cell) -> str:
    """The artifact the cell ran: the exported one (ONNX, .pte, .pt2), else eager's weights."""
    artifact = cell.result.artifact if cell.result is not None else None
    return (artifact.sha256 if artifact is not None else None) or cell.model_meta.get("sha256") or "-"


def provenance(sweep: Sweep) -> View:
    """Where every number comes from: the cell, its artifact and engine, and the
    environment recorded with the result (whatever keys that result has)."""
    fixed = [
        ("artifact sha256", lambda c: _artifact_sha(c)[:12]),
        ("engine", lambda c: _short(c.env.engine)),
        ("torch", lambda c: c.env.torch),
        ("threads", lambda c: c.env.threads),
        ("iterations", lambda c: c.result.latency.n if c.result and c.result.latency else None),
    ]
    extra = [
        "cpu_model", "governor", "freq_mhz", "nice", "loadavg_before", "loadavg_after",
        "temp_c_before", "temp_c_after", "kernel", "hostname",
    ]  # fmt: skip
    present = [k for k in extra if any(getattr(c.env, k, None) is not None for c in sweep.cells)]
    view = View(
        "provenance",
        "Provenance",
        ["model", "board/processor", "activation", "state", *[n for n, _ in fixed], *present],
    )
    for c in sweep.cells:
        values = [f(c) for _, f in fixed] + [getattr(c.env, k, None) for k in present]
        view.add([c.model, c.place, c.activation, c.state, *[_short(v) for v in values]], {3: c})
    view.notes.append(
        f"Job {sweep.id} ({sweep.job.name}), created {_date(sweep.job.created)}, "
        f"state {sweep.job.state}. The full environment of each result is in cells.json."
    )
    return view


def number(value: float) -> str:
    """A plain number: no exponent, at most three decimals (2596.134 MHz, load 4.21)."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return number(value)
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
