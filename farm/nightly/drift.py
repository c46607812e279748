"""Is a board sick? Its latency against the other boards of the same tags, cell by cell.

Boards that carry the same tags are meant to be alike (same model of phone,
same Tegra): on every cell they all measured, a healthy board sits among its
peers. For each such cell a board's score is how far its median latency lies
from the median of the *other* peers, in robust standard deviations of those
others (1.4826 × MAD, log scale, never below ``floor``); the board's score is
the median over its cells, so one odd cell does not condemn it. A board
slower than its peers by more than ``k`` is *degraded*: thermal throttling, a
stuck governor, a background process, failing storage.

``board_drift`` is the whole check, on plain records; ``farm status`` and the
metrics exporter both call it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import numpy as np

K = 5.0  # robust standard deviations
FLOOR = 0.02  # the peers' spread is taken as at least 2% (log scale)
MIN_PEERS = 2  # other boards needed on a cell for it to count


@dataclass(frozen=True)
class BoardMedian:
    """One board's median latency on one cell (``cell`` is the cell without its board)."""

    board: str
    tags: tuple[str, ...]
    cell: Hashable
    median_ms: float


@dataclass(frozen=True)
class BoardDrift:
    board: str
    score: float  # median over cells of (log median - peers' median) / peers' spread
    ratio: float  # median over cells of the board's median / the peers' median
    cells: int  # cells with enough peers
    degraded: bool


def board_drift(
    medians: Iterable[BoardMedian],
    *,
    k: float = K,
    floor: float = FLOOR,
    min_peers: int = MIN_PEERS,
) -> dict[str, BoardDrift]:
    """Every board with at least one comparable cell, by name."""
    groups: dict[tuple, dict[str, float]] = defaultdict(dict)
    for m in medians:
        if m.median_ms and m.median_ms > 0:
            groups[(tuple(sorted(m.tags)), m.cell)][m.board] = float(np.log(m.median_ms))
    scores: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for boards in groups.values():
        if len(boards) < min_peers + 1:
            continue
        for board, value in boards.items():
            others = np.array([v for b, v in boards.items() if b != board])
            center = float(np.median(others))
            spread = max(1.4826 * float(np.median(np.abs(others - center))), floor)
            scores[board].append(((value - center) / spread, value - center))
    out = {}
    for board, pairs in scores.items():
        z, log_ratio = np.median(np.array(pairs), axis=0)
        out[board] = BoardDrift(board, float(z), float(np.exp(log_ratio)), len(pairs), z > k)
    return out
