"""One physical monitor serving one board at a time (the Ray monitor actor wraps this).

A capture is three windows: ``pre_idle_s`` of idle before the task (``start``
returns only after it), the task itself, and ``post_idle_s`` of idle after it
(``stop`` waits it out before stopping). The idle windows give the baseline that
net energy subtracts, and the check that the board returned to where it began.

Usage (what the station does, around the engine's run)::

    service.start("board-a")                 # returns after the pre-task idle
    result = run_task()                      # markers on the board's clock
    trace = service.stop("board-a", result["markers"])
    report = service.analyze(trace, result["markers"], exchanges)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from farm.errors import MonitorBusy, MonitorUnavailable
from farm.power.base import Monitor, Trace, open_monitor
from farm.power.energy import EnergyReport, analyze
from farm.power.sync import Exchange


class MonitorService:
    def __init__(
        self,
        monitor: Monitor,
        *,
        name: str = "",
        pre_idle_s: float = 1.0,
        post_idle_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.monitor = monitor
        self.name = name or monitor.backend
        self.pre_idle_s = pre_idle_s
        self.post_idle_s = post_idle_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self._board: str | None = None
        self._samples = 0  # over every finished capture: what `stats` counts from
        self._dropped = 0
        self._counting = threading.Lock()  # a capture's counts move from live to total at once

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> MonitorService:
        """From an inventory ``monitors:`` entry; ``pre_idle_s``/``post_idle_s`` may sit in options."""
        options = dict(spec.get("options") or {})
        pre = float(options.pop("pre_idle_s", 1.0))
        post = float(options.pop("post_idle_s", 1.0))
        name = str(spec.get("name", ""))
        try:
            monitor = open_monitor(str(spec["backend"]), options)
        except MonitorUnavailable as exc:  # say which inventory entry, not just which backend
            raise MonitorUnavailable(f"power monitor {name!r}: {exc}") from exc
        return cls(monitor, name=name, pre_idle_s=pre, post_idle_s=post)

    @property
    def board(self) -> str | None:
        return self._board

    def start(self, board: str) -> dict[str, Any]:
        """Claim the monitor for ``board``, start capturing, wait out the pre-task idle."""
        with self._lock:
            if self._board is not None:
                raise MonitorBusy(f"monitor {self.name!r} is recording {self._board!r}")
            self._board = board
        try:
            self.monitor.start()
        except BaseException:
            self._release()
            raise
        started = time.monotonic_ns()
        self._sleep(self.pre_idle_s)
        return {"monitor": self.name, "board": board, "started_host_ns": started}

    def stop(self, board: str, markers: Mapping[str, Any] | None = None) -> Trace:
        """Wait out the post-task idle, stop, release the monitor, return the trace."""
        self._check_owner(board)
        try:
            self._sleep(self.post_idle_s)
            return self._stop(markers)
        finally:
            self._release()

    def abort(self, board: str) -> None:
        """The task failed: stop without waiting, drop the samples, release."""
        self._check_owner(board)
        try:
            self._stop(None)
        finally:
            self._release()

    def stats(self) -> dict[str, Any]:
        """For the metrics exporter: the board being recorded, the live power, and the
        samples received and dropped so far (finished captures plus the running one)."""
        with self._counting:
            live = self.monitor.live() if self._board is not None else None
            samples, dropped = self._samples, self._dropped
        return {
            "monitor": self.name,
            "board": self._board,
            "power_w": live.power_w if live is not None else None,
            "samples": samples + (live.samples if live is not None else 0),
            "dropped": dropped + (live.dropped if live is not None else 0),
        }

    def _stop(self, markers: Mapping[str, Any] | None) -> Trace:
        with self._counting:
            trace = self.monitor.stop(markers)
            self._samples += len(trace)
            self._dropped += int(trace.dropped)
        return trace

    def analyze(
        self, trace: Trace, markers: Mapping[str, Any], exchanges: Sequence[Exchange] | None = None
    ) -> EnergyReport:
        return analyze(trace, markers, exchanges)

    def close(self) -> None:
        self.monitor.close()

    def _check_owner(self, board: str) -> None:
        if self._board != board:
            raise MonitorBusy(
                f"monitor {self.name!r} is not recording {board!r} (it has {self._board!r})"
            )

    def _release(self) -> None:
        with self._lock:
            self._board = None
