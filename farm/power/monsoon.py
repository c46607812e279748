"""Monsoon Solutions HVPM/LVPM power monitors through their ``Monsoon`` Python package.

Setup: ``setup_usb(serial)``, ``setVout(vout)``, main current and main voltage
channels enabled, console and CSV output off, then *streaming* collection
(``periodicStartSampling`` / ``periodicCollectSamples`` in a thread /
``periodicStopSampling``) at the monitor's 5 kHz.

The sample time is the sample's index ÷ 5 kHz on the monitor's own clock,
advanced past dropped samples (the device counts them in ``engine.dropped``).
The library's timestamps are the host's *arrival* time of each USB packet,
useless as sample times; they are only checked for hazards:

- the blocking ``startSampling`` without triggers stops after 50,000 samples
  (10 s): a stream that stops delivering is reported;
- the timestamp list and the sample lists coming back with different lengths;
- a silent USB reconnect: the drop counter or the timestamps go backwards, and
  an unknown number of samples vanished (estimated from the host clock, flagged).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from farm.errors import MonitorUnavailable
from farm.power.base import Live, Monitor, Trace, register

RATE_HZ = 5000.0
STALL_S = 1.0  # no samples for this long while capturing: the device stopped


def _library(model: str) -> tuple[Any, Any]:
    try:
        device = importlib.import_module(f"Monsoon.{model.upper()}")
        engine = importlib.import_module("Monsoon.sampleEngine")
    except ImportError as exc:
        raise MonitorUnavailable(
            "monsoon: the Monsoon package (pip install monsoon) is not installed"
        ) from exc
    return device, engine


@register("monsoon")
class MonsoonMonitor(Monitor):
    update_period_s = 1.0 / RATE_HZ

    def __init__(
        self, serial: int | None = None, vout: float = 4.0, model: str = "hvpm", chunk: int = 500
    ):
        if model.lower() not in ("hvpm", "lvpm"):
            raise MonitorUnavailable(f"monsoon: unknown model {model!r} (hvpm or lvpm)")
        device_mod, self._se = _library(model)
        self.chunk = chunk
        try:
            self.device = device_mod.Monsoon()
            self.device.setup_usb(serial)
            self.serial = self.device.getSerialNumber()
            self.device.fillStatusPacket()
            self.device.setVout(vout)
            self.engine = self._se.SampleEngine(self.device)
            self.engine.ConsoleOutput(False)
            self.engine.disableCSVOutput()
            self.engine.enableChannel(self._se.channels.MainCurrent)
            self.engine.enableChannel(self._se.channels.MainVoltage)
        except (
            Exception
        ) as exc:  # pyusb/libusb errors: the library has no exception type of its own
            raise MonitorUnavailable(f"monsoon {serial or '(any)'}: {exc}") from exc
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._power: list[np.ndarray] = []

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("capture already running")
        self._power = []
        self._index: list[np.ndarray] = []
        self._hazards: list[str] = []
        self._next = 0  # next nominal sample index
        self._dropped = 0
        self._last_counter = 0
        self._last_stamp = -np.inf
        self._error: BaseException | None = None
        self._halt.clear()
        self.engine.periodicStartSampling()
        self._t0 = time.monotonic_ns()
        self._thread = threading.Thread(target=self._loop, name="farm-monsoon", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        quiet_since: float | None = None
        while not self._halt.is_set():
            try:
                samples = self.engine.periodicCollectSamples(self.chunk)
            except Exception as exc:  # USB errors surface as assorted exception types
                self._error = exc
                return
            if self._take(samples):
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > STALL_S:
                self._hazards.append(
                    f"capture stopped delivering after {self._next} samples"
                    + (" (the 50,000-sample limit without triggers)" if self._next == 50000 else "")
                )
                return
            else:
                time.sleep(0.01)

    def _take(self, samples: list[list[float]]) -> bool:
        """Append one collected chunk; returns whether it held samples."""
        ch = self._se.channels
        stamps = np.asarray(samples[ch.timeStamp], dtype=np.float64)
        # getSamples lists enabled channels in channels order after the timestamps
        current = np.asarray(samples[1], dtype=np.float64)
        volts = np.asarray(samples[2], dtype=np.float64)
        n = min(len(current), len(volts))
        if len(stamps) != len(current) or len(volts) != len(current):
            self._hazards.append(
                f"unequal arrays at sample {self._next}: {len(stamps)} timestamps, "
                f"{len(current)} currents, {len(volts)} voltages"
            )
        if n == 0:
            return False
        counter = int(self.engine.dropped)
        reconnected = counter < self._last_counter or (len(stamps) and stamps[0] < self._last_stamp)
        if reconnected:
            # the device restarted: its drop counter starts again, and some samples were
            # never counted at all. Only the host clock can estimate how many.
            expected = (time.monotonic_ns() - self._t0) / 1e9 * RATE_HZ
            lost = max(0, round(expected - self._next - n))
            self._hazards.append(
                f"silent reconnect near sample {self._next}: ~{lost} samples lost (host-clock estimate)"
            )
            gap = lost + counter
        else:
            gap = counter - self._last_counter
        self._last_counter = counter
        if len(stamps):
            self._last_stamp = float(stamps[-1])
        # the device says how many were dropped, not where: put the gap before the chunk
        self._next += gap
        self._dropped += gap
        self._index.append(np.arange(self._next, self._next + n, dtype=np.int64))
        self._power.append((current[:n] * volts[:n] / 1e3).astype(np.float32))
        self._next += n
        return True

    def live(self) -> Live | None:
        chunks = self._power if self._thread is not None else []
        if not chunks:
            return None
        return Live(
            power_w=float(chunks[-1].mean()),
            samples=self._next - self._dropped,
            dropped=self._dropped,
        )

    def stop(self, markers: Mapping[str, Any] | None = None) -> Trace:
        if self._thread is None:
            raise RuntimeError("stop() without start()")
        self._halt.set()
        self._thread.join()
        self._thread = None
        stopped = time.monotonic_ns()
        try:
            self.engine.periodicStopSampling()
        except Exception as exc:
            self._hazards.append(f"stop failed: {exc}")
        if self._error is not None:
            self._hazards.append(f"USB error mid-capture: {self._error}")
        index = np.concatenate(self._index) if self._index else np.zeros(0, np.int64)
        power = np.concatenate(self._power) if self._power else np.zeros(0, np.float32)
        return Trace(
            power_w=power,
            rate_hz=RATE_HZ,
            t0_host_ns=self._t0,
            index=index,
            source=f"monsoon:{self.serial}",
            update_period_s=self.update_period_s,
            dropped=self._dropped,
            hazards=list(dict.fromkeys(self._hazards)),
            host_stop_ns=stopped,
        )

    def close(self) -> None:
        try:
            self.device.closeDevice()
        except Exception as exc:
            raise MonitorUnavailable(f"monsoon: close failed: {exc}") from exc
