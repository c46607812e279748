"""The results database: one SQLite file, WAL mode, one transaction per change.

Everything a job leaves behind lives here: the job and its validated spec, every
task with its full state history, the engine's results (typed, versioned), the
per-layer rows, markers, energy traces, per-task logs and board health.

    schema.py   the shape of the file and its migrations (tested on a file
                written by farm's first schema)
    writer.py   the one writer: checks every state change against farm.states,
                records it in one transaction, publishes it to subscribers
    read.py     the typed read API (reports, metrics, nightly, the CLI)
    records.py  the records both return and publish

The scheduler owns the one ``Store`` that writes; readers open their own.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from pathlib import Path

from farm.owner import Owner
from farm.states import BoardHealth, JobState, TaskState
from farm.store.read import Reader
from farm.store.records import (
    BoardEvent,
    BoardRecord,
    Cell,
    CellKey,
    Event,
    JobEvent,
    JobProgress,
    JobRecord,
    LayerRecord,
    LogLine,
    QueuedTask,
    TaskEvent,
    TaskRecord,
)
from farm.store.schema import SCHEMA_VERSION, connect, default_db_path
from farm.store.writer import Subscriber, Writer

log = logging.getLogger(__name__)


class Store(Reader, Writer):
    """Thread-safe access to one farm database file."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, readonly: bool = False):
        """``readonly``: for commands that only read (status, results): the file must be
        there already, and nothing on disk is created or changed."""
        self.path = Path(path).expanduser() if path else default_db_path()
        self.readonly = readonly
        self._lock = threading.RLock()
        self._subscribers: list[Subscriber] = []
        self._batch = None
        self._db = connect(self.path, readonly=readonly)
        if not readonly:  # the next farm to open the store says whose job died with its farm
            for job_id in self.interrupt_orphans(lambda o: Owner.from_dict(o).alive()):
                log.warning("%s: interrupted (the farm that ran it is gone)", job_id)

    def close(self) -> None:
        """Close; a writer first folds its write-ahead log into the file, so the ``.db``
        alone holds everything (a copy of it is whole) and no ``-wal`` is left behind."""
        with self._lock:
            if not self.readonly:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


def new_job_id(name: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


__all__ = [
    "SCHEMA_VERSION",
    "BoardEvent",
    "BoardHealth",
    "BoardRecord",
    "Cell",
    "CellKey",
    "Event",
    "JobEvent",
    "JobProgress",
    "JobRecord",
    "JobState",
    "LayerRecord",
    "LogLine",
    "QueuedTask",
    "Store",
    "Subscriber",
    "TaskEvent",
    "TaskRecord",
    "TaskState",
    "default_db_path",
    "new_job_id",
]
