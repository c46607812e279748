"""The board lease: one measurement per board across processes, farms and hosts.

The unit tests drive the board-side holder (``python -m farm.engine lease``)
through the real local transport; the last test runs two embedded ``farm submit``
on the same sshd boards at once and checks, from the markers each stored, that
no two measurements ever overlapped on a board.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

import farm as farm_package
from farm.engine import measuring
from farm.errors import BoardBusy, TransportTimeout
from farm.scheduler.lease import BoardLease, holder
from farm.spec import Board
from farm.store import Store
from farm.transport import connect

LOCAL = Board.model_validate({"name": "here", "processors": [{"name": "cpu"}]})


def _process(path, ttl: float = 60):
    """A board-side lease process for the lock file ``path``, on this machine."""
    argv = [sys.executable, "-m", "farm.engine", "lease", str(path), f"--ttl={ttl:g}"]
    return connect(LOCAL).open_process(argv)


def _lease(channel, task: str, *, wait_s: float = 30, log=None) -> BoardLease:
    return BoardLease(
        channel,
        60,
        who=holder(task, "job-x"),
        board="here",
        wait_s=wait_s,
        log=log or (lambda line: None),
    )


def test_a_second_holder_is_told_who_holds_the_board(tmp_path):
    lines: list[str] = []
    mine, theirs = _process(tmp_path / "lease"), _process(tmp_path / "lease")
    with (
        _lease(mine, "task-a"),
        pytest.raises(BoardBusy) as caught,
        _lease(theirs, "task-b", wait_s=0.5, log=lines.append),
    ):
        pytest.fail("two holders at once")
    assert "task-a" in str(caught.value) and f"pid {os.getpid()}" in str(caught.value)
    assert lines and "here is in use by host" in lines[0] and "task-a" in lines[0]
    assert not theirs.alive  # a lease given up on is killed: it must not take the lock later
    with _lease(_process(tmp_path / "lease"), "task-c", wait_s=5):  # released: free at once
        pass
    mine.close()


def test_one_process_takes_and_releases_the_lock_for_task_after_task(tmp_path):
    mine, theirs = _process(tmp_path / "lease"), _process(tmp_path / "lease")
    for n in range(3):
        with _lease(mine, f"task-{n}"):
            pass
        with _lease(theirs, f"other-{n}", wait_s=5):  # free between our tasks
            pass
    assert mine.alive and theirs.alive
    mine.close()
    theirs.close()


def test_the_lock_frees_itself_when_its_holder_is_killed(tmp_path):
    first = _process(tmp_path / "lease")
    _lease(first, "task-a").__enter__()
    got: list[float] = []

    def second():
        with _lease(_process(tmp_path / "lease"), "task-b", wait_s=60):
            got.append(time.monotonic())

    waiter = threading.Thread(target=second)
    waiter.start()
    time.sleep(0.5)
    assert not got  # still held
    killed = time.monotonic()
    os.kill(first.proc.pid, signal.SIGKILL)  # the holder dies without a word
    waiter.join(30)
    assert got and got[0] >= killed


def test_a_task_that_timed_out_gives_the_board_up_without_asking(tmp_path):
    """A board that stopped answering the task would not answer a release either: its
    lease process is killed at once (the lock goes with it), not asked and waited for."""
    channel = _process(tmp_path / "lease")
    sent: list[str] = []
    send = channel.send_line
    channel.send_line = lambda line: (sent.append(json.loads(line)["op"]), send(line))[1]
    with pytest.raises(TransportTimeout), _lease(channel, "task-a"):
        raise TransportTimeout("here", "the engine did not answer")
    assert sent == ["acquire"] and not channel.alive
    free = _process(tmp_path / "lease")
    with _lease(free, "task-b", wait_s=5):  # the lock went with the killed process
        pass
    free.close()


def test_a_holder_that_stops_renewing_loses_the_lock(tmp_path):
    # a holder whose station hung: stdin stays open, nothing more arrives
    hung = subprocess.Popen(
        [sys.executable, "-m", "farm.engine", "lease", str(tmp_path / "lease"), "--ttl=1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        hung.stdin.write(b'{"op": "acquire", "holder": {}}\n')
        hung.stdin.flush()
        assert b"held" in hung.stdout.readline()
        with _lease(_process(tmp_path / "lease"), "task-b", wait_s=30):
            assert hung.wait(timeout=30) == 0  # it let go by itself
    finally:
        hung.kill()
        hung.wait()


def test_two_embedded_farms_never_measure_on_one_board_at_once(testbed, tmp_path):
    """Two lab members' farms: each its own inventory, cache directory (as two home
    directories give) and store, the same boards."""
    job = {
        "version": 1,
        "name": "shared",
        # two tasks per board per farm: each farm measures on each board, and twice,
        # so a farm's turn falls between the other's
        "models": ["kws"],
        "targets": [{"boards": ["board0", "board1"]}],
        "variants": {"threads": [1, 2], "batch": [1, 2]},
        "measure": {"iterations": 200, "warmup": 2, "layers": False, "memory": False},
    }
    job_path = tmp_path / "job.yaml"
    job_path.write_text(yaml.safe_dump(job))
    farms = []
    for n in (1, 2):
        env = {**os.environ, "FARM_CACHE": str(tmp_path / f"cache{n}"), "COLUMNS": "200"}
        env.pop("RAY_ADDRESS", None)
        boards = [{**b, "cache_dir": str(tmp_path / f"home{n}" / b["name"])}
                  for b in testbed.board_specs()]  # fmt: skip
        inventory = tmp_path / f"inventory{n}.yaml"
        inventory.write_text(yaml.safe_dump({"version": 1, "boards": boards}))
        argv = ["submit", str(job_path), "-i", str(inventory), "--quiet"]
        argv += ["--db", str(tmp_path / f"farm{n}.db")]
        farms.append(
            subprocess.Popen(
                [sys.executable, "-m", "farm.cli", *argv],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for farm in farms:
        _out, err = farm.communicate(timeout=600)
        assert farm.returncode == 0, err[-2000:]
    spans: dict[str, list[tuple[int, int, str]]] = {}
    for n in (1, 2):
        store = Store(tmp_path / f"farm{n}.db")
        tasks = store.tasks(store.job("latest").id)
        assert len(tasks) == 8 and all(t.state == "done" for t in tasks)
        for t in tasks:
            m = store.markers(t.id)
            kinds = [m["kinds"][k] for k in m["kind"]]
            begin = m["t_ns"][kinds.index("task_begin")]
            end = m["t_ns"][kinds.index("task_end")]
            spans.setdefault(t.board, []).append((begin, end, f"farm{n}"))
    for board, found in spans.items():
        found.sort()
        assert {f for *_, f in found} == {"farm1", "farm2"}  # both farms measured there
        for a, b in itertools.pairwise(found):
            assert a[1] <= b[0], f"{board}: {a} overlaps {b}"


def _other_account_python() -> list[str]:
    """A python another account (``nobody``) can run, with this tree on its path: the
    lease process is standard library only."""
    for python in (sys.executable, "/usr/bin/python3"):
        try:
            probe = subprocess.run([python, "-c", "import farm.engine.lease"], user=NOBODY,
                                   env=_nobody_env(), cwd="/", capture_output=True)  # fmt: skip
        except PermissionError:  # not this one (a home only its owner enters)
            continue
        if probe.returncode == 0:
            return [python]
    raise AssertionError("no python the nobody account can run (install python3)")


NOBODY = 65534


def _nobody_env() -> dict[str, str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(farm_package.__file__)))
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": root, "HOME": "/"}


def test_two_accounts_on_one_board_exclude_each_other_and_a_killed_holder_frees_it(tmp_path):
    """The lock is the board's, not an account's: root holds it, ``nobody`` (another
    account, another cache directory, nothing shared but the board) waits; the holder is
    killed and the other account has it at once (the kernel, not the 60 s time to live)."""
    name = f"farm-test-{os.getpid()}-{time.monotonic_ns()}"  # a bare name: /run/lock
    path = measuring.resolve(name + ".lease")
    try:
        mine = _process(name + ".lease")
        _lease(mine, "task-root").__enter__()
        assert os.stat(path).st_mode & 0o777 == 0o666  # every account may open it
        theirs = subprocess.Popen(
            [*_other_account_python(), "-m", "farm.engine", "lease", name + ".lease"],
            user=NOBODY, env=_nobody_env(), cwd="/", text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            theirs.stdin.write('{"op": "acquire", "holder": {"task": "task-nobody"}}\n')
            theirs.stdin.flush()
            busy = json.loads(theirs.stdout.readline())
            assert "busy" in busy and busy["busy"]["task"] == "task-root", busy
            killed = time.monotonic()
            os.kill(mine.proc.pid, signal.SIGKILL)  # the holder dies without a word
            held = json.loads(theirs.stdout.readline())
            waited = time.monotonic() - killed
            assert held["held"]["task"] == "task-nobody"
            assert waited < 10, waited  # the time to live is 60 s: the kernel let it go
        finally:
            theirs.kill()
            theirs.communicate()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def test_the_engine_measuring_lock_is_the_boards_whoever_runs_it(tmp_path):
    """The engine's own lock: an account's engine holding it keeps another account's
    waiting; a file another account created is opened without O_CREAT."""
    name = f"farm-test-{os.getpid()}-{time.monotonic_ns()}.measuring"
    path = measuring.resolve(name)
    code = ("import sys, time; from farm.engine import measuring\n"
            "with measuring.hold(sys.argv[1], 'task-nobody') as w:\n"
            "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n"
            "    print(time.monotonic_ns(), flush=True)\n")  # fmt: skip
    try:
        theirs = subprocess.Popen(
            [*_other_account_python(), "-c", code, name, "1.5"], user=NOBODY,
            env=_nobody_env(), cwd="/", text=True, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert theirs.stdout.readline().strip() == "held"
        assert os.stat(path).st_uid == NOBODY
        with measuring.hold(name, "task-root") as waited:
            began = time.monotonic_ns()
        assert began > int(theirs.stdout.readline())  # we began after their last moment held
        assert waited.seconds > 0.2 and "task task-nobody" in waited.warning()
        theirs.wait()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
