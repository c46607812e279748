"""The `farm` command end to end, as a newcomer runs it: real Ray, real engine, real SQLite."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from farmcli import run_farm as farm


@pytest.fixture
def env(tmp_path):
    return {
        "FARM_DB": str(tmp_path / "farm.db"),
        "FARM_CACHE": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_submit_small_job_then_read_results(tmp_path, env):
    job = write(
        tmp_path / "job.yaml",
        """\
        version: 1
        name: tiny
        models: [kws, svhn]
        targets: [{boards: [local]}]
        measure: {iterations: 40, warmup: 2, layer_iterations: 3}
        """,
    )
    inv = write(
        tmp_path / "inv.yaml",
        """\
        version: 1
        boards:
          - name: local
            transport: local
            cache_dir: %s
            processors:
              - {name: cpu, device: cpu, threads: 1}
              - {name: tiny, device: cpu, threads: 1, memory_mb: 1}
        """
        % (tmp_path / "board"),
    )
    proc = farm("submit", str(job), "-i", str(inv), "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "kws" in proc.stdout and "svhn" in proc.stdout
    assert "does not fit" in proc.stdout  # the 1 MB processor: like the paper's "-" cells

    data = json.loads(farm("results", "latest", "--format", "json", env=env).stdout)
    by_key = {(r["model"], r["processor"]): r for r in data["results"]}
    assert len(by_key) == 4
    ok = by_key[("kws", "cpu")]
    assert ok["state"] == "done"
    assert ok["n"] == 40 and ok["min_ms"] <= ok["median_ms"] <= ok["max_ms"]
    assert ok["result"]["memory"]["required_mb"] > 0.9  # 240,919 float32 parameters
    assert len(ok["result"]["layers"]) >= 7
    tiny = by_key[("svhn", "tiny")]
    assert tiny["state"] == "does-not-fit"
    assert tiny["required_mb"] > tiny["available_mb"] == 1

    csv = farm("results", data["job"]["id"], "--format", "csv", env=env)
    assert csv.returncode == 0 and csv.stdout.count("\n") == 5

    status = farm("status", env=env)
    assert data["job"]["id"] in status.stdout

    logs = farm("logs", ok["task"], env=env)
    assert "deploying" in logs.stdout and "running" in logs.stdout and "done" in logs.stdout


def test_bad_job_is_one_line_exit_2_and_nothing_started(tmp_path, env):
    job = write(
        tmp_path / "bad.yaml",
        """\
        version: 1
        name: bad
        models: [kws]
        targets: [{boards: [local]}]
        measure:
          iterations: -5
        """,
    )
    proc = farm("submit", str(job), env=env)
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr
    assert "bad.yaml:6" in lines[0] and "iterations" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not Path(env["FARM_DB"]).exists()  # nothing started


def test_unknown_model_and_missing_file(tmp_path, env):
    job = write(
        tmp_path / "j.yaml",
        """\
        version: 1
        name: j
        models: [resnet9000]
        targets: [{boards: [local]}]
        """,
    )
    proc = farm("submit", str(job), env=env)
    assert proc.returncode == 2 and "j.yaml:3" in proc.stderr and "resnet9000" in proc.stderr
    proc = farm("submit", str(tmp_path / "nope.yaml"), env=env)
    assert proc.returncode == 2 and "nope.yaml" in proc.stderr and "Traceback" not in proc.stderr


def test_models_list_and_schema():
    proc = farm("models", "list", env={"COLUMNS": "200"})
    assert proc.returncode == 0
    assert "60,965,224" in proc.stdout and "240,919" in proc.stdout and "313,546" in proc.stdout
    schema = json.loads(farm("schema", "job").stdout)
    assert "properties" in schema and "models" in schema["properties"]
    assert farm("schema", "nonsense").returncode == 2


def test_a_users_own_model_runs_the_same_way(tmp_path, env):
    (tmp_path / "mymodels.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))\n"
    )
    job = write(
        tmp_path / "job.yaml",
        """\
        version: 1
        name: mine
        models:
          - {name: mine, module: "mymodels:build", input_shape: [1, 16]}
        targets: [{boards: [local]}]
        measure: {iterations: 30, warmup: 2, layer_iterations: 3}
        """,
    )
    proc = farm("submit", str(job), "--quiet", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = json.loads(farm("results", "latest", "--format", "json", env=env).stdout)
    result = data["results"][0]["result"]
    # the graph's own entry/exit is the last row
    assert [row["type"] for row in result["layers"]] == ["Linear", "ReLU", "Linear", "Graph"]
    assert [row["params"] for row in result["layers"]] == [16 * 32 + 32, 0, 32 * 4 + 4, 0]
    # ReLU on 32 numbers costs about what a hook pair does, so its time may net to zero;
    # what must hold is that it is counted as the nonlinear layer
    assert [row["nonlinear"] for row in result["layers"]] == [False, True, False, False]
    assert 0.0 <= result["layer_pass"]["nonlinear_share"] <= 1.0
    # timed as the user's exported program; the layer pass timed the same graph's nodes
    assert result["model_form"] == "exported"
    assert result["layer_pass"]["model_form"] == "exported"


def _piped(*args: str, tmp_path: Path):
    """``farm ARGS`` with stderr a pipe and no COLUMNS: what a cron job or CI sees."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "RAY_ADDRESS")}
    env["FARM_CACHE"] = str(tmp_path / "cache")
    return subprocess.run(
        [sys.executable, "-m", "farm.cli", *args], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def test_an_error_is_one_unwrapped_line_and_its_text_is_not_markup(tmp_path):
    kind = "an-inventory-kind-whose-name-is-far-longer-than-any-terminal-is-wide-" * 2 + "[b]x[/b]"
    proc = _piped("schema", kind, tmp_path=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and kind in proc.stderr, proc.stderr


def test_inventory_check_names_each_hostile_board_once(tmp_path, testbed):
    import yaml

    good = testbed.board_specs()[0]
    bad = [{"name": "dots", "transport": "ssh", "host": "a..b", "processors": [{"name": "cpu"}]},
           {"name": "longname", "transport": "ssh", "host": "x" * 64 + ".example",
            "processors": [{"name": "cpu"}]}]  # fmt: skip
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump({"version": 1, "boards": [good, *bad]}))
    proc = _piped("inventory", "check", "-i", str(inv), tmp_path=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    for line, board in zip(lines, bad, strict=True):
        assert line.startswith(f"{board['name']}: connect to ") and "not a valid host name" in line
        assert line.count(board["name"]) == 1, line
    assert "board0" in proc.stdout  # the good board was checked and reported too
