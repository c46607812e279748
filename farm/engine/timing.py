"""The timed loop: one inference at a time, a clock read on either side.

Latencies come from ``time.perf_counter_ns`` and markers from
``time.monotonic_ns``. On Linux both are ``clock_gettime(CLOCK_MONOTONIC)``
(CPython implements one with the other), so the loop reads one clock and uses
the value for both — halving the clock reads inside the measurement. Where the
two clocks differ (other platforms) both are read.

The loop body is deliberately bare: two preallocated lists written by index,
no dict building, no marker objects. ``benchmarks/harness.py`` holds it to
within 1% of a plain ``for`` loop over the same model.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

SAME_CLOCK = (
    time.get_clock_info("perf_counter").implementation
    == time.get_clock_info("monotonic").implementation
)


def forward_fn(module: Any, example: Any) -> Callable[[], Any]:
    """A zero-argument callable running one forward of ``module`` on ``example``."""
    if isinstance(example, tuple):
        return lambda: module(*example)
    return lambda: module(example)


class Timed:
    """Begin/end times of ``n`` inferences: monotonic for markers, perf for latency."""

    __slots__ = ("mono_begin", "mono_end", "perf_begin", "perf_end")

    def __init__(self, n: int) -> None:
        self.mono_begin = [0] * n
        self.mono_end = [0] * n
        self.perf_begin = self.mono_begin
        self.perf_end = self.mono_end

    @classmethod
    def from_ns(cls, begin: list[int], end: list[int]) -> Timed:
        """Readings a runtime took in its own process (a native runner), on
        CLOCK_MONOTONIC: the same clock as ``monotonic_ns`` and ``perf_counter_ns`` here."""
        if len(begin) != len(end):
            raise ValueError(f"{len(begin)} begin readings but {len(end)} end readings")
        timed = cls(0)
        timed.mono_begin = timed.perf_begin = [int(b) for b in begin]
        timed.mono_end = timed.perf_end = [int(e) for e in end]
        return timed

    def latencies_ms(self) -> list[float]:
        return [(e - b) / 1e6 for b, e in zip(self.perf_begin, self.perf_end, strict=True)]


def time_inferences(
    run_once: Callable[[], Any], n: int, sync: Callable[[], None] | None = None
) -> Timed:
    """Run ``run_once`` ``n`` times, timing each call on its own.

    ``sync`` (``torch.cuda.synchronize`` on a GPU) is called before every clock
    read so asynchronous kernels are inside the interval they belong to. The
    garbage collector is paused during the loop so a collection of unrelated
    objects is not billed to an inference (``timeit`` does the same).
    """
    timed = Timed(n)
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        if sync is None and SAME_CLOCK:
            _loop_one_clock(run_once, n, timed.mono_begin, timed.mono_end)
        else:
            timed.perf_begin, timed.perf_end = [0] * n, [0] * n
            _loop_two_clocks(run_once, n, timed, sync or _no_sync)
    finally:
        if gc_was_enabled:
            gc.enable()
    return timed


def _no_sync() -> None:
    return None


def _loop_one_clock(run_once: Callable[[], Any], n: int, begin: list, end: list) -> None:
    clock = time.perf_counter_ns
    for i in range(n):
        begin[i] = clock()
        run_once()
        end[i] = clock()


def _loop_two_clocks(
    run_once: Callable[[], Any], n: int, timed: Timed, sync: Callable[[], None]
) -> None:
    mono, perf = time.monotonic_ns, time.perf_counter_ns
    mb, pb, pe, me = timed.mono_begin, timed.perf_begin, timed.perf_end, timed.mono_end
    for i in range(n):
        sync()
        mb[i] = mono()
        pb[i] = perf()
        run_once()
        sync()
        pe[i] = perf()
        me[i] = mono()
