"""The CLI as people meet it: usage mistakes, pipes, formats, and no Ray for reading."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest
from farmcli import ROOT, run_farm

from farm.result import EngineResult
from farm.spec import Measure, ModelRef, PlannedTask
from farm.states import JobState, TaskState
from farm.store import Store

LONG = "a-model-with-a-rather-long-name-for-a-table"


@pytest.fixture
def db(tmp_path):
    """A store holding one finished job, written the way the scheduler writes it."""
    path = tmp_path / "farm.db"
    store = Store(path)
    task = PlannedTask(
        index=0, key=f"{LONG}/local/cpu", model=ModelRef(name=LONG, zoo="kws"), board="local",
        processor="cpu", variant={"threads": 1}, measure=Measure(), candidates=["local"],
    )  # fmt: skip
    store.add_job("piped-1", "piped", {"name": "piped"}, [task])
    store.set_job_state("piped-1", JobState.RUNNING)
    store.transition("piped-1.0", TaskState.DEPLOYING, attempt=1)
    store.transition("piped-1.0", TaskState.RUNNING)
    result = EngineResult.model_validate(
        {"status": "ok", "latency": {"n": 40, "mean_ms": 0.123456789, "median_ms": 0.1189}}
    )
    store.finish("piped-1.0", TaskState.DONE, board="local", result=result)
    store.set_job_state("piped-1", JobState.DONE)
    store.set_board_health("local", "healthy", 0, None)
    store.close()
    return path


def _farm_piped(*args, db=None):
    """The CLI with stdout a pipe and no COLUMNS: what `farm ... | cat` gets."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "RAY_ADDRESS")}
    if db is not None:
        env["FARM_DB"] = str(db)
    return subprocess.run(
        [sys.executable, "-m", "farm.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args, says",
    [
        (["submit"], "Missing"),
        (["submit", "jobs/smoke.yaml", "--no-such-option"], "--no-such-option"),
        (["no-such-command"], "no-such-command"),
        (["results", "--format", "xml"], "xml"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, says):
    proc = run_farm(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr
    assert says in lines[0] and "Traceback" not in proc.stderr


def test_a_piped_listing_is_whole(db):
    proc = _farm_piped("results", "latest", db=db)
    assert proc.returncode == 0, proc.stderr
    assert LONG in proc.stdout and "0.123" in proc.stdout
    assert "…" not in proc.stdout
    status = _farm_piped("status", db=db)
    assert "piped-1" in status.stdout and "…" not in status.stdout


def test_every_listing_verb_speaks_json_and_csv(db):
    status = json.loads(_farm_piped("status", "--format", "json", db=db).stdout)
    jobs = status["jobs"]
    assert status["boards"] == [
        {"board": "local", "state": "healthy", "failures": 0, "last error": None,
         "performance": None}
    ]  # fmt: skip
    assert jobs[0]["job"] == "piped-1" and jobs[0]["state"] == "done"
    tasks = list(
        csv.DictReader(
            io.StringIO(_farm_piped("status", "piped-1", "--format", "csv", db=db).stdout)
        )
    )
    assert tasks[0]["task"] == "piped-1.0" and tasks[0]["state"] == "done"
    results = json.loads(_farm_piped("results", "--format", "json", db=db).stdout)
    assert results["results"][0]["model"] == LONG
    log = json.loads(_farm_piped("logs", "piped-1.0", "--format", "json", db=db).stdout)
    assert [row["line"].split()[0] for row in log] == [
        "[queued]", "[deploying]", "[running]", "[done]",
    ]  # fmt: skip
    models = list(
        csv.DictReader(io.StringIO(_farm_piped("models", "list", "--format", "csv").stdout))
    )
    assert {m["name"]: int(m["params"]) for m in models}["kws"] == 240_919


def test_reading_results_never_imports_ray(db):
    """`farm results` / `farm status` on a laptop read the store file: no Ray."""
    code = (
        "import sys\n"
        "import farm.cli\n"
        "for argv in (['results', 'latest'], ['status'], ['logs', 'piped-1.0']):\n"
        "    sys.argv = ['farm', *argv]\n"
        "    try:\n"
        "        farm.cli.main()\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, (argv, exit.code)\n"
        "print('RAY LOADED' if 'ray' in sys.modules else 'NO RAY')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "RAY_ADDRESS")}
    env["FARM_DB"] = str(db)  # stdout a pipe and no COLUMNS: every table cell whole
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("NO RAY"), proc.stdout
    assert LONG in proc.stdout


def test_a_missing_job_is_an_input_error(db):
    proc = _farm_piped("results", "nope", db=db)
    assert proc.returncode == 2 and "no job 'nope'" in proc.stderr


@pytest.mark.parametrize("kind, folder", [("job", "jobs"), ("inventory", "inventory")])
def test_farm_schema_accepts_every_example_file(kind, folder):
    """An editor given `farm schema` must not mark the shipped examples red."""
    import jsonschema
    import yaml

    proc = run_farm("schema", kind)
    assert proc.returncode == 0, proc.stderr
    validator = jsonschema.Draft202012Validator(json.loads(proc.stdout))
    files = sorted((ROOT / folder).glob("*.yaml"))
    assert files
    for path in files:
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert errors == [], (path.name, errors)
    if kind == "job":  # and it still refuses what the loader refuses
        bad = {"version": 1, "name": "x", "models": [5], "targets": [{"boards": ["b"]}]}
        assert list(validator.iter_errors(bad))


def test_the_cli_reaches_the_head_only_through_the_client():
    import ast

    tree = ast.parse((ROOT / "farm" / "cli.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not {m for m in imported if m == "ray" or m.startswith(("ray.", "farm.scheduler"))}


def test_logs_say_why_a_task_failed_or_was_retried(tmp_path):
    path = tmp_path / "farm.db"
    store = Store(path)
    task = PlannedTask(
        index=0, key="kws/board1/cpu", model=ModelRef(name="kws", zoo="kws"), board="board1",
        processor="cpu", variant={}, measure=Measure(), candidates=["board1"],
    )  # fmt: skip
    store.add_job("hk-1", "hk", {"name": "hk"}, [task])
    store.transition("hk-1.0", TaskState.DEPLOYING, board="board1", attempt=1)
    store.transition("hk-1.0", TaskState.QUEUED, error="BoardUnreachable: board1: reset by peer")
    store.transition("hk-1.0", TaskState.DEPLOYING, board="board1", attempt=2)
    changed = "HostKeyMismatch: board1: the host key of 127.0.0.1 changed"
    store.transition("hk-1.0", TaskState.FAILED, error=changed)
    store.close()
    lines = run_farm("logs", "hk-1.0", "--db", str(path)).stdout.splitlines()
    assert any(line.endswith(f"[failed] board1: {changed}") for line in lines), lines
    assert any("[queued] board1: BoardUnreachable: board1: reset by peer" in ln for ln in lines)


@pytest.mark.parametrize("columns", [80, 60])
def test_a_narrow_terminal_drops_columns_never_cuts_a_number(tmp_path, columns):
    from rich.cells import cell_len

    path = tmp_path / "farm.db"
    store = Store(path)
    tasks = [
        PlannedTask(index=i, key=f"{m}/local/cpu/threads={t}", model=ModelRef(name=m, zoo=m),
                    board="local", processor="cpu", variant={"threads": t}, measure=Measure(),
                    candidates=["local"])
        for i, (m, t) in enumerate([("deepear", 1), ("alexnet", 16)])
    ]  # fmt: skip
    store.add_job("w-1", "w", {"name": "w"}, tasks)
    store.set_job_state("w-1", JobState.RUNNING)
    for task in ("w-1.0", "w-1.1"):
        store.transition(task, TaskState.DEPLOYING, attempt=1)
        store.transition(task, TaskState.RUNNING)
        latency = {"n": 40, "mean_ms": 16.123456, "median_ms": 16.1189, "p99_ms": 17.5,
                   "ci95_low_ms": 16.0, "ci95_high_ms": 16.3, "cold_ms": 120.55}  # fmt: skip
        memory = {"required_mb": 233.4, "peak_rss_mb": 1201.2}
        result = EngineResult.model_validate({"status": "ok", "latency": latency, "memory": memory})
        store.finish(task, TaskState.DONE, board="local", result=result)
    store.set_job_state("w-1", JobState.DONE)
    store.close()
    shown = run_farm("results", "w-1", "--db", str(path), env={"COLUMNS": str(columns)}).stdout
    assert "…" not in shown, shown
    assert all(cell_len(line) <= columns for line in shown.splitlines()), shown
    assert shown.count("16.123 ± 0.150") == 2, shown  # the mean and its CI, whole
    assert "not shown at" in shown and "cold" in shown.split("not shown at")[1], shown
