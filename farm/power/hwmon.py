"""INA3221-style rail monitors under a hwmon directory (Jetson boards).

Two layouts exist in the wild: ``in_power<N>_input`` (mW) with ``rail_name_<N>``
(older Jetson ``ina3221x`` driver), and the mainline hwmon one: ``curr<N>_input``
(mA) and ``in<N>_input`` (mV) with ``in<N>_label``. Each read sums the chosen
rails' *instantaneous* power. The result covers only those rails (not the
whole board's supply), and the trace says so.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from farm.errors import MonitorUnavailable
from farm.power.base import register
from farm.power.polling import PolledMonitor
from farm.spec.inventory import MonitorOptions


def _read(path: Path) -> float:
    return float(path.read_text().strip())


def find_rails(root: Path) -> dict[str, list[Path]]:
    """Rail label -> the files whose product/value gives its power."""
    rails: dict[str, list[Path]] = {}
    for p in sorted(root.glob("in_power*_input")):
        n = p.name[len("in_power") : -len("_input")]
        label = root / f"rail_name_{n}"
        rails[label.read_text().strip() if label.exists() else f"power{n}"] = [p]
    for p in sorted(root.glob("curr*_input")):
        n = p.name[len("curr") : -len("_input")]
        volts = root / f"in{n}_input"
        if not volts.exists():
            continue
        label = root / f"in{n}_label"
        rails[label.read_text().strip() if label.exists() else f"rail{n}"] = [p, volts]
    return rails


class HwmonOptions(MonitorOptions):
    """``backend: hwmon``: one hwmon device and the rails to add up."""

    path: str  # the hwmon directory, e.g. /sys/class/hwmon/hwmon2
    rails: list[str] | None = Field(default=None, min_length=1)  # None: every power*_input
    poll_hz: float = Field(default=200.0, gt=0)
    update_period_s: float = Field(default=0.002, gt=0)


@register("hwmon", options=HwmonOptions)
class HwmonMonitor(PolledMonitor):
    counter = False

    def __init__(
        self,
        path: str,
        rails: list[str] | None = None,
        poll_hz: float = 200.0,
        update_period_s: float = 0.002,
    ):
        super().__init__(poll_hz, update_period_s)
        root = Path(path)
        found = find_rails(root) if root.is_dir() else {}
        if not found:
            raise MonitorUnavailable(f"hwmon: no INA3221-style rails under {root}")
        wanted = rails or list(found)
        missing = [r for r in wanted if r not in found]
        if missing:
            raise MonitorUnavailable(
                f"hwmon: rails {missing} not under {root} (have {list(found)})"
            )
        self._files = [found[r] for r in wanted]
        self.rails = tuple(wanted)

    def read(self) -> float:
        total = 0.0
        for files in self._files:
            if len(files) == 1:
                total += _read(files[0]) / 1e3  # mW
            else:
                total += _read(files[0]) * _read(files[1]) / 1e6  # mA × mV
        return total
