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


_USER_NETS = """\
from torch import nn
from torch.nn import functional as F


class Residual(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.a = nn.Conv2d(width, width, 3, padding=1)
        self.b = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.b(F.relu(self.a(x))))
        return self.head(x.mean((2, 3)))


def mlp():
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
"""


def test_a_users_own_models_run_as_their_eager_code(tmp_path, env):
    """``module:`` models run on the board as the user's own code, their package shipped
    beside the artifact under its sha256; an edited package ships again."""
    import zipfile

    from farm.engine.files import sha256_file

    nets = tmp_path / "usernets" / "nets.py"
    nets.parent.mkdir()
    (nets.parent / "__init__.py").write_text("")
    nets.write_text(_USER_NETS)
    job = write(
        tmp_path / "job.yaml",
        """\
        version: 1
        name: mine
        models:
          - {name: mine, module: "usernets.nets:mlp", input_shape: [1, 16]}
          - {name: resid, module: "usernets.nets:Residual", input_shape: [1, 3, 16, 16],
             options: {width: 6}}
        targets: [{boards: [local]}]
        measure: {iterations: 30, warmup: 2, layer_iterations: 3}
        """,
    )
    # after an edit, only what ships and runs matters: one model, no layer pass
    again_job = write(
        tmp_path / "again.yaml",
        """\
        version: 1
        name: again
        models: [{name: mine, module: "usernets.nets:mlp", input_shape: [1, 16]}]
        targets: [{boards: [local]}]
        measure: {iterations: 30, warmup: 2, layers: false}
        """,
    )
    board = tmp_path / "board"
    inv = write(
        tmp_path / "inv.yaml",
        f"""\
        version: 1
        boards:
          - name: local
            transport: local
            cache_dir: {board}
            processors: [{{name: cpu, device: cpu, threads: 1}}]
        """,
    )

    def submit(job: Path) -> dict[str, dict]:
        proc = farm("submit", str(job), "-i", str(inv), "--quiet", cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        data = json.loads(farm("results", "latest", "--format", "json", env=env).stdout)
        return {r["model"]: r["result"] for r in data["results"]}

    def shipped() -> dict[str, bytes]:
        """Each package in the board's cache, by name, with its nets.py; names are hashes."""
        found = {}
        for pkg in (board / "artifacts").glob("*.pkg"):
            assert pkg.name == f"{sha256_file(pkg)}.pkg"
            with zipfile.ZipFile(pkg) as zf:
                assert zf.namelist() == ["usernets/__init__.py", "usernets/nets.py"]
                found[pkg.name] = zf.read("usernets/nets.py")
        return found

    results = submit(job)
    assert set(results) == {"mine", "resid"}
    for result in results.values():  # timed as written; the layer pass ran a named export
        assert result["model_form"] == "eager"
        assert result["layer_pass"]["model_form"] == "exported"
        assert result["layer_pass"]["attribution"] == "graph nodes"
        assert result["env"]["threads"] == 1
        assert not any("torch.export" in w for w in result["warnings"])
    mine = results["mine"]
    # the graph's own entry/exit is the last row
    assert [row["type"] for row in mine["layers"]] == ["Linear", "ReLU", "Linear", "Graph"]
    assert [row["kind"] for row in mine["layers"]] == ["linear", "nonlinear", "linear", "graph"]
    assert [row["params"] for row in mine["layers"]] == [16 * 32 + 32, 0, 32 * 4 + 4, 0]
    # ReLU on 32 numbers costs about what a tick does, so its time may net to zero;
    # what must hold is that it is counted as the nonlinear layer
    assert [row["nonlinear"] for row in mine["layers"]] == [False, True, False, False]
    relu = mine["layers"][1]
    assert mine["layer_pass"]["nonlinear_share"] == pytest.approx(relu["share"])
    assert [row["input_bytes"] for row in mine["layers"][:3]] == [4 * 16, 4 * 32, 4 * 32]
    # the functional ReLUs and the skip addition are the root module's own work
    resid_rows = {(row["module"], row["kind"], row["type"]) for row in results["resid"]["layers"]}
    assert resid_rows >= {
        ("stem", "conv", "Conv2d"),
        ("a", "conv", "Conv2d"),
        ("b", "conv", "Conv2d"),
        ("head", "linear", "Linear"),
        ("", "nonlinear", "Residual"),
        ("", "elementwise", "Residual"),
    }
    first = shipped()
    assert list(first.values()) == [_USER_NETS.encode()]
    for name, result in results.items():  # every model ran from the package shipped
        model = result["env"]["model"]
        assert model["kind"] == "module" and model["factory"].startswith("usernets.nets:")
        assert list(first) == [f"{model['package_sha256']}.pkg"], name
    assert results["resid"]["env"]["model_class"] == "usernets.nets.Residual"

    nets.write_text(_USER_NETS + "\n# edited\n")
    (edited,) = submit(again_job).values()
    assert edited["model_form"] == "eager" and edited["layer_pass"] is None
    again = shipped()
    assert len(again) == 2 and set(first) < set(again)
    assert sorted(again.values()) == sorted(
        [_USER_NETS.encode(), (_USER_NETS + "\n# edited\n").encode()]
    )


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


def test_inventory_check_refuses_hostile_host_names_when_reading(tmp_path, testbed):
    """``a..b`` and a label over 63 characters are no host: the inventory is refused when
    read (exit 2, file:line:field), before any board is contacted."""
    import yaml

    good = testbed.board_specs()[0]
    for host in ("a..b", "x" * 64 + ".example"):
        bad = {"name": "bad", "transport": "ssh", "host": host, "processors": [{"name": "cpu"}]}
        inv = tmp_path / "inv.yaml"
        inv.write_text(yaml.safe_dump({"version": 1, "boards": [good, bad]}))
        proc = _piped("inventory", "check", "-i", str(inv), tmp_path=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{inv}:" in lines[0] and "boards[1].host" in lines[0], lines
        assert "not a host name or address" in lines[0] and not proc.stdout, proc.stdout
