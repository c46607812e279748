"""A fake of Monsoon Solutions' ``Monsoon`` Python package (PyMonsoon), for machines
without a power monitor plugged in.

It provides the same modules, classes, methods and sample-list layout as the
real library: ``Monsoon.HVPM.Monsoon`` (``setup_usb``, ``setVout``,
``getSerialNumber``, ``fillStatusPacket``, ``closeDevice``),
``Monsoon.sampleEngine`` (``channels``, ``triggers``, ``SampleEngine`` with
``enableChannel``, ``ConsoleOutput``, ``enableCSVOutput``, ``startSampling``,
``getSamples``, ``periodicStartSampling``/``periodicCollectSamples``/
``periodicStopSampling`` and the ``dropped`` counter), ``Monsoon.Operations``
and ``Monsoon.pmapi``. ``getSamples()`` returns lists
``[timestamps, <enabled channels in channels order>]`` where timestamps are the
host's arrival time in seconds since sampling started, per USB packet, exactly
the thing never to use as sample time.

Behind it sits a ``FakeHardware`` whose power and misbehaviour tests control:
a current waveform, dropped samples (counted in ``dropped`` like the device's
packet header), the 50,000-sample stop of ``startSampling`` without triggers,
timestamp lists shorter than the sample lists, and silent USB reconnects (the
drop counter and timestamps restart and samples vanish uncounted).

``install(hardware)`` puts the modules into ``sys.modules`` for the duration of
a ``with`` block, so ``import Monsoon.HVPM`` finds the fake.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 5000
PACKET_SAMPLES = 3  # samples per USB packet, as on the HVPM
DEFAULT_SAMPLE_LIMIT = 50000


@dataclass
class FakeHardware:
    """The simulated monitor. ``current_ma(t)`` gives the main current at monitor time t (s)."""

    serial: int = 12345
    current_ma: Callable[[np.ndarray], np.ndarray] = lambda t: np.full(len(t), 500.0)
    drop_every: int = 0  # drop one sample in every N (0: never)
    reconnect_at: int | None = None  # nominal sample at which USB silently reconnects
    reconnect_lost: int = 500  # samples that vanish in a reconnect, uncounted
    short_timestamps: bool = False  # getSamples' timestamp list comes back shorter
    stop_after: int | None = None  # the device stops delivering (the 50,000-sample limit)
    realtime: bool = True  # pace samples at 5 kHz of wall time
    vout: float = 0.0
    connected: bool = False
    sampling: bool = False
    log: list[str] = field(default_factory=list)


def _operations() -> types.ModuleType:
    mod = types.ModuleType("Monsoon.Operations")

    class USB_Passthrough:
        Off = 0
        On = 1
        Auto = 2

    class SampleType:
        Measurement = 0x00
        ZeroCal = 0x10
        invalid = 0x20
        refCal = 0x30

    mod.USB_Passthrough = USB_Passthrough  # type: ignore[attr-defined]
    mod.SampleType = SampleType  # type: ignore[attr-defined]
    return mod


def _pmapi() -> types.ModuleType:
    mod = types.ModuleType("Monsoon.pmapi")

    class USB_protocol:
        pass

    mod.USB_protocol = USB_protocol  # type: ignore[attr-defined]
    return mod


def _device_module(name: str, devices: dict[int, FakeHardware]) -> types.ModuleType:
    mod = types.ModuleType(f"Monsoon.{name}")

    class Monsoon:
        fineThreshold = 64000
        auxFineThreshold = 30000
        mainvoltageScale = 4
        usbVoltageScale = 2

        def __init__(self) -> None:
            self.hw: FakeHardware | None = None

        def setup_usb(self, serialno: int | None = None, Protocol: object = None) -> None:
            if serialno is None:
                found = next(iter(devices.values()), None)
            else:
                found = devices.get(serialno)
            if found is None:
                raise ValueError("Monsoon: no device found")  # pyusb finds nothing
            self.hw = found
            found.connected = True

        def _dev(self) -> FakeHardware:
            if self.hw is None or not self.hw.connected:
                raise ValueError("Monsoon: device not set up")
            return self.hw

        def getSerialNumber(self) -> int:
            return self._dev().serial

        def fillStatusPacket(self) -> None:
            self._dev()

        def setVout(self, value: float) -> None:
            self._dev().vout = float(value)
            self._dev().log.append(f"setVout({value})")

        def setUSBPassthroughMode(self, mode: int) -> None:
            self._dev()

        def StartSampling(self, calTime: int = 1250, maxTime: int = 0xFFFFFFFF) -> None:
            self._dev().sampling = True

        def stopSampling(self) -> None:
            self._dev().sampling = False

        def closeDevice(self) -> None:
            self._dev().connected = False

    mod.Monsoon = Monsoon  # type: ignore[attr-defined]
    return mod


def _sample_engine() -> types.ModuleType:
    mod = types.ModuleType("Monsoon.sampleEngine")

    class channels:
        timeStamp = 0
        MainCurrent = 1
        USBCurrent = 2
        AuxCurrent = 3
        MainVoltage = 4
        USBVoltage = 5

    class triggers:
        SAMPLECOUNT_INFINITE = 0xFFFFFFFF

        @staticmethod
        def GREATER_THAN(x: float, y: float) -> bool:
            return x > y

        @staticmethod
        def LESS_THAN(x: float, y: float) -> bool:
            return x < y

    class SampleEngine:
        def __init__(self, Monsoon: object, bulkProcessRate: int = 128) -> None:
            self.monsoon = Monsoon
            self.dropped = 0
            self._channels = [True, True, False, False, True, False]
            self._console = True
            self._csv: str | None = None
            self._triggers = False
            self._nominal = 0  # next nominal sample number (monitor's own clock)
            self._start = time.time()
            self._t_wall = time.monotonic()
            self._stopped = False
            self._out: list[tuple[list[float], list[float], list[float]]] = []
            self._lock = threading.Lock()

        @property
        def _hw(self) -> FakeHardware:
            return self.monsoon._dev()  # type: ignore[attr-defined]

        def enableChannel(self, channel: int) -> None:
            self._channels[channel] = True

        def disableChannel(self, channel: int) -> None:
            self._channels[channel] = False

        def ConsoleOutput(self, boolValue: bool) -> None:
            self._console = bool(boolValue)

        def enableCSVOutput(self, filename: str) -> None:
            self._csv = filename

        def disableCSVOutput(self) -> None:
            self._csv = None

        def setStartTrigger(self, triggerStyle: object, triggerLevel: float) -> None:
            self._triggers = True

        def setStopTrigger(self, triggerstyle: object, triggerlevel: float) -> None:
            self._triggers = True

        def setTriggerChannel(self, triggerChannel: int) -> None:
            pass

        # -- sampling ------------------------------------------------------------

        def _produce(self, n: int) -> None:
            """Generate the next ``n`` nominal samples as the device would deliver them."""
            hw = self._hw
            if self._hw.realtime:
                due = self._t_wall + (self._nominal + n) / SAMPLE_RATE
                time.sleep(max(0.0, due - time.monotonic()))
            nominal = np.arange(self._nominal, self._nominal + n)
            self._nominal += n
            keep = np.ones(n, dtype=bool)
            if hw.drop_every:
                keep &= (nominal % hw.drop_every) != hw.drop_every - 1
            if hw.reconnect_at is not None and self._nominal - n <= hw.reconnect_at < self._nominal:
                # USB dropped and came back: samples gone, counters and timestamps restart
                lost = (nominal >= hw.reconnect_at) & (
                    nominal < hw.reconnect_at + hw.reconnect_lost
                )
                keep &= ~lost
                self.dropped = 0
                self._start = time.time()
                hw.log.append("reconnect")
            elif hw.drop_every:
                self.dropped += int((~keep).sum())
            t = nominal[keep] / SAMPLE_RATE
            main = np.asarray(hw.current_ma(t), dtype=np.float64)
            volts = np.full(len(t), hw.vout)
            arrival = time.time() - self._start
            stamps = np.full(len(t), arrival)  # every packet of this read arrived now
            self._out.append((stamps.tolist(), main.tolist(), volts.tolist()))

        def getSamples(self) -> list[list[float]]:
            stamps: list[float] = []
            main: list[float] = []
            volts: list[float] = []
            for s, m, v in self._out:
                stamps += s
                main += m
                volts += v
            self._out = []
            if self._hw.short_timestamps and stamps:
                stamps = stamps[:-PACKET_SAMPLES]
            out = [stamps]
            by_channel = {channels.MainCurrent: main, channels.MainVoltage: volts}
            for ch in (1, 2, 3, 4, 5):
                if self._channels[ch]:
                    out.append(by_channel.get(ch, [0.0] * len(main)))
            return out

        def startSampling(self, samples: int = 5000, granularity: int = 1) -> None:
            """Blocking capture. Without triggers the real engine stops at 50,000 samples."""
            self.monsoon.StartSampling(1250, 0xFFFFFFFF)  # type: ignore[attr-defined]
            self._begin()
            limit = samples
            if samples == triggers.SAMPLECOUNT_INFINITE and not self._triggers:
                limit = DEFAULT_SAMPLE_LIMIT
            while self._nominal < limit:
                self._produce(min(PACKET_SAMPLES * 128, limit - self._nominal))
            self.monsoon.stopSampling()  # type: ignore[attr-defined]

        def _begin(self) -> None:
            self._nominal, self.dropped, self._out = 0, 0, []
            self._start, self._t_wall = time.time(), time.monotonic()

        def periodicStartSampling(self, calTime: int = 1250) -> list[list[float]]:
            self._begin()
            self.monsoon.StartSampling(calTime, triggers.SAMPLECOUNT_INFINITE)  # type: ignore[attr-defined]
            return self.getSamples()

        def periodicCollectSamples(
            self, samples: int = 100, legacy_timestamp: bool = False
        ) -> list[list[float]]:
            hw = self._hw
            if not hw.sampling or (hw.stop_after is not None and self._nominal >= hw.stop_after):
                time.sleep(samples / SAMPLE_RATE)
                return self.getSamples()
            self._produce(samples)
            return self.getSamples()

        def periodicStopSampling(self, closeCSV: bool = False) -> None:
            self.monsoon.stopSampling()  # type: ignore[attr-defined]

    mod.channels = channels  # type: ignore[attr-defined]
    mod.triggers = triggers  # type: ignore[attr-defined]
    mod.SampleEngine = SampleEngine  # type: ignore[attr-defined]
    return mod


@contextmanager
def install(*hardware: FakeHardware) -> Iterator[dict[int, FakeHardware]]:
    """Make ``import Monsoon.HVPM`` (and friends) find this fake while the block runs."""
    devices = {hw.serial: hw for hw in hardware}
    pkg = types.ModuleType("Monsoon")
    pkg.__path__ = []  # a package
    modules = {
        "Monsoon": pkg,
        "Monsoon.HVPM": _device_module("HVPM", devices),
        "Monsoon.LVPM": _device_module("LVPM", devices),
        "Monsoon.sampleEngine": _sample_engine(),
        "Monsoon.Operations": _operations(),
        "Monsoon.pmapi": _pmapi(),
    }
    for name, module in modules.items():
        if name != "Monsoon":
            setattr(pkg, name.split(".")[1], module)
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield devices
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
