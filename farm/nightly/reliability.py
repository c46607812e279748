"""Whether a result can be judged at all: the warnings that make a comparison unreliable.

A verdict compares two sets of samples on the assumption that each was measured
on a quiet board by a sound pipeline. Some warnings a result carries say that
assumption failed, and then a difference between two runs says more about the
board than about the model: such a cell is *unreliable*, with the warning as
the reason, never unchanged, a regression or an improvement.

- the board was not quiet (``farm.engine.board.busy_warnings``): ``board busy``,
  ``CPU steal``, ``board hot``;
- the layer pass's sum is off the whole forward by more than 5% (``layer sum``);
- the power trace and the markers were not aligned
  (``farm.power.quality.check``): no clock alignment, markers outside the
  capture or out of order.

Other warnings (a wait for the board's lock, a rail the monitor does not read)
are shown beside the verdict but do not void it. A verdict on CPU time
(``farm compare --statistic cpu``) is not voided by a busy board alone: the
load stretches the wait for a CPU, which CPU time does not count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# prefixes of the result's own warnings (the engine's); the first stretch wall time only
LOAD_DOUBTS = ("board busy",)
RESULT_DOUBTS = ("CPU steal", "board hot", "layer sum")
# prefixes of the energy report's quality warnings (the power analysis's)
ALIGNMENT_DOUBTS = (
    "no clock alignment",
    "markers fall outside the capture",
    "markers are not monotonic",
)


def doubts(result: Mapping[str, Any] | None, *, load_matters: bool = True) -> list[str]:
    """The warnings of ``result`` that make a comparison with it unreliable, in order
    (``load_matters=False``: a verdict on CPU time, which a busy board does not void)."""
    if not result:
        return []
    prefixes = RESULT_DOUBTS + (LOAD_DOUBTS if load_matters else ())
    found = [w for w in result.get("warnings") or [] if str(w).startswith(prefixes)]
    quality = ((result.get("energy") or {}).get("quality") or {}).get("warnings") or []
    found += [f"alignment: {w}" for w in quality if str(w).startswith(ALIGNMENT_DOUBTS)]
    return found


def why_unreliable(
    a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, *, load_matters: bool = True
) -> str | None:
    """``"A: board busy: load 7.1 on 2 CPUs; B: ..."``, or None when both sides are sound."""
    parts = [
        f"{side}: {w}"
        for side, result in (("A", a), ("B", b))
        for w in doubts(result, load_matters=load_matters)
    ]
    return "; ".join(parts) or None
