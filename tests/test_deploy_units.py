"""The systemd units in deploy/systemd/ load cleanly: `systemd-analyze verify` says nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "deploy" / "systemd"
INSTALLED = "/usr/local/bin/farm"  # where the units expect `pip install` to have put farm


def test_units_verify_cleanly(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail(
            "systemd-analyze is missing: run `bash deploy/install.sh` (it installs systemd)"
        )
    farm = shutil.which("farm")
    if farm is None:
        pytest.fail("the farm command is not installed: run `bash deploy/install.sh`")
    # verify checks that each command exists: point the units at this machine's farm
    for unit in UNITS.glob("farm-*"):
        text = unit.read_text()
        assert INSTALLED in text or unit.suffix == ".timer", unit.name
        (tmp_path / unit.name).write_text(text.replace(INSTALLED, str(Path(farm).resolve())))
    shutil.copy(tmp_path / "farm-station@.service", tmp_path / "farm-station@lab1.service")
    names = ["farm-head.service", "farm-station@lab1.service", "farm-nightly.service",
             "farm-nightly.timer"]  # fmt: skip
    res = subprocess.run(
        [analyze, "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    complaints = [
        ln for ln in (res.stdout + res.stderr).splitlines() if "farm" in ln or "/tmp" in ln
    ]
    assert res.returncode == 0 and not complaints, res.stdout + res.stderr
    timer = (UNITS / "farm-nightly.timer").read_text()
    assert "Unit=farm-nightly.service" in timer and "Persistent=true" in timer


def test_environment_file_names_every_variable_the_units_use():
    env = dict(
        line.split("=", 1)
        for line in (UNITS / "farm.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    used = set()
    for unit in UNITS.glob("farm-*.service"):
        for word in unit.read_text().replace("}", "{").split("{"):
            if word.startswith("FARM_"):
                used.add(word)
    assert used and used <= env.keys(), used - env.keys()
