"""Network addresses as the operator writes them, parsed in one place (a leaf).

``split_address`` reads a Ray head's ``HOST:PORT``; ``parse_listen_address``
reads a listening address (``HOST:PORT`` or ``off``, for ``--metrics-address``);
``free_port`` asks the kernel for a port free right now.
"""

from __future__ import annotations

import socket

from farm.errors import UserError

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def split_address(address: str) -> tuple[str, int]:
    """A Ray head's ``HOST:PORT``."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"not a Ray address: {address!r} (expected HOST:PORT)")
    return host, int(port)


def parse_listen_address(address: str) -> tuple[str, int] | None:
    """``HOST:PORT``, or ``off`` (None). The host is whatever the operator wrote: the
    default listens on the loopback only."""
    if address.strip().lower() == "off":
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--metrics-address: expected HOST:PORT or off, got {address!r}")
    return host.strip("[]"), int(port)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now on ``host``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1" if host == "localhost" else host, 0))
        return s.getsockname()[1]
