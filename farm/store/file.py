"""The store as a file: whether it can be trusted (decided without touching it), and
a consistent copy of it.

A store is opened by every command, and a writer's first act would be to create
tables in whatever it found: a database of another program, a newer farm's
store (whose schema this farm would then "migrate" down), a truncated copy. So
before anything opens it for writing, :func:`inspect` reads it the way that
changes nothing on disk:

- a path that is a directory, an empty file, or not an SQLite file at all
  (its first 16 bytes say so) is refused;
- the file is then opened read-only — ``immutable`` when no ``-wal`` file lies
  beside it (so SQLite creates no ``-wal``/``-shm`` either), else ``mode=ro``
  over the writer's files — and must hold farm's ``meta`` table with a schema
  version this farm knows, and pass ``PRAGMA quick_check``.

Each refusal is a :class:`farm.errors.StoreRefused` (a newer schema its
:class:`~farm.errors.SchemaTooNew`): one line naming the file, exit code 2, the
file as it was.

:func:`backup` copies a live store with SQLite's online backup: the copy is one
self-contained file, consistent at one instant, while the scheduler goes on writing.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from farm.errors import SchemaTooNew, StoreRefused

MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Found:
    """What a trusted store holds (for ``farm db check``)."""

    path: Path
    schema: int
    jobs: int
    tasks: int
    results: int
    size_bytes: int
    wal_bytes: int


def read_only_uri(path: Path) -> str:
    """An SQLite URI that reads ``path`` without creating or changing a file."""
    quoted = urllib.parse.quote(str(path.resolve()))
    wal = path.with_name(path.name + "-wal")
    return f"file:{quoted}?" + ("mode=ro" if wal.exists() else "immutable=1")


def inspect(path: Path, schema_version: int) -> Found | None:
    """``None`` when nothing is at ``path``; what the store holds when it can be trusted;
    else :class:`StoreRefused` saying why not."""
    if path.is_dir():
        raise StoreRefused(f"{path}: is a directory, not a farm store (give a file with --db)")
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreRefused(f"{path}: cannot be read: {exc.strerror}") from exc
    if not head:
        raise StoreRefused(f"{path}: is an empty file, not a farm store")
    if head != MAGIC:
        raise StoreRefused(f"{path}: is not a farm store (not an SQLite database)")
    try:
        db = sqlite3.connect(read_only_uri(path), uri=True)
    except sqlite3.Error as exc:
        raise StoreRefused(f"{path}: cannot be opened: {exc}") from exc
    try:
        version = _schema(db, path)
        if version > schema_version:
            raise SchemaTooNew(
                f"{path}: was written by a newer farm (store schema {version}; this farm"
                f" knows {schema_version}): refused, nothing changed; upgrade farm"
            )
        problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise StoreRefused(f"{path}: is damaged (quick_check: {'; '.join(problems)})")
        found = Found(
            path=path,
            schema=version,
            jobs=_count(db, "jobs"),
            tasks=_count(db, "tasks"),
            results=_count(db, "results"),
            size_bytes=path.stat().st_size,
            wal_bytes=_size(path.with_name(path.name + "-wal")),
        )
    except sqlite3.DatabaseError as exc:  # a truncated or scribbled-over file
        raise StoreRefused(f"{path}: is damaged ({exc})") from exc
    finally:
        db.close()
    return found


def _schema(db: sqlite3.Connection, path: Path) -> int:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"meta", "jobs", "tasks"} <= tables:
        raise StoreRefused(f"{path}: is an SQLite database but not a farm store (no farm tables)")
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None or not str(row[0]).isdigit():
        raise StoreRefused(f"{path}: is not a farm store (no schema version)")
    return int(row[0])


def backup(path: Path, dest: Path, schema_version: int) -> Found:
    """Copy the trusted store at ``path`` to the new file ``dest``, consistently, while
    others may be writing it; returns what the copy holds (checked like any store)."""
    if inspect(path, schema_version) is None:
        raise StoreRefused(f"{path}: no farm store there")
    if dest.exists():
        raise StoreRefused(f"{dest}: already exists; give a new file")
    if not dest.parent.is_dir():
        raise StoreRefused(f"{dest.parent}: no such directory")
    source = sqlite3.connect(read_only_uri(path), uri=True)
    target = sqlite3.connect(dest)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
    finally:
        target.close()
        source.close()
    found = inspect(dest, schema_version)
    if found is None:
        raise StoreRefused(f"{dest}: the copy vanished as it was made")
    return found


def _count(db: sqlite3.Connection, table: str) -> int:
    return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
