#!/usr/bin/env python3
"""The test suite, as the README and CI run it: ``python3 tests/run.py [PYTEST ARGS]``.

Two phases, both always run:

1. every test not marked ``timing``, on ``FARM_TEST_WORKERS`` (default 2) xdist
   workers, each with its own Ray and SSH test bed (``tests/conftest.py``);
2. the ``timing`` tests alone, one at a time: those whose assertion depends on
   how long something took on this machine (pulse alignment in microseconds,
   energy within a few percent of a timed window), which a second worker sharing
   the cores would make fail.

PYTEST ARGS go to both (a file, ``-k``, ``-x``); a phase that selects nothing is
not a failure. The exit status is the first failing phase's, else 0. Each phase's
wall time and the load average are printed, so a slow run on a busy machine shows
as one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_TESTS = 5  # pytest's exit status when a selection is empty


def _phase(name: str, args: list[str]) -> tuple[int, float]:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:benchmark", *args]
    print(f"== {name}: {' '.join(cmd[1:])}  (load {_load()})", flush=True)
    t0 = time.monotonic()
    rc = subprocess.call(cmd, cwd=ROOT)
    return rc, time.monotonic() - t0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str]) -> int:
    workers = os.environ.get("FARM_TEST_WORKERS", "2")
    parallel = ["-n", workers, "--dist", "loadgroup", "--no-loadscope-reorder", "-m", "not timing"]
    phases = [("parallel", [*parallel, *argv]), ("timing, alone", ["-m", "timing", *argv])]
    results = [(name, *_phase(name, args)) for name, args in phases]
    for name, rc, seconds in results:
        print(f"== {name}: exit {rc} in {seconds:.0f} s")
    print(f"== total {sum(s for *_, s in results):.0f} s (load {_load()})")
    codes = [rc for _, rc, _ in results]
    if all(rc == NO_TESTS for rc in codes):
        return NO_TESTS
    return next((rc for rc in codes if rc not in (0, NO_TESTS)), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
