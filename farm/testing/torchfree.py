"""A Python without torch, for the test bed's torch-free board.

A board that runs only ONNX Runtime needs a Python with ``onnxruntime`` and
``numpy`` and nothing else: the engine itself is standard library. This module
builds such an interpreter once per machine — a plain venv (never
``--system-site-packages``: this machine's own site-packages hold torch) with
exactly the ``onnxruntime`` and ``numpy`` versions installed here — and caches
it under ``$FARM_TESTBED_CACHE`` (default ``~/.cache/farm/testbed``), keyed by
those versions and the interpreter's, so a new pin builds a new venv beside
the old one.

``deploy/install.sh`` builds it (``python3 -m farm.testing.torchfree build``),
so a test run downloads nothing; the test bed only looks it up
(:func:`python`) and says how to build it when it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

PACKAGES = ("onnxruntime", "numpy")
"""What the torch-free board's Python holds, at the versions installed on this machine."""


class TorchFreeMissing(RuntimeError):
    """The torch-free venv is not built on this machine."""


def pins() -> list[str]:
    """``name==version`` of each package, as installed here (deploy/constraints.txt's pins)."""
    return [f"{name}=={version(name)}" for name in PACKAGES]


def cache_root() -> Path:
    default = Path("~/.cache/farm/testbed").expanduser()
    return Path(os.environ.get("FARM_TESTBED_CACHE") or default)


def venv_dir() -> Path:
    """Where this machine keeps the venv for the current pins and interpreter."""
    py = f"py{sys.version_info[0]}.{sys.version_info[1]}"
    key = "-".join(p.replace("==", "-") for p in pins())
    return cache_root() / f"torchfree-{py}-{key}"


def python() -> Path:
    """The torch-free interpreter; :class:`TorchFreeMissing` if it was never built."""
    exe = venv_dir() / "bin" / "python"
    if not (venv_dir() / "ready").exists():
        raise TorchFreeMissing(
            f"no torch-free Python at {venv_dir()}: build it with"
            " `python3 -m farm.testing.torchfree build` (deploy/install.sh does)"
        )
    return exe


def build(constraints: Path | None = None) -> Path:
    """Build the venv if absent (pip downloads the wheels); returns its interpreter.

    A half-built venv (no ``ready`` mark) is removed and built again.
    """
    target = venv_dir()
    if (target / "ready").exists():
        return target / "bin" / "python"
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    exe = target / "bin" / "python"
    pip = [str(exe), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if constraints is not None and constraints.exists():
        pip += ["-c", str(constraints)]
    subprocess.run([*pip, *pins()], check=True)
    check = subprocess.run(
        [str(exe), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
        capture_output=True,
        text=True,
        check=True,
    )
    if check.stdout.strip() != "True":
        raise RuntimeError(f"{exe} imports torch: the venv is not torch-free")
    (target / "ready").write_text("\n".join(pins()) + "\n")
    return exe


def main(argv: list[str] | None = None) -> int:
    """``python3 -m farm.testing.torchfree build|path``."""
    import argparse

    p = argparse.ArgumentParser(prog="farm.testing.torchfree", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["build", "path"])
    p.add_argument("--constraints", type=Path, default=None, help="pip constraints file")
    args = p.parse_args(argv)
    if args.command == "build":
        print(build(args.constraints))
        return 0
    try:
        print(python())
    except TorchFreeMissing as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
