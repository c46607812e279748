"""The database's shape: the first schema as it shipped, and every step since.

A new file is built the same way an old one is upgraded: the version-1 schema,
then each migration in turn, so the upgrade path is the path every test walks.
A file written by a newer farm is refused (:class:`farm.errors.SchemaTooNew`).

Add a step: write ``_vN(db)`` (it runs inside the upgrade's one transaction),
append it to ``MIGRATIONS`` and bump nothing else: ``SCHEMA_VERSION`` follows.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from farm.errors import SchemaTooNew, StoreRefused
from farm.store import file

DEFAULT_DB = "~/.local/share/farm/farm.db"


def default_db_path() -> Path:
    """``$FARM_DB`` if set, else ``~/.local/share/farm/farm.db``."""
    return Path(os.environ.get("FARM_DB") or DEFAULT_DB).expanduser()


V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    source TEXT,
    spec TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    idx INTEGER NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    board TEXT NOT NULL,
    processor TEXT NOT NULL,
    variant TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (job_id, idx)
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks(state);
CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks(job_id);
CREATE TABLE IF NOT EXISTS task_events (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    state TEXT NOT NULL,
    at REAL NOT NULL,
    board TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_by_task ON task_events(task_id);
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY REFERENCES tasks(id),
    status TEXT NOT NULL,
    board TEXT NOT NULL,
    mean_ms REAL,
    median_ms REAL,
    p99_ms REAL,
    required_mb REAL,
    peak_rss_mb REAL,
    energy_mj REAL,
    data TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layers (
    task_id TEXT NOT NULL REFERENCES tasks(id),
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    params INTEGER,
    time_ms REAL,
    share REAL,
    nonlinear INTEGER,
    resident_bytes INTEGER,
    energy_mj REAL,
    PRIMARY KEY (task_id, idx)
);
CREATE TABLE IF NOT EXISTS markers (task_id TEXT PRIMARY KEY REFERENCES tasks(id), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS traces (task_id TEXT PRIMARY KEY REFERENCES tasks(id), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    at REAL NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_task ON logs(task_id);
CREATE TABLE IF NOT EXISTS boards (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated REAL NOT NULL
);
"""
"""Version 1, verbatim as farm first shipped it: the base every file is built from."""


def _v2(db: sqlite3.Connection) -> None:
    """Typed state history and a job's boards in their own column.

    - ``jobs.boards``: the board specs a job was planned on (they rode inside the
      spec as ``_boards``; moved out, the spec is the job file's again);
    - ``task_events.from_state``, ``attempt``, ``error``: each event is a move,
      as the writer publishes it (old events get ``from_state`` from the one before);
    - ``results.version``: the engine result's shape (version 1 before it was written);
    - indices for the read API: cells across jobs, jobs by name in time order.
    """
    db.execute("ALTER TABLE jobs ADD COLUMN boards TEXT NOT NULL DEFAULT '[]'")
    for job_id, spec in db.execute("SELECT id, spec FROM jobs").fetchall():
        spec = json.loads(spec)
        boards = spec.pop("_boards", [])
        db.execute(
            "UPDATE jobs SET spec=?, boards=? WHERE id=?",
            (json.dumps(spec), json.dumps(boards), job_id),
        )
    db.execute("ALTER TABLE task_events ADD COLUMN from_state TEXT")
    db.execute("ALTER TABLE task_events ADD COLUMN attempt INTEGER")
    db.execute("ALTER TABLE task_events ADD COLUMN error TEXT")
    db.execute(
        "UPDATE task_events SET from_state = (SELECT p.state FROM task_events p"
        " WHERE p.task_id = task_events.task_id AND p.id < task_events.id"
        " ORDER BY p.id DESC LIMIT 1)"
    )
    db.execute("ALTER TABLE results ADD COLUMN version INTEGER NOT NULL DEFAULT 1")
    db.execute("CREATE INDEX tasks_by_cell ON tasks(model, board, processor, variant)")
    db.execute("CREATE INDEX jobs_by_name ON jobs(name, created)")


def _v3(db: sqlite3.Connection) -> None:
    """``jobs.owner``: the embedded farm that runs a job (host, pid, start time, boot;
    ``farm.owner.Owner``), so the next farm can tell its job was interrupted."""
    db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")


def _v4(db: sqlite3.Connection) -> None:
    """Each distinct candidate list stored once per job, not once per task.

    - ``candidate_sets``: a job's candidate board lists (JSON), numbered from 0;
    - ``tasks.candidates``: the task's list, an index into its job's sets; the
      list leaves ``tasks.spec`` (1,000 boards made 10 KB of JSON per task).
    """
    db.execute(
        "CREATE TABLE candidate_sets (job_id TEXT NOT NULL REFERENCES jobs(id),"
        " idx INTEGER NOT NULL, boards TEXT NOT NULL, PRIMARY KEY (job_id, idx))"
    )
    db.execute("ALTER TABLE tasks ADD COLUMN candidates INTEGER NOT NULL DEFAULT 0")
    sets: dict[str, dict[str, int]] = {}  # job -> its lists (JSON) -> index
    rows = db.execute("SELECT id, job_id, board, spec FROM tasks ORDER BY job_id, idx")
    for task_id, job_id, board, spec in rows.fetchall():
        spec = json.loads(spec)
        boards = json.dumps(spec.pop("candidates", None) or [board])
        job_sets = sets.setdefault(job_id, {})
        if boards not in job_sets:
            job_sets[boards] = len(job_sets)
            db.execute(
                "INSERT INTO candidate_sets(job_id, idx, boards) VALUES (?,?,?)",
                (job_id, job_sets[boards], boards),
            )
        db.execute(
            "UPDATE tasks SET spec=?, candidates=? WHERE id=?",
            (json.dumps(spec), job_sets[boards], task_id),
        )


def _v5(db: sqlite3.Connection) -> None:
    """A failure's kind beside its message (``farm.errors.Failure``): ``tasks.error_kind``
    for the last failure, ``task_events.error_kind`` for the move it caused (a failure,
    or a retry). Rows written before have none: their kind was only in the text."""
    db.execute("ALTER TABLE tasks ADD COLUMN error_kind TEXT")
    db.execute("ALTER TABLE task_events ADD COLUMN error_kind TEXT")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v2, _v3, _v4, _v5]
"""``MIGRATIONS[i]`` takes a file from version ``i + 1`` to ``i + 2``."""

SCHEMA_VERSION = 1 + len(MIGRATIONS)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open ``path`` (WAL, foreign keys on) and bring it to ``SCHEMA_VERSION``; or, for
    ``readonly``, read it as it is without creating or changing a file. Either way a
    file that cannot be trusted is refused first, untouched (``farm.store.file``)."""
    found = file.inspect(path, SCHEMA_VERSION)
    if readonly:
        if found is None:
            raise StoreRefused(f"{path}: no farm store there yet (nothing has run with it)")
        if found.schema < SCHEMA_VERSION:
            raise StoreRefused(
                f"{path}: written by an older farm (schema {found.schema}); a command that"
                " writes (farm submit, farm head start) upgrades it"
            )
        db = sqlite3.connect(
            file.read_only_uri(path), uri=True, check_same_thread=False, isolation_level=None
        )
        db.row_factory = sqlite3.Row
        return db
    path.parent.mkdir(parents=True, exist_ok=True)
    if found is None:
        _create(path)
    db = _open(path)
    try:
        migrate(db, path)
    except BaseException:
        db.close()
        raise
    return db


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=15000")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def _create(path: Path) -> None:
    """A new store appears whole: built beside ``path`` and linked into place, so a reader
    never finds the empty file SQLite creates before it writes a page (``farm status``
    while the first ``farm submit`` starts). Where another writer got there first, its
    file stays and this one is dropped."""
    building = path.with_name(f".{path.name}.{os.getpid()}.new")
    db = _open(building)
    try:
        migrate(db, building)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    try:
        os.link(building, path)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: a rename, unless one appeared
        if not path.exists():
            os.replace(building, path)
    finally:
        for leftover in (
            building,
            *(building.with_name(building.name + x) for x in ("-wal", "-shm")),
        ):
            leftover.unlink(missing_ok=True)


def version_of(db: sqlite3.Connection) -> int:
    """The file's schema version; 0 for a file farm never wrote to."""
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Upgrade in one transaction: a failed step leaves the file as it was."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = version_of(db)
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{path}: schema version {version} is newer than this farm's ({SCHEMA_VERSION})"
            )
        if version == 0:
            # statement by statement: executescript() would commit the open transaction
            for statement in V1.split(";"):
                if statement.strip():
                    db.execute(statement)
            version = 1
        for step in MIGRATIONS[version - 1 :]:
            step(db)
        db.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
