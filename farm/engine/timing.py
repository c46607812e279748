"""The timed loop: one inference at a time, a clock read on either side.

Latencies come from ``time.perf_counter_ns`` and markers from
``time.monotonic_ns``. On Linux both are ``clock_gettime(CLOCK_MONOTONIC)``
(CPython implements one with the other), so the loop reads one clock and uses
the value for both — halving the clock reads inside the measurement. Where the
two clocks differ (other platforms) both are read.

The loop body is deliberately bare: preallocated lists written by index, no
dict building, no marker objects. ``benchmarks/harness.py`` holds it to within
1% of a plain ``for`` loop over the same model.

Beside each inference's wall time the loop records its CPU time: the
*process's* CPU clock (``time.process_time_ns``, ``CLOCK_PROCESS_CPUTIME_ID``)
read just before the wall clock starts and just after it stops, so the wall
window holds no read. It is a system call, though, and the call after it runs
about 0.2-0.3 µs slower (cache lines the kernel evicted): ~1% of a 22 µs ONNX
Runtime kws inference, nothing on AlexNet (docs/internals.md, "What the timed
loop adds"). The process clock, not the calling
thread's: at more than one intra-op thread the inference runs on torch's (or a
runtime's) worker threads, whose CPU time the calling thread's clock would miss
(it would show the caller waiting). The cost is that any other thread of the
engine process is billed too; the engine runs none while it times. At one
thread the two clocks agree. A board that is busy stretches wall times (the
engine waits for a CPU) far more than CPU times, so CPU-time ratios between two
runs stay honest where wall-time ratios do not; the pair is kept per inference
(``cpu_ns``), with the markers.
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


CPU_CLOCK = "process_cputime_ns"  # what ``cpu_ns`` counts (docs/internals.md, markers)


class Timed:
    """Begin/end times of ``n`` inferences: monotonic for markers, perf for latency,
    the process's CPU clock for CPU time (read outside the wall window)."""

    __slots__ = ("cpu_begin", "cpu_end", "mono_begin", "mono_end", "perf_begin", "perf_end")

    def __init__(self, n: int) -> None:
        self.mono_begin = [0] * n
        self.mono_end = [0] * n
        self.perf_begin = self.mono_begin
        self.perf_end = self.mono_end
        self.cpu_begin = [0] * n
        self.cpu_end = [0] * n

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

    def cpu_ns(self) -> list[int]:
        """Each inference's process CPU time (ns), in run order."""
        return [e - b for b, e in zip(self.cpu_begin, self.cpu_end, strict=True)]


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
            _loop_one_clock(run_once, n, timed)
        else:
            timed.perf_begin, timed.perf_end = [0] * n, [0] * n
            _loop_two_clocks(run_once, n, timed, sync or _no_sync)
    finally:
        if gc_was_enabled:
            gc.enable()
    return timed


def _no_sync() -> None:
    return None


def _loop_one_clock(run_once: Callable[[], Any], n: int, timed: Timed) -> None:
    clock, cpu = time.perf_counter_ns, time.process_time_ns
    begin, end, cb, ce = timed.mono_begin, timed.mono_end, timed.cpu_begin, timed.cpu_end
    for i in range(n):
        cb[i] = cpu()  # outside the wall window: it stays what it was without it
        begin[i] = clock()
        run_once()
        end[i] = clock()
        ce[i] = cpu()


def _loop_two_clocks(
    run_once: Callable[[], Any], n: int, timed: Timed, sync: Callable[[], None]
) -> None:
    mono, perf, cpu = time.monotonic_ns, time.perf_counter_ns, time.process_time_ns
    mb, pb, pe, me = timed.mono_begin, timed.perf_begin, timed.perf_end, timed.mono_end
    cb, ce = timed.cpu_begin, timed.cpu_end
    for i in range(n):
        sync()
        cb[i] = cpu()
        mb[i] = mono()
        pb[i] = perf()
        run_once()
        sync()
        pe[i] = perf()
        me[i] = mono()
        ce[i] = cpu()
