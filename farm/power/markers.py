"""The engine's markers, read into windows the energy step can integrate over.

The engine writes column arrays (see docs/internals.md): ``t_ns`` on the board's
CLOCK_MONOTONIC, ``kind`` as an index into ``kinds``, ``iteration`` and ``layer``.
This module pairs begins with ends and finds the sync pulse edges; it does not
care which clock they are on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from farm.engine.markers import KINDS  # the engine owns the marker format (stdlib only)


@dataclass(frozen=True)
class Windows:
    """Board-time windows (ns) of one task."""

    task: tuple[int, int] | None
    inference: np.ndarray  # (n, 2) int64 begin/end
    inference_iter: np.ndarray
    layer: np.ndarray  # (m, 2)
    layer_index: np.ndarray
    layer_iter: np.ndarray  # iteration of each layer window (the layer pass)
    layer_names: list[str]
    layer_types: list[str]  # Conv2d, Linear, ... where the engine said (else empty)
    pulses: list[np.ndarray]  # one (k, 2) array of [t_ns, level] edges per pulse burst
    all_t_ns: np.ndarray
    monotonic: bool

    def timed_inferences(self) -> np.ndarray:
        """The latency pass's inference windows, (n, 2): those that hold no layer window.

        The hooked layer pass also marks its inferences, and numbers them from 0
        again, so they are told apart by time: a window with a layer inside it
        carries hooks and stays out of per-inference figures.
        """
        if len(self.inference) == 0 or len(self.layer) == 0:
            return self.inference
        begins = np.sort(self.layer[:, 0])
        inside = np.searchsorted(begins, self.inference[:, 1], side="right") - np.searchsorted(
            begins, self.inference[:, 0], side="left"
        )
        return self.inference[inside == 0]


def _column(markers: Mapping[str, Any], key: str, n: int, default: int) -> np.ndarray:
    values = markers.get(key)
    if values is None:
        return np.full(n, default, dtype=np.int64)
    return np.asarray(values, dtype=np.int64)


def _pairs(t, kind, keys, begin: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair each end with the latest earlier begin of the same key; unmatched ones are dropped.

    Vectorised: order the begin/end markers by key, then by position, and pair
    neighbours that are a begin followed by an end of the same key.
    """
    sel = np.flatnonzero((kind == begin) | (kind == end))
    cols = [k[sel] for k in keys]
    order = sel[np.lexsort([sel, *reversed(cols)])]
    k_sorted = (
        np.stack([k[order] for k in keys], 1) if len(order) else np.zeros((0, len(keys)), np.int64)
    )
    is_begin = kind[order] == begin
    pair = is_begin[:-1] & ~is_begin[1:] & np.all(k_sorted[:-1] == k_sorted[1:], axis=1)
    first = np.flatnonzero(pair)
    windows = np.stack([t[order[first]], t[order[first + 1]]], 1).astype(np.int64).reshape(-1, 2)
    chrono = np.argsort(windows[:, 0], kind="stable")
    return windows[chrono], k_sorted[first][chrono].reshape(-1, len(keys))


def _bursts(
    edges: np.ndarray, chip: np.ndarray | None = None, gap_factor: float = 10.0
) -> list[np.ndarray]:
    """Split pulse edges into bursts (start and end of task).

    The engine numbers every edge with its chip index (0, 1, ... ``chips``), so a
    burst starts wherever the index does not go up: exact whatever the task's
    length. Without chip numbers (``-1``), a burst ends at a gap far longer than a
    chip, which fails when the task between the bursts is shorter than that.
    """
    if len(edges) == 0:
        return []
    if chip is not None and len(chip) == len(edges) and np.all(chip >= 0):
        cuts = np.flatnonzero(np.diff(chip) <= 0) + 1
        return [b for b in np.split(edges, cuts) if len(b) >= 2]
    steps = np.diff(edges[:, 0])
    if len(steps) == 0:
        return [edges]
    median_chip = float(np.median(steps)) or 1.0
    cuts = np.flatnonzero(steps > gap_factor * median_chip) + 1
    return [b for b in np.split(edges, cuts) if len(b) >= 2]


def parse(markers: Mapping[str, Any]) -> Windows:
    t = np.asarray(markers.get("t_ns", []), dtype=np.int64)
    n = len(t)
    kinds = list(markers.get("kinds", KINDS))
    names = np.asarray(markers.get("kind", []), dtype=np.int64)
    if len(names) != n:
        raise ValueError("markers: kind and t_ns differ in length")
    code = {name: kinds.index(name) if name in kinds else -1 for name in KINDS}
    iteration = _column(markers, "iteration", n, -1)
    layer = _column(markers, "layer", n, -1)

    begins = t[names == code["task_begin"]]
    ends = t[names == code["task_end"]]
    task = (int(begins[0]), int(ends[-1])) if len(begins) and len(ends) else None
    inf, inf_keys = _pairs(t, names, (iteration,), code["inference_begin"], code["inference_end"])
    lay, lay_keys = _pairs(t, names, (iteration, layer), code["layer_begin"], code["layer_end"])

    is_pulse = (names == code["pulse_high"]) | (names == code["pulse_low"])
    edges = np.stack([t[is_pulse], (names[is_pulse] == code["pulse_high"]).astype(np.int64)], 1)
    return Windows(
        task=task,
        inference=inf,
        inference_iter=inf_keys[:, 0] if len(inf_keys) else np.zeros(0, np.int64),
        layer=lay,
        layer_index=lay_keys[:, 1] if len(lay_keys) else np.zeros(0, np.int64),
        layer_iter=lay_keys[:, 0] if len(lay_keys) else np.zeros(0, np.int64),
        layer_names=list(markers.get("layer_names", [])),
        layer_types=list(markers.get("layer_types", [])),
        pulses=_bursts(edges, iteration[is_pulse]),
        all_t_ns=t,
        monotonic=bool(np.all(np.diff(t) >= 0)),
    )
