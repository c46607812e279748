"""Boards reached the way a lab reaches them: ssh_config aliases and jump hosts.

The boards here sit behind the test bed's gateway, in a network namespace of
their own: nothing on this machine reaches them except through the gateway's
sshd, so a transport that ignored the jump host could not pass.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from farm import deploy
from farm.errors import BoardUnreachable, HostKeyMismatch, UnknownHostKey
from farm.spec import Board
from farm.testing.testbed import BEHIND_ADDR, GATEWAY_ADDR
from farm.transport import connect

REPO = Path(__file__).resolve().parents[1]
FABRIC_LAYER = {"farm/transport/ssh.py", "farm/transport/ssh_connect.py"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One board here and three behind the gateway (module-wide: the tests only read)."""
    from farm.testing.testbed import Testbed

    bed = Testbed(tmp_path_factory.mktemp("lab"), n=1, behind=3)
    try:
        yield bed.up()
    finally:
        bed.down()


def spec_of(bed, name: str, **changes) -> Board:
    doc = next(s for s in bed.board_specs() if s["name"] == name)
    return Board.model_validate({**doc, **changes})


def where(transport) -> str:
    """The board's own view of the connection: ``client_ip client_port server_ip server_port``."""
    return transport.run(["sh", "-c", "echo $SSH_CONNECTION"], timeout=30).stdout.strip()


def test_a_board_behind_the_gateway_is_reached_only_through_it(lab):
    with pytest.raises(BoardUnreachable, match=rf"connect to {BEHIND_ADDR}:"):
        connect(spec_of(lab, "behind0", proxy_jump=[]))  # straight there: nothing listens
    t = connect(spec_of(lab, "behind0"))
    try:
        assert where(t).split()[2:] == [BEHIND_ADDR, str(lab.board("behind0").port)]
        assert t.run(["cat"], timeout=30, stdin=b"y" * 2_000_000).stdout == "y" * 2_000_000
    finally:
        t.close()


def test_an_ssh_config_alias_gives_address_user_key_and_jump_host(lab):
    board = Board.model_validate(lab.alias_spec("behind1"))
    assert (board.port, board.user, board.identity_file, board.proxy_jump) == (None,) * 4
    t = connect(board)
    try:
        assert where(t).split()[2:] == [BEHIND_ADDR, str(lab.board("behind1").port)]
    finally:
        t.close()


def test_deploy_and_the_warm_engine_run_through_the_jump_host(lab, tmp_path):
    board = spec_of(lab, "behind2")
    engine = deploy.build_engine_zip(tmp_path / "engine")
    t = connect(board)
    try:
        first = deploy.deploy(t, board, [engine])
        assert first.pushed and not first.skipped
        assert not deploy.deploy(t, board, [engine]).pushed  # content-addressed: once
        zipped = deploy.remote_path(t, board, engine)
        ch = t.open_process([sys.executable, zipped, "serve"])
        ch.send_line(json.dumps({"id": 1, "op": "clock"}))
        assert json.loads(ch.read_line(60))["result"]["t_ns"] > 0
        ch.close()
        assert ch.exit_status == 0
    finally:
        t.close()


def test_two_hops_are_opened_in_order(lab):
    """gateway → behind0 (a board-like hop) → behind1, as ``ssh -J gateway,behind0``."""
    behind0 = next(s for s in lab.board_specs() if s["name"] == "behind0")
    hop = {k: v for k, v in behind0.items() if k in ("host", "port", "user")}
    assert hop["host"] == BEHIND_ADDR  # only reachable from inside the gateway's network
    gateway = spec_of(lab, "behind1").proxy_jump
    t = connect(spec_of(lab, "behind1", proxy_jump=[*[h.model_dump() for h in gateway], hop]))
    try:
        client, _, server, port = where(t).split()
        assert (server, port) == (BEHIND_ADDR, str(lab.board("behind1").port))
        assert client == "127.0.0.1"  # from inside the lab
        gw, mid, board = t._chain
        assert (gw.host, mid.host, board.host) == (GATEWAY_ADDR, BEHIND_ADDR, BEHIND_ADDR)
        assert mid.port == lab.board("behind0").port
        assert board.gateway is mid and mid.gateway is gw and not gw.gateway
    finally:
        t.close()


def test_the_jump_hosts_unknown_key_is_refused_naming_it(lab, tmp_path):
    """The board's key is known; the gateway's is not (its hop names an empty file)."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    gw = lab.gateway
    hop = {"host": GATEWAY_ADDR, "port": gw.port, "known_hosts": str(empty)}
    with pytest.raises(UnknownHostKey) as info:
        connect(spec_of(lab, "behind0", proxy_jump=[hop]))
    message = str(info.value)
    assert f"jump host {GATEWAY_ADDR}:{gw.port} (hop 1 of 1)" in message
    assert message.startswith("behind0: ") and str(empty) in message and "SHA256:" in message
    assert empty.read_text() == ""


def test_the_jump_hosts_changed_key_is_refused_naming_it(make_testbed):
    bed = make_testbed(n=0, behind=1)
    assert connect(spec_of(bed, "behind0")).run(["true"], timeout=30).ok
    bed.rekey("gateway")
    for tofu in (False, True):  # TOFU never overrides a key it already holds
        with pytest.raises(HostKeyMismatch) as info:
            connect(spec_of(bed, "behind0", trust_on_first_use=tofu))
        message = str(info.value)
        assert f"jump host {GATEWAY_ADDR}:{bed.gateway.port} (hop 1 of 1)" in message
        assert "host key changed" in message and str(bed.known_hosts) in message
    # the same gateway through the ssh_config alias: the same refusal, the same name
    with pytest.raises(HostKeyMismatch, match=r"jump host gateway \(127\.0\.0\.2:"):
        connect(Board.model_validate(bed.alias_spec("behind0")))


def test_a_dead_jump_host_is_named(make_testbed):
    bed = make_testbed(n=0, behind=1)
    bed.kill("gateway")
    with pytest.raises(BoardUnreachable, match=r"connect to jump host 127\.0\.0\.2:\d+ \(hop 1"):
        connect(spec_of(bed, "behind0"))


def test_a_missing_ssh_config_is_named(lab, tmp_path):
    missing = tmp_path / "nope" / "ssh_config"
    with pytest.raises(BoardUnreachable, match=f"ssh_config {missing} does not exist"):
        connect(Board.model_validate({**lab.alias_spec("behind1"), "ssh_config": str(missing)}))


def _imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_nothing_opens_an_ssh_client_outside_the_fabric_layer():
    """paramiko and fabric are imported only by the fabric layer, and nothing in
    farm builds a paramiko client or transport itself: fabric does."""
    offenders, builders = [], []
    for root in ("farm", "benchmarks", "tests"):
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            tree = ast.parse(path.read_text(), rel)
            if rel not in FABRIC_LAYER and _imports(tree) & {"paramiko", "fabric"}:
                offenders.append(rel)
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    name = ast.unparse(node.func)
                    if name.split(".")[-1] in ("SSHClient", "Transport") and "paramiko" in name:
                        builders.append(f"{rel}:{node.lineno} {name}")
    assert offenders == [] and builders == []


def test_the_ssh_transport_connects_with_fabric(lab):
    t = connect(spec_of(lab, "behind0"))
    try:
        fabrics = [f"{k.__module__}.{k.__name__}" for c in t._chain for k in type(c).__mro__[1:2]]
        assert fabrics == ["fabric.connection.Connection"] * 2
        assert t._chain[-1].gateway is t._chain[0]
        assert t._transport() is t._chain[-1].transport  # one connection for everything
    finally:
        t.close()


def test_the_users_ssh_config_is_read_by_default(lab, tmp_path):
    """No ``ssh_config:`` in the inventory: the alias resolves through ``~/.ssh/config``."""
    doc = {k: v for k, v in lab.alias_spec("behind1").items() if k != "ssh_config"}
    code = (
        "import json, sys\n"
        "from farm.spec import Board\n"
        "from farm.transport import connect\n"
        "t = connect(Board.model_validate(json.loads(sys.argv[1])))\n"
        "print(t.run(['sh', '-c', 'echo $SSH_CONNECTION'], timeout=30).stdout)\n"
    )
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)

    def reach():
        return subprocess.run(
            [sys.executable, "-c", code, json.dumps(doc)],
            env={**os.environ, "HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=120,
        )

    unknown = reach()  # an alias nobody defines
    assert unknown.returncode == 1 and "BoardUnreachable" in unknown.stderr
    (home / ".ssh" / "config").write_text(lab.ssh_config.read_text())
    known = reach()
    assert known.returncode == 0, known.stderr
    assert known.stdout.split()[2:] == [BEHIND_ADDR, str(lab.board("behind1").port)]


def test_an_ssh_config_proxy_command_is_run(lab, tmp_path):
    """``ProxyCommand ssh -W %h:%p gateway``: OpenSSH carries farm's connection."""
    board = lab.board("behind2")
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host viacmd\n    HostName {board.address}\n    Port {board.port}\n"
        f"    IdentityFile {lab.client_key}\n"
        f"    ProxyCommand ssh -F {lab.ssh_config} -W %h:%p gateway\n"
    )
    doc = {**lab.alias_spec("behind2"), "host": "viacmd", "ssh_config": str(config)}
    t = connect(Board.model_validate(doc))
    try:
        assert where(t).split()[2:] == [BEHIND_ADDR, str(board.port)]
        assert isinstance(t._chain[-1].gateway, str) and len(t._chain) == 1
    finally:
        t.close()
