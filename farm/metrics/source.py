"""The one door through which metrics read the store: its typed read API.

Every family that reflects the store (measurements, queue depth, boards, jobs)
reads through ``StoreSource``, a ``farm.store.read.Reader`` over its own
**read-only** SQLite connection: an exporter never writes, never migrates, and
in WAL mode never blocks the writer.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from farm.errors import UserError
from farm.states import TaskState
from farm.store import Cell
from farm.store.read import Reader

PRIORITY_BANDS = ("high", "normal", "low")
RECENT_JOBS = 50  # the boards of this many newest jobs count as known boards


def priority_band(priority: int) -> str:
    """Priorities are free integers; a label takes three bands (bounded cardinality)."""
    return "high" if priority > 0 else "low" if priority < 0 else "normal"


def _answered(cells: list[Cell]) -> list[Cell]:
    """Cells whose task has a result (measured, or known not to fit)."""
    return [c for c in cells if c.result is not None and TaskState(c.task.state).has_result()]


class StoreSource(Reader):
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise UserError(f"{self.path}: no farm store there (give --db or FARM_DB)")
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def version(self) -> int:
        """Changes whenever a result is stored or replaced (a replaced row gets a new rowid)."""
        return self._query("SELECT COALESCE(MAX(rowid), 0) AS v FROM results")[0]["v"]

    def newest_cells(self, job_id: str | None = None) -> list[Cell]:
        """The newest answered result of every cell, across jobs or of one job."""
        return _answered(self.latest_cells() if job_id is None else self.cells(job_id))

    def history(self) -> list[Cell]:
        """Every answered result, oldest first (what a backfill writes)."""
        cells = [c for job in self.jobs(limit=1 << 31) for c in _answered(self.cells(job.id))]
        return sorted(cells, key=lambda c: c.result_at or 0.0)

    def board_states(self) -> dict[str, str]:
        """Every board of the recent jobs, healthy until its health was recorded otherwise."""
        known = {b["name"]: "healthy" for j in self.jobs(limit=RECENT_JOBS) for b in j.boards}
        known.update({name: str(r.state) for name, r in self.board_health().items()})
        return known

    def job_counts(self) -> dict[str, int]:
        return {str(state): n for state, n in self.jobs_by_state().items()}

    def queue_bands(self) -> dict[str, int]:
        """Queued tasks by priority band (every band present, zeros included)."""
        depth = dict.fromkeys(PRIORITY_BANDS, 0)
        for priority, n in self.queue_depth().items():
            depth[priority_band(priority)] += n
        return depth
