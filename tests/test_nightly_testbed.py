"""Two nights on real sshd boards, one board really slower on the second: `farm compare` must
name that cell a regression and no other cell anything but unchanged.

The slowdown is real work, not a doctored number: on the second night board1's
interpreter runs torch with its vector kernels switched off
(``ATEN_CPU_CAPABILITY=default``, oneDNN held to SSE4.1), as on a board whose
torch build lost them. The SVHN CNN's convolutions then take about 1.8× as
long, on an idle machine or a busy one (the work per inference grows; it is
not a matter of getting the CPU). Deep KWS, fully connected layers on MKL,
does not care, and stays a control on the same board. Fewer threads would not
do here: on a two-core machine shared with other jobs, two threads can be
slower than one.

Every board runs one thread, and the job uses two boards so that the test's own
engines do not outnumber the two cores. The threshold is 50%: well below the
slowdown, and above what load alone moves an unchanged cell between two runs a
minute apart on a busy two-core machine (with a load average of 10 a 1 ms
inference is often preempted, and unchanged cells were seen to move by up to 25%,
their intervals reaching 41%). On a quiet lab machine farm's default 5% is the
right threshold; the statistics behind it are measured in benchmarks/regress.py.

The verdicts are asked on CPU time (``--statistic cpu``): the test's own engines
make the machine "busy" by farm's own measure (load of half the CPUs), and a
wall-clock verdict on a busy board is "unreliable" by design. On wall time the
test checks that contract instead: every cell a busy warning touches is
unreliable, and the exit code follows.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
from farmcli import run_farm
from test_farm_ssh import bed_boards, submit, wait, write_inventory

MEASURE = {"iterations": 1000, "warmup": 20, "layers": False, "memory": False, "timeout_s": 120}
JOB = {
    "name": "nightly",
    "isolation": "warm",
    "models": ["kws", "svhn"],
    "targets": [{"boards": ["board0", "board1"]}],
    "measure": MEASURE,
}


def _scalar_python(path, python: str):
    path.write_text(
        "#!/bin/sh\n"
        "export ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41\n"
        f'exec {python} "$@"\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.timing  # the slowed board must be slower than load alone moves a cell
def test_two_nights_one_board_slower(ray_session, testbed, tmp_path, scheduler_cleanup):
    boards = bed_boards(testbed)
    for b in boards:
        b["processors"][0]["threads"] = 1
        # the two boards are one machine's two cores: one lock, so a task never measures
        # beside the other board's (a sibling's svhn made kws's CPU time +79% once)
        b["board_lock"] = f"farm-nightly-bed-{os.getpid()}"
    first = write_inventory(tmp_path / "night1.yaml", boards)
    slow = _scalar_python(tmp_path / "python-scalar", boards[1]["python"])
    second = write_inventory(
        tmp_path / "night2.yaml",
        [{**b, "python": str(slow)} if b["name"] == "board1" else b for b in boards],
    )
    night_ids = []
    for inventory in (first, second):
        actor, job_id, _ = submit(ray_session, tmp_path, inventory, JOB)
        scheduler_cleanup.append(actor)
        assert wait(ray_session, actor, job_id, timeout=600).state == "done"
        night_ids.append(job_id)

    env = {**os.environ, "FARM_DB": str(tmp_path / "farm.db")}
    res = run_farm(
        "compare", "--threshold", "0.5", "--statistic", "cpu", "--format", "json", env=env
    )
    assert res.returncode == 1, res.stderr
    data = json.loads(res.stdout)
    assert (data["baseline"], data["candidate"]) == tuple(night_ids)
    verdicts = {f"{c['model']}/{c['board']}": c for c in data["cells"]}
    for key, c in verdicts.items():  # shown with -s, and in the report of a failure
        print(f"{key}: {c['verdict']} {c['cpu_change']:+.3f}"
              f" [{c['cpu_low']:+.3f}, {c['cpu_high']:+.3f}] p={c['cpu_p_adjusted']:.2g}")  # fmt: skip
    assert len(verdicts) == 4
    slower = verdicts.pop("svhn/board1")
    assert slower["verdict"] == "regression", slower
    assert slower["cpu_high"] > 0.5 and slower["cpu_p_adjusted"] < 1e-6
    assert {k: c["verdict"] for k, c in verdicts.items()} == dict.fromkeys(verdicts, "unchanged"), {
        k: (c["verdict"], c["cpu_change"], c["cpu_low"], c["cpu_high"]) for k, c in verdicts.items()
    }
    # the same verdicts as a person reads them
    table = run_farm(
        "compare", "--threshold", "0.5", "--statistic", "cpu", env={**env, "COLUMNS": "250"}
    )
    assert table.returncode == 1
    line = next(ln for ln in table.stdout.splitlines() if "svhn/board1" in ln)
    assert "regression" in line
    # on wall time, a cell a busy warning touches is unreliable, and the exit code says so
    wall = run_farm("compare", "--threshold", "0.5", "--format", "json", env=env)
    cells = json.loads(wall.stdout)["cells"]
    for c in cells:
        busy = any(w.startswith("board busy") for w in c["warnings"]) or "board busy" in c["why"]
        assert (c["verdict"] == "unreliable") == ("board busy" in c["why"]), c
        if any(w.startswith("board busy") for w in c["warnings"]):  # B's own
            assert c["verdict"] == "unreliable", c
        assert busy or c["verdict"] != "unreliable", c
    verdict_of = {f"{c['model']}/{c['board']}": c["verdict"] for c in cells}
    unreliable = "unreliable" in verdict_of.values()
    expected = 1 if verdict_of["svhn/board1"] == "regression" else (3 if unreliable else 0)
    assert wall.returncode == expected, (wall.returncode, verdict_of)
