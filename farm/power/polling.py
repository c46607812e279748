"""Monitors the host has to poll: RAPL, NVML, hwmon.

These sensors have no sample clock we can read: a thread reads them every
``1/poll_hz`` seconds and stamps each reading with the host's CLOCK_MONOTONIC,
so their traces carry explicit ``times_s``.

Two kinds of sensor: an *energy counter* (RAPL, NVML total energy) is the good
kind: the energy between two reads is exact whatever happened in between, so a
reading pair becomes one sample of mean power over exactly that interval. An
*instantaneous power* sensor (hwmon rails) only tells the power near the read.
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from farm.power.base import LIVE_WINDOW_S, Live, Monitor, Trace


class PolledMonitor(Monitor):
    counter: bool = True  # read() returns cumulative joules; else watts
    rails: tuple[str, ...] | None = None

    def __init__(self, poll_hz: float, update_period_s: float):
        if poll_hz <= 0:
            raise ValueError("poll_hz must be positive")
        self.poll_hz = float(poll_hz)
        self.update_period_s = float(update_period_s)
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._times: list[int] = []
        self._values: list[float] = []
        self._error: BaseException | None = None

    @abstractmethod
    def read(self) -> float:
        """Cumulative energy in J (counter sensors) or power in W."""

    def begin(self) -> None:
        """Reset per-capture state (e.g. a counter's unwrapping) before the first read."""

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("capture already running")
        self.begin()
        self._times, self._values, self._error = [], [], None
        self._halt.clear()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name=f"farm-{self.backend}", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        value = self.read()
        self._times.append(time.monotonic_ns())
        self._values.append(value)

    def _loop(self) -> None:
        period = 1.0 / self.poll_hz
        next_at = time.monotonic() + period
        while not self._halt.wait(max(0.0, next_at - time.monotonic())):
            try:
                self._sample()
            except (
                OSError,
                ValueError,
            ) as exc:  # the sensor went away or read garbage: keep what we have, say so at stop
                self._error = exc
                return
            next_at += period

    def live(self) -> Live | None:
        times, values = self._times, self._values  # lists only grow during a capture
        n = len(times)
        if self._thread is None or n < 2:
            return None
        back = max(1, min(n - 1, round(LIVE_WINDOW_S * self.poll_hz)))
        if self.counter:
            dt = (times[n - 1] - times[n - 1 - back]) / 1e9
            power = (values[n - 1] - values[n - 1 - back]) / dt if dt > 0 else None
        else:
            power = sum(values[n - back : n]) / back
        return Live(power_w=power, samples=n - 1 if self.counter else n, dropped=0)

    def stop(self, markers: Mapping[str, Any] | None = None) -> Trace:
        if self._thread is None:
            raise RuntimeError("stop() without start()")
        self._halt.set()
        self._thread.join()
        self._thread = None
        if self._error is None:
            self._sample()
        return self.to_trace(np.array(self._times, np.int64), np.array(self._values, np.float64))

    def to_trace(self, t_ns: np.ndarray, values: np.ndarray) -> Trace:
        hazards = [f"sensor read failed mid-capture: {self._error}"] if self._error else []
        t0 = int(t_ns[0])
        if self.counter:
            dt = np.diff(t_ns) / 1e9
            power = np.diff(values) / np.where(dt > 0, dt, np.inf)
            times = (t_ns[:-1] - t0) / 1e9
        else:
            power, times = values, (t_ns - t0) / 1e9
        return Trace(
            power_w=power.astype(np.float32),
            rate_hz=self.poll_hz,
            t0_host_ns=t0,
            times_s=times,
            source=self.backend,
            rails=self.rails,
            update_period_s=self.update_period_s,
            hazards=hazards,
            host_stop_ns=int(t_ns[-1]),
        )
