"""A Monsoon HVPM on the USB bus, for the real ``monsoon`` package (0.1.88) to talk to.

Only the device is fake. Monsoon's own ``pmapi.USB_protocol``, ``HVPM.Monsoon``
and ``sampleEngine.SampleEngine`` run unchanged: their control transfers land
here, and the sample packets they read are built here in the layout their
``swizzlePacket`` and ``__processPacket`` parse, so the library's own parsing,
calibration (zero and reference samples, EEPROM scales) and sample engine
turn the raw ADC counts into milliamps.

The device answers:

- control IN ``USB_SET_VALUE`` (``getValue``): an EEPROM value by opcode (low
  byte of ``wIndex``), four little-endian bytes;
- control OUT ``USB_SET_VALUE`` (``sendCommand``): stores a value (``wValue``
  low 16 bits, the high byte of ``wIndex`` bits 16–23);
- control OUT ``USB_REQUEST_START`` / ``USB_REQUEST_STOP``: sample mode on/off
  (``getStartStatus`` bit 0x80 says which);
- bulk IN endpoint 0x81 (``read``): one 64-byte packet, header
  ``<dropped u16, flags u8, count u8>`` then up to three samples of eight
  16-bit channels (main coarse/fine, USB coarse/fine, aux coarse/fine, main
  voltage, USB voltage) and two bytes (sample type, spare), every byte pair
  after the header swapped as the firmware sends it.

Calibration samples (five zero and five reference) open each capture and one
pair follows every ``calTime`` ms of samples; they are extra packets and take
no measurement slot, so measurement ``k`` is at ``k / 5000`` s. Currents are
encoded through the same scales the library decodes with: fine range below
the fine threshold, coarse above it (fine saturated).

Misbehaviour tests provoke through the device: dropped samples (counted in the
header like the firmware does), a stream that stops (reads time out with
pyusb's ``USBTimeoutError``), a silent reconnect (the header's drop counter
restarts and samples vanish uncounted).

``attach(device)`` makes ``usb.core.find`` see the device while a ``with``
block runs; nothing else of pyusb is replaced.
"""

from __future__ import annotations

import array
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import usb.core

VENDOR, PRODUCT = 0x2AB9, 0x0001
RATE_HZ = 5000
SAMPLES_PER_PACKET = 3

# Monsoon.Operations: opcodes and USB request codes (the wire protocol, not the library)
_IN, _OUT = 0xC0, 0x40
_SET_VALUE, _START, _STOP = 0x01, 0x02, 0x03
_MEASUREMENT, _ZERO_CAL, _REF_CAL = 0x00, 0x10, 0x30

# calibration counts the device reports, and the scales it keeps in EEPROM
ZERO_RAW = 1000
REF_RAW = 30000
FINE_SCALE = 35946
COARSE_SCALE = 6400
FINE_THRESHOLD = 64000  # HVPM.Monsoon.fineThreshold
VOLT_PER_COUNT = 62.5e-6 * 4  # ADCRatio × mainvoltageScale

_EEPROM = {
    0xC0: 32,  # FirmwareVersion
    0xC1: 1,  # ProtocolVersion
    0x45: 2,  # HardwareModel: HVPM
    0x88: 0xE000,  # dacCalLow, inside the library's tolerance
    0x89: 0xC800,  # dacCalHigh
    0x43: 0xF000,  # power-up current limit
    0x44: 0xF000,  # run-time current limit
    0x0C: 10,  # power-up time
    0x29: 0x3C00,  # fan temperature limit
    0x10: 1,  # USB passthrough
    0x1A: FINE_SCALE,
    0x1B: COARSE_SCALE,
    0x1C: 14000,
    0x1D: 600,
    0x1E: 3100,
    0x1F: 250,
    0x25: 0,  # zero offsets (the device's own zero samples carry the offset)
    0x26: 0,
    0x27: 0,
    0x28: 0,
}


def fine_raw(current_ma: np.ndarray) -> np.ndarray:
    """Fine-range counts the library decodes to ``current_ma``."""
    return ZERO_RAW + current_ma * 1000.0 * (REF_RAW - ZERO_RAW) / FINE_SCALE


def coarse_raw(current_ma: np.ndarray) -> np.ndarray:
    return ZERO_RAW + current_ma * (REF_RAW - ZERO_RAW) / COARSE_SCALE


@dataclass
class _Endpoint:
    bEndpointAddress: int


class _Context:
    def dispose(self, device: object) -> None:
        return None


@dataclass
class FakeHVPM:
    """An HVPM whose main current (mA) at monitor time t (s) is ``current_ma(t)``."""

    serial: int = 20414
    current_ma: Callable[[np.ndarray], np.ndarray] = lambda t: np.full(len(t), 500.0)
    drop_every: int = 0  # the firmware drops one sample in every N (0: never)
    stop_after: int | None = None  # the stream stops after this many samples
    reconnect_at: int | None = None  # sample at which USB silently reconnects
    reconnect_lost: int = 500  # samples that vanish in it, uncounted
    realtime: bool = True  # pace packets at 5 kHz of wall time
    eeprom: dict[int, int] = field(default_factory=lambda: dict(_EEPROM))
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.idVendor, self.idProduct = VENDOR, PRODUCT
        self.serial_number = str(self.serial)
        self.eeprom[0x42] = self.serial
        self._ctx = _Context()
        self.sampling = False
        self._queue: list[bytes] = []

    # -- what pyusb's Device offers and pmapi uses -----------------------------------

    def detach_kernel_driver(self, interface: int) -> None:
        return None

    def set_configuration(self) -> None:
        return None

    def get_active_configuration(self) -> dict:
        return {(0, 0): [_Endpoint(0x01), _Endpoint(0x81)]}

    def reset(self) -> None:
        self.log.append("reset")

    def ctrl_transfer(
        self, bmRequestType: int, bRequest: int, wValue: int = 0, wIndex: int = 0,
        data_or_wLength: object = None, timeout: int | None = None,
    ) -> array.array | int:  # fmt: skip
        opcode = wIndex & 0xFF
        if bmRequestType == _IN and bRequest == _SET_VALUE:
            sample_mode = 0x80 if self.sampling else 0  # getStartStatus (0xC4): bit 7
            value = sample_mode if opcode == 0xC4 else self.eeprom.get(opcode, 0)
            return array.array("B", struct.pack("<I", value & 0xFFFFFFFF))
        if bmRequestType == _OUT and bRequest == _SET_VALUE:
            self.eeprom[opcode] = wValue | ((wIndex >> 8) << 16)
            self.log.append(f"set 0x{opcode:02X}={self.eeprom[opcode]}")
            return 4
        if bmRequestType == _OUT and bRequest == _START:
            self._start(cal_ms=wValue)
            return 4
        if bmRequestType == _OUT and bRequest == _STOP:
            self.sampling = False
            self.log.append("stop")
            return 0
        raise usb.core.USBError(f"unexpected control transfer {bmRequestType:#x}/{bRequest:#x}")

    def read(self, endpoint: int, size: int, timeout: int | None = None) -> array.array:
        if endpoint != 0x81:
            raise usb.core.USBError(f"no IN endpoint {endpoint:#x}")
        while not self._queue:
            if not self.sampling or (
                self.stop_after is not None and self._nominal >= self.stop_after
            ):
                time.sleep((timeout or 1000) / 1000)
                raise usb.core.USBTimeoutError("Operation timed out", errno=110)
            self._produce()
        return array.array("B", self._queue.pop(0))

    # -- the firmware ------------------------------------------------------------------

    @property
    def vout(self) -> float:
        return self.eeprom.get(0x41, 0) / 1048576  # setMainVoltage: value × 2^20

    def _start(self, cal_ms: int) -> None:
        self.sampling = True
        self._nominal = 0  # next measurement sample number (the monitor's clock)
        self._dropped = 0
        self._cal_every = max(1, cal_ms * RATE_HZ // 1000)
        self._next_cal = self._cal_every
        self._wall0 = time.monotonic()
        self._queue = [self._packet([_ZERO_CAL] * 3, [], []) for _ in range(2)]
        self._queue += [self._packet([_REF_CAL] * 3, [], []) for _ in range(2)]
        self.log.append("start")

    def _produce(self) -> None:
        """Queue the next packet of measurements (and a calibration pair when due)."""
        if self.realtime:
            due = self._wall0 + (self._nominal + SAMPLES_PER_PACKET) / RATE_HZ
            time.sleep(max(0.0, due - time.monotonic()))
        k = np.arange(self._nominal, self._nominal + SAMPLES_PER_PACKET)
        self._nominal += SAMPLES_PER_PACKET
        keep = np.ones(len(k), dtype=bool)
        if self.drop_every:
            keep &= k % self.drop_every != self.drop_every - 1
            self._dropped += int((~keep).sum())
        if self.reconnect_at is not None and k[0] <= self.reconnect_at + self.reconnect_lost:
            if self.reconnect_at <= k[-1] and "reconnect" not in self.log:
                self._dropped = 0  # the device re-enumerated: its counter starts again
                self.log.append("reconnect")
            keep &= ~((k >= self.reconnect_at) & (k < self.reconnect_at + self.reconnect_lost))
        if keep.any():
            current = np.asarray(self.current_ma(k[keep] / RATE_HZ), dtype=np.float64)
            self._queue.append(self._packet([_MEASUREMENT] * int(keep.sum()), current, k[keep]))
        if self._nominal >= self._next_cal:
            self._next_cal += self._cal_every
            self._queue.append(self._packet([_ZERO_CAL], [], []))
            self._queue.append(self._packet([_REF_CAL], [], []))

    def _packet(self, kinds: list[int], current_ma: object, _index: object) -> bytes:
        """One 64-byte bulk packet as the firmware sends it (byte pairs swapped)."""
        current = np.asarray(current_ma, dtype=np.float64)
        volts = round(self.vout / VOLT_PER_COUNT)
        body = b""
        for i, kind in enumerate(kinds):
            if kind == _MEASUREMENT:
                fine = fine_raw(current[i])
                coarse = coarse_raw(current[i])
                fine_counts = round(fine) if fine < FINE_THRESHOLD else 0xFFFF
                chans = (round(coarse), fine_counts, ZERO_RAW, ZERO_RAW, ZERO_RAW, ZERO_RAW,
                         volts, 0)  # fmt: skip
            elif kind == _ZERO_CAL:
                chans = (ZERO_RAW,) * 6 + (0, 0)
            else:
                chans = (REF_RAW,) * 6 + (0, 0)
            body += struct.pack("<8HBB", *(min(max(int(c), 0), 0xFFFF) for c in chans), kind, 0)
        header = struct.pack("<HBB", self._dropped & 0xFFFF, 0, len(kinds))
        body = body.ljust(60, b"\0")
        swapped = bytes(b for pair in zip(body[1::2], body[0::2], strict=True) for b in pair)
        return header + swapped


@contextmanager
def attach(*devices: FakeHVPM) -> Iterator[list[FakeHVPM]]:
    """Plug ``devices`` in: ``usb.core.find`` finds them (and only them) in the block."""
    real_find = usb.core.find

    def find(find_all: bool = False, custom_match: Callable | None = None, **match: object):
        found = [
            d for d in devices
            if all(getattr(d, key) == value for key, value in match.items())
            and (custom_match is None or custom_match(d))
        ]  # fmt: skip
        return iter(found) if find_all else (found[0] if found else None)

    usb.core.find = find
    try:
        yield list(devices)
    finally:
        usb.core.find = real_find
