"""Waiting in tests for something the code under test does, by polling it.

Prefer an event from the code itself (``Scheduler.settle()``, a fake's callback)
where there is one; poll with these where the only sign is a state to read (a
store row, a process, a job's progress). Never a bare ``time.sleep`` to "let
things happen": on a busy machine it is either too short or wasted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``predicate`` until it returns something true and return that; after
    ``timeout`` seconds fail with an ``AssertionError`` that names ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_job(progress: Callable[[], Any], timeout: float = 180, what: str = "the job") -> Any:
    """Wait until ``progress()`` (a ``JobProgress``, from a scheduler, its actor or a
    store) says the job reached a terminal state, and return it."""
    last: list[Any] = [None]

    def finished() -> Any:
        last[0] = progress()
        return last[0] if last[0] is not None and last[0].state.is_terminal() else None

    try:
        return wait_for(finished, timeout, what, interval=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc} to finish; last seen: {last[0]}") from None
