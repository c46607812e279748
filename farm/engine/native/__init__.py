"""The ExecuTorch C++ runner: build it on a board, find it, and time a ``.pte`` with it.

``runner.cpp`` (beside this file, shipped in the engine zip) is built with the
board's ``g++`` against the executorch wheel installed in the board's Python:
its headers (``executorch/include``) and its one runtime library, the Python
extension ``extension/pybindings/_portable_lib*.so`` (ExecuTorch's runtime,
portable kernels and the XNNPACK delegate), with
``backends/qualcomm/libqnn_executorch_backend.so`` which defines the tensor and
platform symbols it uses. That library is a Python extension linked against
libtorch and Python's C API, so the runner loads libtorch and libpython (it
never calls them): it needs the wheel, and so torch, on the board. What it
removes is the Python interpreter from the timed loop.

The binary is cached as ``<dir>/runner-<key>`` where ``key`` hashes the source,
the executorch version and the compile command, so a new source or wheel builds
a new runner beside the old; ``runner-<key>.json`` beside it records how it was
built (the board probe reads it). ``<dir>`` is ``$FARM_NATIVE_DIR``, else
``<cache>/native`` for an engine running from ``<cache>/engine/<sha>.zip``, else
``~/.cache/farm/native``.

Standard library only (numpy only inside a session, for the inputs): the board
probe and ``farm board bootstrap`` call :func:`build` and :func:`available`
before anything else is known about the board.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

SOURCE_NAME = "runner.cpp"
COMPILER = "g++"
FLAGS = ("-std=c++17", "-O2", "-DC10_USING_CUSTOM_GENERATED_MACROS")
"""The wheel's c10 headers include a CMake-generated ``cmake_macros.h`` that the wheel
does not ship; this define tells them not to."""
BUILD_TIMEOUT_S = 600.0


class NativeError(RuntimeError):
    """The runner could not be built, started or read."""


def source() -> bytes:
    """``runner.cpp``'s bytes (read through importlib.resources: works from the engine zip)."""
    return importlib.resources.files(__name__).joinpath(SOURCE_NAME).read_bytes()


@dataclass(frozen=True)
class Wheel:
    """The executorch wheel in this Python, as far as the runner needs it."""

    version: str
    root: Path
    include: Path
    portable_lib: Path
    core_lib: Path  # libqnn_executorch_backend.so: TensorImpl, PAL, register_backend
    python_libdir: str
    python_lib: str  # e.g. python3.11, for -l

    def link_args(self) -> list[str]:
        c10 = self.include / "executorch" / "runtime" / "core" / "portable_type" / "c10"
        rpaths = [self.portable_lib.parent, self.core_lib.parent, Path(self.python_libdir)]
        return [
            f"-I{self.include}",
            f"-I{c10}",
            str(self.portable_lib),
            str(self.core_lib),
            f"-L{self.python_libdir}",
            f"-l{self.python_lib}",
            *[f"-Wl,-rpath,{p}" for p in rpaths],
        ]


def wheel() -> Wheel | str:
    """The executorch wheel's parts, or why the runner cannot be built against it."""
    try:
        ver = version("executorch")
    except PackageNotFoundError:
        return f"executorch is not installed in {sys.executable}"
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        return f"executorch {ver} has no package directory in {sys.executable}"
    root = Path(next(iter(spec.submodule_search_locations)))
    include = root / "include"
    ext = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    portable = root / "extension" / "pybindings" / f"_portable_lib{ext}"
    core = root / "backends" / "qualcomm" / "libqnn_executorch_backend.so"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
    for needed in (include / "executorch" / "runtime" / "executor" / "program.h", portable, core):
        if not needed.exists():
            return f"the executorch {ver} wheel lacks {needed.relative_to(root)}"
    if not (ldlib.startswith("lib") and ldlib.endswith(".so")):
        return f"{sys.executable} has no shared libpython (LDLIBRARY={ldlib!r}) to link"
    return Wheel(ver, root, include, portable, core, libdir, ldlib[3:-3])


def key(w: Wheel) -> str:
    """What a built runner depends on: source, executorch version, compile command."""
    h = hashlib.sha256(source())
    h.update(f"\0{w.version}\0{COMPILER}\0{' '.join(FLAGS)}\0{w.root}".encode())
    return h.hexdigest()[:16]


def default_dir() -> Path:
    """Where runners live (see the module's doc)."""
    if os.environ.get("FARM_NATIVE_DIR"):
        return Path(os.environ["FARM_NATIVE_DIR"])
    import farm

    where = Path(farm.__file__).resolve()
    for parent in where.parents:  # <cache>/engine/<sha>.zip/farm/__init__.py
        if parent.suffix == ".zip" and parent.parent.name == "engine":
            return parent.parent.parent / "native"
    return Path("~/.cache/farm/native").expanduser()


def binary(directory: Path | None = None) -> Path | str:
    """The built runner for this wheel and source, or why there is none."""
    w = wheel()
    if isinstance(w, str):
        return w
    path = (directory or default_dir()) / f"runner-{key(w)}"
    if not os.access(path, os.X_OK):
        return (
            f"the ExecuTorch C++ runner is not built at {path} (`farm board bootstrap` builds it)"
        )
    return path


def available(directory: Path | None = None) -> str | None:
    """None when the runner is built here for this wheel, else why not."""
    found = binary(directory)
    return found if isinstance(found, str) else None


def build(directory: Path | None = None) -> tuple[Path, bool]:
    """Build the runner if it is not built yet: ``(path, built_now)``.

    :class:`NativeError` (one line) when there is no wheel, no compiler, or the
    compile fails. Compiled to a temporary name and renamed into place.
    """
    w = wheel()
    if isinstance(w, str):
        raise NativeError(w)
    directory = directory or default_dir()
    path = directory / f"runner-{key(w)}"
    if os.access(path, os.X_OK):
        return path, False
    compiler = shutil.which(COMPILER)
    if compiler is None:
        raise NativeError(f"no C++ compiler ({COMPILER}) on this board")
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
        src = Path(tmp) / SOURCE_NAME
        src.write_bytes(source())
        out = Path(tmp) / "runner"
        cmd = [compiler, *FLAGS, str(src), "-o", str(out), *w.link_args()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            first = next((ln for ln in done.stderr.splitlines() if "error" in ln), done.stderr)
            raise NativeError(f"compiling {SOURCE_NAME} failed: {first.strip()[:300]}")
        meta = {"executorch": w.version, "source_sha256": hashlib.sha256(source()).hexdigest(),
                "command": cmd[:1] + list(FLAGS), "key": key(w)}  # fmt: skip
        Path(f"{path}.json").write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(out, path)
    return path, True


# -- a session: the runner as a warm process -----------------------------------------------


class NativeSession:
    """A ``.pte`` loaded in a runner process (``--serve``): each :meth:`timed_run` is one
    request, so the engine's warm-up request warms the very process it then times."""

    form = "executorch/xnnpack (C++ runner)"
    impl = "native"
    call = None

    def __init__(self, runner: Path, pte: str, manifest: dict[str, Any], threads: int) -> None:
        from farm.engine import bundle

        self.inputs = bundle.example_inputs(manifest)
        self.param_bytes = os.path.getsize(pte)
        self.peak_rss_bytes = 0
        self.load_ns = 0
        self._dir = tempfile.TemporaryDirectory(prefix="farm-native-")
        given = Path(self._dir.name) / "inputs.bin"
        given.write_bytes(b"".join(x.tobytes() for x in self.inputs))
        self._out = Path(self._dir.name) / "outputs.bin"
        argv = [str(runner), "--model", pte, "--threads", str(threads), "--serve",
                "--input", str(given), "--output", str(self._out)]  # fmt: skip
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)  # fmt: skip

    def _request(self, n: int) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(f"{n}\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self._proc.wait(timeout=10)
            why = (self._proc.stderr.read() if self._proc.stderr else "").strip().splitlines()
            raise NativeError(why[-1] if why else f"the runner exited ({self._proc.returncode})")
        answer = json.loads(line)
        self.peak_rss_bytes = max(self.peak_rss_bytes, answer["hwm_kb"] * 1024)
        self.load_ns = answer["load_ns"]
        return answer

    def bare_run(self, n: int) -> int:
        """ns for ``n`` inferences in a loop with no clock reading between them (benchmarks)."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"bare {n}\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise NativeError(f"the runner exited ({self._proc.wait(timeout=10)})")
        return int(json.loads(line)["bare_ns"])

    def timed_run(self, n: int) -> Any:
        from farm.engine.timing import Timed

        answer = self._request(n)
        return Timed.from_ns(answer["begin_ns"], answer["end_ns"])

    def output(self) -> Any:
        """The first output of one more inference, as float32 numpy."""
        import numpy as np

        self._request(1)
        return np.frombuffer(self._out.read_bytes(), dtype=np.float32).copy()

    def profile(self, iterations: int) -> None:
        return None  # ETDump's headers are not in the wheel (see docs/internals.md)

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._dir.cleanup()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: best effort
            self.close()


def load(path: str, manifest: dict[str, Any], threads: int) -> NativeSession:
    """Start a runner on the artifact's ``.pte`` (:class:`NativeError` if none is built)."""
    from farm.engine import bundle

    found = binary()
    if isinstance(found, str):
        raise NativeError(found)
    pte = bundle.extract(path, bundle.MEMBERS[bundle.KIND_PTE])
    return NativeSession(found, pte, manifest, threads)


def main(argv: list[str] | None = None) -> int:
    """``python -m farm.engine.native build|check [--dir DIR]``."""
    import argparse

    p = argparse.ArgumentParser(prog="farm.engine.native", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["build", "check"])
    p.add_argument("--dir", type=Path, default=None, help="where runners live")
    args = p.parse_args(argv)
    if args.command == "check":
        found = binary(args.dir)
        print(found, file=sys.stdout if isinstance(found, Path) else sys.stderr)
        return 0 if isinstance(found, Path) else 1
    try:
        path, built = build(args.dir)
    except NativeError as e:
        print(f"farm.engine.native: {e}", file=sys.stderr)
        return 1
    print(f"{'built' if built else 'already built'}: {path}")
    return 0
