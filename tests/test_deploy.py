"""Deploying the engine and artifacts into board caches, over real SSH (and the fake)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import types
import zipfile
from pathlib import Path

import pytest
from testbed_fixtures import board_spec

from farm import deploy
from farm.errors import BoardUnreachable, DeployGroupError, TransportTimeout
from farm.spec import Board
from farm.testing import transport as fake
from farm.transport import connect


@pytest.fixture(scope="module")
def engine_zip(tmp_path_factory) -> Path:
    return deploy.build_engine_zip(tmp_path_factory.mktemp("engine"))


@pytest.fixture
def artifact(tmp_path) -> Path:
    path = tmp_path / "model.farm"
    path.write_bytes(os.urandom(1_500_000))
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the engine zip -------------------------------------------------------------------------


def test_engine_zip_is_deterministic_and_named_by_its_hash(engine_zip, tmp_path):
    time.sleep(1.1)  # a clock leaking into the zip would now change the bytes
    again = deploy.build_engine_zip(tmp_path / "other")
    assert again.read_bytes() == engine_zip.read_bytes()
    assert engine_zip.name == f"{_sha(engine_zip.read_bytes())}.zip"
    with zipfile.ZipFile(engine_zip) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert {"__main__.py", "farm/__init__.py", "farm/engine/serve.py"} <= set(names)
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_engine_zip_runs_the_warm_engine(engine_zip):
    t = connect(types.SimpleNamespace(name="here", transport="local"))
    ch = t.open_process([sys.executable, str(engine_zip), "serve"])
    ch.send_line(json.dumps({"id": 1, "op": "clock"}))
    startup = Board.model_fields["startup_timeout_s"].default  # the first answer: torch's import
    assert json.loads(ch.read_line(startup))["result"]["t_ns"] > 0
    ch.close()
    assert ch.exit_status == 0


# -- one board over ssh ---------------------------------------------------------------------


@pytest.fixture
def board0(testbed, tmp_path):
    """The session's board0 with a cache of the test's own: empty, whatever ran before."""
    board = board_spec(testbed, "board0", cache_dir=str(tmp_path / "board0-cache"))
    transport = connect(board)
    yield transport, board
    deploy.prune(transport, board, keep=set())
    transport.close()


def test_deploy_pushes_once_then_skips(board0, engine_zip, artifact):
    transport, board = board0
    first = deploy.deploy(transport, board, [engine_zip, artifact])
    engine_remote = deploy.remote_path(transport, board, engine_zip)
    art_remote = deploy.remote_path(transport, board, artifact)
    assert engine_remote == f"{board.cache_dir}/engine/{engine_zip.name}"
    assert art_remote == f"{board.cache_dir}/artifacts/{_sha(artifact.read_bytes())}.farm"
    assert sorted(first.pushed) == sorted([engine_remote, art_remote]) and first.skipped == []
    assert first.bytes_pushed == engine_zip.stat().st_size + artifact.stat().st_size
    assert Path(art_remote).read_bytes() == artifact.read_bytes()
    assert not [p for p in Path(board.cache_dir).rglob("*") if ".tmp-" in p.name]
    second = deploy.deploy(transport, board, [engine_zip, artifact])
    assert second.pushed == [] and sorted(second.skipped) == sorted(first.pushed)
    assert deploy.is_present(transport, board, [engine_zip, artifact])


def test_corrupted_or_truncated_entry_is_redone(board0, artifact):
    transport, board = board0
    deploy.deploy(transport, board, [artifact])
    remote = Path(deploy.remote_path(transport, board, artifact))
    for damage in (b"garbage", artifact.read_bytes()[:1000]):
        remote.write_bytes(damage)
        assert not deploy.is_present(transport, board, [artifact])
        report = deploy.deploy(transport, board, [artifact])
        assert report.redone == [str(remote)] and report.pushed == [str(remote)]
        assert remote.read_bytes() == artifact.read_bytes()


def test_a_file_whose_bytes_betray_its_hash_name_never_lands(board0, tmp_path):
    """Content-addressed names are trusted locally; the board's check catches a liar."""
    from farm.errors import TransportError

    transport, board = board0
    liar = tmp_path / f"{'ab' * 32}.farm"
    liar.write_bytes(b"these bytes do not hash to the name")
    with pytest.raises(TransportError, match="corrupted"):
        deploy.deploy(transport, board, [liar])
    assert not Path(deploy.remote_path(transport, board, liar)).exists()
    assert not [p for p in Path(board.cache_dir).rglob("*") if ".tmp-" in p.name]


def test_prune_keeps_what_is_asked_and_removes_leftovers(board0, engine_zip, artifact):
    transport, board = board0
    deploy.deploy(transport, board, [engine_zip, artifact])
    engine_remote = deploy.remote_path(transport, board, engine_zip)
    leftover = Path(f"{engine_remote}.tmp-deadbeef")
    leftover.write_bytes(b"half an upload")
    removed = deploy.prune(transport, board, keep={_sha(engine_zip.read_bytes())})
    assert sorted(removed) == sorted(
        [str(leftover), deploy.remote_path(transport, board, artifact)]
    )
    assert Path(engine_remote).exists() and not leftover.exists()
    assert deploy.is_present(transport, board, [engine_zip])
    assert not deploy.is_present(transport, board, [artifact])


def test_deployed_engine_serves_over_ssh(board0, engine_zip):
    transport, board = board0
    deploy.deploy(transport, board, [engine_zip])
    ch = transport.open_process(
        [board.python, deploy.remote_path(transport, board, engine_zip), "serve"]
    )
    try:
        ch.send_line(json.dumps({"id": 1, "op": "ping"}))
        reply = json.loads(ch.read_line(60))
        assert reply["id"] == 1 and reply["ok"], reply
    finally:
        ch.close()


def test_probe_reports_the_board(board0):
    transport, board = board0
    info = deploy.probe(transport, board)
    assert info.python == ".".join(map(str, sys.version_info[:3]))
    assert info.torch and info.cpus == os.cpu_count() and info.disk_free_mb > 0
    assert info.memory_available_mb > 0


# -- many boards ----------------------------------------------------------------------------


def test_deploy_many_with_one_board_down(testbed, engine_zip, artifact):
    boards = [board_spec(testbed, b.name) for b in testbed.boards]
    testbed.kill("board2")
    try:
        results = deploy.deploy_many([(b, [engine_zip, artifact]) for b in boards], parallel=8)
    finally:
        testbed.restart("board2")
    assert set(results) == {"board0", "board1", "board2"}
    assert set(results.succeeded) == {"board0", "board1"}
    assert isinstance(results["board2"], BoardUnreachable)
    for name in ("board0", "board1"):
        assert len(results[name].pushed) + len(results[name].skipped) == 2
    assert "board2" in str(results.error)
    with pytest.raises(DeployGroupError):
        results.raise_for_errors()
    for b in boards:  # board2 is back: everything deploys; then clean the caches
        with connect(b) as t:
            assert deploy.deploy(t, b, [engine_zip]).skipped or b.name == "board2"
            deploy.prune(t, b, keep=set())


@pytest.mark.timing  # the whole fan-out within 1.5 s
def test_deploy_many_times_out_per_board(engine_zip):
    fake.reset()

    def slow_connector(board):
        if board.name == "slow":
            time.sleep(2)
        return connect(board)

    boards = [
        types.SimpleNamespace(name=n, transport="fake", cache_dir="~/c") for n in ("ok", "slow")
    ]
    start = time.monotonic()
    results = deploy.deploy_many(
        [(b, [engine_zip]) for b in boards], timeout=0.5, connector=slow_connector
    )
    assert time.monotonic() - start < 1.5
    assert isinstance(results["ok"], deploy.DeployReport)
    assert isinstance(results["slow"], TransportTimeout)
    fake.reset()


def test_deploy_to_fake_boards_is_content_addressed(engine_zip, artifact):
    fake.reset()
    board = types.SimpleNamespace(name="f1", transport="fake", cache_dir="~/.cache/farm")
    t = connect(board)
    assert len(deploy.deploy(t, board, [engine_zip, artifact]).pushed) == 2
    assert len(deploy.deploy(t, board, [engine_zip, artifact]).skipped) == 2
    assert deploy.prune(t, board, keep={_sha(engine_zip.read_bytes())}) == [
        deploy.remote_path(t, board, artifact)
    ]
    fake.reset()
