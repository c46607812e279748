"""What the sweep says, in words, and where it agrees with the study.

Absolute times and energies depend on the hardware; the shapes do not: which
layers dominate time, how time and parameters split between feature extraction
and classification, and the order of the activations' cost. Each finding states
farm's shape and, where the reference data holds the study's, whether they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from farm.report.cells import Sweep
from farm.report.paper import METRIC_TABLES, Reference, ratio
from farm.report.study import (
    ACTIVATIONS,
    METRICS,
    estimate,
    pick,
    shares,
    type_shares,
    zoo_name,
)

CLOSE = 0.01
"""Activation shares closer than this (one percentage point) have no clear order."""


@dataclass(frozen=True)
class Finding:
    """One sentence about the sweep; ``agrees`` is None where nothing was compared."""

    text: str
    agrees: bool | None = None


def findings(sweep: Sweep, ref: Reference) -> list[Finding]:
    return [*_layer_shapes(sweep, ref), *_activation_order(sweep, ref), *_ratios(sweep, ref)]


def _layer_shapes(sweep: Sweep, ref: Reference) -> list[Finding]:
    out = []
    for cnn, number in ((True, "5"), (False, "6")):
        kind = "CNN" if cnn else "DNN"
        cell = pick(sweep, cnn)
        if cell is None:
            out.append(Finding(f"No {kind} with a layer pass in this sweep: no Table {number}."))
            continue
        top, top_share = type_shares(cell.layers)[0]
        split = shares(cell.layers)
        fe_t, fe_p = split["feature extraction"]
        cl_t, cl_p = split["classification"]
        dominant = "feature extraction" if fe_t >= cl_t else "classification"
        text = f"{cell.model} ({kind}, {cell.place}): {top} layers take the largest share of time ({top_share:.0%}); "
        if fe_t or fe_p:
            text += (
                f"feature extraction takes {fe_t:.0%} of the time with {fe_p:.0%} of the "
                f"parameters, classification {cl_t:.0%} of the time with {cl_p:.0%}."
            )
        else:
            text += (
                "every layer is feed-forward classification (no convolutional feature extraction)."
            )
        study = _study_layers(ref, number, zoo_name(cell))
        if not study:
            out.append(Finding(f"{text} {_not_compared(ref, number, zoo_name(cell))}"))
            continue
        s_split = shares(study)
        s_dom = (
            "feature extraction"
            if s_split["feature extraction"][0] >= s_split["classification"][0]
            else "classification"
        )
        s_top = type_shares(study)[0][0]
        agrees = s_dom == dominant and s_top == top
        verdict = "agrees with" if agrees else "differs from"
        out.append(
            Finding(
                f"{text} This {verdict} the study's Table {number}, where {s_top} layers lead and "
                f"{s_dom} takes most of the time ({s_split[s_dom][0]:.0%}).",
                agrees,
            )
        )
    return out


def _study_layers(ref: Reference, number: str, zoo: str) -> list[dict[str, Any]]:
    """The study's layer rows in the shape ``shares`` reads (its time share as time)."""
    return [
        {"type": r["type"], "params": r.get("params") or 0, "time_ms": r.get("share") or 0}
        for r in ref.layers(number, zoo)
    ]


def _activation_order(sweep: Sweep, ref: Reference) -> list[Finding]:
    out = []
    for model in sweep.models():
        for place in sweep.places():
            cells = {a: sweep.cell(model, place, a) for a in ACTIVATIONS}
            got = {a: c.nonlinear_share for a, c in cells.items() if c and c.nonlinear_share}
            if len(got) < len(ACTIVATIONS):
                continue
            order = sorted(got, key=got.__getitem__, reverse=True)
            close = ""
            if got[order[0]] - got[order[-1]] < CLOSE:
                close = (
                    f" (within {CLOSE * 100:.0f} percentage point of each other: no clear order)"
                )
            text = f"{model} on {place}: the non-linear layers' share of runtime is " + " > ".join(
                f"{a} ({got[a]:.1%})" for a in order
            )
            zoo = zoo_name(next(c for c in cells.values() if c))
            study = {a: ref.nonlinear_share(zoo, a) for a in ACTIVATIONS}
            if any(v is None for v in study.values()):
                out.append(Finding(f"{text}{close}. {_not_compared(ref, '7', zoo)}"))
                continue
            s_order = sorted(study, key=lambda a: study[a] or 0, reverse=True)
            agrees = s_order == order
            out.append(
                Finding(
                    f"{text}{close}; the study's Table 7 orders them {' > '.join(s_order)}, "
                    + ("the same." if agrees else "a different order."),
                    agrees,
                )
            )
    if not out:
        out.append(
            Finding(
                "No model ran under all of sigmoid, tanh and ReLU on one processor: "
                "the activations' order of cost is not measured in this sweep."
            )
        )
    return out


def _ratios(sweep: Sweep, ref: Reference) -> list[Finding]:
    """One sentence per comparable metric: how far this hardware is from the study's."""
    out = []
    for metric, number in METRIC_TABLES.items():
        unit = METRICS[metric][2]
        pairs = []
        for cell in sweep.cells:
            if cell.paper is None or cell.activation != "relu":
                continue
            est = estimate(cell, metric)
            theirs, _ = ref.value(number, zoo_name(cell), cell.paper)
            r = ratio(est.mean if est else None, theirs)
            if r is not None:
                pairs.append(f"{cell.model} on {cell.place} {r:.2f}×")
        if pairs:
            out.append(Finding(f"{metric} ({unit}), farm / study: " + "; ".join(pairs) + "."))
        elif any(c.paper for c in sweep.cells):
            out.append(Finding(f"{metric}: no ratio. {_not_compared(ref, number, None)}"))
    return out


def _not_compared(ref: Reference, number: str, zoo: str | None) -> str:
    if ref.missing(number):
        return f"Not compared: the study's Table {number} is not in farm's reference data."
    what = f"for {zoo}" if zoo else "for any cell measured here"
    return f"Not compared: the study's Table {number} has no value {what}."
