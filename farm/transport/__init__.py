"""Reaching boards: ``connect(board)`` picks the transport the board names.

Importing this package registers the built-in transports: ``local`` (this
machine) and ``ssh`` (fabric: ssh_config, jump hosts, strict host keys). The
``fake`` transport (in-process boards for tests and benchmarks of the scheduler)
lives with the other fakes and registers itself when :mod:`farm.testing.transport`
is imported: a process that reaches fake boards imports it (a Ray worker through
``farm.testing.transport.WORKER_SETUP``); production code never does. See
:mod:`farm.transport.base` for the interface.
"""

from farm.transport import local, ssh
from farm.transport.base import Channel, Transport, connect, register, registered, shell_command

__all__ = [
    "Channel",
    "Transport",
    "connect",
    "local",
    "register",
    "registered",
    "shell_command",
    "ssh",
]
