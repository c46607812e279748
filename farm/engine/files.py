"""Bytes that name themselves: a file's sha256, and zips whose bytes depend only on
their entries (fixed timestamps and permissions, entries in order), so every
machine that builds the same engine or artifact gets the same hash.

Standard library only: the engine reads artifacts with it on the board, and the
head builds the engine zip and hashes what it deploys with it.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import zipfile
from collections.abc import Iterable
from pathlib import Path

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: no build clock leaks in


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def zip_bytes(entries: Iterable[tuple[str, bytes]], *, compression: int) -> bytes:
    """A zip of ``entries`` in the order given, stored or deflated, byte-stable."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = compression
            info.create_system = 3  # unix, whatever machine builds it
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buffer.getvalue()


def store(data: bytes, directory: str | Path, suffix: str) -> Path:
    """Write ``data`` as ``<directory>/<sha256><suffix>``, unless it is already there.

    The name is the content's hash, so an existing file is that content and stays
    untouched; a new one is written beside under a temporary name, flushed and renamed
    into place, so a reader sees the whole file or none.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{hashlib.sha256(data).hexdigest()}{suffix}"
    if not target.exists():
        tmp = directory / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target
