"""A farm of real OpenSSH boards on this machine, for tests and for trying farm out.

Each board is an ``sshd -D`` on its own free loopback port with its own
directory (config, ed25519 host key, cache), all accepting one client key.
Boards can imitate the paper's board classes: fewer torch threads (written into
the inventory), less memory (an ``RLIMIT_AS`` on every command: sshd's
``ForceCommand`` runs a wrapper that calls ``ulimit -v`` and then the original
command), and a slow CPU (``cpu``: sshd and all it runs in a cgroup with that
share of one core, see ``farm.testing.cgroup``; ``EDISON`` is a tenth). The test bed writes the matching ``known_hosts`` and an inventory
YAML whose ``python`` is this interpreter, so boards have torch.

Only 127.0.0.1, keys only, passwords off. ``Testbed.down()`` kills every
daemon; ``deploy/testbed up|down`` drives the same class from a shell.
"""

from __future__ import annotations

import contextlib
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

from farm.procs import descendants
from farm.scheduler.cluster import free_port
from farm.testing.cgroup import SlowGroup

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
STATE_FILE = "testbed.json"


class TestbedError(RuntimeError):
    """The test bed could not be built (no sshd, a daemon that never came up, ...)."""


@dataclass
class BoardClass:
    """What a test board imitates: torch threads, a memory limit, a share of one CPU
    core and a cgroup memory limit (None = unlimited)."""

    threads: int | None = None
    memory_mb: int | None = None
    tags: list[str] = field(default_factory=list)
    cpu: float | None = None
    memory_limit_mb: int | None = None


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
    cpu: float | None = None
    memory_limit_mb: int | None = None
    cgroups: list[str] = field(default_factory=list)  # the slow board's groups

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
    """N sshd boards under ``root``. Use as a context manager, or ``up()``/``down()``."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, root: str | Path, classes: list[BoardClass] | None = None, n: int = 3):
        self.root = Path(root).resolve()
        self.classes = classes or [BoardClass() for _ in range(n)]
        self.boards: list[TestBoard] = []

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

    def board(self, name: str) -> TestBoard:
        for b in self.boards:
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
                board = TestBoard(
                    name=f"board{i}",
                    port=0,
                    dir=self.root / "boards" / f"board{i}",
                    threads=cls.threads,
                    memory_mb=cls.memory_mb,
                    tags=list(cls.tags),
                    cpu=cls.cpu,
                    memory_limit_mb=cls.memory_limit_mb,
                )
                board.cache_dir.mkdir(parents=True, exist_ok=True)
                _keygen(board.host_key, board.name)
                self.boards.append(board)
                self._start(board)
            self.write_known_hosts()
            self.write_inventory()
            self._save()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for board in self.boards:
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
        board = self.board(name)
        self._signal(board, signal.SIGKILL)
        self._start(board, keep_port=True)
        self._save()

    def rekey(self, name: str) -> None:
        """Give the board a new host key (as a reinstall would) and restart it."""
        board = self.board(name)
        _keygen(board.host_key, board.name)
        self.restart(name)

    # -- internals ----------------------------------------------------------------------

    def _start(self, board: TestBoard, keep_port: bool = False) -> None:
        for _attempt in range(5):
            if not keep_port or not board.port:
                board.port = free_port()
            self._write_config(board)
            argv = [SSHD, "-D", "-e", "-f", str(board.config)]
            if board.cpu and not board.cgroups:
                group = SlowGroup(board.name, board.cpu, board.memory_limit_mb).create()
                board.cgroups = [str(d) for d in group.dirs]
            if board.cgroups:
                argv = SlowGroup.existing(board.cgroups).wrap(argv)
            with open(board.dir / "sshd.log", "ab") as log:
                proc = subprocess.Popen(
                    argv,
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
        """True once the daemon sends its SSH banner; False if it exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", board.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.02)
        proc.kill()
        return False

    def _write_config(self, board: TestBoard) -> None:
        lines = [
            f"Port {board.port}",
            "ListenAddress 127.0.0.1",
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
        for board in self.boards:
            key = board.host_key.with_suffix(".pub").read_text().split()
            lines.append(f"[127.0.0.1]:{board.port} {key[0]} {key[1]}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def board_specs(self) -> list[dict[str, Any]]:
        """The inventory entries, as plain dicts."""
        return [
            {
                "name": b.name,
                "transport": "ssh",
                "host": "127.0.0.1",
                "port": b.port,
                "user": _user(),
                "identity_file": str(self.client_key),
                "known_hosts": str(self.known_hosts),
                "trust_on_first_use": False,
                "python": sys.executable,
                "cache_dir": str(b.cache_dir),
                "station": "head",
                "tags": ["testbed", *b.tags],
                "connect_timeout_s": 30 if b.cpu else 5,
                "processors": [
                    {"name": "cpu", "device": "cpu", "threads": b.threads, "memory_mb": b.memory_mb}
                ],
            }
            for b in self.boards
        ]

    def write_inventory(self) -> None:
        doc = {"version": 1, "boards": self.board_specs()}
        self.inventory_path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def _save(self) -> None:
        state = {
            "root": str(self.root),
            "boards": [{**asdict(b), "dir": str(b.dir)} for b in self.boards],
        }
        if self.root.exists():
            (self.root / STATE_FILE).write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, root: str | Path) -> Testbed:
        """The test bed described by ``root/testbed.json`` (for ``down`` from a shell)."""
        state = json.loads((Path(root) / STATE_FILE).read_text())
        bed = cls(state["root"], classes=[])
        bed.boards = [TestBoard(**{**b, "dir": Path(b["dir"])}) for b in state["boards"]]
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


def main(argv: list[str] | None = None) -> int:
    """``deploy/testbed up --boards 4 --dir DIR`` / ``deploy/testbed down --dir DIR``."""
    import argparse

    p = argparse.ArgumentParser(prog="testbed", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the boards and write inventory.yaml")
    up.add_argument("--boards", type=int, default=3)
    up.add_argument("--dir", default="/tmp/farm-testbed")
    up.add_argument("--threads", type=int, default=None, help="torch threads per board")
    up.add_argument("--memory-mb", type=int, default=None, help="address-space limit per board")
    up.add_argument("--cpu", type=float, default=None, help="share of one core (0.1: an Edison)")
    down = sub.add_parser("down", help="kill the boards started by `up`")
    down.add_argument("--dir", default="/tmp/farm-testbed")
    args = p.parse_args(argv)
    if args.command == "up":
        classes = [
            BoardClass(args.threads, args.memory_mb, cpu=args.cpu) for _ in range(args.boards)
        ]
        bed = Testbed(args.dir, classes).up()
        for b in bed.boards:
            print(f"{b.name}  127.0.0.1:{b.port}  pid {b.pid}  {b.dir}")
        print(f"inventory: {bed.inventory_path}")
        return 0
    try:
        bed = Testbed.load(args.dir)
    except FileNotFoundError:
        print(f"no test bed in {args.dir}", file=sys.stderr)
        return 1
    bed.down()
    print(f"stopped {len(bed.boards)} boards")
    return 0
