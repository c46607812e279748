"""Reaching boards: ``connect(board)`` picks the transport the board names.

A transport is one module here, ``farm/transport/<name>.py``, that defines its
board model (a :class:`farm.spec.inventory.Board` subclass) and its
:class:`Transport` and registers both with ``@register(name, board=Model)``.
Nothing lists them: ``connect`` and the inventory loader import
``farm.transport.<name>`` the first time a board names it (see
:mod:`farm.spec.plugins`), so an inventory of local boards never loads the SSH
stack. Built in: ``local`` (this machine), ``ssh`` (fabric: ssh_config, jump
hosts, strict host keys), and whatever other module here registers one. The
``fake`` transport (in-process boards for tests and benchmarks of the scheduler)
lives with the other fakes and registers itself when :mod:`farm.testing.transport`
is imported (a Ray worker through ``farm.testing.transport.WORKER_SETUP``);
production code never does. See :mod:`farm.transport.base` for the interface.
"""

from farm.transport.base import Channel, Transport, connect, register, registered, shell_command

__all__ = ["Channel", "Transport", "connect", "register", "registered", "shell_command"]
