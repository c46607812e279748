"""Monsoon Solutions HVPM/LVPM power monitors through their ``monsoon`` Python package.

Setup: ``setup_usb(serial, Protocol=<a USB_protocol of our own>)`` (the library's
default protocol object is one instance shared by every monitor in the process),
``setVout(vout)``, main current and main voltage channels enabled, console and CSV
output off, then *streaming* collection (``periodicStartSampling`` /
``periodicCollectSamples`` in a thread / ``periodicStopSampling``) at 5 kHz.

The sample time is the sample's index ÷ 5 kHz on the monitor's own clock. The
library's timestamps are the host's *arrival* time of each USB packet, useless as
sample times, and the library loses samples at every ``periodicCollectSamples``
call: it throws away one packet ("clear out stale buffer") before reading, and
truncates the last packet to the count asked for. So the device object the
sample engine reads through is wrapped (:class:`_PacketLedger`): it counts the
measurement samples of every packet the library reads, and the backend places
each returned chunk after whatever was read and thrown away, so the timeline
holds; the lost samples are counted as dropped.

Hazards reported on the trace:

- the stream stops delivering (the device's reads time out: pyusb's
  ``USBTimeoutError`` surfaces from the library);
- a silent USB reconnect: the device's drop counter restarts, and an unknown
  number of samples vanished (estimated from the host clock, flagged).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from farm.errors import MonitorUnavailable
from farm.power.base import Live, Monitor, Trace, register
from farm.spec.inventory import MonitorOptions

RATE_HZ = 5000.0
PACKET_BYTES = 64
MEASUREMENT = 0x00  # Monsoon.Operations.SampleType.Measurement (the type bits 0x30)


def _library(model: str) -> tuple[Any, Any, Any]:
    try:
        device = importlib.import_module(f"Monsoon.{model.upper()}")
        engine = importlib.import_module("Monsoon.sampleEngine")
        pmapi = importlib.import_module("Monsoon.pmapi")
    except ImportError as exc:
        raise MonitorUnavailable(
            "monsoon: the Monsoon package (pip install monsoon) is not installed"
        ) from exc
    return device, engine, pmapi


NO_LIBUSB = "libusb-1.0 is not installed: apt install libusb-1.0-0"
"""What pyusb's "No backend available" means, in words a lab person acts on."""


class _PacketLedger:
    """The library's device object, with a ledger of what each bulk read held.

    ``SampleEngine`` reads packets through ``BulkRead`` and parses them with
    ``swizzlePacket``; everything else is passed through untouched.
    """

    def __init__(self, device: Any) -> None:
        self._device = device
        self.packets: list[tuple[int, int]] = []  # (drop counter, measurement samples)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._device, name)

    def BulkRead(self) -> Any:  # the library's name for it
        data = self._device.BulkRead()
        for start in range(0, len(data), PACKET_BYTES):
            fields = self._device.swizzlePacket(data[start : start + PACKET_BYTES])
            count = int(fields[2])
            kinds = [fields[3 + 10 * i + 8] & 0x30 for i in range(count)]
            self.packets.append((int(fields[0]), kinds.count(MEASUREMENT)))
        return data


class MonsoonOptions(MonitorOptions):
    """``backend: monsoon``: which Monsoon (serial: None = the only one attached)."""

    serial: int | None = None
    vout: float = Field(default=4.0, gt=0)  # the voltage it supplies the board, V
    model: Literal["hvpm", "lvpm"] = "hvpm"
    chunk: int = Field(default=10000, gt=0)  # samples per read from the library


@register("monsoon", options=MonsoonOptions)
class MonsoonMonitor(Monitor):
    update_period_s = 1.0 / RATE_HZ

    def __init__(
        self, serial: int | None = None, vout: float = 4.0, model: str = "hvpm", chunk: int = 10000
    ):
        if model.lower() not in ("hvpm", "lvpm"):
            raise MonitorUnavailable(f"monsoon: unknown model {model!r} (hvpm or lvpm)")
        device_mod, self._se, pmapi = _library(model)
        self.chunk = chunk
        where = f"monsoon {serial or '(any)'}"
        try:
            self.device = device_mod.Monsoon()
            protocol = pmapi.USB_protocol()
            self.device.setup_usb(serial, protocol)
            if protocol.DEVICE is None:  # the library prints "Unable to find device"
                raise MonitorUnavailable(f"{where}: no Monsoon with that serial on USB")
            self.serial = self.device.getSerialNumber()
            self.device.fillStatusPacket()
            self.device.setVout(vout)
            self._ledger = _PacketLedger(self.device)
            self.engine = self._se.SampleEngine(self._ledger)
            self.engine.ConsoleOutput(False)
            self.engine.disableCSVOutput()
            self.engine.enableChannel(self._se.channels.MainCurrent)
            self.engine.enableChannel(self._se.channels.MainVoltage)
        except MonitorUnavailable:
            raise
        except Exception as exc:  # pyusb/libusb errors: the library has no exception type
            if type(exc).__name__ == "NoBackendError":  # pyusb found no libusb to drive USB
                raise MonitorUnavailable(f"{where}: {NO_LIBUSB}") from exc
            raise MonitorUnavailable(f"{where}: {exc}") from exc
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
        self._placed = 0  # samples on the timeline so far (the rest of _next are dropped)
        self._last_counter = 0
        self._error: BaseException | None = None
        self._halt.clear()
        self._ledger.packets = []
        self._t0 = time.monotonic_ns()
        first = self.engine.periodicStartSampling()
        self._take(first, stale=False)
        self._thread = threading.Thread(target=self._loop, name="farm-monsoon", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._halt.is_set():
            self._ledger.packets = []
            try:
                samples = self.engine.periodicCollectSamples(self.chunk)
            except Exception as exc:  # USB errors surface as assorted exception types
                if "timed out" in str(exc).lower() or getattr(exc, "errno", None) == 110:
                    self._hazards.append(f"capture stopped delivering after {self._next} samples")
                else:
                    self._error = exc
                return
            self._take(samples, stale=True)

    def _take(self, samples: list[list[float]], *, stale: bool) -> None:
        """Place one returned chunk on the monitor's timeline, packet by packet.

        ``getSamples`` lists every channel in ``channels`` order. The ledger says
        what each packet read held: its samples follow any the device counted as
        dropped since the packet before (the header's counter), and with ``stale``
        the library threw the first packet away. Samples read but not returned
        (thrown away, truncated) keep their slots and count as dropped.
        """
        ch = self._se.channels
        current = np.asarray(samples[ch.MainCurrent], dtype=np.float64)
        volts = np.asarray(samples[ch.MainVoltage], dtype=np.float64)
        packets, self._ledger.packets = self._ledger.packets, []
        n = min(len(current), len(volts))
        index = np.empty(n, dtype=np.int64)
        placed, missing = 0, 0
        for p, (counter, k) in enumerate(packets):
            if counter < self._last_counter:
                missing += self._reconnected(counter)
            else:
                missing += counter - self._last_counter
            self._last_counter = counter
            if stale and p == 0:
                missing += k  # read by the library to clear its buffer, then thrown away
                continue
            take = min(k, n - placed)
            first = self._next + missing
            index[placed : placed + take] = np.arange(first, first + take)
            placed += take
            self._next = first + k
            missing = 0
        self._next += missing
        self._placed += placed
        if n:
            self._index.append(index[:placed])
            self._power.append((current[:placed] * volts[:placed] / 1e3).astype(np.float32))

    def _reconnected(self, counter: int) -> int:
        """The device re-enumerated: its drop counter restarted and some samples were
        never counted at all. Only the host clock can estimate how many."""
        expected = (time.monotonic_ns() - self._t0) / 1e9 * RATE_HZ
        lost = max(0, round(expected - self._next))
        self._hazards.append(
            f"silent reconnect near sample {self._next}: ~{lost} samples lost (host-clock estimate)"
        )
        return lost + counter

    def live(self) -> Live | None:
        chunks = self._power if self._thread is not None else []
        if not chunks:
            return None
        return Live(
            power_w=float(chunks[-1].mean()),
            samples=self._placed,
            dropped=self._next - self._placed,
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
            dropped=int(index[-1] + 1 - len(index)) if len(index) else 0,  # slots left empty
            hazards=list(dict.fromkeys(self._hazards)),
            host_stop_ns=stopped,
        )

    def close(self) -> None:
        try:
            self.device.closeDevice()
        except Exception as exc:
            raise MonitorUnavailable(f"monsoon: close failed: {exc}") from exc
