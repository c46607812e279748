"""The one door through which metrics read the store.

Every family that reflects the store (measurements, queue depth, boards, jobs)
reads through ``StoreSource``, so moving to the store's typed read API is a
change to this file alone. It opens its own **read-only** SQLite connection: an
exporter never writes, never migrates, and in WAL mode never blocks the writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.errors import UserError


@dataclass(frozen=True)
class Cell:
    """One result of a matrix cell: who measured what, when, and the engine's result."""

    model: str
    board: str
    processor: str
    variant: dict[str, Any]
    state: str  # done | does-not-fit
    at: float  # when the result was stored (epoch seconds)
    result: dict[str, Any]


_CELLS = (
    "SELECT t.model, t.board, t.processor, t.variant, t.state, r.created, r.data{extra}"
    " FROM results r JOIN tasks t ON t.id = r.task_id"
    " WHERE t.state IN ('done', 'does-not-fit'){where}"
)
_NEWEST = (
    ", ROW_NUMBER() OVER (PARTITION BY t.model, t.board, t.processor, t.variant"
    " ORDER BY r.created DESC, r.rowid DESC) AS newest"
)

PRIORITY_BANDS = ("high", "normal", "low")


def priority_band(priority: int) -> str:
    """Priorities are free integers; a label takes three bands (bounded cardinality)."""
    return "high" if priority > 0 else "low" if priority < 0 else "normal"


class StoreSource:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise UserError(f"{self.path}: no farm store there (give --db or FARM_DB)")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
        self._db.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def version(self) -> int:
        """Changes whenever a result is stored or replaced (a replaced row gets a new rowid)."""
        return self._rows("SELECT COALESCE(MAX(rowid), 0) FROM results")[0][0]

    def latest_cells(self, job_id: str | None = None) -> list[Cell]:
        """The newest result of every (model, board, processor, variant), of one job or all."""
        where, args = (" AND t.job_id = ?", (job_id,)) if job_id else ("", ())
        inner = _CELLS.format(extra=_NEWEST, where=where)
        rows = self._rows(f"SELECT * FROM ({inner}) WHERE newest = 1", args)
        return [_cell(row) for row in rows]

    def history(self) -> Iterator[Cell]:
        """Every stored result, oldest first (what a backfill writes)."""
        rows = self._rows(_CELLS.format(extra="", where="") + " ORDER BY r.created, r.rowid")
        return (_cell(row) for row in rows)

    def board_states(self) -> dict[str, str]:
        """Every board the store knows: its health state, ``healthy`` until it failed."""
        rows = self._rows(
            "SELECT board, 'healthy' FROM (SELECT DISTINCT board FROM tasks)"
            " WHERE board NOT IN (SELECT name FROM boards)"
            " UNION ALL SELECT name, state FROM boards"
        )
        return dict(rows)

    def job_counts(self) -> dict[str, int]:
        return dict(self._rows("SELECT state, COUNT(*) FROM jobs GROUP BY state"))

    def queue_depth(self) -> dict[str, int]:
        """Queued tasks by priority band (every band present, zeros included)."""
        depth = dict.fromkeys(PRIORITY_BANDS, 0)
        rows = self._rows(
            "SELECT j.priority, COUNT(*) FROM tasks t JOIN jobs j ON j.id = t.job_id"
            " WHERE t.state = 'queued' GROUP BY j.priority"
        )
        for priority, n in rows:
            depth[priority_band(priority)] += n
        return depth

    def job_by_name(self, name_or_id: str) -> tuple[str, str] | None:
        """(id, name) of a job given its id, or ``latest``."""
        if name_or_id == "latest":
            rows = self._rows("SELECT id, name FROM jobs ORDER BY created DESC, rowid DESC LIMIT 1")
        else:
            rows = self._rows("SELECT id, name FROM jobs WHERE id = ?", (name_or_id,))
        return (rows[0][0], rows[0][1]) if rows else None


def _cell(row: tuple[Any, ...]) -> Cell:
    model, board, processor, variant, state, created, data = row[:7]
    return Cell(model, board, processor, json.loads(variant), state, created, json.loads(data))
