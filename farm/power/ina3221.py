"""``backend: ina3221`` — the INA3221 rail monitors of NVIDIA Jetson boards, read from sysfs.

A Jetson (the study's Tegra K1 lineage: TX1, TX2, Nano, Xavier) carries one or
more TI INA3221 chips, each measuring three supply rails' bus voltage and
current. The kernel exposes them in one of two forms, both read here:

- **hwmon** (the mainline ``ina3221`` driver, L4T r32.5+ and mainline kernels):
  ``/sys/class/hwmon/hwmonN/`` whose ``name`` is ``ina3221``, with per channel
  ``inK_label`` (the rail), ``inK_enable``, ``inK_input`` (bus voltage, mV) and
  ``currK_input`` (current, mA), K = 1..3; ``update_interval`` is the chip's
  conversion time in ms;
- **iio** (NVIDIA's older ``ina3221x`` driver):
  ``/sys/bus/i2c/drivers/ina3221x/<bus>-<addr>/iio:deviceN/`` with
  ``rail_name_K``, ``in_voltageK_input`` (mV) and ``in_currentK_input`` (mA),
  K = 0..2.

Without ``device:`` every chip found under ``root`` (``/sys``) is read, so a
Xavier's two chips are one monitor. Each read is a rail's voltage × current
(instantaneous power: the trace is not an energy counter), summed over the
chosen ``rails`` (default: every enabled channel). The chip converts only every
``update_interval``: polling faster would read the same value again, so the
poll rate is capped there. A trace covers only the rails read, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from farm.errors import MonitorUnavailable
from farm.power.base import register
from farm.power.polling import PolledMonitor
from farm.spec.inventory import MonitorOptions

HWMON = "class/hwmon"
IIO = "bus/i2c/drivers/ina3221x"


class Ina3221Options(MonitorOptions):
    """``backend: ina3221``: which rails of the board's INA3221 chips to add up."""

    root: str = "/sys"  # where sysfs is mounted
    device: str | None = None  # one chip's directory; None: every INA3221 under root
    rails: list[str] | None = Field(default=None, min_length=1)  # None: every enabled channel
    poll_hz: float = Field(default=200.0, gt=0)  # capped at the chip's conversion rate


@dataclass(frozen=True)
class Rail:
    """One channel: its label and the files of its bus voltage (mV) and current (mA)."""

    label: str
    volts_mv: Path
    current_ma: Path

    def watts(self) -> float:
        return float(self.volts_mv.read_text()) * float(self.current_ma.read_text()) / 1e6


def chips(root: Path) -> list[Path]:
    """Every INA3221 device directory under the sysfs ``root``: hwmon first, then iio."""
    found = [d for d in sorted((root / HWMON).glob("hwmon*")) if _text(d / "name") == "ina3221"]
    return found + sorted((root / IIO).glob("*/iio:device*"))


def channels(chip: Path) -> list[Rail]:
    """The enabled channels of one chip, in channel order, in either form."""
    out = []
    if (chip / "in_voltage0_input").exists() or (chip / "rail_name_0").exists():  # iio
        for k in range(3):
            volts, amps = chip / f"in_voltage{k}_input", chip / f"in_current{k}_input"
            if volts.exists() and amps.exists():
                out.append(Rail(_text(chip / f"rail_name_{k}") or f"channel{k}", volts, amps))
        return out
    for k in (1, 2, 3):  # hwmon: in1..3 are bus voltages (in4..6 the shunts', in µV)
        volts, amps = chip / f"in{k}_input", chip / f"curr{k}_input"
        if _text(chip / f"in{k}_enable") == "0" or not (volts.exists() and amps.exists()):
            continue
        out.append(Rail(_text(chip / f"in{k}_label") or f"{chip.name}/in{k}", volts, amps))
    return out


def update_interval_s(chip: Path) -> float | None:
    """The chip's conversion time (hwmon's ``update_interval``, ms), if it says."""
    text = _text(chip / "update_interval")
    return float(text) / 1e3 if text else None


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


@register("ina3221", options=Ina3221Options)
class Ina3221Monitor(PolledMonitor):
    counter = False

    def __init__(
        self,
        root: str = "/sys",
        device: str | None = None,
        rails: list[str] | None = None,
        poll_hz: float = 200.0,
    ):
        devices = [Path(device)] if device else chips(Path(root))
        found: dict[str, Rail] = {}
        for chip in devices:
            for rail in channels(chip):
                key = rail.label if rail.label not in found else f"{rail.label}@{chip.name}"
                found[key] = rail
        if not found:
            where = device or f"{root}/{HWMON}/*/name == ina3221 or {root}/{IIO}"
            raise MonitorUnavailable(f"ina3221: no enabled INA3221 channel under {where}")
        wanted = rails or list(found)
        missing = [r for r in wanted if r not in found]
        if missing:
            raise MonitorUnavailable(f"ina3221: rails {missing} not found (have {list(found)})")
        intervals = [s for s in map(update_interval_s, devices) if s]
        period = max([1.0 / poll_hz, *intervals])
        super().__init__(1.0 / period, period)
        self._rails = [found[r] for r in wanted]
        self.rails = tuple(wanted)

    def read(self) -> float:
        return sum(rail.watts() for rail in self._rails)
