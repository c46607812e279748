"""Put the engine and model artifacts into a board's cache, addressed by sha256.

A board's cache looks like::

    <cache_dir>/engine/<sha256>.zip        the engine (``python3 <sha>.zip serve``)
    <cache_dir>/artifacts/<sha256>.farm    model artifacts
    <cache_dir>/artifacts/<sha256>.pkg     a user's model package (zip), beside its artifact
    <cache_dir>/files/<sha256><ext>        anything else

Because a name *is* the content's hash, a file that is there with the right hash
never needs pushing again, and two versions never collide. A deploy:

1. asks the board for the sha256 of every expected path in **one** command
   (``sha256sum``), and skips what already matches;
2. uploads each missing or wrong file to a temporary name beside its final one,
   has the board hash it, and renames it into place (``mv`` within a directory is
   atomic): a reader sees the whole file or none, and an interrupted upload
   leaves only a temp file, which :func:`prune` removes;
3. a cache entry whose hash is wrong (corrupted, truncated) is simply redone.

Only POSIX tools run on the board (``sha256sum``, ``mkdir``, ``mv``, ``rm``,
``find``), plus the board's python for :func:`probe`.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

import farm
from farm.engine import files
from farm.engine.package import PACKAGE_SUFFIX
from farm.errors import DeployGroupError, TransportError, TransportTimeout
from farm.transport import Transport, connect

KINDS = {".zip": "engine", ".farm": "artifacts", PACKAGE_SUFFIX: "artifacts"}
"""Cache sub-directory by file extension; anything else goes to ``files``. A user's
package sits beside the artifacts, where the engine looks for it."""

COMMAND_TIMEOUT_S = 120.0
_TMP = ".tmp-"
ENGINE_SUFFIXES = (".py", ".cpp")
"""What the engine zip carries from farm/engine and its sub-packages (the runtimes, the
ExecuTorch C++ runner's source, built on the board)."""
_MAIN = b"from farm.engine.__main__ import main\n\nmain()\n"


@dataclass
class DeployReport:
    """What one deploy did on one board. Paths are the board's."""

    board: str
    pushed: list[str] = field(default_factory=list)  # uploaded (includes ``redone``)
    skipped: list[str] = field(default_factory=list)  # already there, right hash
    redone: list[str] = field(default_factory=list)  # there, but the hash was wrong
    bytes_pushed: int = 0
    seconds: float = 0.0


# -- local files ---------------------------------------------------------------------------

_sha_memo: dict[tuple[str, int, int], str] = {}
_sha_lock = threading.Lock()


_CONTENT_ADDRESSED = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path) -> str:
    """The file's sha256 (``farm.engine.files``), remembered while its size and mtime
    stay the same.

    A file already named by its sha256 (an artifact, the engine zip) is taken at its
    word: hashing a 230 MB AlexNet again would cost more than sending it, and the
    board checks the bytes it received against this name before using them, so a
    lying name fails the upload instead of reaching the engine.
    """
    stem = os.path.basename(path).split(".", 1)[0]
    if _CONTENT_ADDRESSED.fullmatch(stem):
        return stem
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    with _sha_lock:
        if key in _sha_memo:
            return _sha_memo[key]
    digest = files.sha256_file(path)
    with _sha_lock:
        _sha_memo[key] = digest
    return digest


def build_engine_zip(out_dir: str | Path) -> Path:
    """The engine as one runnable zip, ``<out_dir>/<sha256>.zip``; built only if absent.

    The bytes depend only on the sources: entries sorted, fixed timestamps and
    permissions, so every station builds the same file and boards share one hash.
    """
    package = Path(farm.__file__).parent
    sources = {"farm/__init__.py": (package / "__init__.py").read_bytes(), "__main__.py": _MAIN}
    for path in sorted((package / "engine").rglob("*")):
        if path.suffix in ENGINE_SUFFIXES and "__pycache__" not in path.parts:
            sources[path.relative_to(package.parent).as_posix()] = path.read_bytes()
    data = files.zip_bytes(sorted(sources.items()), compression=zipfile.ZIP_DEFLATED)
    return files.store(data, out_dir, ".zip")


# -- where things live on the board --------------------------------------------------------


def cache_root(transport: Transport, board: Any) -> str:
    return transport.expand(str(board.cache_dir)).rstrip("/")


def remote_path(transport: Transport, board: Any, path: Path) -> str:
    """Where ``path`` lives in the board's cache: ``<cache>/<kind>/<sha256><ext>``."""
    suffix = os.path.splitext(path)[1]  # as Path.suffix, without building a Path (per task)
    kind = KINDS.get(suffix, "files")
    return f"{cache_root(transport, board)}/{kind}/{sha256_file(path)}{suffix}"


def _remote_hashes(transport: Transport, paths: Sequence[str]) -> dict[str, str]:
    """``{path: sha256}`` for those of ``paths`` that exist on the board (one command)."""
    if not paths:
        return {}
    result = transport.run(["sha256sum", "--", *paths], timeout=COMMAND_TIMEOUT_S, check=False)
    hashes = {}
    for line in result.stdout.splitlines():
        digest, sep, name = line.partition("  ")
        if sep:
            hashes[name] = digest.lstrip("\\")
    return hashes


def is_present(transport: Transport, board: Any, files: Iterable[Path]) -> bool:
    """Whether the board holds every file, with the right hash."""
    wanted = {remote_path(transport, board, f): sha256_file(f) for f in files}
    found = _remote_hashes(transport, list(wanted))
    return all(found.get(p) == h for p, h in wanted.items())


# -- deploy --------------------------------------------------------------------------------


# Files this process has seen the board hash correctly, with their (size, mtime) then:
# the quick check. Unchanged since, they are not hashed again (rsync's rule); any write
# — a truncation, a half-finished copy, garbage — changes size or mtime and sends the
# file back through the full check. The engine checks an artifact's hash once more
# when it loads it.
_verified: dict[tuple[str, str, str], tuple[int, int]] = {}
_verified_lock = threading.Lock()


def deploy(transport: Transport, board: Any, files: Iterable[Path]) -> DeployReport:
    """Make the board's cache hold ``files``; push only what is missing or wrong."""
    started = time.monotonic()
    report = DeployReport(board=board.name)
    wanted: dict[str, tuple[Path, str]] = {}
    for f in files:
        wanted[remote_path(transport, board, f)] = (Path(f), sha256_file(f))
    unsure = [
        r for r, (_, digest) in wanted.items() if not _still_verified(transport, board, r, digest)
    ]
    found = _remote_hashes(transport, unsure) if unsure else {}
    todo = []
    for remote, (local, digest) in wanted.items():
        if remote not in unsure:
            report.skipped.append(remote)
        elif found.get(remote) == digest:
            report.skipped.append(remote)
            _remember(transport, board, remote, digest)
        else:
            if remote in found:
                report.redone.append(remote)
            todo.append((local, remote, digest))
    if todo:
        dirs = sorted({r.rsplit("/", 1)[0] for _, r, _ in todo})
        transport.run(["mkdir", "-p", "--", *dirs], timeout=COMMAND_TIMEOUT_S)
        for local, remote, digest in todo:
            _push(transport, local, remote, digest)
            _remember(transport, board, remote, digest)
            report.pushed.append(remote)
            report.bytes_pushed += local.stat().st_size
    report.seconds = time.monotonic() - started
    return report


def forget_verified() -> None:
    """Drop the quick-check memory: the next deploy hashes every file on the board again."""
    with _verified_lock:
        _verified.clear()


def _still_verified(transport: Transport, board: Any, remote: str, digest: str) -> bool:
    with _verified_lock:
        seen = _verified.get((board.name, remote, digest))
    return seen is not None and transport.stat(remote) == seen


def _remember(transport: Transport, board: Any, remote: str, digest: str) -> None:
    st = transport.stat(remote)
    if st is not None:
        with _verified_lock:
            _verified[(board.name, remote, digest)] = st


def _push(transport: Transport, local: Path, remote: str, digest: str, attempts: int = 2) -> None:
    """Upload to a temp name, verify the board's hash, rename into place."""
    for attempt in range(1, attempts + 1):
        tmp = f"{remote}{_TMP}{secrets.token_hex(4)}"
        transport.put(local, tmp)
        got = _remote_hashes(transport, [tmp]).get(tmp)
        if got == digest:
            transport.run(["mv", "-f", "--", tmp, remote], timeout=COMMAND_TIMEOUT_S)
            return
        transport.run(["rm", "-f", "--", tmp], timeout=COMMAND_TIMEOUT_S, check=False)
        if attempt == attempts:
            raise TransportError(
                transport.name,
                f"upload of {local.name} arrived corrupted {attempts} times"
                f" (board hash {got}, expected {digest})",
            )


def prune(transport: Transport, board: Any, keep: set[str]) -> list[str]:
    """Remove cache entries whose sha256 is not in ``keep``, and upload leftovers.

    Returns the removed paths. A temp file of an upload running *right now*
    elsewhere would go too: prune when the board is idle.
    """
    root = cache_root(transport, board)
    dirs = [f"{root}/{kind}" for kind in sorted({*KINDS.values(), "files"})]
    listing = transport.run(
        ["find", *dirs, "-type", "f"], timeout=COMMAND_TIMEOUT_S, check=False
    ).stdout.splitlines()
    doomed = []
    for path in listing:
        name = path.rsplit("/", 1)[-1]
        if _TMP in name or name[:64] not in keep:
            doomed.append(path)
    for i in range(0, len(doomed), 200):
        transport.run(["rm", "-f", "--", *doomed[i : i + 200]], timeout=COMMAND_TIMEOUT_S)
    return doomed


_PROBE = (Path(__file__).parent / "engine" / "board.py").read_text()  # runs as `python -c`


class BoardProbe(BaseModel):
    """What ``probe`` found on a board (validated as it arrives: the names are the
    probe script's, so a reader cannot ask for a key the probe never writes)."""

    model_config = ConfigDict(frozen=True)

    python: str
    torch: str | None
    runtimes: list[str] = []  # what the board can run: eager, onnxruntime, executorch, ...
    unavailable: dict[str, str] = {}  # every other runtime, and why not
    machine: str
    cpus: int | None
    cpu_model: str | None
    memory_total_mb: float | None
    memory_available_mb: float | None
    governor: str | None  # cpu0's cpufreq governor; None where the board has no cpufreq
    disk_free_mb: float


def probe(transport: Transport, board: Any) -> BoardProbe:
    """The board's python and torch versions, the runtimes it can run (import checks,
    the ExecuTorch C++ runner built), CPU (model, count, frequency governor), memory
    (total and available) and free disk at the cache."""
    result = transport.run(
        [board.python, "-c", _PROBE, cache_root(transport, board)], timeout=COMMAND_TIMEOUT_S
    )
    try:
        return BoardProbe.model_validate_json(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise TransportError(board.name, f"probe printed no valid JSON: {result.stdout!r}") from e


# -- many boards ---------------------------------------------------------------------------


class DeployResults(dict[str, "DeployReport | BaseException"]):
    """``{board name: DeployReport or the error}``, like fabric's ``GroupResult``."""

    @property
    def succeeded(self) -> dict[str, DeployReport]:
        return {k: v for k, v in self.items() if isinstance(v, DeployReport)}

    @property
    def failed(self) -> dict[str, BaseException]:
        return {k: v for k, v in self.items() if not isinstance(v, DeployReport)}

    @property
    def error(self) -> DeployGroupError | None:
        """One error for the whole fan-out, or None when every board succeeded."""
        return DeployGroupError(self) if self.failed else None

    def raise_for_errors(self) -> None:
        if self.failed:
            raise DeployGroupError(self)


def deploy_many(
    pairs: Iterable[tuple[Any, Sequence[Path]]],
    parallel: int = 16,
    *,
    timeout: float = 600.0,
    connector: Callable[[Any], Transport] = connect,
) -> DeployResults:
    """Deploy to many boards at once; every board gets an outcome, none raises.

    A board still busy after ``timeout`` seconds gets a ``TransportTimeout``
    outcome (its thread ends at the transport's own command timeouts).
    """
    pairs = list(pairs)
    results = DeployResults()
    pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="deploy")
    futures = {pool.submit(_deploy_one, connector, board, files): board for board, files in pairs}
    try:
        done, _ = wait(futures, timeout=timeout)  # _deploy_one never raises
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    for future, board in futures.items():
        if future in done:
            results[board.name] = future.result()
        else:
            results[board.name] = TransportTimeout(
                board.name, f"deploy did not finish within {timeout:g} s"
            )
    return results


def _deploy_one(connector, board, files) -> DeployReport | BaseException:
    """One board's deploy, its error returned rather than raised. A connection this
    call opened is closed after it; one the caller's ``connector`` lent stays open."""
    try:
        transport = connector(board)
    except Exception as e:  # a per-board outcome: the fan-out must go on
        return e
    try:
        return deploy(transport, board, files)
    except Exception as e:
        return e
    finally:
        if connector is connect:
            transport.close()
