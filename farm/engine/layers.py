"""The per-layer pass: forward hooks time every leaf layer (Figure 6, Table 7).

It runs apart from the latency pass because hooks slow a forward down. Each
leaf layer gets a pre-hook whose *last* act is reading the clock and a hook
whose *first* act is reading it; both only append two ints to two lists, and
pairing them into times happens after the clock stops.

Two times come out per layer:

- ``time_ms``: the layer's share of the forward's wall time — from the end of
  the previous layer (or the start of the forward) to this layer's end. That
  includes the framework's work to dispatch the layer (``Module.__call__``, the
  parent's ``forward`` loop), which on a small model is a large part of the
  latency; without it the layers of Deep KWS would explain only ~70% of the
  model's time. The calibrated cost of one hook pair is subtracted, so the
  layer times add up to the hook-free latency.
- ``compute_ms``: pre-hook to hook, the layer's own ``forward`` alone, net of
  the sliver of hook machinery inside that interval.

Both hook costs are calibrated the same way: many calls of an ``nn.Identity``
on a one-element tensor with the hook pair, median.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from farm.engine import stats
from farm.engine.markers import LAYER_BEGIN, LAYER_END, Markers
from farm.engine.timing import SAME_CLOCK

# Layers that apply a non-linear function elementwise or across a window
# (what the paper's Table 7 counts as "non-linear" work).
NONLINEAR = frozenset(
    {
        "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU",
        "SiLU", "Mish", "Sigmoid", "Hardsigmoid", "LogSigmoid", "Tanh", "Hardtanh",
        "Hardswish", "Softplus", "Softsign", "Tanhshrink", "Threshold", "Softmax",
        "Softmax2d", "LogSoftmax", "Softmin", "LocalResponseNorm", "CrossMapLRN2d",
    }
)  # fmt: skip

CALIBRATION_CALLS = 2000
CALIBRATION_BATCHES = 20


@dataclass
class LayerPass:
    """Raw events of a layer pass: hook clock reads and whole-forward times."""

    times: list[int]  # perf_counter_ns at each hook
    codes: list[int]  # 2 * layer index (+1 for the end)
    starts: list[int]  # index into times where each iteration begins
    begin_ns: list[int]  # perf_counter_ns just before each forward
    whole_ns: list[int]  # whole forward per iteration, hooks included
    mono_offset_ns: int  # add to a perf_counter_ns reading to get monotonic_ns


@dataclass(frozen=True)
class HookCost:
    """What one hook pair adds: to the forward (``pair_ns``), inside an interval."""

    pair_ns: int
    interval_ns: int


def _hooks(
    times: list[int], codes: list[int], sync: Callable[[], None] | None
) -> Callable[[int], tuple[Callable, Callable]]:
    """Factory of (pre-hook, hook) pairs for a layer index, appending to the lists."""
    clock, add_t, add_c = time.perf_counter_ns, times.append, codes.append

    def make(index: int) -> tuple[Callable, Callable]:
        b, e = 2 * index, 2 * index + 1
        if sync is None:

            def pre(_m: Any, _i: Any) -> None:
                add_c(b)
                add_t(clock())

            def post(_m: Any, _i: Any, _o: Any) -> None:
                add_t(clock())
                add_c(e)
        else:

            def pre(_m: Any, _i: Any) -> None:
                add_c(b)
                sync()
                add_t(clock())

            def post(_m: Any, _i: Any, _o: Any) -> None:
                sync()
                add_t(clock())
                add_c(e)

        return pre, post

    return make


def calibrate_hook_cost(
    device: torch.device | str = "cpu", calls: int = CALIBRATION_CALLS
) -> HookCost:
    """Measure the hook pair on an ``nn.Identity``: with hooks, call to call, and without.

    ``pair_ns`` is the median call-to-call time with hooks minus the median
    per-call time of the same loop without them. ``interval_ns`` is the median
    pre-hook-to-hook interval (the identity's own forward is a few tens of ns).
    """
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    probe = torch.nn.Identity()
    x = torch.zeros(1, device=device)
    clock = time.perf_counter_ns
    batch = max(calls // CALIBRATION_BATCHES, 1)
    bare: list[float] = []
    with torch.inference_mode():
        for _ in range(CALIBRATION_BATCHES):
            t0 = clock()
            for _ in range(batch):
                probe(x)
            bare.append((clock() - t0) / batch)
        times: list[int] = []
        codes: list[int] = []
        pre, post = _hooks(times, codes, sync)(0)
        handles = [probe.register_forward_pre_hook(pre), probe.register_forward_hook(post)]
        try:
            for _ in range(calls):
                probe(x)
        finally:
            for h in handles:
                h.remove()
    ends = times[1::2]
    step = stats.median([b - a for a, b in itertools.pairwise(ends)])
    interval = stats.median([e - b for b, e in zip(times[0::2], ends, strict=True)])
    return HookCost(pair_ns=max(0, round(step - stats.median(bare))), interval_ns=round(interval))


def run_layer_pass(
    run_once: Callable[[], Any],
    layers: list[tuple[str, torch.nn.Module]],
    iterations: int,
    sync: Callable[[], None] | None = None,
) -> LayerPass:
    """Run ``iterations`` hooked forwards, recording every leaf layer's begin/end."""
    times: list[int] = []
    codes: list[int] = []
    starts: list[int] = []
    begins: list[int] = []
    whole: list[int] = []
    make = _hooks(times, codes, sync)
    handles = []
    seen: set[int] = set()
    for i, (_, module) in enumerate(layers):
        if id(module) in seen:  # a module listed twice would double its hooks
            continue
        seen.add(id(module))
        pre, post = make(i)
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    clock = time.perf_counter_ns
    offset = time.monotonic_ns() - clock() if not SAME_CLOCK else 0
    try:
        for _ in range(iterations):
            starts.append(len(times))
            if sync is not None:
                sync()
            t0 = clock()
            begins.append(t0)
            run_once()
            if sync is not None:
                sync()
            whole.append(clock() - t0)
    finally:
        for h in handles:
            h.remove()
    return LayerPass(times, codes, starts, begins, whole, offset)


def per_iteration_ns(lp: LayerPass, n_layers: int) -> tuple[list[list[int]], list[list[int]]]:
    """Per iteration and layer: (wall share, own forward) in ns, hooks included.

    The wall share of a layer runs from the previous layer's end (or the start
    of the forward) to its own end; the time after the last layer's end until
    the forward returns (the graph handing back its output) goes to that last
    layer. So every nanosecond of the forward belongs to exactly one layer, and
    the shares describe the whole model. A layer called twice adds up.
    """
    spans, computes = [], []
    bounds = [*lp.starts, len(lp.times)]
    for it in range(len(lp.starts)):
        span, compute = [0] * n_layers, [0] * n_layers
        open_at: dict[int, int] = {}
        last_end = lp.begin_ns[it]
        last_layer = None
        for k in range(bounds[it], bounds[it + 1]):
            layer, is_end = divmod(lp.codes[k], 2)
            t = lp.times[k]
            if is_end:
                compute[layer] += t - open_at.pop(layer)
                span[layer] += t - last_end
                last_end, last_layer = t, layer
            else:
                open_at[layer] = t
        if last_layer is not None:
            span[last_layer] += max(0, lp.begin_ns[it] + lp.whole_ns[it] - last_end)
        spans.append(span)
        computes.append(compute)
    return spans, computes


def add_markers(lp: LayerPass, markers: Markers) -> None:
    """Turn the raw hook events into ``layer_begin``/``layer_end`` markers."""
    bounds = [*lp.starts, len(lp.times)]
    for it in range(len(lp.starts)):
        for k in range(bounds[it], bounds[it + 1]):
            layer, is_end = divmod(lp.codes[k], 2)
            kind = LAYER_END if is_end else LAYER_BEGIN
            markers.add(lp.times[k] + lp.mono_offset_ns, kind, it, layer)


@dataclass
class LayerInfo:
    """Static facts about one leaf layer, gathered before the timed pass."""

    name: str
    type: str
    params: int
    param_bytes: int
    input_bytes: int
    output_bytes: int


def summarize(lp: LayerPass, infos: list[LayerInfo], cost: HookCost) -> tuple[list[dict], dict]:
    """Per-layer rows and the pass summary (sum, whole, non-linear share)."""
    spans, computes = per_iteration_ns(lp, len(infos))

    def net_median(rows: list[list[int]], i: int, cost_ns: int) -> float:
        return max(0.0, stats.median([row[i] for row in rows]) - cost_ns)

    times = [net_median(spans, i, cost.pair_ns) for i in range(len(infos))]
    own = [net_median(computes, i, cost.interval_ns) for i in range(len(infos))]
    total = sum(times)
    layers = []
    for i, info in enumerate(infos):
        layers.append(
            {
                "index": i,
                "name": info.name,
                "type": info.type,
                "params": info.params,
                "time_ms": times[i] / 1e6,
                "compute_ms": own[i] / 1e6,
                "share": times[i] / total if total > 0 else 0.0,
                "nonlinear": info.type in NONLINEAR,
                "input_bytes": info.input_bytes,
                "output_bytes": info.output_bytes,
                "param_bytes": info.param_bytes,
                "resident_bytes": info.param_bytes + info.input_bytes + info.output_bytes,
            }
        )
    nonlinear = sum(t for info, t in zip(infos, times, strict=True) if info.type in NONLINEAR)
    summary = {
        "iterations": len(lp.starts),
        "layer_sum_ms": total / 1e6,
        "layer_compute_sum_ms": sum(own) / 1e6,
        "layer_whole_ms": stats.median(lp.whole_ns) / 1e6,
        "nonlinear_share": nonlinear / total if total > 0 else 0.0,
        "hook_cost_ns": cost.pair_ns,
        "hook_interval_cost_ns": cost.interval_ns,
    }
    return layers, summary
