"""Opening a board's SSH connection with fabric: ssh_config, jump hosts, strict host keys.

This module and :mod:`farm.transport.ssh` are farm's fabric layer: nothing else
in farm opens an SSH connection (a test holds that line). A board is reached
the way OpenSSH would reach it:

- its ``host`` may be an ssh_config ``Host`` alias; ``HostName``, ``User``,
  ``Port`` and ``IdentityFile`` come from the config unless the inventory sets
  them (the inventory's ``ssh_config:`` file, else ``~/.ssh/config`` and
  ``/etc/ssh/ssh_config``, as fabric loads them);
- it may sit behind jump hosts: the inventory's ``proxy_jump`` hops, else the
  config's ``ProxyJump`` (``none`` means direct). Hops are opened in order, each
  through the one before (``direct-tcpip``), as ``ssh -J a,b board`` does. Each
  hop's own ssh_config entry applies to it, but not its own ``ProxyJump``: list
  every hop instead. A config's ``ProxyCommand`` (without a ``ProxyJump``) is run
  by fabric, and the board's host key is still farm's to check.

fabric's ``Connection`` adds unknown host keys (``AutoAddPolicy``) and reads no
known_hosts file; every connection here, hops included, gets farm's policy and
the right known_hosts before it opens: unknown → ``UnknownHostKey`` (or recorded
with TOFU where the inventory says so), different → ``HostKeyMismatch``. Every
error names the hop it happened at.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import fabric
import paramiko

from farm.errors import (
    BoardUnreachable,
    HostKeyError,
    HostKeyMismatch,
    TransportError,
    TransportTimeout,
    UnknownHostKey,
)
from farm.spec.inventory import Hop, hop_shorthand

_KEEPALIVE_S = 15
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 0)  # Linux only


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse an unknown host key, or (TOFU) record it in the hop's known_hosts."""

    def __init__(self, board: str, label: str, known_hosts: Path, trust_on_first_use: bool):
        self.board = board
        self.label = label
        self.known_hosts = known_hosts
        self.trust = trust_on_first_use

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey):
        if not self.trust:
            raise UnknownHostKey(
                self.board,
                f"{self.label}: host key of {hostname} ({key.get_name()} {fingerprint(key)})"
                f" is not in {self.known_hosts}; check it and add it there, or set"
                " trust_on_first_use: true for this board",
            )
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a", encoding="ascii") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


class _QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges what it reads at once.

    Linux delays an ACK (up to 40 ms) while it hopes to piggyback it on a reply.
    A jump host forwards the board's packets as they come, one small write each,
    and its Nagle holds the next one until the last is acknowledged: without
    this, a command through a jump host that writes to stderr and then exits
    waited ~40 ms. ``TCP_QUICKACK`` does not stick, so it is set before each read.
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        return super().recv(bufsize, flags)


def _dial(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to the first hop (each address ``host`` resolves to, in turn)."""
    last: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = (
            _QuickAckSocket(family, kind, proto)
            if _TCP_QUICKACK
            else socket.socket(family, kind, proto)
        )
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as e:
            sock.close()
            last = e
            continue
        # without it, every new channel waits ~40 ms on a delayed ACK (Nagle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise last or OSError(f"{host} resolves to no address")


class _Connection(fabric.Connection):
    """A fabric ``Connection`` with farm's host-key policy and socket, and a bounded gateway.

    The first hop's TCP connection is farm's :func:`_dial`; fabric opens a jump
    host's ``direct-tcpip`` channel with paramiko's default timeout (an hour),
    and a hung jump host must fail within the board's connect timeout instead.
    """

    farm_label = ""  # set by _make: these are real attributes, not fabric config keys
    farm_timeout = 10.0
    farm_known_hosts = Path()

    def open(self):
        if self.is_connected or self.gateway:
            return super().open()
        sock = _dial(self.host, int(self.port), self.farm_timeout)
        self.connect_kwargs["sock"] = sock
        try:
            return super().open()
        except BaseException:
            self.stop_transport()  # before its socket: closed under it, its thread prints
            sock.close()  # "Socket exception: Bad file descriptor (9)" beside farm's line
            raise

    def stop_transport(self) -> None:
        """Stop paramiko's transport thread and wait for it, so that nothing reads the
        socket (or the jump host's channel) when it is closed. A refused host key, a
        missing key file or a failed login leave the thread running."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_alive():
            return
        transport.stop_thread()  # its reads time out every 0.1 s and then see it stopped
        transport.join(2.0)
        transport.sock.close()

    def close(self) -> None:
        transport = self.client.get_transport()
        if transport is not None and not transport.is_authenticated():  # a failed open
            self.stop_transport()
        super().close()

    def open_gateway(self):
        if isinstance(self.gateway, _Connection):
            self.gateway.open()
            return self.gateway.transport.open_channel(
                kind="direct-tcpip",
                dest_addr=(self.host, int(self.port)),
                src_addr=("", 0),
                timeout=self.farm_timeout,
            )
        return super().open_gateway()


def _known_hosts(path: str | None) -> Path:
    return Path(os.path.expanduser(path or "~/.ssh/known_hosts"))


def _config(board: Any) -> fabric.Config:
    """fabric's config with the board's ssh_config (or the user's and the system's)."""
    path = getattr(board, "ssh_config", None)
    if path:
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise BoardUnreachable(board.name, f"ssh_config {path} does not exist")
        return fabric.Config(runtime_ssh_path=path)
    return fabric.Config()


def hops(board: Any, config: fabric.Config) -> list[Hop]:
    """The jump hosts before ``board``, first to last: the inventory's, else ssh_config's."""
    listed = getattr(board, "proxy_jump", None)
    if listed is not None:
        return [Hop.model_validate(h) if isinstance(h, dict) else h for h in listed]
    jump = config.base_ssh_config.lookup(board.host).get("proxyjump", "none")
    if jump.strip().lower() == "none":
        return []
    return [Hop(**hop_shorthand(part.strip())) for part in jump.split(",") if part.strip()]


def _make(
    board: Any,
    config: fabric.Config,
    endpoint: Any,
    role: str,
    gateway: _Connection | str | None,
    timeout: float,
) -> _Connection:
    """One connection (a hop or the board) with its host key rules set, not yet open.

    ``role`` ("hop 1 of 2", or "" for the board) goes into its label, which every
    error about this connection carries."""
    # a hop that names no key of its own uses the board's, as it uses its known_hosts
    identity = endpoint.identity_file or getattr(board, "identity_file", None)
    connect_kwargs: dict[str, Any] = {
        "key_filename": [os.path.expanduser(identity)] if identity else [],
        "password": None,
        "passphrase": None,
        "timeout": timeout,
        "banner_timeout": timeout,
        "auth_timeout": timeout,
        "channel_timeout": timeout,
    }
    conn = _Connection(
        endpoint.host,
        user=endpoint.user or None,
        port=endpoint.port or None,
        config=config,
        gateway=gateway if gateway is not None else False,  # False: ignore ssh_config's own
        connect_kwargs=connect_kwargs,
    )
    # the float timeout travels in connect_kwargs: fabric would round it down to whole seconds
    conn.connect_timeout = None
    keys = [os.path.expanduser(k) for k in conn.connect_kwargs.get("key_filename") or []]
    conn.connect_kwargs.update(key_filename=keys, allow_agent=not keys, look_for_keys=not keys)
    known = _known_hosts(getattr(endpoint, "known_hosts", None) or board.known_hosts)
    trust = getattr(endpoint, "trust_on_first_use", None)
    if trust is None:
        trust = bool(getattr(board, "trust_on_first_use", False))
    where = f"{_shown(conn.host)}:{conn.port}"
    if conn.original_host != conn.host:  # an ssh_config alias
        where = f"{_shown(conn.original_host)} ({where})"
    label = f"jump host {where} ({role})" if role else where
    try:
        if known.exists():
            conn.client.load_host_keys(str(known))
    except paramiko.hostkeys.InvalidHostKey as e:  # a file that is not a known_hosts file
        raise BoardUnreachable(
            board.name, f"{label}: {known} is not a known_hosts file (a line holds no valid key)"
        ) from e
    except (OSError, ValueError, paramiko.SSHException) as e:  # ValueError: a NUL in the path
        raise BoardUnreachable(board.name, f"{label}: cannot read known_hosts {known}: {e}") from e
    conn.client.set_missing_host_key_policy(_HostKeyPolicy(board.name, label, known, trust))
    conn._set(farm_label=label, farm_timeout=timeout, farm_known_hosts=known)
    return conn


def chain(board: Any, timeout: float) -> list[_Connection]:
    """The board's connections, jump hosts first and the board last; none open yet."""
    config = _config(board)
    jumps = hops(board, config)
    conns: list[_Connection] = []
    gateway: _Connection | str | None = None
    for i, hop in enumerate(jumps, 1):
        gateway = _make(board, config, hop, f"hop {i} of {len(jumps)}", gateway, timeout)
        conns.append(gateway)
    if gateway is None and getattr(board, "proxy_jump", None) is None:
        command = config.base_ssh_config.lookup(board.host).get("proxycommand")
        if command and command.strip().lower() != "none":
            gateway = command  # fabric runs it, as OpenSSH would, and talks SSH over its pipes
    conns.append(_make(board, config, board, "", gateway, timeout))
    return conns


def open_chain(board: Any, timeout: float) -> list[_Connection]:
    """Open the board's connections in order; the error names the hop that failed."""
    try:
        conns = chain(board, timeout)
    except ValueError as e:  # a host name or path no connection can be made from
        raise BoardUnreachable(board.name, f"connect to {_shown(board.host)}: {_invalid(e)}") from e
    try:
        for conn in conns:
            _open_one(board.name, conn, timeout)
    except BaseException:
        close_chain(conns)
        raise
    return conns


def _open_one(board: str, conn: _Connection, timeout: float) -> None:
    label, known = conn.farm_label, conn.farm_known_hosts
    started = time.monotonic()
    try:
        conn.open()
    except HostKeyError:
        raise
    except paramiko.BadHostKeyException as e:
        raise HostKeyMismatch(
            board,
            f"{label}: host key changed: it offers {e.key.get_name()}"
            f" {fingerprint(e.key)}, {known} holds {fingerprint(e.expected_key)}."
            " Refusing to connect; if it was reinstalled, remove the old"
            f" line from {known}",
        ) from e
    except ValueError as e:  # IDNA refused the name (a..b, a label over 63 characters)
        raise BoardUnreachable(board, f"connect to {label}: {_invalid(e)}") from e
    except paramiko.ChannelException as e:  # the jump host could not reach the next hop
        raise BoardUnreachable(
            board, f"{conn.gateway.farm_label} cannot reach {label}: {e.text}"
        ) from e
    except (paramiko.SSHException, OSError, EOFError) as e:
        if time.monotonic() - started >= 0.9 * timeout:
            # a silent host surfaces as whichever paramiko step ran out of time
            # first ("No existing session", a bad fd, ...): the clock says what it was
            raise TransportTimeout(
                board, f"connect to {label}: no answer within {timeout:g} s ({e})"
            ) from e
        raise translate(board, e, f"connect to {label}") from e
    conn.transport.set_keepalive(_KEEPALIVE_S)


def close_chain(conns: list[_Connection]) -> None:
    """Close the board's connection, then each jump host's, last hop first."""
    for conn in reversed(conns):
        conn.close()


def _shown(host: Any) -> str:
    """A host as an error line shows it: as written, or quoted when it holds control bytes."""
    text = str(host)
    return text if text.isprintable() else repr(text)


def _invalid(exc: ValueError) -> str:
    if isinstance(exc, UnicodeError) and "idna" in str(exc):
        return f"not a valid host name ({exc.__cause__ or exc})"
    return f"invalid value in the board's entry ({exc})"


def translate(board: str, exc: BaseException, doing: str) -> TransportError:
    """The farm error for a paramiko/socket failure while ``doing`` something."""
    if isinstance(exc, TransportError):
        return exc
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (socket.timeout, TimeoutError)) or re.search(
        r"timeout|timed out|banner", text, re.IGNORECASE
    ):
        return TransportTimeout(board, f"{doing}: timed out ({text})")
    if isinstance(exc, paramiko.AuthenticationException):
        return BoardUnreachable(board, f"{doing}: authentication failed ({text})")
    if isinstance(exc, socket.gaierror):
        return BoardUnreachable(board, f"{doing}: cannot resolve host ({text})")
    return BoardUnreachable(board, f"{doing}: {text}")
