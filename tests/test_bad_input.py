"""Bad input costs nothing: a huge matrix is counted, not built; measure values have upper
bounds; a refused submit starts nothing and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from farmcli import ROOT, run_farm

from farm import spec

LOCAL = """
version: 1
boards:
  - name: local
    processors: [{name: cpu}]
"""


def _job(path: Path, **fields) -> Path:
    doc = {"version": 1, "name": "j", "models": ["kws"], "targets": [{"boards": ["local"]}]}
    path.write_text(yaml.safe_dump({**doc, **fields}))
    return path


_PEAK_OF_CLI = """
import sys
peak_file, sys.argv = sys.argv[1], sys.argv[2:]
from farm import cli
try:
    cli.main()
finally:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(peak_file, "w").write(line.split()[1])
"""


def test_a_four_million_task_job_is_counted_and_refused_not_built(tmp_path):
    huge = _job(tmp_path / "huge.yaml", models=["kws", "svhn", "deepear", "alexnet"],
                variants={"threads": list(range(1, 1001)), "batch": list(range(1, 1001))})  # fmt: skip
    inv = spec.parse_inventory(LOCAL, file="inv.yaml")
    job = spec.load_job(huge, inventory=inv, known_models=["kws", "svhn", "deepear", "alexnet"])
    assert spec.count(job, inv) == 4_000_000
    # the command, in a process of its own: refused, one line, exit 2, little memory
    # The child's own peak is its VmHWM at exit: wait4's ru_maxrss would also count the
    # parent's pages at fork/exec time (a pytest worker holding torch reads ~450 MB).
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    peak = tmp_path / "peak_kb"
    argv = ["farm", "submit", str(huge), "--db", str(tmp_path / "f.db")]
    child = subprocess.run(
        [sys.executable, "-c", _PEAK_OF_CLI, str(peak), *argv],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
    )  # fmt: skip
    err = child.stderr
    assert child.returncode == 2, err
    assert "4,000,000 tasks, more than max_tasks 200,000" in err and "huge.yaml:" in err
    assert len(err.strip().splitlines()) == 1
    assert int(peak.read_text()) < 300 * 1024, peak.read_text()  # kB: the matrix was never built
    assert not (tmp_path / "f.db").exists()
    # a job may raise its limit
    allowed = _job(tmp_path / "ok.yaml", max_tasks=3, variants={"threads": [1, 2, 3]})
    assert (
        len(spec.plan(spec.load_job(allowed, inventory=inv, known_models=["kws"]), inv).tasks) == 3
    )
    over = _job(tmp_path / "over.yaml", max_tasks=2, variants={"threads": [1, 2, 3]})
    res = run_farm("submit", str(over), "--dry-run")
    assert res.returncode == 2 and "more than max_tasks 2" in res.stderr


def test_measure_values_have_upper_bounds_named_in_the_message(tmp_path):
    cases = [
        ({"iterations": 99999999999999999999999999}, "1000000"),
        ({"iterations": 1_000_000_000}, "1000000"),
        ({"warmup": 10**12}, "1000000"),
        ({"layer_iterations": 10**9}, "100000"),
        ({"timeout_s": float("inf")}, "finite"),
        ({"timeout_s": 10**9}, "604800"),
    ]
    for measure, bound in cases:
        job = _job(tmp_path / "j.yaml", measure=measure)
        res = run_farm("submit", str(job), "--dry-run")
        assert res.returncode == 2 and bound in res.stderr and "measure." in res.stderr, (
            measure, res.stderr)  # fmt: skip
        assert "Traceback" not in res.stderr


def test_a_refused_submit_starts_nothing_and_a_dry_run_prints_the_matrix(tmp_path):
    db = tmp_path / "farm.db"
    job = _job(tmp_path / "j.yaml", variants={"threads": [1, 2]})
    dry = run_farm("submit", str(job), "--dry-run", "--db", str(db))
    assert dry.returncode == 0, dry.stderr
    assert "kws/local/cpu/threads=1" in dry.stdout and "kws/local/cpu/threads=2" in dry.stdout
    assert "2 tasks" in dry.stdout and not db.exists()
    detach = run_farm("submit", str(job), "--detach", "--db", str(db))
    assert detach.returncode == 2 and "--detach needs a running head" in detach.stderr
    assert not db.exists()
    user = _job(tmp_path / "u.yaml", models=[
        {"name": "mine", "module": "nosuchpkg.models:build", "input_shape": [1, 16]}])  # fmt: skip
    res = run_farm("submit", str(user), "--db", str(db))
    assert res.returncode == 2 and "nosuchpkg" in res.stderr and "u.yaml:" in res.stderr, res.stderr
    assert not db.exists()
    # the job's own fault is said before an unreachable head is tried
    far = run_farm("submit", str(_job(tmp_path / "bad.yaml", measure={"iterations": 10**12})),
                   "--address", "127.0.0.1:1")  # fmt: skip
    assert far.returncode == 2 and "iterations" in far.stderr, far.stderr


def test_bad_ports_and_unwritable_out_folders_are_one_line(tmp_path):
    from farm.spec import Measure, ModelRef, PlannedTask
    from farm.store import Store

    port = run_farm("head", "start", "--port", "99999", "--db", str(tmp_path / "h.db"))
    assert port.returncode == 2 and "--port" in port.stderr and "65535" in port.stderr
    assert len(port.stderr.strip().splitlines()) == 1 and not (tmp_path / "h.db").exists()
    db = tmp_path / "farm.db"
    store = Store(db)
    task = PlannedTask(index=0, key="kws/b/cpu", model=ModelRef(name="kws", zoo="kws"), board="b",
                       processor="cpu", variant={}, measure=Measure(), candidates=["b"])  # fmt: skip
    store.add_job("j-1", "j", {"name": "j"}, [task])
    store.close()
    for command in (["report", "latest"], ["metrics", "backfill"]):
        res = run_farm(*command, "--out", "/proc/x", "--db", str(db))
        assert res.returncode == 2, (command, res.stderr)
        assert res.stderr.strip().splitlines() == [
            "error: --out /proc/x: cannot make that folder: No such file or directory"
        ], res.stderr


PROBE = """
import runpy, sys
sys.argv = ["farm", *sys.argv[1:]]
try:
    runpy.run_module("farm.cli", run_name="__main__")
except SystemExit as e:
    heavy = sorted(m for m in ("torch", "ray", "numpy") if m in sys.modules)
    print("EXIT", e.code, "HEAVY", ",".join(heavy) or "-", file=sys.stderr)
"""


def test_a_refused_submit_never_imports_torch_or_ray(tmp_path):
    """Validation needs the zoo's names, not its models: a bad job is refused before torch
    (seconds to import) or Ray loads. The time it takes is benchmarks/bad_input.py's."""
    huge = _job(tmp_path / "huge.yaml", models=["kws", "svhn", "deepear", "alexnet"],
                variants={"threads": list(range(1, 1001)), "batch": list(range(1, 1001))})  # fmt: skip
    bad = _job(tmp_path / "bad.yaml", models=["nosuchmodel"])
    ok = _job(tmp_path / "ok.yaml")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    for args, code in (([str(huge)], 2), ([str(bad)], 2), ([str(huge), "--address", "127.0.0.1:1"], 2),
                       ([str(ok), "--dry-run"], 0)):  # fmt: skip
        res = subprocess.run([sys.executable, "-c", PROBE, "submit", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert f"EXIT {code} HEAVY -" in res.stderr, (args, res.stderr)
