"""Bad input costs nothing: the 4 M-task job refused through the CLI.

``farm submit huge.yaml`` of a job whose matrix is 4 models × 1000 thread counts ×
1000 batch sizes (4,000,000 tasks) must be refused (exit 2, one line) in well under
a second, without building the matrix (RSS) and without importing torch or Ray
(the zoo's names are static; ``tests/test_bad_input.py`` checks the imports).

Each round runs, in fresh processes and alternating which goes first:

- ``refusal``: ``python -m farm.cli submit huge.yaml`` (wall and CPU seconds, peak RSS);
- ``python``: ``python -c pass``, the interpreter's own start on this machine, so a
  slow figure on a busy machine can be told from a slow farm.

Figures: the medians over ``ROUNDS`` rounds, the load average before and after
(on a loaded machine, load near or above the core count, the wall target is not
expected to hold, and the figures say why). Prints a table, then one JSON line;
exits 1 when a target is missed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/farm.py sits beside this script: keep this folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import json
import os
import statistics
import subprocess
import tempfile
import time

import yaml

ROUNDS = 7
ROOT = Path(__file__).resolve().parents[1]
WALL_TARGET_S = 1.0
RSS_TARGET_MB = 300.0


def _timed(args: list[str], cwd: Path) -> tuple[float, float, float, int, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS (MB), exit code and stderr of
    one child process."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    started = time.perf_counter()
    child = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    err = child.stderr.read() if child.stderr else ""
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), err


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        job = {"version": 1, "name": "huge", "models": ["kws", "svhn", "deepear", "alexnet"],
               "targets": [{"boards": ["local"]}],
               "variants": {"threads": list(range(1, 1001)), "batch": list(range(1, 1001))}}  # fmt: skip
        (folder / "huge.yaml").write_text(yaml.safe_dump(job))
        runs: dict[str, list[tuple[float, float, float]]] = {"refusal": [], "python": []}
        commands = {
            "refusal": [sys.executable, "-m", "farm.cli", "submit", "huge.yaml", "--db", "f.db"],
            "python": [sys.executable, "-c", "pass"],
        }
        load_before = os.getloadavg()
        for i in range(ROUNDS):
            for name in ["refusal", "python"] if i % 2 == 0 else ["python", "refusal"]:
                wall, cpu, rss, code, err = _timed(commands[name], folder)
                if name == "refusal" and (code != 2 or "4,000,000 tasks" not in err):
                    print(f"the refusal did not happen: exit {code}: {err.strip()}")
                    return 1
                runs[name].append((wall, cpu, rss))
        load_after = os.getloadavg()
        if (folder / "f.db").exists():
            print("the refused submit created its store")
            return 1
    wall = {n: statistics.median(w for w, _, _ in r) for n, r in runs.items()}
    cpu = {n: statistics.median(c for _, c, _ in r) for n, r in runs.items()}
    rss = {n: max(m for _, _, m in r) for n, r in runs.items()}
    table = Table(title=f"bad input: the 4,000,000-task job refused ({ROUNDS} rounds, medians)")
    for col in ("process", "wall s", "CPU s", "peak RSS MB"):
        table.add_column(col, justify="right")
    for name in runs:
        table.add_row(name, f"{wall[name]:.3f}", f"{cpu[name]:.3f}", f"{rss[name]:.0f}")
    Console().print(table)
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} CPUs)")  # fmt: skip
    figures = [
        {"name": "refusal_wall_s", "value": round(wall["refusal"], 3),
         "target": f"<= {WALL_TARGET_S}", "unit": "s"},
        {"name": "refusal_cpu_s", "value": round(cpu["refusal"], 3), "target": "", "unit": "s"},
        {"name": "refusal_peak_rss_mb", "value": round(rss["refusal"], 1),
         "target": f"<= {RSS_TARGET_MB}", "unit": "MB"},
        {"name": "python_start_wall_s", "value": round(wall["python"], 3), "target": "",
         "unit": "s"},
        {"name": "load_before_1m", "value": round(load_before[0], 2), "target": "", "unit": "load"},
        {"name": "load_after_1m", "value": round(load_after[0], 2), "target": "", "unit": "load"},
    ]  # fmt: skip
    print(json.dumps({"benchmark": "farm", "figures": figures}))
    return 0 if wall["refusal"] <= WALL_TARGET_S and rss["refusal"] <= RSS_TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
