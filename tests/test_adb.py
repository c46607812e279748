"""``transport: adb``: Android devices through the adb client. We have no phone: a fake
``adb`` (``farm.testing.adb``, the real client's command line and error words) runs the
device's side on this machine, so everything farm sends goes through adb's argv."""

from __future__ import annotations

import json
import sys
import uuid

import pytest
import yaml

from farm import spec
from farm.errors import BoardUnreachable, CommandFailed, SpecError
from farm.testing import adb
from farm.transport import connect, registered
from farm.transport.adb import AdbBoard, AdbTransport

SERIAL = "0123456789ABCDEF"


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """The fake client first on PATH, one device; returns its directory."""
    where = tmp_path / "bin"
    adb.install(where, [SERIAL])
    monkeypatch.setenv("PATH", f"{where}:{__import__('os').environ['PATH']}")
    return where


def _board(tmp_path, **changes) -> AdbBoard:
    home = tmp_path / "device"
    home.mkdir(exist_ok=True)
    doc = {"name": "phone", "transport": "adb", "serial": SERIAL, "home": str(home),
           "python": sys.executable, "processors": [{"name": "cpu"}], **changes}  # fmt: skip
    return spec.Board.model_validate(doc)


def test_an_adb_board_is_its_own_model_registered_with_its_transport():
    inv = spec.parse_inventory(
        "version: 1\nboards:\n  - name: phone\n    transport: adb\n    serial: 192.168.1.7:5555\n"
        "    processors: [{name: cpu, paper: snapdragon-800-cpu}]\n"
    )
    board = inv.boards[0]
    assert type(board) is AdbBoard and board.serial == "192.168.1.7:5555"
    assert board.home == "/data/local/tmp" and board.adb == "adb"
    assert not hasattr(board, "host") and not hasattr(board, "known_hosts")
    assert registered()["adb"] is AdbTransport and AdbTransport.board_model is AdbBoard
    assert spec.Board.model_validate(board.model_dump(mode="json")) == board


@pytest.mark.parametrize(
    ("lines", "line", "field", "words"),
    [
        (
            ["    processors: [{name: cpu}]"],
            3,
            "boards[0].serial",
            "required when transport is adb",
        ),
        (
            ["    serial: X1", "    host: phone.lan", "    processors: [{name: cpu}]"],
            6,
            "boards[0].host",
            "unknown key 'host'",
        ),
        (
            ["    serial: X1", "    seriall: X2", "    processors: [{name: cpu}]"],
            6,
            "boards[0].seriall",
            "did you mean 'serial'",
        ),
        (
            ["    serial: -s", "    processors: [{name: cpu}]"],
            5,
            "boards[0].serial",
            "not an adb serial",
        ),
    ],
    ids=["no-serial", "ssh-field", "typo", "option-as-serial"],
)
def test_adb_board_mistakes_are_one_line_with_file_line_and_field(lines, line, field, words):
    text = "\n".join(["version: 1", "boards:", "  - name: phone", "    transport: adb", *lines])
    with pytest.raises(SpecError) as err:
        spec.parse_inventory(text + "\n", file="inventory/phones.yaml")
    e = err.value
    assert (e.file, e.line, e.field) == ("inventory/phones.yaml", line, field), str(e)
    assert words in e.message and "\n" not in str(e)


def test_commands_go_through_adb_shell_quoted(fake_adb, tmp_path):
    hostile = "x; touch pwned"
    with connect(_board(tmp_path)) as t:
        result = t.run(["printf", "%s|", hostile, "two words"], timeout=30)
        assert result.stdout == "x; touch pwned|two words|"
        failed = t.run(["sh", "-c", "echo oops >&2; exit 3"], timeout=30, check=False)
        assert (failed.exit_code, failed.stderr) == (3, "oops\n")
        with pytest.raises(CommandFailed):
            t.run(["false"], timeout=30)
        own = t.run(["sh", "-c", "echo 'error: model not found' >&2; exit 1"], timeout=30,
                    check=False)  # fmt: skip
        assert own.exit_code == 1  # the command's words, not adb's: the board is there
        assert t.run(["cat"], timeout=30, stdin=b"in").stdout == "in"
    assert not (tmp_path / "pwned").exists() and not (fake_adb / "pwned").exists()
    calls = adb.calls(fake_adb)
    assert calls[0] == ["-s", SERIAL, "get-state"]
    assert calls[1] == ["-s", SERIAL, "shell", "printf '%s|' 'x; touch pwned' 'two words'"]


def test_files_go_with_push_and_pull_and_tilde_is_the_device_home(fake_adb, tmp_path):
    board = _board(tmp_path)
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\x00\x01" * 1000)
    with connect(board) as t:
        t.run(["mkdir", "-p", t.expand("~/cache")], timeout=30)
        t.put(source, "~/cache/w.bin")
        assert t.stat("~/cache/w.bin")[0] == 2000
        assert t.stat("~/cache/absent") is None
        t.fetch("~/cache/w.bin", tmp_path / "back.bin")
        with pytest.raises(CommandFailed, match="failed to stat remote object"):
            t.fetch("~/cache/absent", tmp_path / "x")
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    assert (tmp_path / "device" / "cache" / "w.bin").exists()
    verbs = [c[2:] for c in adb.calls(fake_adb) if c[2] in ("push", "pull")]
    home = board.home
    assert verbs[0] == ["push", str(source), f"{home}/cache/w.bin"]
    assert verbs[1] == ["pull", f"{home}/cache/w.bin", str(tmp_path / "back.bin")]


def test_an_unknown_serial_is_unreachable_in_adbs_words(fake_adb, tmp_path):
    with pytest.raises(BoardUnreachable, match="error: device 'NOPE' not found"):
        connect(_board(tmp_path, serial="NOPE"))
    t = AdbTransport(_board(tmp_path, serial="NOPE"))  # unplugged after connecting
    with pytest.raises(BoardUnreachable, match="device 'NOPE' not found"):
        t.run(["true"], timeout=30)
    with pytest.raises(BoardUnreachable, match="device 'NOPE' not found"):
        t.put(tmp_path, "~/x")


def test_a_missing_adb_client_is_unreachable(tmp_path):
    with pytest.raises(BoardUnreachable, match="cannot run the adb client"):
        connect(_board(tmp_path, adb=str(tmp_path / "no-adb")))


def test_the_engine_channel_speaks_json_lines_through_adb_shell(fake_adb, tmp_path):
    echo = (
        "import sys, json\nfor line in sys.stdin: print(json.dumps(json.loads(line)), flush=True)"
    )
    with connect(_board(tmp_path)) as t:
        chan = t.open_process([sys.executable, "-c", echo])
        chan.send_line(json.dumps({"op": "ping", "x": "a'b"}))
        assert json.loads(chan.read_line(timeout=60)) == {"op": "ping", "x": "a'b"}
        chan.close()
        assert chan.exit_status == 0


FAST = {"iterations": 20, "warmup": 1, "layers": False, "memory": False, "timeout_s": 300}


def test_a_job_runs_end_to_end_on_an_adb_board(ray_session, tmp_path, scheduler_cleanup):
    """Through real Ray (a station actor), the real engine deployed with adb push and
    started with adb shell on the fake device."""
    from test_farm_ssh import submit, wait

    bin_dir = tmp_path / "bin"
    client = adb.install(bin_dir, [SERIAL])
    home = tmp_path / "device"
    home.mkdir()
    inventory = {
        "version": 1,
        "boards": [{
            "name": "phone", "transport": "adb", "serial": SERIAL, "adb": str(client),
            "home": str(home), "python": sys.executable, "cache_dir": "~/farm",
            "board_lock": str(tmp_path / f"lock-{uuid.uuid4().hex[:8]}"),
            "tags": ["adb"], "processors": [{"name": "cpu", "threads": 1}],
        }],
    }  # fmt: skip
    path = tmp_path / "phones.yaml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    job = {"name": "on-a-phone", "models": ["kws"], "targets": [{"tags": ["adb"]}], "measure": FAST}
    actor, job_id, store = submit(ray_session, tmp_path, path, job)
    scheduler_cleanup.append(actor)
    progress = wait(ray_session, actor, job_id, timeout=600)
    cells = store.cells(job_id)
    assert progress.state == "done", [(c.task.state, c.task.error) for c in cells]
    (cell,) = cells
    assert cell.task.board == "phone" and cell.result.latency.n == FAST["iterations"]
    assert cell.result.latency.median_ms > 0
    calls = adb.calls(bin_dir)
    assert all(c[:2] == ["-s", SERIAL] for c in calls)
    pushed = [c[4] for c in calls if c[2] == "push"]
    assert any(p.startswith(f"{home}/farm/") for p in pushed), pushed  # engine and artifact
    shells = [c[3] for c in calls if c[2] == "shell"]
    assert any(sys.executable in s and ".zip" in s for s in shells), shells  # the engine
