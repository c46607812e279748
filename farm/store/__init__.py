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

Two types: ``StoreWriter`` (``open_writer``), the one writer, which only the
scheduler's owner opens, and ``StoreReader`` (``open_reader``), which everything
else opens and which cannot write.
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


class StoreReader(Reader):
    """One farm database, read. The file must be there already, and nothing on disk is
    created or changed: every process but the scheduler's owner reads this way."""

    readonly = True

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path).expanduser() if path else default_db_path()
        self._lock = threading.RLock()
        self._db = connect(self.path, readonly=True)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class StoreWriter(Reader, Writer):
    """The one writer of a farm database (and its reads): opened by the scheduler's
    owner only (``farm.scheduler.actors.SchedulerActor``), which creates or migrates
    the file. Jobs whose farm died are marked interrupted by the scheduler's start-up
    (``Scheduler``), not here."""

    readonly = False

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path).expanduser() if path else default_db_path()
        self._lock = threading.RLock()
        self._subscribers: list[Subscriber] = []
        self._batch = None
        self._db = connect(self.path)

    def interrupt_dead_owners(self) -> list[str]:
        """Mark interrupted every unfinished job whose embedded farm is gone (its
        in-flight tasks back in the queue), saying so; their ids."""
        dead = self.interrupt_orphans(lambda o: Owner.from_dict(o).alive())
        for job_id in dead:
            log.warning("%s: interrupted (the farm that ran it is gone)", job_id)
        return dead

    def close(self) -> None:
        """Close, first folding the write-ahead log into the file, so the ``.db`` alone
        holds everything (a copy of it is whole) and no ``-wal`` is left behind."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


def open_reader(path: str | os.PathLike[str] | None = None) -> StoreReader:
    """Read the store at ``path`` (default: ``$FARM_DB``, else farm's default file)."""
    return StoreReader(path)


def open_writer(path: str | os.PathLike[str] | None = None) -> StoreWriter:
    """The writer of the store at ``path``, created or migrated as needed. farm opens
    one, in the scheduler's owner; tests and tools that build a store call it too."""
    return StoreWriter(path)


def Store(  # the old class, kept as a door for callers written against it
    path: str | os.PathLike[str] | None = None, *, readonly: bool = False
) -> StoreReader | StoreWriter:
    """``open_reader(path)`` for ``readonly``, else ``open_writer(path)``."""
    return open_reader(path) if readonly else open_writer(path)


def new_job_id(name: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


__all__ = [
    "SCHEMA_VERSION",
    "BoardEvent",
    "BoardHealth",
    "BoardRecord",
    "Cell",
    "Event",
    "JobEvent",
    "JobProgress",
    "JobRecord",
    "JobState",
    "LayerRecord",
    "LogLine",
    "QueuedTask",
    "Store",
    "StoreReader",
    "StoreWriter",
    "Subscriber",
    "TaskEvent",
    "TaskRecord",
    "TaskState",
    "default_db_path",
    "new_job_id",
    "open_reader",
    "open_writer",
]
