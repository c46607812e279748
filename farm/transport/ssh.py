"""``transport: ssh`` — a board reached over SSH, through fabric.

The connection (ssh_config, jump hosts, strict host keys on every hop) is
opened by :mod:`farm.transport.ssh_connect` with ``fabric.Connection``; this
module runs everything over it. fabric's ``run`` is not used for commands:
farm needs the remote pid (to kill a timed-out command's process group), the
exit status of a signal death, and a raw long-lived channel for the warm
engine, so commands, uploads and channels use the connection's paramiko
transport directly.

What this module guarantees:

- one SSH connection per board (through its jump hosts, if any), reused for
  every command, SFTP upload and channel, and re-opened after it drops;
- host keys checked against ``board.known_hosts`` (each hop against its own):
  unknown → ``UnknownHostKey`` (or appended to that file with TOFU), different →
  ``HostKeyMismatch``, the error naming the hop;
- authentication by identity file or agent, never a password;
- every command quoted and wrapped so its shell reports its pid (to kill the
  whole process group on a timeout) and its exit status even when a signal
  killed it (paramiko ignores SSH ``exit-signal``, so the shell turns it into
  ``128 + signal``, e.g. 137 for an out-of-memory SIGKILL);
- every paramiko/socket error translated into ``farm.errors``, raised ``from`` it.
"""

from __future__ import annotations

import re
import select
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from farm.errors import (
    BoardUnreachable,
    CommandFailed,
    CommandResult,
    TransportError,
    TransportTimeout,
)
from farm.spec.inventory import Board, Hop, Host, User, hop_shorthand
from farm.transport.base import CLOSE_GRACE_S, Channel, Transport, register, shell_command

if TYPE_CHECKING:
    import paramiko

    from farm.transport.ssh_connect import close_chain, fingerprint, open_chain, translate

_STDERR_TAIL_BYTES = 8192
_POLL_S = 0.2
# The remote shell prints its pid (the session's process group, sshd calls
# setsid) and then *waits* for the command, so a signal death becomes $? = 128+N.
_PREFIX = "echo farm-pid:$$ >&2; "
_SUFFIX = "; exit $?"
_PID_LINE = re.compile(rb"^farm-pid:(\d+)\n")
# OpenSSH's sftp-server accepts writes up to 256 kB; paramiko sends 32 kB by default.
_SFTP_WRITE = 255 * 1024
_SFTP_WINDOW = 64 * 1024 * 1024


class SshBoard(Board):
    """``transport: ssh``: a board reached over SSH (see :mod:`farm.spec.inventory` for
    what an ssh_config may fill in)."""

    transport: Literal["ssh"]
    host: Host
    port: int | None = Field(default=None, ge=1, le=65535)  # None: ssh_config's, else 22
    user: User | None = None
    identity_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    trust_on_first_use: bool = False
    ssh_config: str | None = None  # None: the user's ~/.ssh/config (and /etc/ssh/ssh_config)
    proxy_jump: list[Hop] | None = None  # None: ssh_config's ProxyJump; []: connect directly

    @field_validator("proxy_jump", mode="before")
    @classmethod
    def _hops(cls, value: Any) -> Any:
        """``"a@gw:22,b@gw2"`` or a list of strings and mappings, as a list of hop mappings."""
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            value = [hop_shorthand(h.strip()) if isinstance(h, str) else h for h in value]
        return value


def _load_ssh() -> None:
    """paramiko and farm's fabric layer, imported when a transport is made: this module is
    also imported to validate an inventory that names ``ssh`` (for :class:`SshBoard`),
    which must not cost the SSH stack's import."""
    global paramiko, close_chain, fingerprint, open_chain, translate
    import paramiko

    from farm.transport.ssh_connect import close_chain, fingerprint, open_chain, translate


@register("ssh", board=SshBoard)
class SSHTransport(Transport):
    """One board over SSH. Thread-safe: channels of one connection run side by side."""

    def __init__(self, board):
        _load_ssh()
        super().__init__(board)
        self._chain: list = []  # fabric Connections: jump hosts first, the board last
        self._sftp: paramiko.SFTPClient | None = None  # kept open: each new one forks on the board
        self._lock = threading.Lock()
        self._home: str | None = None
        self.connect_timeout = float(getattr(board, "connect_timeout_s", None) or 10)

    # -- the connection -----------------------------------------------------------------

    def open(self) -> None:
        self._transport()

    def _transport(self) -> paramiko.Transport:
        """The board's live paramiko transport (fabric's ``Connection.transport``)."""
        with self._lock:
            t = self._chain[-1].transport if self._chain else None
            if t is None or not t.is_active():
                close_chain(self._chain)
                self._chain = []
                self._chain = open_chain(self.board, self.connect_timeout)
                t = self._chain[-1].transport
            if t is None:  # open() returned without a transport: treat as dropped
                raise BoardUnreachable(self.name, "connection closed during setup")
            return t

    def host_key(self) -> str:
        key = self._transport().get_remote_server_key()
        return f"{key.get_name()} {fingerprint(key)}"

    def close(self) -> None:
        with self._lock:
            self._sftp = None
            close_chain(self._chain)
            self._chain = []

    def _sftp_client(self) -> paramiko.SFTPClient:
        """One SFTP session per connection, reused: opening one starts a process on the board."""
        t = self._transport()
        with self._lock:
            sftp = self._sftp
            if (
                sftp is not None
                and sftp.get_channel().get_transport() is t
                and not sftp.get_channel().closed
            ):  # type: ignore[union-attr]
                return sftp
            try:
                sftp = paramiko.SFTPClient.from_transport(t, window_size=_SFTP_WINDOW)
            except (paramiko.SSHException, OSError, EOFError) as e:
                raise translate(self.name, e, "open SFTP") from e
            if sftp is None:
                raise BoardUnreachable(self.name, "SFTP subsystem unavailable")
            sftp.get_channel().settimeout(max(self.connect_timeout, 30.0))  # type: ignore[union-attr]
            self._sftp = sftp
            return sftp

    def stat(self, remote: str) -> tuple[int, int] | None:
        sftp = self._sftp_client()
        try:
            st = sftp.stat(self.expand(remote))
        except FileNotFoundError:
            return None
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise translate(self.name, e, f"stat {remote}") from e
        return int(st.st_size or 0), int(st.st_mtime or 0)

    def _session(self) -> paramiko.Channel:
        t = self._transport()
        try:
            return t.open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise translate(self.name, e, "open a session") from e

    # -- commands -----------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> CommandResult:
        command = shell_command(argv)
        deadline = time.monotonic() + timeout
        chan = self._session()
        out, err = bytearray(), bytearray()
        try:
            chan.exec_command(_PREFIX + command + _SUFFIX)
            if stdin:
                # fed from a thread: a command that answers as it reads (cat) would
                # otherwise fill the window both ways and deadlock
                threading.Thread(target=_feed, args=(chan, stdin), daemon=True).start()
            else:
                chan.shutdown_write()
            _drain_until_eof(chan, out, err, deadline)
            status = _exit_status(chan)
        except TimeoutError as e:
            self._kill_group(_pid(err))
            raise TransportTimeout(
                self.name, f"`{command}` did not finish within {timeout:g} s"
            ) from e
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise translate(self.name, e, f"run `{command}`") from e
        finally:
            chan.close()
        if status is None:
            raise BoardUnreachable(self.name, f"connection lost while running `{command}`")
        _strip_pid(err)
        result = CommandResult(
            command=command,
            exit_code=status,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
        )
        return self._check(result, check)

    def _kill_group(self, pid: int | None) -> None:
        """SIGKILL a remote process group (best effort: the board may be gone)."""
        if pid is None:
            return
        try:
            chan = self._session()
            chan.exec_command(f"kill -9 -- -{pid} 2>/dev/null || kill -9 {pid}")
            chan.status_event.wait(self.connect_timeout)
            chan.close()
        except TransportError:
            pass

    def put(self, local: Path, remote: str) -> None:
        target = self.expand(remote)
        if not Path(local).is_file():
            raise FileNotFoundError(local)  # a caller's mistake, not the board's
        t = self._transport()
        try:
            sftp = paramiko.SFTPClient.from_transport(t, window_size=_SFTP_WINDOW)
            if sftp is None:
                raise BoardUnreachable(self.name, "SFTP subsystem unavailable")
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise translate(self.name, e, "open SFTP") from e
        try:
            sftp.get_channel().settimeout(max(self.connect_timeout, 30.0))  # type: ignore[union-attr]
            with open(local, "rb") as src, sftp.open(target, "wb") as dst:
                dst.MAX_REQUEST_SIZE = _SFTP_WRITE  # instance override of paramiko's 32 kB
                dst.set_pipelined(True)
                while chunk := src.read(4 * 1024 * 1024):
                    dst.write(chunk)
        except OSError as e:  # paramiko reports SFTP status errors (no such dir, ...) as OSError
            if isinstance(e, TimeoutError) or not t.is_active():
                raise translate(self.name, e, f"upload {target}") from e
            result = CommandResult(f"put {local} {target}", 1, "", f"{target}: {e}")
            raise CommandFailed(self.name, result) from e
        except (paramiko.SSHException, EOFError) as e:
            raise translate(self.name, e, f"upload {target}") from e
        finally:
            sftp.close()

    def open_process(self, argv: Sequence[str]) -> Channel:
        command = shell_command(argv)
        chan = self._session()
        try:
            chan.exec_command(_PREFIX + command + _SUFFIX)
        except (paramiko.SSHException, OSError, EOFError) as e:
            chan.close()
            raise translate(self.name, e, f"start `{command}`") from e
        return SSHChannel(self, chan)

    def home(self) -> str:
        if self._home is None:
            result = self.run(["printenv", "HOME"], timeout=self.connect_timeout)
            self._home = result.stdout.strip() or "/"
        return self._home


class SSHChannel(Channel):
    """A remote process's stdin/stdout as lines; stderr is kept drained (last 8 kB)."""

    def __init__(self, transport: SSHTransport, chan: paramiko.Channel):
        self._transport = transport
        self._chan = chan
        self._out = bytearray()
        self._err = bytearray()
        self._pid: int | None = None
        self._eof = False
        self.board = transport.name

    def _pump(self) -> None:
        chan = self._chan
        while chan.recv_ready():
            self._out += chan.recv(65536)
        while chan.recv_stderr_ready():
            self._err += chan.recv_stderr(65536)
        if self._pid is None:
            self._pid = _pid(self._err)
            if self._pid is not None:
                _strip_pid(self._err)
        if len(self._err) > _STDERR_TAIL_BYTES:
            del self._err[: len(self._err) - _STDERR_TAIL_BYTES]

    def send_line(self, line: str) -> None:
        try:
            self._chan.settimeout(self._transport.connect_timeout)
            self._chan.sendall(line.encode() + b"\n")
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise translate(self.board, e, "write to process") from e

    def read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            self._pump()
            newline = self._out.find(b"\n")
            if newline >= 0:
                line = bytes(self._out[:newline]).decode(errors="replace").rstrip("\r")
                del self._out[: newline + 1]
                if line:  # blank lines carry nothing; "" is reserved for end of output
                    return line
                continue
            if self._eof or self._chan.eof_received or self._chan.closed:
                return self._finish()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportTimeout(self.board, f"no answer within {timeout:g} s")
            select.select([self._chan], [], [], min(remaining, _POLL_S))

    def _finish(self) -> str:
        """End of output: a last unterminated line, else ``""`` and the exit status."""
        self._pump()
        if self._out:
            line = bytes(self._out).decode(errors="replace").rstrip("\r")
            self._out.clear()
            if line:
                return line
        self._eof = True
        self._chan.status_event.wait(2.0)
        self.exit_status = _exit_status(self._chan)
        return ""

    @property
    def alive(self) -> bool:
        chan = self._chan
        return not (self._eof or chan.closed or chan.eof_received or chan.exit_status_ready())

    @property
    def stderr_tail(self) -> str:
        self._pump()
        return self._err.decode(errors="replace")

    def close(self) -> None:
        try:
            self._chan.shutdown_write()
            self._chan.status_event.wait(CLOSE_GRACE_S)
        except (paramiko.SSHException, OSError, EOFError):
            pass
        if not self._chan.exit_status_ready():
            self.kill()
            return
        self.exit_status = _exit_status(self._chan)
        self._chan.close()

    def kill(self) -> None:
        self._transport._kill_group(self._await_pid())
        self._chan.close()
        self._eof = True

    def _await_pid(self) -> int | None:
        """The remote process's pid. Its first stderr line says it, but a kill right after
        the start may come before that line has arrived: wait for it (within the connect
        limit) while the channel is open, or the kill would miss a running process."""
        deadline = time.monotonic() + self._transport.connect_timeout
        self._pump()
        while self._pid is None and not (self._chan.closed or self._chan.eof_received):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            select.select([self._chan], [], [], min(remaining, _POLL_S))
            self._pump()
        return self._pid


def _drain_until_eof(
    chan: paramiko.Channel, out: bytearray, err: bytearray, deadline: float
) -> None:
    """Read stdout and stderr side by side (one full window must never block the other)."""
    while True:
        while chan.recv_ready():
            out += chan.recv(65536)
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        if (chan.eof_received or chan.closed) and not (
            chan.recv_ready() or chan.recv_stderr_ready()
        ):
            if chan.status_event.wait(min(2.0, max(0.0, deadline - time.monotonic()))):
                return
            if chan.closed:
                return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        select.select([chan], [], [], min(remaining, _POLL_S))


def _feed(chan: paramiko.Channel, data: bytes) -> None:
    """Send ``data`` as the command's stdin, then EOF; a closed channel just stops it."""
    try:
        chan.sendall(data)
        chan.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the reader reports what happened to the command


def _exit_status(chan: paramiko.Channel) -> int | None:
    """The exit status, or None when the connection ended without one."""
    if not chan.exit_status_ready():
        return None
    status = chan.recv_exit_status()
    return None if status == -1 else status


def _pid(err: bytearray) -> int | None:
    match = _PID_LINE.match(err)
    return int(match.group(1)) if match else None


def _strip_pid(err: bytearray) -> None:
    match = _PID_LINE.match(err)
    if match:
        del err[: match.end()]
