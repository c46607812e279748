"""A farm of real OpenSSH boards on this machine, for tests and for trying farm out.

Each board is an ``sshd -D`` on its own free loopback port with its own
directory (config, ed25519 host key, cache), all accepting one client key.
Boards can imitate the paper's board classes: fewer torch threads (written into
the inventory), less memory (an ``RLIMIT_AS`` on every command: sshd's
``ForceCommand`` runs a wrapper that calls ``ulimit -v`` and then the original
command), and a slow CPU (``cpu``: sshd and all it runs in a cgroup with that
share of one core, see ``farm.testing.cgroup``; ``EDISON`` is a tenth). The test bed writes the matching ``known_hosts`` and an inventory
YAML whose ``python`` is this interpreter, so boards have torch — except a
torch-free board (:func:`torch_free`), whose ``python`` is a venv holding only
onnxruntime and numpy (``farm.testing.torchfree``).

Boards can also sit behind a jump host, as lab boards sit behind a gateway
(``behind=N``): the *gateway* is an sshd on 127.0.0.2 whose sessions run in a
private network namespace (the lab's network), and the boards behind it are
sshds listening on 127.0.0.3 *inside* that namespace. From this machine they
cannot be reached at all, only through the gateway (``ssh -J``, fabric's
gateway, farm's ``proxy_jump``). The gateway keeps its listening socket in this
machine's network and serves each connection with ``sshd -i`` in the lab's, so
every hop is real OpenSSH. This needs root (``unshare``/``nsenter``, as the rest
of the test bed needs it for sshd). The test bed writes an ``ssh_config``
naming the gateway and each board behind it (``ProxyJump``), for OpenSSH and
for farm's ``ssh_config:``.

Only loopback, keys only, passwords off. ``Testbed.down()`` kills every
daemon; ``deploy/testbed up|down`` drives the same class from a shell.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from farm.addresses import free_port
from farm.procs import descendants
from farm.testing.cgroup import SlowGroup

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
STATE_FILE = "testbed.json"
BOARD_ADDR = "127.0.0.1"
GATEWAY_ADDR = "127.0.0.2"
BEHIND_ADDR = "127.0.0.3"  # inside the lab's network namespace only
GATEWAY = "gateway"
_CLONE_NEWNET = 0x40000000


class TestbedError(RuntimeError):
    """The test bed could not be built (no sshd, a daemon that never came up, ...)."""


@dataclass
class BoardClass:
    """What a test board imitates: torch threads, a memory limit, a share of one CPU
    core, a cgroup memory limit (None = unlimited), and the board's Python (None: this
    interpreter, with torch)."""

    threads: int | None = None
    memory_mb: int | None = None
    tags: list[str] = field(default_factory=list)
    cpu: float | None = None
    memory_limit_mb: int | None = None
    python: str | None = None


def torch_free(**changes: Any) -> BoardClass:
    """A board whose Python has onnxruntime and numpy and no torch (tag ``torch-free``):
    the venv ``farm.testing.torchfree`` builds once per machine (deploy/install.sh).
    ``TorchFreeMissing`` says how to build it where it is not built."""
    from farm.testing import torchfree

    cls = BoardClass(python=str(torchfree.python()), tags=["torch-free"])
    for key, value in changes.items():
        setattr(cls, key, value)
    return cls


EDISON = BoardClass(threads=1, tags=["edison"], cpu=0.1, memory_limit_mb=1024)
"""The study's Intel Edison: a 500 MHz Atom with 1 GB — a tenth of one of our cores."""


@dataclass
class TestBoard:
    name: str
    port: int
    dir: Path
    pid: int | None = None
    threads: int | None = None
    memory_mb: int | None = None
    tags: list[str] = field(default_factory=list)
    address: str = BOARD_ADDR
    behind: bool = False  # in the lab's network, reached only through the gateway
    cpu: float | None = None
    memory_limit_mb: int | None = None
    cgroups: list[str] = field(default_factory=list)  # the slow board's groups
    python: str | None = None  # None: this interpreter

    @property
    def config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def cache_dir(self) -> Path:
        return self.dir / "cache"


def _keygen(path: Path, comment: str) -> None:
    for p in (path, path.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


class Testbed:
    """N sshd boards under ``root``, and ``behind`` more behind a gateway.

    Use as a context manager, or ``up()``/``down()``.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        root: str | Path,
        classes: list[BoardClass] | None = None,
        n: int = 3,
        behind: int = 0,
    ):
        self.root = Path(root).resolve()
        self.classes = classes or [BoardClass() for _ in range(n)]
        self.behind = behind
        self.boards: list[TestBoard] = []
        self.gateway: TestBoard | None = None

    # -- paths --------------------------------------------------------------------------

    @property
    def client_key(self) -> Path:
        return self.root / "client_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def inventory_path(self) -> Path:
        return self.root / "inventory.yaml"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    def board(self, name: str) -> TestBoard:
        """A board by name; ``"gateway"`` is the jump host."""
        for b in [*self.boards, *([self.gateway] if self.gateway else [])]:
            if b.name == name:
                return b
        raise KeyError(name)

    # -- life cycle ---------------------------------------------------------------------

    def up(self) -> Testbed:
        if not os.path.exists(SSHD):
            raise TestbedError(f"{SSHD} not found: install openssh-server")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation dir
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.client_key.exists():
            _keygen(self.client_key, "farm-testbed-client")
        shutil.copyfile(self.client_key.with_suffix(".pub"), self.root / "authorized_keys")
        try:
            for i, cls in enumerate(self.classes):
                self._add(f"board{i}", cls)
            if self.behind:
                self.gateway = TestBoard(GATEWAY, 0, self.root / GATEWAY, address=GATEWAY_ADDR)
                self.gateway.dir.mkdir(parents=True, exist_ok=True)
                _keygen(self.gateway.host_key, GATEWAY)
                self._start_gateway()
            for i in range(self.behind):
                self._add(f"behind{i}", BoardClass(tags=["behind"]), behind=True)
            self.write_known_hosts()
            self.write_ssh_config()
            self.write_inventory()
            self._save()
        except BaseException:
            self.down()
            raise
        return self

    def _add(self, name: str, cls: BoardClass, behind: bool = False) -> None:
        board = TestBoard(
            name=name,
            port=0,
            dir=self.root / "boards" / name,
            threads=cls.threads,
            memory_mb=cls.memory_mb,
            tags=list(cls.tags),
            address=BEHIND_ADDR if behind else BOARD_ADDR,
            behind=behind,
            cpu=cls.cpu,
            memory_limit_mb=cls.memory_limit_mb,
            python=cls.python,
        )
        board.cache_dir.mkdir(parents=True, exist_ok=True)
        _keygen(board.host_key, board.name)
        self.boards.append(board)
        self._start(board)

    def down(self) -> None:
        for board in [*self.boards, *([self.gateway] if self.gateway else [])]:
            self._signal(board, signal.SIGKILL)
            board.pid = None
            if board.cgroups:
                SlowGroup.existing(board.cgroups).remove()
                board.cgroups = []
        self._save()

    def __enter__(self) -> Testbed:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- one board ----------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL the board's daemon and its sessions: the board is down."""
        board = self.board(name)
        self._signal(board, signal.SIGKILL)
        board.pid = None
        self._save()

    def stop(self, name: str) -> None:
        """SIGSTOP the daemon and its sessions: the board hangs (TCP still accepts)."""
        self._signal(self.board(name), signal.SIGSTOP)

    def cont(self, name: str) -> None:
        self._signal(self.board(name), signal.SIGCONT)

    def restart(self, name: str) -> None:
        """Kill and start the board again on the same port (with its current host key)."""
        if name == GATEWAY:
            raise TestbedError("the gateway holds the lab's network: it cannot restart")
        board = self.board(name)
        self._signal(board, signal.SIGKILL)
        self._start(board, keep_port=True)
        self._save()

    def rekey(self, name: str) -> None:
        """Give the board (or the gateway) a new host key, as a reinstall would."""
        board = self.board(name)
        _keygen(board.host_key, board.name)
        if name != GATEWAY:  # the gateway's sshd -i reads its key at each connection
            self.restart(name)

    # -- internals ----------------------------------------------------------------------

    def _start(self, board: TestBoard, keep_port: bool = False) -> None:
        for _attempt in range(5):
            if not keep_port or not board.port:
                # behind the gateway too: nothing here listens there, so a direct try is refused
                board.port = free_port(board.address)
            self._write_config(board)
            argv = [SSHD, "-D", "-e", "-f", str(board.config)]
            if board.cpu and not board.cgroups:
                group = SlowGroup(board.name, board.cpu, board.memory_limit_mb).create()
                board.cgroups = [str(d) for d in group.dirs]
            if board.cgroups:
                argv = SlowGroup.existing(board.cgroups).wrap(argv)
            if board.behind:
                assert self.gateway is not None and self.gateway.pid is not None
                argv = ["nsenter", f"--net=/proc/{self.gateway.pid}/ns/net", "--", *argv]
            (board.dir / "sshd.pid").unlink(missing_ok=True)
            with open(board.dir / "sshd.log", "ab") as log:
                proc = subprocess.Popen(
                    argv,  # nsenter execs sshd: the pid is sshd's
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,  # not in our process group: ^C here spares it
                )
            board.pid = proc.pid
            if self._wait_ready(board, proc):
                return
            if keep_port:
                time.sleep(0.2)  # the old daemon's socket may still be going away
        log = (board.dir / "sshd.log").read_text(errors="replace")[-2000:]
        raise TestbedError(f"sshd for {board.name} did not start:\n{log}")

    def _wait_ready(self, board: TestBoard, proc: subprocess.Popen, timeout: float = 10) -> bool:
        """True once the daemon listens; False if it exited first.

        A board here is ready when it sends its SSH banner; one behind the gateway
        cannot be reached from here, and sshd writes its pid file once it listens.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if board.behind:
                if (board.dir / "sshd.pid").exists():
                    return True
                time.sleep(0.02)
                continue
            try:
                with socket.create_connection((board.address, board.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.02)
        proc.kill()
        return False

    def _start_gateway(self) -> None:
        """The jump host: a listener here whose sessions (``sshd -i``) run in the lab's network."""
        gw = self.gateway
        assert gw is not None
        listener = socket.create_server((gw.address, 0))
        gw.port = listener.getsockname()[1]
        self._write_config(gw)
        with listener, open(gw.dir / "sshd.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    __spec__.name,
                    GATEWAY,
                    str(listener.fileno()),
                    str(gw.config),
                ],
                pass_fds=[listener.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        gw.pid = proc.pid
        if not self._wait_ready(gw, proc, timeout=30):
            log_text = (gw.dir / "sshd.log").read_text(errors="replace")[-2000:]
            raise TestbedError(f"the gateway did not start:\n{log_text}")

    def _write_config(self, board: TestBoard) -> None:
        lines = [
            f"Port {board.port}",
            f"ListenAddress {board.address}",
            f"HostKey {board.host_key}",
            f"PidFile {board.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            "LogLevel ERROR",
            # Each board is its own user directory: sessions get HOME there, so the
            # login user's shell start-up files (here root's .bashrc, which runs
            # `pyenv init` and its rehash lock) never run on a board. A session a
            # fault test kills mid-start-up must not leave locks behind for the rest.
            f"SetEnv HOME={board.dir}",
            f"Subsystem sftp {SFTP_SERVER}",
        ]
        if board.memory_mb:
            wrapper = board.dir / "limit.sh"
            wrapper.write_text(
                "#!/bin/sh\n"
                f"# every command on {board.name} runs with {board.memory_mb} MB of address space\n"
                f"ulimit -v {board.memory_mb * 1024}\n"
                'if [ -z "$SSH_ORIGINAL_COMMAND" ]; then exec /bin/sh -l; fi\n'
                'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
            )
            wrapper.chmod(0o755)
            lines.append(f"ForceCommand {wrapper}")
        board.config.write_text("\n".join(lines) + "\n")

    def _signal(self, board: TestBoard, sig: signal.Signals) -> None:
        """Signal the daemon's process group: the listener and every session it forked.

        Sessions call setsid, so they leave the group; they are found as descendants.
        """
        if board.pid is None:
            return
        slow = SlowGroup.existing(board.cgroups).pids() if board.cgroups else []
        for pid in dict.fromkeys([board.pid, *descendants(board.pid), *slow]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL:
            _reap(board.pid)

    def write_known_hosts(self) -> None:
        lines = []
        for board in [*self.boards, *([self.gateway] if self.gateway else [])]:
            key = board.host_key.with_suffix(".pub").read_text().split()
            lines.append(f"[{board.address}]:{board.port} {key[0]} {key[1]}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def write_ssh_config(self) -> None:
        """Host entries for the gateway and each board behind it, as a lab writes them."""
        common = [
            f"    User {_user()}",
            f"    IdentityFile {self.client_key}",
            f"    UserKnownHostsFile {self.known_hosts}",
            "    StrictHostKeyChecking yes",
            "    BatchMode yes",
        ]
        lines = []
        if self.gateway:
            gw = self.gateway
            lines += [
                f"Host {GATEWAY}",
                f"    HostName {gw.address}",
                f"    Port {gw.port}",
                *common,
            ]
        for b in self.boards:
            if b.behind:
                lines += [f"Host {b.name}", f"    HostName {b.address}", f"    Port {b.port}"]
                lines += [*common, f"    ProxyJump {GATEWAY}"]
        self.ssh_config.write_text("\n".join(lines) + "\n")

    def board_specs(self) -> list[dict[str, Any]]:
        """The inventory entries, as plain dicts (boards behind the gateway: ``proxy_jump``)."""
        specs = []
        for b in self.boards:
            spec = {
                "name": b.name,
                "transport": "ssh",
                "host": b.address,
                "port": b.port,
                "user": _user(),
                "identity_file": str(self.client_key),
                "known_hosts": str(self.known_hosts),
                "trust_on_first_use": False,
                "python": b.python or sys.executable,
                "cache_dir": str(b.cache_dir),
                # one machine stands for every board here: each board its own lock
                "board_lock": str(b.dir / "board"),
                "station": "head",
                "tags": ["testbed", *b.tags],
                "connect_timeout_s": 30 if b.cpu else 5,
                "processors": [
                    {"name": "cpu", "device": "cpu", "threads": b.threads, "memory_mb": b.memory_mb}
                ],
            }
            if b.behind and self.gateway:
                spec["proxy_jump"] = [f"{_user()}@{self.gateway.address}:{self.gateway.port}"]
            specs.append(spec)
        return specs

    def alias_spec(self, name: str) -> dict[str, Any]:
        """A board behind the gateway as a lab would list it: only its ssh_config alias.

        Address, port, user, key and the jump host all come from :attr:`ssh_config`.
        """
        spec = next(s for s in self.board_specs() if s["name"] == name)
        for key in ("port", "user", "identity_file", "proxy_jump"):
            spec.pop(key, None)
        return {**spec, "host": name, "ssh_config": str(self.ssh_config)}

    def write_inventory(self) -> None:
        doc = {"version": 1, "boards": self.board_specs()}
        self.inventory_path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def _save(self) -> None:
        state = {
            "root": str(self.root),
            "boards": [{**asdict(b), "dir": str(b.dir)} for b in self.boards],
            "gateway": {**asdict(self.gateway), "dir": str(self.gateway.dir)}
            if self.gateway
            else None,
        }
        if self.root.exists():
            (self.root / STATE_FILE).write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, root: str | Path) -> Testbed:
        """The test bed described by ``root/testbed.json`` (for ``down`` from a shell)."""
        state = json.loads((Path(root) / STATE_FILE).read_text())
        bed = cls(state["root"], classes=[])
        bed.boards = [TestBoard(**{**b, "dir": Path(b["dir"])}) for b in state["boards"]]
        gw = state.get("gateway")
        bed.gateway = TestBoard(**{**gw, "dir": Path(gw["dir"])}) if gw else None
        return bed


def _user() -> str:
    import getpass

    return getpass.getuser()


def _reap(pid: int) -> None:
    """Collect a killed daemon we started, so it leaves no zombie (no-op for others)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (``down`` from another shell)
            return
        if done:
            return
        time.sleep(0.01)


def _serve_gateway(fd: int, config: str) -> None:
    """The gateway's daemon: accept on the inherited listener (this machine's network),
    then serve each connection with ``sshd -i`` in a network namespace of its own
    (the lab's), where the boards behind it listen."""
    listener = socket.socket(fileno=fd)  # created, and bound, before the namespace
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare(CLONE_NEWNET): {os.strerror(errno)} (run as root)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # finished sessions reap themselves
    while True:
        conn, _ = listener.accept()
        with conn:
            subprocess.Popen([SSHD, "-i", "-e", "-f", config], stdin=conn, stdout=conn)


def main(argv: list[str] | None = None) -> int:
    """``deploy/testbed up --boards 4 --dir DIR`` / ``deploy/testbed down --dir DIR``."""
    import argparse

    p = argparse.ArgumentParser(prog="testbed", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the boards and write inventory.yaml")
    up.add_argument("--boards", type=int, default=3)
    up.add_argument("--behind", type=int, default=0, help="boards behind a jump host")
    up.add_argument("--dir", default="/tmp/farm-testbed")
    up.add_argument("--threads", type=int, default=None, help="torch threads per board")
    up.add_argument("--memory-mb", type=int, default=None, help="address-space limit per board")
    up.add_argument("--cpu", type=float, default=None, help="share of one core (0.1: an Edison)")
    up.add_argument("--torch-free", type=int, default=0, help="more boards without torch")
    down = sub.add_parser("down", help="kill the boards started by `up`")
    down.add_argument("--dir", default="/tmp/farm-testbed")
    gateway = sub.add_parser(GATEWAY)  # internal: the gateway's daemon (see _start_gateway)
    gateway.add_argument("fd", type=int)
    gateway.add_argument("config")
    args = p.parse_args(argv)
    if args.command == GATEWAY:
        _serve_gateway(args.fd, args.config)
        return 1
    if args.command == "up":
        classes = [
            BoardClass(args.threads, args.memory_mb, cpu=args.cpu) for _ in range(args.boards)
        ]
        classes += [torch_free(threads=args.threads) for _ in range(args.torch_free)]
        bed = Testbed(args.dir, classes, behind=args.behind).up()
        for b in [*bed.boards, *([bed.gateway] if bed.gateway else [])]:
            where = " (behind the gateway)" if b.behind else ""
            print(f"{b.name}  {b.address}:{b.port}{where}  pid {b.pid}  {b.dir}")
        print(f"inventory: {bed.inventory_path}")
        if bed.gateway:
            print(f"ssh_config: {bed.ssh_config}")
        return 0
    try:
        bed = Testbed.load(args.dir)
    except FileNotFoundError:
        print(f"no test bed in {args.dir}", file=sys.stderr)
        return 1
    bed.down()
    print(f"stopped {len(bed.boards)} boards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
