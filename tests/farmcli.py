"""Run the `farm` command as a person would: a subprocess, its output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_farm(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300):
    """``python -m farm.cli ARGS`` with a wide terminal; a RAY_ADDRESS from the caller's
    shell is dropped so the embedded default is what runs unless ``env`` says otherwise."""
    full = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    full.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "farm.cli", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
