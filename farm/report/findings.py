"""What the sweep says, per table, in words: where this hardware agrees with the study
and where it does not.

Absolute times and energies depend on the hardware; the shapes do not: the order
of the models' cost, which layers dominate, how time and parameters split
between feature extraction and classification, the order of the activations'
cost, which models fit which memory. Each finding states farm's figure beside
the study's and says ``agrees`` / ``differs`` where it compares something.
"""

from __future__ import annotations

from dataclasses import dataclass

from farm.report import vocabulary
from farm.report.cells import Cell, Sweep
from farm.report.paper import METRIC_TABLES, PROCESSORS, Reference, ratio
from farm.report.study import (
    ACTIVATIONS,
    FIGURE4_MODELS,
    METRICS,
    TABLE5_MODEL,
    TABLE6_MODEL,
    estimate,
    pick,
    rows_of,
    study_params,
)

CLOSE = 0.01
"""Activation shares closer than this (one percentage point) have no clear order."""

SIZE_TOLERANCE = 0.02
"""A model's size agrees with the study's within this (the study truncates its sizes)."""


@dataclass(frozen=True)
class Finding:
    """One sentence about one table; ``agrees`` is None where nothing was compared."""

    text: str
    agrees: bool | None = None
    table: str = ""


def findings(sweep: Sweep, ref: Reference) -> dict[str, list[Finding]]:
    """The sentences of each table and figure, by its key (``table1`` ... ``figure5``)."""
    out = {"table1": table1(sweep, ref)}
    for metric, number in METRIC_TABLES.items():
        out[f"table{number}"] = metric_table(sweep, ref, metric)
    out["table5"] = layers(sweep, ref, "5")
    out["table6"] = layers(sweep, ref, "6")
    out["table7"] = table7(sweep, ref)
    out["figure4"] = figure4(sweep)
    out["figure5"] = figure5(sweep, ref)
    return {k: [Finding(f.text, f.agrees, k) for f in v] for k, v in out.items()}


def _name(ref: Reference, cell: Cell) -> str:
    return ref.model_name(cell.study) or cell.model


def table1(sweep: Sweep, ref: Reference) -> list[Finding]:
    same, other = [], []
    for model in sweep.models():
        cell = next(c for c in sweep.cells if c.model == model)
        printed, theirs = study_params(ref, cell.study)
        if theirs is None or cell.params is None:
            continue
        text = f"{_name(ref, cell)} {cell.params:,} (the study: {printed.split(' ')[0]})"
        (same if abs(cell.params - theirs) <= SIZE_TOLERANCE * theirs else other).append(text)
    if not same and not other:
        return [Finding("Table 1: no model of this sweep is one of the study's.")]
    out = []
    if same:
        out.append(Finding("Table 1: the sizes agree with the study's: " + "; ".join(same) + ".",
                           True))  # fmt: skip
    if other:
        out.append(Finding("Table 1: the sizes differ: " + "; ".join(other) + ".", False))
    if any(c.study == "deepear" for c in sweep.cells):
        out.append(
            Finding(
                "DeepEar's speaker and ambient-sound DNNs are farm's assumption (the study gives "
                "only the whole model's 2.3M); its emotion DNN is exactly the study's Table 6."
            )
        )
    return out


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _order(values: dict[str, float]) -> list[str]:
    return sorted(values, key=values.__getitem__)


def metric_table(sweep: Sweep, ref: Reference, metric: str) -> list[Finding]:
    number = METRIC_TABLES[metric]
    unit = METRICS[metric][2]
    word = {"time": "time", "energy": "energy", "battery": "battery life"}[metric]
    out = []
    for place in sweep.places():
        mine = {}
        for _, p, cell in rows_of(sweep):
            est = estimate(cell, metric)
            if p == place and est is not None and number in ref.model_tables(cell.study):
                mine[cell.study] = (est.value, cell)
        if not mine:
            continue
        cells = [c for _, c in mine.values()]
        names = {k: _name(ref, c) for k, (_, c) in mine.items()}
        order = _order({k: v for k, (v, _) in mine.items()})
        same, differ = [], []
        for proc in PROCESSORS:
            theirs = {k: ref.value(number, k, proc)[0] for k in mine}
            theirs = {k: v for k, v in theirs.items() if v is not None}
            if len(theirs) < 2:
                continue
            s_order = _order(theirs)
            mine_here = [k for k in order if k in theirs]
            label = ref.processor_label(proc)
            if s_order == mine_here:
                same.append(label)
            else:
                differ.append(f"{label} ({' < '.join(names[k] for k in s_order)})")
        text = f"Table {number} ({word}): on {place} the models rank " + " < ".join(
            names[k] for k in order
        )
        if len(order) < 2:
            text = f"Table {number} ({word}): on {place} only {names[order[0]]} is measured"
        elif same or differ:
            text += (f", as on the study's {_and(same)}" if same else "") + (
                f"{';' if same else ','} not as on its {_and(differ)}" if differ else ""
            )
        ratios = []
        stands = cells[0].paper
        for proc in [stands] if stands else PROCESSORS:
            rs = {k: ratio(v, ref.value(number, k, proc)[0]) for k, (v, _) in mine.items()}
            rs = {k: r for k, r in rs.items() if r is not None}
            if rs:
                lo, hi = min(rs, key=rs.__getitem__), max(rs, key=rs.__getitem__)
                span = f"{rs[lo]:.2g}× ({names[lo]})"
                if hi != lo:
                    span += f" to {rs[hi]:.2g}× ({names[hi]})"
                ratios.append(f"{span} the {ref.processor_label(proc)}'s")
        if ratios:
            text += f". farm's {word} ({unit}) is " + "; ".join(ratios)
            if stands:
                text += f" (the processor {place} stands for)"
        agrees = None  # against the processor it stands for, else most of them
        if stands:
            label = ref.processor_label(stands)
            if label in same or any(d.startswith(f"{label} (") for d in differ):
                agrees = label in same
        elif same or differ:
            agrees = len(same) > len(differ)
        out.append(Finding(text + ".", agrees))
    if not out:
        reason = (
            "no cell measured energy (no power monitor on these boards)"
            if metric != "time"
            else "no cell of the study's models was measured"
        )
        out.append(Finding(f"Table {number} ({word}): not compared: {reason}."))
    return out


def layers(sweep: Sweep, ref: Reference, number: str) -> list[Finding]:
    wanted = TABLE5_MODEL if number == "5" else TABLE6_MODEL
    cell = pick(sweep, wanted, cnn=number == "5")
    if cell is None:
        return [Finding(f"Table {number}: no {'CNN' if number == '5' else 'DNN'} with a layer "
                        "pass in this sweep.")]  # fmt: skip
    rows = [r for r in cell.layers if not vocabulary.is_layer_of_the_graph(r)]
    theirs = vocabulary.study_rows(ref.layers(number, wanted)) if cell.study == wanted else []
    kinds = vocabulary.type_shares(rows)
    top, top_share = next(iter(kinds.items()))
    heaviest = max(rows, key=lambda r: r.get("time_ms") or 0)
    total = sum(r.get("time_ms") or 0 for r in rows) or 1.0
    text = (
        f"Table {number} ({cell.model} on {cell.place}): {top} layers take the most time "
        f"({top_share:.0%}); the heaviest layer is #{heaviest['index'] + 1} {heaviest['name']} "
        f"({(heaviest.get('time_ms') or 0) / total:.0%})"
    )
    if not theirs:
        return [Finding(text + f". Not compared: the study's Table {number} is "
                        f"{ref.model_name(wanted)}'s.")]  # fmt: skip
    s_kinds = vocabulary.type_shares(theirs)
    s_top, s_top_share = next(iter(s_kinds.items()))
    s_heavy = max(theirs, key=lambda r: r["time_ms"])
    agree, differ = [], []
    (agree if s_top == top else differ).append(
        f"{s_top} layers lead in the study too ({s_top_share:.0%})"
        if s_top == top
        else f"the study's lead is {s_top} ({s_top_share:.0%})"
    )
    split, s_split = vocabulary.split(rows), vocabulary.split(theirs)
    if number == "5":
        fe_t, fe_p = split.get("feature extraction", (0.0, 0.0))
        s_t, _ = s_split["feature extraction"]
        (agree if fe_t > 0.5 else differ).append(
            f"feature extraction takes {fe_t:.1%} of the time with {fe_p:.1%} of the parameters "
            f"(the study: {s_t:.1%} with 3.7%)"
        )
        first = next(i for i, r in enumerate(rows) if vocabulary.study_type(r) == "convolution")
        (agree if rows[first] is heaviest else differ).append(
            f"the study's heaviest layer is its first convolution ({s_heavy['time_ms']:.1f}%)"
            + (", farm's too" if rows[first] is heaviest else "")
        )
    else:
        ff = [r for r in rows if vocabulary.study_type(r) == "feed-forward"]
        middle = ff.index(max(ff, key=lambda r: r.get("time_ms") or 0)) not in (0, len(ff) - 1)
        (agree if middle else differ).append(
            "the middle feed-forward layers are the heaviest"
            + (" as in the study" if middle else ", where the study's are (32.6% and 32.4%)")
        )
        agree.append("a DNN has no feature extraction, in the study as here")
    text += ". Agrees: " + "; ".join(agree) if agree else ""
    text += (". Differs: " + "; ".join(differ)) if differ else ""
    return [Finding(text + ".", not differ)]


def table7(sweep: Sweep, ref: Reference) -> list[Finding]:
    out = []
    for model in sweep.models():
        for place in sweep.places():
            cells = {a: sweep.cell(model, place, a) for a in ACTIVATIONS}
            got = {a: c.activation_share for a, c in cells.items() if c and c.activation_share}
            if len(got) < len(ACTIVATIONS):
                continue
            order = sorted(got, key=got.__getitem__, reverse=True)
            close = ""
            if got[order[0]] - got[order[-1]] < CLOSE:
                close = f" (within {CLOSE * 100:.0f} percentage point: no clear order)"
            text = f"Table 7 ({model} on {place}): the activation layers take " + " > ".join(
                f"{a} {got[a]:.1%}" for a in order
            )
            key = next(c for c in cells.values() if c).study
            study = {a: ref.activation_share(key, a)[0] for a in ACTIVATIONS}
            if any(v is None for v in study.values()):
                out.append(Finding(f"{text}{close}. Not compared: the study's Table 7 has "
                                   "Deep KWS and DeepEar's emotion DNN only."))  # fmt: skip
                continue
            s_order = sorted(study, key=lambda a: study[a] or 0, reverse=True)
            agrees = s_order == order and not close
            s_text = " > ".join(f"{a} {study[a]:.1%}" for a in s_order)
            out.append(
                Finding(
                    f"{text}{close}; the study's: {s_text}, "
                    + ("the same order." if agrees else "a different order.")
                    + (" sigmoid is the costliest, as in the study." if order[0] == "sigmoid"
                       else " sigmoid is not the costliest here; in the study it is.")
                    ,
                    agrees,
                )
            )  # fmt: skip
    if not out:
        out.append(Finding("Table 7: no model ran under all of sigmoid, tanh and ReLU on one "
                           "processor: the activations' order of cost is not measured."))  # fmt: skip
    return out


def figure4(sweep: Sweep) -> list[Finding]:
    out = []
    for model in FIGURE4_MODELS:
        cell = pick(sweep, model)
        if cell is None:
            out.append(Finding(f"Figure 4: no layer pass of {model} in this sweep."))
            continue
        heavy = [r for r in cell.layers
                 if vocabulary.study_type(r) in ("convolution", "feed-forward")]  # fmt: skip
        times = [r.get("time_ms") or 0 for r in heavy]
        total = sum(r.get("time_ms") or 0 for r in cell.layers
                    if not vocabulary.is_layer_of_the_graph(r)) or 1.0  # fmt: skip
        early = times and times[0] == max(times)
        shares = ", ".join(f"{r['name']} {(r.get('time_ms') or 0) / total:.0%}" for r in heavy)
        out.append(
            Finding(
                f"Figure 4 ({model} on {cell.place}): {shares}: "
                + ("the first layer is the costliest, as the study finds (early layers costlier)."
                   if early else "a later layer costs more than the first; the study finds "
                   "early layers costlier."),
                bool(early),
            )
        )  # fmt: skip
    return out


def figure5(sweep: Sweep, ref: Reference) -> list[Finding]:
    need: dict[str, float] = {}
    names: dict[str, str] = {}
    for c in sweep.cells:
        mb = c.memory("required_mb")
        if mb is not None and c.study:
            need[c.study] = max(need.get(c.study, 0.0), mb)
            names[c.study] = _name(ref, c)
    if not need:
        return [Finding("Figure 5: no model's memory was measured.")]
    dsp, _ = ref.limit_mb("snapdragon-800-dsp")
    parts = []
    disagree = False
    for key, mb in sorted(need.items(), key=lambda kv: -kv[1]):
        fits = dsp is not None and mb <= dsp
        ran = ref.value("3", key, "snapdragon-800-dsp")[0] is not None
        text = f"{names[key]} needs {mb:,.1f} MB: " + (
            f"fits the Snapdragon DSP's {dsp:.0f} MB" if fits else
            f"{mb / dsp:.1f}× the Snapdragon DSP's {dsp:.0f} MB"
        )  # fmt: skip
        if "3" in ref.model_tables(key):
            if fits != ran:
                disagree = True
                text += (" yet the study ran it there (Table 3)" if ran
                         else ", but the study could not run it there")  # fmt: skip
            else:
                text += ", as in the study"
        parts.append(text)
    if "alexnet" in need:
        parts.append("the study: AlexNet 'nearly 300 MB', 37× the DSP's 8 MB")
    return [Finding("Figure 5: " + "; ".join(parts) + ".", not disagree)]
