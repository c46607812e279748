"""A store farm cannot trust is refused untouched; readers create nothing; writers
leave one whole file; backups are consistent. Through the CLI, as a person meets it."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from farmcli import run_farm

from farm.errors import SchemaTooNew, StoreRefused
from farm.spec import Measure, ModelRef, PlannedTask
from farm.store import SCHEMA_VERSION, Store


def _task(i: int) -> PlannedTask:
    return PlannedTask(
        index=i, key=f"kws/b/cpu/{i}", model=ModelRef(name="kws", zoo="kws"), board="b",
        processor="cpu", variant={}, measure=Measure(), candidates=["b"],
    )  # fmt: skip


def _store_with_a_job(path: Path) -> Store:
    store = Store(path)
    store.add_job("j-1", "j", {"name": "j"}, [_task(0), _task(1)])
    return store


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by its sha256 (directories as such)."""
    return {
        str(p.relative_to(folder)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def _bad_stores(root: Path) -> dict[str, Path]:
    good = root / "good.db"
    _store_with_a_job(good).close()
    data = good.read_bytes()
    made = {
        "truncated": root / "truncated.db",
        "junk": root / "junk.db",
        "empty": root / "empty.db",
        "directory": root / "directory.db",
        "other sqlite": root / "other.db",
        "newer schema": root / "newer.db",
    }
    made["truncated"].write_bytes(data[: len(data) // 2])
    made["junk"].write_bytes(b"not a database at all\n" * 100)
    made["empty"].write_bytes(b"")
    made["directory"].mkdir()
    with sqlite3.connect(made["other sqlite"]) as db:
        db.execute("CREATE TABLE notes(text)")
    made["newer schema"].write_bytes(data)
    with sqlite3.connect(made["newer schema"]) as db:
        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.close()
    good.unlink()
    return made


@pytest.mark.parametrize("command", [["status"], ["results", "latest"], ["db", "check"]])
def test_a_store_that_cannot_be_trusted_is_refused_untouched(tmp_path, command):
    folder = tmp_path / "stores"
    folder.mkdir()
    for why, path in _bad_stores(folder).items():
        before = _snapshot(folder)
        proc = run_farm(*command, "--db", str(path))
        assert proc.returncode == 2, (why, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0], (why, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert _snapshot(folder) == before, why  # not a byte, not a -wal, not a -shm


def test_a_writer_refuses_before_writing(tmp_path):
    stores = _bad_stores(tmp_path)
    for why, path in stores.items():
        before = _snapshot(tmp_path)
        with pytest.raises(StoreRefused):
            Store(path)
        assert _snapshot(tmp_path) == before, why
    with pytest.raises(SchemaTooNew):
        Store(stores["newer schema"])


def test_reading_commands_create_nothing(tmp_path):
    missing = tmp_path / "nowhere" / "farm.db"
    for command in (["status"], ["results", "latest"], ["logs", "x.0"]):
        proc = run_farm(*command, "--db", str(missing))
        assert proc.returncode == 2 and "no farm store" in proc.stderr, proc.stderr
    assert not (tmp_path / "nowhere").exists()
    # and reading a real store leaves no file beside it
    store = _store_with_a_job(tmp_path / "farm.db")
    store.close()
    before = _snapshot(tmp_path)
    assert run_farm("status", "--db", str(tmp_path / "farm.db")).returncode == 0
    assert _snapshot(tmp_path) == before


def test_a_writer_leaves_one_whole_file(tmp_path):
    path = tmp_path / "farm.db"
    store = _store_with_a_job(path)
    assert Path(f"{path}-wal").exists()  # while it writes, the log holds the recent changes
    store.close()
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    copy = tmp_path / "alone.db"
    copy.write_bytes(path.read_bytes())  # the .db alone, as a careless copy takes it
    assert Store(copy, readonly=True).job("j-1") is not None


def test_a_new_store_appears_whole(tmp_path, monkeypatch):
    """A reader polling for the first store (``farm status`` while the first ``farm
    submit`` starts) must never find the empty file SQLite creates before its first page."""
    from farm.store import schema

    path = tmp_path / "farm.db"
    opened = []
    real = sqlite3.connect

    def connect(target, *args, **kw):
        if str(target) == str(path):  # the moment it becomes visible at its own name
            opened.append(path.stat().st_size if path.exists() else None)
            assert Store(path, readonly=True).job("latest") is None  # a whole, empty store
        return real(target, *args, **kw)

    monkeypatch.setattr(schema.sqlite3, "connect", connect)
    Store(path).close()
    assert opened and opened[0] and opened[0] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["farm.db"]  # nothing left beside it
    # a second writer that built its own at the same moment keeps the first one's file
    inode = path.stat().st_ino
    schema._create(path)
    assert path.stat().st_ino == inode and sorted(p.name for p in tmp_path.iterdir()) == ["farm.db"]


def test_backup_is_a_consistent_copy_of_a_live_store(tmp_path):
    path = tmp_path / "farm.db"
    live = _store_with_a_job(path)  # open, its latest rows only in the -wal file
    proc = run_farm("db", "backup", str(tmp_path / "copy.db"), "--db", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "2 tasks" in proc.stdout
    copy = Store(tmp_path / "copy.db", readonly=True)
    assert [t.id for t in copy.tasks("j-1")] == ["j-1.0", "j-1.1"]
    assert not Path(f"{tmp_path / 'copy.db'}-wal").exists()
    again = run_farm("db", "backup", str(tmp_path / "copy.db"), "--db", str(path))
    assert again.returncode == 2 and "already exists" in again.stderr
    check = run_farm("db", "check", "--db", str(path))
    assert check.returncode == 0 and "1 jobs, 2 tasks" in check.stdout, check.stdout
    live.close()


@pytest.mark.parametrize(
    "command",
    [["metrics", "backfill", "--out", "OUT"], ["exporter", "--metrics-address", "127.0.0.1:9599"],
     ["resume", "latest"]],
)  # fmt: skip
def test_backfill_exporter_and_resume_refuse_an_untrusted_store_at_start(tmp_path, command):
    folder = tmp_path / "stores"
    folder.mkdir()
    command = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    for why, path in _bad_stores(folder).items():
        before = _snapshot(folder)
        proc = run_farm(*command, "--db", str(path), timeout=120)  # an exporter would serve on
        assert proc.returncode == 2, (why, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0], (why, proc.stderr)
        assert _snapshot(folder) == before, why
    assert not (tmp_path / "out").exists()
    typo = tmp_path / "typo.db"
    for proc in (run_farm(*command, "--db", str(typo)),):
        assert proc.returncode == 2 and "no farm store there" in proc.stderr, proc.stderr
    assert not typo.exists()


def test_a_refused_resume_changes_no_byte_of_the_store(tmp_path):
    path = tmp_path / "farm.db"
    _store_with_a_job(path).close()
    before = _snapshot(tmp_path)
    proc = run_farm("resume", "nosuch", "--db", str(path))
    assert proc.returncode == 2 and "no job 'nosuch'" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before  # journal mode, change counter, no -wal
