"""``farm board bootstrap`` readies fresh test-bed boards, and a second run changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from farmcli import run_farm

from farm import bootstrap, spec
from farm.testing.testbed import GATEWAY


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots``: (size, mtime ns) — what a change would move."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if path.is_file():
                st = path.stat()
                found[str(path)] = (st.st_size, st.st_mtime_ns)
    return found


def _fingerprint(public_key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True)
    return out.stdout.split()[1]


def _rows(stdout: str) -> dict[tuple[str, str], str]:
    """``(board, step) -> result`` from the report table (the board is named on its first row)."""
    rows, board = {}, ""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 4 and cells[1]:
            board = cells[0] or board
            rows[(board, cells[1])] = cells[2]
    return rows


def test_bootstrap_readies_fresh_boards_and_a_second_run_changes_nothing(make_testbed, tmp_path):
    bed = make_testbed(n=1, behind=1)
    known = tmp_path / "known_hosts"  # nothing known yet: a fresh lab
    known.write_text("")
    boards = [
        {**b, "known_hosts": str(known), "cache_dir": str(tmp_path / b["name"] / "cache")}
        for b in bed.board_specs()
    ]
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"version": 1, "boards": boards}, sort_keys=False))
    env = {"FARM_CACHE": str(tmp_path / "farm")}

    refused = run_farm("board", "bootstrap", "-i", str(inventory), env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert _rows(refused.stdout)[("board0", "connect")] == "failed"
    assert "SHA256:" in refused.stdout and "trust_on_first_use" in refused.stdout
    assert known.read_text() == "" and not (tmp_path / "board0").exists()

    first = run_farm("board", "bootstrap", "-i", str(inventory), "--trust-host-key", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    rows = _rows(first.stdout)
    for name in ("board0", "behind0"):
        assert [rows[(name, s)] for s in ("python", "torch")] == ["ok", "ok"]
        steps = ("connect", "cache", "engine", "facts")
        assert [rows[(name, s)] for s in steps] == ["changed"] * 4
        key = _fingerprint(bed.board(name).host_key.with_suffix(".pub"))
        assert key in first.stdout
        facts = json.loads((tmp_path / "farm" / "boards" / f"{name}.json").read_text())
        assert facts["host_key"] == f"ssh-ed25519 {key}" and facts["cpus"] == os.cpu_count()
        assert facts["memory_total_mb"] > 0 and facts["cpu_model"]
        assert not {"password", "identity_file"} & set(facts)
        assert list((tmp_path / name / "cache" / "engine").glob("*.zip"))
    recorded = known.read_text().splitlines()  # the boards' keys and the gateway's
    gateway = bed.board(GATEWAY)
    assert len(recorded) == 3
    assert any(r.startswith(f"[{gateway.address}]:{gateway.port} ") for r in recorded)

    before = _snapshot(tmp_path / "board0", tmp_path / "behind0", tmp_path / "farm" / "boards")
    known_before = known.read_bytes()
    again = run_farm("board", "bootstrap", "-i", str(inventory), "--trust-host-key", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(_rows(again.stdout).values()) == {"ok"}
    after = _snapshot(tmp_path / "board0", tmp_path / "behind0", tmp_path / "farm" / "boards")
    assert after == before and known.read_bytes() == known_before


def test_a_board_without_torch_is_told_how_to_install_it(testbed, tmp_path):
    no_site = tmp_path / "python-without-torch"  # the same python, blind to site-packages
    no_site.write_text(f'#!/bin/sh\nexec {os.path.realpath(sys.executable)} -S "$@"\n')
    no_site.chmod(0o755)
    doc = {**testbed.board_specs()[0], "python": str(no_site), "cache_dir": str(tmp_path / "c")}
    board = spec.Board.model_validate(doc)
    engine = tmp_path / "engine.zip"
    engine.write_bytes(b"engine")
    report = bootstrap.bootstrap(board, engine=engine, facts_dir=tmp_path / "facts")
    steps = {s.name: s for s in report.steps}
    assert not report.ok and steps["python"].status == "ok"
    want = bootstrap.head_torch()
    assert steps["torch"].status == "failed"
    assert f"{no_site} -m pip install 'torch=={want}'" in steps["torch"].detail
    assert steps["engine"].status == "changed"  # the rest still happened
    assert json.loads((tmp_path / "facts" / "board0.json").read_text())["torch"] is None


def test_unknown_board_names_are_bad_input(tmp_path):
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("version: 1\nboards: [{name: only, processors: [{name: cpu}]}]\n")
    proc = run_farm("board", "bootstrap", "-i", str(inventory), "nope")
    assert proc.returncode == 2 and "no board called 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr
