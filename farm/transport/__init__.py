"""Reaching boards: ``connect(board)`` picks the transport the board names.

Importing this package registers the built-in transports: ``local`` (this
machine), ``ssh`` (fabric: ssh_config, jump hosts, strict host keys) and
``fake`` (in-process boards for benchmarks of the scheduler; it lives with the
other fakes in :mod:`farm.testing.transport`, and is registered here so that any
station can reach a fake board). See
:mod:`farm.transport.base` for the interface.
"""

from farm.testing import transport as fake  # registers ``fake``
from farm.transport import local, ssh
from farm.transport.base import Channel, Transport, connect, register, registered, shell_command

__all__ = [
    "Channel",
    "Transport",
    "connect",
    "fake",
    "local",
    "register",
    "registered",
    "shell_command",
    "ssh",
]
