"""The timed loop's CPU time: per inference, the process's (worker threads included),
read outside the wall window, kept with the markers and summarized in the result."""

from __future__ import annotations

import threading
import time

import pytest
from test_engine import run

from farm.engine import timing


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.timing  # CPU time over a quarter of wall time: the spinning thread needs a core
def test_cpu_time_counts_work_on_other_threads_and_not_waiting():
    """An inference run by a worker thread (as torch's intra-op pool runs it) is billed its
    CPU time; one that waits (a sleep) is billed almost none of its wall time."""

    def on_a_worker() -> None:
        worker = threading.Thread(target=_spin, args=(0.02,))
        worker.start()
        worker.join()  # the calling thread only waits

    timed = timing.time_inferences(on_a_worker, 5)
    wall, cpu = timed.latencies_ms(), [c / 1e6 for c in timed.cpu_ns()]
    assert len(cpu) == 5
    # the worker spun for 20 ms of wall time; on a busy machine it gets less than all of it,
    # but the calling thread's own clock would read ~0 here
    assert sum(cpu) > 0.25 * sum(wall), (cpu, wall)

    timed = timing.time_inferences(lambda: time.sleep(0.02), 5)
    assert sum(timed.cpu_ns()) / 1e6 < 0.25 * sum(timed.latencies_ms())


def test_the_engine_keeps_each_inference_cpu_time_with_its_markers():
    r = run()
    m = r["markers"]
    assert m["cpu_clock"] == "process_cputime_ns"
    assert len(m["inference_cpu_ns"]) == r["latency"]["n"] == 40
    assert all(c >= 0 for c in m["inference_cpu_ns"])
    assert r["latency"]["cpu_median_ms"] is not None and r["latency"]["cpu_median_ms"] >= 0
