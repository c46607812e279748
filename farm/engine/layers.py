"""The per-layer pass (Figure 6, Table 7): where a forward's time goes, layer by layer.

It runs apart from the latency pass because instrumenting a forward slows it down.
Instrumented and plain forwards of the same model alternate, one each per
iteration (which goes first alternates too), so the two are taken under the same
conditions and their difference is what the instrument costs *in place*, which is
subtracted. Three instruments, the lightest that can say who did the work:

- **Ticks in a zoo graph's own loop** (:func:`run_tick_pass`): a
  :class:`~farm.engine.artifact.GraphModule` runs its layers in a Python loop, so
  it reads the clock before its first layer and after each (``ticking``): about
  0.3 µs a layer, no hooks, every layer keeps ``Module.__call__``'s fast path. A
  layer's time runs from the previous tick to its own: its dispatch, its
  ``forward``, and freeing the inputs it was the last to read.
- **Ticks between an exported graph's nodes** (`farm.engine.graph_layers`), for
  users' models, billed to the module that ran each operation.
- **Forward hooks** on leaf layers, for any other model: a pre-hook whose *last*
  act is reading the clock and a hook whose *first* act is; both only append two
  ints to two lists, paired after the clock stops. A hooked module leaves
  ``Module.__call__``'s fast path: a pair costs about 6 µs in place (calibrating
  on an ``nn.Identity`` in a tight loop, the old way, read 2.5 µs).

Times that come out:

- ``time_ms`` per layer: its share of the forward's wall time, from the end of
  the previous layer (for the first layer, its own start) to its own end, net of
  the instrument's in-place cost. That includes the framework's dispatch of the
  layer, a large part of a small model's latency.
- a ``(graph)`` row: the forward's own entry and exit (the root module's call,
  the graph handing back its output), never billed to the first or last layer.
- ``compute_ms``: with hooks, pre-hook to hook, the layer's own ``forward``
  alone, net of the sliver of hook machinery inside that interval (calibrated on
  an identity); with ticks it equals ``time_ms``.
- the layer sum against the plain forwards (``layer_sum_vs_whole``), both from
  this pass, and a flag when it falls outside ±5%.

Per-layer times and the instrument's cost are means over the faster half of the
iterations (``fast_mean``): on a shared machine another process only ever adds
time to a forward, and a median per layer would not add up to a forward.
``benchmarks/harness.py`` holds the shares to a hook-free reference (prefix
differencing), within 3 points a layer.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from farm.engine import stats
from farm.engine.layertypes import GRAPH_ROW, NONLINEAR, SUM_TOLERANCE
from farm.engine.markers import LAYER_BEGIN, LAYER_END, Markers
from farm.engine.stats import fast_mean
from farm.engine.timing import SAME_CLOCK

CALIBRATION_CALLS = 2000


@dataclass
class LayerPass:
    """Raw events of a layer pass: hook clock reads and whole-forward times."""

    times: list[int]  # perf_counter_ns at each hook
    codes: list[int]  # 2 * layer index (+1 for the end)
    starts: list[int]  # index into times where each iteration begins
    begin_ns: list[int]  # perf_counter_ns just before each hooked forward
    whole_ns: list[int]  # whole forward per iteration, hooks included
    bare_ns: list[int]  # the plain (uninstrumented) forward of the same iteration
    mono_offset_ns: int  # add to a perf_counter_ns reading to get monotonic_ns

    def pair_cost_ns(self) -> float:
        """What one hook pair costs in place: hooked minus unhooked forward, per layer call.

        Both sides are fast means (:func:`fast_mean`): time taken from a forward by another
        process only ever adds, so the fast half estimates the model's own cost
        and a stall in either side does not land in the hook cost.
        """
        calls = stats.median([c.count(1) for c in self._ends_per_iteration()]) or 1
        extra = fast_mean(self.whole_ns) - fast_mean(self.bare_ns)
        return max(0.0, extra / calls)

    def _ends_per_iteration(self) -> list[list[int]]:
        bounds = [*self.starts, len(self.codes)]
        return [
            [code % 2 for code in self.codes[bounds[i] : bounds[i + 1]]]
            for i in range(len(self.starts))
        ]


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


def calibrate_interval_cost(
    device: torch.device | str = "cpu", calls: int = CALIBRATION_CALLS
) -> int:
    """The hook machinery inside a pre-hook-to-hook interval (ns), on an ``nn.Identity``.

    Only the sliver between the pre-hook's clock read and the hook's is measured
    here (the identity's own forward is a few tens of ns); what hooks add to the
    forward as a whole is measured in place by the layer pass.
    """
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    probe = torch.nn.Identity()
    x = torch.zeros(1, device=device)
    times: list[int] = []
    codes: list[int] = []
    pre, post = _hooks(times, codes, sync)(0)
    handles = [probe.register_forward_pre_hook(pre), probe.register_forward_hook(post)]
    try:
        with torch.inference_mode():
            for _ in range(calls):
                probe(x)
    finally:
        for h in handles:
            h.remove()
    return round(stats.median([e - b for b, e in zip(times[0::2], times[1::2], strict=True)]))


def run_layer_pass(
    run_once: Callable[[], Any],
    layers: list[tuple[str, torch.nn.Module]],
    iterations: int,
    sync: Callable[[], None] | None = None,
) -> LayerPass:
    """``iterations`` hooked forwards, each beside an unhooked one, interleaved.

    The hooks are registered before each hooked forward and removed after it
    (outside the timed interval), so the unhooked forward runs the model exactly
    as the latency pass does.
    """
    times: list[int] = []
    codes: list[int] = []
    make = _hooks(times, codes, sync)
    pairs = []
    seen: set[int] = set()
    for i, (_, module) in enumerate(layers):
        if id(module) not in seen:  # a module listed twice would double its hooks
            seen.add(id(module))
            pairs.append((module, *make(i)))

    @contextlib.contextmanager
    def hooked() -> Iterator[None]:
        handles = []
        for module, pre, post in pairs:
            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    return interleave(run_once, run_once, iterations, sync, times, codes, hooked)


def tick_recorder(
    times: list[int], codes: list[int], sync: Callable[[], None] | None
) -> Callable[[int], None]:
    """``tick(code)``: append the code, then read the clock (after ``sync`` on a GPU)."""
    clock, add_t, add_c = time.perf_counter_ns, times.append, codes.append
    if sync is None:

        def tick(code: int) -> None:
            add_c(code)
            add_t(clock())
    else:

        def tick(code: int) -> None:
            add_c(code)
            sync()
            add_t(clock())

    return tick


def run_tick_pass(
    graph: Any,
    run_once: Callable[[], Any],
    iterations: int,
    sync: Callable[[], None] | None = None,
) -> LayerPass:
    """``iterations`` ticked forwards of a zoo graph, each beside a plain one, interleaved.

    ``graph`` is a :class:`farm.engine.artifact.GraphModule`; its ``ticking`` arms the
    ticks outside the timed interval, so the plain forward is the latency pass's own.
    """
    times: list[int] = []
    codes: list[int] = []
    tick = tick_recorder(times, codes, sync)
    return interleave(
        run_once, run_once, iterations, sync, times, codes, lambda: graph.ticking(tick)
    )


def interleave(
    instrumented: Callable[[], Any],
    plain: Callable[[], Any],
    iterations: int,
    sync: Callable[[], None] | None,
    times: list[int],
    codes: list[int],
    arm: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> LayerPass:
    """``iterations`` instrumented forwards, each beside a plain one; which goes first alternates.

    The instrumented forward appends its clock reads to ``times``/``codes``; ``arm`` is
    entered around it, outside the timed interval (hooks are registered there). The
    garbage collector is paused throughout.
    """
    starts: list[int] = []
    begins: list[int] = []
    whole: list[int] = []
    bare: list[int] = []
    clock = time.perf_counter_ns
    offset = time.monotonic_ns() - clock() if not SAME_CLOCK else 0
    sync_ = sync or _no_sync

    def forward(run: Callable[[], Any]) -> tuple[int, int]:
        sync_()
        t0 = clock()
        run()
        sync_()
        return t0, clock() - t0

    def timed() -> None:
        with arm():
            starts.append(len(times))
            t0, took = forward(instrumented)
        begins.append(t0)
        whole.append(took)

    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for it in range(iterations):
            if it % 2 == 0:
                timed()
                bare.append(forward(plain)[1])
            else:
                bare.append(forward(plain)[1])
                timed()
    finally:
        if gc_was_enabled:
            gc.enable()
    return LayerPass(times, codes, starts, begins, whole, bare, offset)


def _no_sync() -> None:
    return None


@dataclass
class Spans:
    """Per iteration: each layer's wall share and own forward, and the graph's entry/exit."""

    span: list[list[int]]
    compute: list[list[int]]
    calls: list[list[int]]
    graph: list[int]
    first: int | None = None  # the layer that ran first (its span starts at its pre-hook)


def per_iteration_ns(lp: LayerPass, n_layers: int) -> Spans:
    """Split each hooked forward into layers, hooks included (see the module docstring).

    A layer's wall share runs from the previous layer's end to its own end; the
    first layer's from its own pre-hook. The forward's start to the first
    pre-hook, and the last layer's end to the forward's return, are the graph's.
    Every nanosecond of the forward belongs to exactly one row; a layer called
    twice adds up.
    """
    out = Spans([], [], [], [])
    bounds = [*lp.starts, len(lp.times)]
    for it in range(len(lp.starts)):
        span, compute, calls = [0] * n_layers, [0] * n_layers, [0] * n_layers
        open_at: dict[int, int] = {}
        last_end: int | None = None
        first_begin: int | None = None
        for k in range(bounds[it], bounds[it + 1]):
            layer, is_end = divmod(lp.codes[k], 2)
            t = lp.times[k]
            if is_end:
                compute[layer] += t - open_at[layer]
                span[layer] += t - (open_at.pop(layer) if last_end is None else last_end)
                calls[layer] += 1
                last_end = t
            else:
                open_at[layer] = t
                if first_begin is None:
                    first_begin = t
                    out.first = layer if out.first is None else out.first
        begin, end = lp.begin_ns[it], lp.begin_ns[it] + lp.whole_ns[it]
        graph = (
            end - begin
            if first_begin is None or last_end is None
            else (first_begin - begin + max(0, end - last_end))
        )
        out.span.append(span)
        out.compute.append(compute)
        out.calls.append(calls)
        out.graph.append(graph)
    return out


def tick_intervals(lp: LayerPass, n_nodes: int) -> tuple[list[list[int]], list[int]]:
    """Per iteration of a ticked pass, each node's interval (previous tick to its own) and
    the graph's share: the forward's start to the first tick plus the last tick to its end."""
    intervals, graph = [], []
    for it, start in enumerate(lp.starts):
        t = lp.times[start : start + n_nodes + 1]
        if lp.codes[start : start + n_nodes + 1] != list(range(n_nodes + 1)):
            raise RuntimeError(f"layer pass iteration {it}: ticks out of order")
        intervals.append([t[k + 1] - t[k] for k in range(n_nodes)])
        graph.append(lp.whole_ns[it] - (t[-1] - t[0]))
    return intervals, graph


def tick_times(lp: LayerPass, row_of: list[int], n_rows: int) -> tuple[list[float], float, float]:
    """Net ns per row, the graph's entry/exit, and the tick cost in place, from a ticked pass.

    ``row_of[k]`` is the row node k's time adds to. The cost of one tick is the ticked
    forwards' fast mean over the plain ones', per tick; no node interval (which holds
    one tick) can cost less, so on a loaded machine it is capped at the cheapest.
    """
    n_nodes = len(row_of)
    intervals, graph_ns = tick_intervals(lp, n_nodes)
    typical = typical_iterations(lp.whole_ns)

    def mean(values: list[int]) -> float:
        return sum(values[i] for i in typical) / len(typical)

    raw = [mean([iv[k] for iv in intervals]) for k in range(n_nodes)]
    tick = max(0.0, fast_mean(lp.whole_ns) - fast_mean(lp.bare_ns)) / (n_nodes + 1)
    tick = min([tick, *raw])
    times = [0.0] * n_rows
    for k, r in enumerate(row_of):
        times[r] += max(0.0, raw[k] - tick)
    graph = max(0.0, mean(graph_ns) - tick)  # the one tick no node interval holds
    return times, graph, tick


def summarize_ticked(lp: LayerPass, infos: list[LayerInfo]) -> tuple[list[dict], dict]:
    """Rows of a zoo graph's ticked pass (one per node, the graph's entry/exit last)."""
    times, graph, tick = tick_times(lp, list(range(len(infos))), len(infos))
    total = sum(times) + graph
    rows = [
        make_row(i, info.name, info.type, info, times[i], times[i], total)
        for i, info in enumerate(infos)
    ]
    rows.append(make_row(len(infos), GRAPH_ROW, "Graph", None, graph, 0.0, total))
    summary = pass_summary(
        lp, rows, graph, tick, "in place (ticked vs plain graph forwards, interleaved)"
    )
    summary["attribution"] = "graph layers"
    return rows, summary


def add_tick_markers(lp: LayerPass, row_of: list[int], markers: Markers) -> None:
    """``layer_begin``/``layer_end`` markers of a ticked pass, one pair per run of
    consecutive nodes of a row."""
    n_nodes = len(row_of)
    for it, start in enumerate(lp.starts):
        t = lp.times[start : start + n_nodes + 1]
        k = 0
        while k < n_nodes:
            row, first = row_of[k], k
            while k + 1 < n_nodes and row_of[k + 1] == row:
                k += 1
            markers.add(t[first] + lp.mono_offset_ns, LAYER_BEGIN, it, row)
            markers.add(t[k + 1] + lp.mono_offset_ns, LAYER_END, it, row)
            k += 1


def add_markers(lp: LayerPass, markers: Markers) -> None:
    """Turn the raw hook events into ``layer_begin``/``layer_end`` markers."""
    bounds = [*lp.starts, len(lp.times)]
    for it in range(len(lp.starts)):
        for k in range(bounds[it], bounds[it + 1]):
            layer, is_end = divmod(lp.codes[k], 2)
            kind = LAYER_END if is_end else LAYER_BEGIN
            markers.add(lp.times[k] + lp.mono_offset_ns, kind, it, layer)


def layer_type(module: torch.nn.Module) -> str:
    """The layer's kind as tables name it (an unflattened program's leaves say theirs)."""
    return getattr(module, "farm_layer_type", None) or type(module).__name__


@dataclass
class LayerInfo:
    """Static facts about one leaf layer, gathered before the timed pass."""

    name: str
    type: str
    params: int
    param_bytes: int
    input_bytes: int
    output_bytes: int


def typical_iterations(whole_ns: list[int]) -> list[int]:
    """The iterations whose whole hooked forward was among the faster half.

    Per-layer times are means over these: a layer's median alone would not add up
    (the sum of medians of skewed times falls short of the median sum), and a
    plain mean would let one preempted forward bill its stall to one layer.
    """
    ranked = sorted(range(len(whole_ns)), key=whole_ns.__getitem__)
    return sorted(ranked[: (len(ranked) + 1) // 2])


def summarize(lp: LayerPass, infos: list[LayerInfo], interval_ns: int) -> tuple[list[dict], dict]:
    """Per-layer rows (the graph's entry/exit last) and the pass summary."""
    n = len(infos)
    spans = per_iteration_ns(lp, n)
    pair = lp.pair_cost_ns()

    typical = typical_iterations(lp.whole_ns)

    def mean(values: list[int]) -> float:
        return sum(values[k] for k in typical) / len(typical)

    def column(rows: list[list[int]], i: int) -> list[int]:
        return [row[i] for row in rows]

    # every layer span holds one pair per call, except the first layer's (from its own
    # pre-hook): its pre-hook sits in the graph's entry, its hook's start in the span.
    times, own = [], []
    for i in range(n):
        calls = mean(column(spans.calls, i))
        cost = interval_ns + pair * (calls - 1) if i == spans.first else pair * calls
        times.append(max(0.0, mean(column(spans.span, i)) - cost))
        own.append(max(0.0, mean(column(spans.compute, i)) - interval_ns * calls))
    graph = max(0.0, mean(spans.graph) - max(0.0, pair - interval_ns))
    total = sum(times) + graph
    rows = [
        make_row(i, info.name, info.type, info, times[i], own[i], total)
        for i, info in enumerate(infos)
    ]
    rows.append(make_row(n, GRAPH_ROW, "Graph", None, graph, 0.0, total))
    summary = pass_summary(
        lp, rows, graph, pair, "in place (hooked vs unhooked forwards, interleaved)"
    )
    summary["hook_interval_cost_ns"] = interval_ns
    return rows, summary


def pass_summary(
    lp: LayerPass, rows: list[dict], graph_ns: float, cost_ns: float, source: str
) -> dict:
    """The layer pass's summary from its rows (the graph's last): sums, ratios, shares.

    ``cost_ns`` is what one marker (a hook pair, or a tick between graph nodes) costs
    in place; ``source`` says how it was measured.
    """
    total = sum(row["time_ms"] for row in rows) * 1e6
    bare = fast_mean(lp.bare_ns)
    ratio = total / bare if bare > 0 else None
    nonlinear = sum(row["time_ms"] for row in rows if row["nonlinear"]) * 1e6
    return {
        "iterations": len(lp.starts),
        "layer_sum_ms": total / 1e6,
        "layer_compute_sum_ms": sum(row["compute_ms"] for row in rows),
        "graph_ms": graph_ns / 1e6,
        "layer_whole_ms": fast_mean(lp.whole_ns) / 1e6,
        "whole_unhooked_ms": bare / 1e6,  # fast_mean, like the layer times
        "whole_unhooked_median_ms": stats.median(lp.bare_ns) / 1e6,
        "layer_sum_vs_whole": ratio,
        "layer_sum_outside_5pct": ratio is None or abs(ratio - 1) > SUM_TOLERANCE,
        "overhead_pct": 100 * (fast_mean(lp.whole_ns) / bare - 1) if bare > 0 else None,
        "nonlinear_share": nonlinear / total if total > 0 else 0.0,
        "hook_cost_ns": round(cost_ns),
        "hook_cost_source": source,
    }


def make_row(
    index: int,
    name: str,
    type_: str,
    info: LayerInfo | None,
    time_ns: float,
    compute_ns: float,
    total: float,
    nonlinear: bool | None = None,
) -> dict:
    """One result row; ``nonlinear`` defaults to whether the layer type is non-linear."""
    p_bytes = info.param_bytes if info else 0
    in_b = info.input_bytes if info else 0
    out_b = info.output_bytes if info else 0
    return {
        "index": index,
        "name": name,
        "type": type_,
        "params": info.params if info else 0,
        "time_ms": time_ns / 1e6,
        "compute_ms": compute_ns / 1e6,
        "share": time_ns / total if total > 0 else 0.0,
        "nonlinear": type_ in NONLINEAR if nonlinear is None else nonlinear,
        "input_bytes": in_b,
        "output_bytes": out_b,
        "param_bytes": p_bytes,
        "resident_bytes": p_bytes + in_b + out_b,
    }
