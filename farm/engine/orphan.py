"""An engine whose farm is gone stops at once, mid-measurement if need be.

A board process outlives the farm that started it: killing a head (or an
embedded ``farm submit``) drops its SSH connections, sshd closes the pipes of
each remote process, and the board lease process sees the end of its input and
lets the board go — but an engine busy in a long ``run`` reads nothing until
the run ends, so it would go on measuring for minutes with nobody to answer.
The next farm then takes the free lease and measures beside that orphan: two
measurements on one board, each slowing the other (a resumed sweep's tasks
missed their timeout so).

The protocol stdout is the one sign that cannot be mistaken: ``poll`` reports
an error on a pipe whose reader is gone (a hang-up on a terminal or socket),
whereas the end of stdin only means that no more requests come (``engine
serve < requests`` still owes its answers). A watcher thread waits for that
and ends the process with :data:`EXIT_ORPHANED`; the kernel then drops any
lock it held. Standard library only: it runs before torch is imported.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading

EXIT_ORPHANED = 3
"""The exit code of an engine that stopped because nobody reads its answers."""

_GONE = select.POLLERR | select.POLLHUP


def exit_when_unread(fd: int) -> threading.Thread:
    """Watch ``fd`` (the protocol stdout) from a daemon thread; exit the process
    as soon as it has no reader left."""
    watcher = threading.Thread(target=_watch, args=(fd,), name="farm-orphan", daemon=True)
    watcher.start()
    return watcher


def _watch(fd: int) -> None:
    poller = select.poll()
    poller.register(fd, 0)  # no events asked: error and hang-up are always reported
    while True:
        events = poller.poll()
        if any(mask & _GONE for _, mask in events):
            break
        if any(mask & select.POLLNVAL for _, mask in events):
            return  # the descriptor was closed here: the process is ending anyway
    with contextlib.suppress(OSError):  # stderr went with the farm, most likely
        os.write(2, b"farm.engine: nobody reads the answers (the farm went away): stopping\n")
    os._exit(EXIT_ORPHANED)  # the main thread may be deep in a forward: no unwinding
