"""Transports against the real thing: subprocesses, and OpenSSH sshd on loopback."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import types
import uuid
from pathlib import Path

import pytest
from testbed_fixtures import board_spec

from farm.errors import (
    BoardUnreachable,
    CommandFailed,
    HostKeyMismatch,
    TransportTimeout,
    UnknownHostKey,
    UserError,
)
from farm.procs import started
from farm.spec import Board
from farm.testing import transport as fake
from farm.testing.testbed import BoardClass
from farm.transport import Transport, connect, register, registered, shell_command

REPO = Path(__file__).resolve().parents[1]
ECHO = "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\n"
INJECTIONS = ["x; touch {p}", "$(touch {p})", "`touch {p}`", "x && touch {p}", "'; touch {p}; '"]


def _local_board(**kw):
    return types.SimpleNamespace(name="here", transport="local", python=sys.executable, **kw)


def _pids_running(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


def _gone(marker: str, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _pids_running(marker):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def ssh(testbed):
    transport = connect(board_spec(testbed, "board0"))
    yield transport
    transport.close()


# -- registry -------------------------------------------------------------------------------


def test_registry_knows_the_builtins_and_refuses_a_duplicate():
    assert {"local", "ssh", "fake"} <= set(registered())
    with pytest.raises(ValueError, match="already registered"):

        @register("ssh", board=Board)
        class Impostor(Transport):  # pragma: no cover - never instantiated
            pass

    assert registered()["ssh"].__name__ == "SSHTransport"


def test_unknown_transport_is_a_user_error():
    with pytest.raises(UserError, match="unknown transport 'telnet'"):
        connect(types.SimpleNamespace(name="b", transport="telnet"))


def test_shell_command_quotes_every_element():
    assert shell_command(["echo", "a b", "x;y"]) == "echo 'a b' 'x;y'"
    with pytest.raises(ValueError):
        shell_command([])


# -- local ----------------------------------------------------------------------------------


def test_local_run_put_and_failures(tmp_path):
    t = connect(_local_board())
    result = t.run(
        [sys.executable, "-c", "import sys; print(sys.stdin.read()[::-1])"],
        timeout=10,
        stdin=b"abc",
    )
    assert result.ok and result.stdout.strip() == "cba"
    with pytest.raises(CommandFailed) as info:
        t.run(["sh", "-c", "echo nope >&2; exit 4"], timeout=10)
    assert info.value.result.exit_code == 4 and "nope" in str(info.value)
    assert t.run(["no-such-program-farm"], timeout=10, check=False).exit_code == 127
    start = time.monotonic()
    with pytest.raises(TransportTimeout):
        t.run(["sleep", "5"], timeout=0.3)
    assert time.monotonic() - start < 3
    src = tmp_path / "a.bin"
    src.write_bytes(b"\x00\x01" * 1000)
    t.put(src, str(tmp_path / "b.bin"))
    assert (tmp_path / "b.bin").read_bytes() == src.read_bytes()
    with pytest.raises(CommandFailed):
        t.put(src, str(tmp_path / "missing-dir" / "b.bin"))


def test_local_channel_lines_timeout_and_kill():
    t = connect(_local_board())
    ch = t.open_process([sys.executable, "-c", ECHO])
    ch.send_line("hello")
    assert ch.read_line(10) == "HELLO"
    with pytest.raises(TransportTimeout):
        ch.read_line(0.2)
    ch.close()
    assert ch.exit_status == 0 and not ch.alive
    ch = t.open_process([sys.executable, "-c", "import time; time.sleep(60)"])
    ch.kill()
    assert ch.exit_status == -9 and ch.read_line(1) == ""


# -- ssh: commands --------------------------------------------------------------------------


def test_ssh_run_round_trip_reuses_one_connection(ssh, testbed):
    result = ssh.run(
        ["sh", "-c", 'echo "out $1"; echo err >&2; exit 3', "sh", "a b"], timeout=10, check=False
    )
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out a b\n", "err\n")
    with pytest.raises(CommandFailed) as info:
        ssh.run(["false"], timeout=10)
    assert info.value.result.exit_code == 1 and info.value.board == "board0"
    first = ssh._transport()
    assert ssh.run(["cat"], timeout=10, stdin=b"x" * 3_000_000).stdout == "x" * 3_000_000
    assert ssh._transport() is first
    assert ssh.home() == str(testbed.board("board0").dir)  # each board its own home


def test_ssh_signal_death_is_reported_as_128_plus_signal(ssh):
    assert ssh.run(["sh", "-c", "kill -9 $$"], timeout=10, check=False).exit_code == 137


@pytest.mark.parametrize("template", INJECTIONS)
def test_ssh_arguments_arrive_as_data(ssh, tmp_path, template):
    pwned = tmp_path / f"pwned-{uuid.uuid4().hex}"
    value = template.format(p=pwned)
    result = ssh.run(["printf", "%s", value], timeout=10)
    assert result.stdout == value
    assert not pwned.exists()


def test_ssh_command_timeout_kills_the_remote_process(ssh):
    marker = f"{31 + uuid.uuid4().int % 1000 / 1000:.3f}"
    start = time.monotonic()
    with pytest.raises(TransportTimeout, match=r"did not finish within 0\.5 s"):
        ssh.run(["sleep", marker], timeout=0.5)
    assert time.monotonic() - start < 3
    assert _gone(f"sleep\x00{marker}")


def test_ssh_put_and_errors(ssh, testbed, tmp_path):
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(3_000_001))
    dst = testbed.boards[0].dir / "blob.bin"
    ssh.put(src, str(dst))
    assert dst.read_bytes() == src.read_bytes()
    with pytest.raises(CommandFailed):
        ssh.put(src, str(testbed.boards[0].dir / "no" / "such" / "dir.bin"))


def test_ssh_channel_round_trip_close_and_kill(ssh):
    ch = ssh.open_process([sys.executable, "-c", ECHO])
    for word in ("one", "two; rm -rf /nope"):
        ch.send_line(word)
        assert ch.read_line(10) == word.upper()
    with pytest.raises(TransportTimeout):
        ch.read_line(0.3)
    assert ch.alive
    ch.close()
    assert ch.exit_status == 0 and not ch.alive
    marker = f"farm-test-{uuid.uuid4().hex}"
    ch = ssh.open_process([sys.executable, "-c", f"import time  # {marker}\ntime.sleep(60)"])
    deadline = time.monotonic() + 5
    while not _pids_running(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids_running(marker)
    ch.kill()
    assert _gone(marker) and ch.read_line(1) == ""


def test_ssh_channel_reports_exit_and_stderr(ssh):
    ch = ssh.open_process(
        [sys.executable, "-c", "import sys; print('bye', file=sys.stderr); sys.exit(5)"]
    )
    assert ch.read_line(10) == ""
    assert ch.exit_status == 5 and "bye" in ch.stderr_tail and "farm-pid" not in ch.stderr_tail


def test_ssh_warm_engine_channel(ssh):
    argv = ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "farm.engine", "serve"]
    ch = ssh.open_process(argv)
    try:
        ch.send_line(json.dumps({"id": 1, "op": "clock"}))
        startup = Board.model_fields[
            "startup_timeout_s"
        ].default  # the first answer: torch's import
        reply = json.loads(ch.read_line(startup))
        assert reply["id"] == 1 and reply["ok"] and reply["result"]["t_ns"] > 0
        ch.send_line(json.dumps({"id": 2, "op": "nonsense"}))
        reply = json.loads(ch.read_line(10))
        assert reply["id"] == 2 and reply["ok"] is False and "unknown op" in reply["error"]
    finally:
        ch.close()
    assert ch.exit_status == 0


def test_ssh_engine_stops_mid_run_when_its_farm_goes_away(testbed, tmp_path):
    """A killed head drops its connections; the engine, deep in a long run that reads
    nothing, must stop then, not measure on beside the next farm's task (issue #11)."""
    from farm import zoo

    artifact = str(zoo.export("kws", cache_dir=tmp_path).path)
    transport = connect(board_spec(testbed, "board0"))
    argv = ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "farm.engine", "serve"]
    ch = transport.open_process(argv)
    try:
        ch.send_line(json.dumps({"id": 1, "op": "ping"}))
        pid = json.loads(ch.read_line(Board.model_fields["startup_timeout_s"].default))
        pid = pid["result"]["pid"]
        request = {"artifact": artifact, "iterations": 10_000_000, "threads": 1}
        ch.send_line(json.dumps({"id": 2, "op": "run", "request": request}))
        assert started(pid) is not None
    finally:
        transport.close()  # the connection ends as a killed head's does: no word, no kill
    deadline = time.monotonic() + 60
    while started(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started(pid) is None


# -- ssh: host keys and broken boards -------------------------------------------------------


def test_unknown_host_key_is_refused(testbed, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(UnknownHostKey) as info:
        connect(board_spec(testbed, "board1", known_hosts=str(empty)))
    message = str(info.value)
    assert "board1" in message and str(empty) in message and "SHA256:" in message
    assert empty.read_text() == ""


def test_trust_on_first_use_records_the_key(testbed, tmp_path):
    known = tmp_path / "sub" / "known_hosts"
    board = board_spec(testbed, "board1", known_hosts=str(known), trust_on_first_use=True)
    connect(board).close()
    port = testbed.board("board1").port
    assert known.read_text().startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")
    strict = board_spec(testbed, "board1", known_hosts=str(known), trust_on_first_use=False)
    t = connect(strict)
    assert t.run(["true"], timeout=10).ok
    t.close()
    assert len(known.read_text().splitlines()) == 1


def test_changed_host_key_is_refused(make_testbed):
    bed = make_testbed(1)
    assert connect(board_spec(bed, "board0")).run(["true"], timeout=10).ok
    bed.rekey("board0")
    for tofu in (False, True):  # TOFU never overrides a key it already holds
        with pytest.raises(HostKeyMismatch) as info:
            connect(board_spec(bed, "board0", trust_on_first_use=tofu))
        assert "board0" in str(info.value) and str(bed.known_hosts) in str(info.value)


def test_dead_port_is_unreachable_quickly(testbed):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(BoardUnreachable):
        connect(board_spec(testbed, "board0", port=port))
    assert time.monotonic() - start < 2


def test_stopped_board_times_out_within_the_connect_timeout(make_testbed):
    bed = make_testbed(1)
    board = board_spec(bed, "board0", connect_timeout_s=1)
    live = connect(board)
    bed.stop("board0")
    try:
        start = time.monotonic()
        with pytest.raises(TransportTimeout):
            connect(board)
        assert time.monotonic() - start < 4
        start = time.monotonic()
        with pytest.raises(TransportTimeout):
            live.run(["true"], timeout=1)
        assert time.monotonic() - start < 6
    finally:
        bed.cont("board0")
        live.close()


def test_board_memory_limit_applies_to_every_command(make_testbed):
    bed = make_testbed(classes=[BoardClass(threads=1, memory_mb=512)])
    t = connect(board_spec(bed, "board0"))
    assert t.run(["sh", "-c", "ulimit -v"], timeout=10).stdout.strip() == str(512 * 1024)
    big = t.run([sys.executable, "-c", "b = bytearray(1024 * 2**20)"], timeout=30, check=False)
    assert big.exit_code != 0 and "MemoryError" in big.stderr
    t.close()


def test_restarted_board_is_reached_again(make_testbed):
    bed = make_testbed(1)
    t = connect(board_spec(bed, "board0"))
    assert t.run(["true"], timeout=10).ok
    bed.kill("board0")
    with pytest.raises(BoardUnreachable):
        connect(board_spec(bed, "board0"))
    bed.restart("board0")
    assert t.run(["echo", "back"], timeout=10).stdout == "back\n"  # reconnects by itself
    t.close()


# -- fake -----------------------------------------------------------------------------------


def test_fake_board_answers_the_engine_protocol(tmp_path):
    fake.reset()
    board = types.SimpleNamespace(name="f0", transport="fake", python="python3")
    t = connect(board)
    with pytest.raises(BoardUnreachable):
        t.open_process(["python3", "/home/farm/engine.zip", "serve"])  # nothing deployed
    t.run(["mkdir", "-p", "--", "/home/farm/c"], timeout=1)
    src = tmp_path / "e.zip"
    src.write_bytes(b"zip")
    t.put(src, "/home/farm/c/e.zip")
    ch = t.open_process(["python3", "/home/farm/c/e.zip", "serve"])
    ch.send_line(
        json.dumps({"id": 7, "op": "run", "request": {"artifact": "/nope", "iterations": 5}})
    )
    reply = json.loads(ch.read_line(1))
    assert reply["id"] == 7 and reply["result"]["status"] == "error"
    t.put(src, "/home/farm/c/m.farm")
    ch.send_line(
        json.dumps(
            {"id": 8, "op": "run", "request": {"artifact": "/home/farm/c/m.farm", "iterations": 5}}
        )
    )
    result = json.loads(ch.read_line(1))["result"]
    assert (
        result["status"] == "ok"
        and result["latency"]["n"] == 5
        and result["latency"]["mean_ms"] == 0
    )
    markers = result["markers"]
    assert (
        len(markers["t_ns"])
        == len(markers["kind"])
        == len(markers["iteration"])
        == len(markers["layer"])
    )
    with pytest.raises(TransportTimeout):
        ch.read_line(0.1)
    assert t.run(["telnet"], timeout=1, check=False).exit_code == 127
    fake.set_down("f0")
    with pytest.raises(BoardUnreachable):
        connect(board)
    fake.reset()
