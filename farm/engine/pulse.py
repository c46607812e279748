"""The sync pulse: a pseudo-random busy/idle pattern a power trace can be aligned to.

The board's clock and the power monitor's clock are different clocks. At task
start and end the engine drives a known chip sequence — busy chips spin on
matrix multiplies, idle chips sleep — and records a marker at every chip edge.
The energy step cross-correlates the expected square wave with the measured
power and learns the offset between the two clocks.

Chips end on absolute deadlines from the pulse start, so timing errors do not
accumulate along the sequence.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from farm.engine.markers import PULSE_HIGH, PULSE_LOW, Markers


@dataclass(frozen=True)
class PulseSpec:
    chips: int = 16
    chip_ms: float = 20.0
    seed: int = 1

    def pattern(self) -> list[int]:
        """The chip levels (1 busy, 0 idle); never constant, so it has edges."""
        rng = random.Random(self.seed)
        bits = [rng.randint(0, 1) for _ in range(self.chips)]
        if self.chips >= 2 and len(set(bits)) == 1:
            bits[-1] = 1 - bits[0]
        return bits


def drive(spec: PulseSpec, markers: Markers) -> list[int]:
    """Play the pattern now; one marker per chip start and a final ``pulse_low``.

    ``iteration`` on a pulse marker is the chip index (``chips`` for the end).
    """
    bits = spec.pattern()
    chip_ns = int(spec.chip_ms * 1e6)
    busy, mode = _busy_work()
    clock = time.monotonic_ns
    start = clock()
    with mode:
        for i, bit in enumerate(bits):
            deadline = start + (i + 1) * chip_ns
            markers.add(clock(), PULSE_HIGH if bit else PULSE_LOW, i)
            if bit:
                while clock() < deadline:
                    busy()
            else:
                remaining = deadline - clock()
                if remaining > 0:
                    time.sleep(remaining / 1e9)
    markers.add(clock(), PULSE_LOW, len(bits))
    return bits


def _busy_work() -> tuple[Callable[[], object], contextlib.AbstractContextManager]:
    """A busy chip's unit of work: matrix multiplies where torch is already imported (an
    eager task), else arithmetic in Python, so a runtime without torch never loads it."""
    torch = sys.modules.get("torch")
    if torch is None:
        numbers = list(range(256))
        return (lambda: sum(x * x for x in numbers)), contextlib.nullcontext()
    a = torch.randn(64, 64)
    return (lambda: torch.mm(a, a)), torch.inference_mode()
