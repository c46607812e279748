"""Intel RAPL through Linux powercap: ``<root>/intel-rapl:N/energy_uj``.

Each top-level zone (``intel-rapl:0`` = package-0, ``psys`` where present) is an
energy counter in µJ that wraps at ``max_energy_range_uj``; sub-zones
(``intel-rapl:0:0`` core, uncore, dram) are already inside their package and
are skipped unless named. Reads are unwrapped as long as we poll faster than
one wrap (minutes at typical package power). RAPL covers the CPU package (and
DRAM/psys where exposed), never the whole board: the trace is flagged as
covering only the zones read. Its counters update about every 1 ms.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from farm.errors import MonitorUnavailable
from farm.power.base import register
from farm.power.polling import PolledMonitor
from farm.spec.inventory import MonitorOptions

DEFAULT_ROOT = "/sys/class/powercap"


class RaplZone:
    """One energy counter, unwrapped: ``read_j`` is the energy since ``reset``."""

    def __init__(self, path: Path):
        self.path = path
        self.name = (path / "name").read_text().strip()
        self.max_uj = int((path / "max_energy_range_uj").read_text())
        self._last: int | None = None
        self._total_uj = 0

    def raw_uj(self) -> int:
        return int((self.path / "energy_uj").read_text())

    def reset(self) -> None:
        self._last, self._total_uj = None, 0

    def read_j(self) -> float:
        now = self.raw_uj()
        if self._last is not None:
            delta = now - self._last
            if delta < 0:  # wrapped past max_energy_range_uj
                delta += self.max_uj
            self._total_uj += delta
        self._last = now
        return self._total_uj / 1e6


def find_zones(root: str | Path, names: list[str] | None = None) -> list[RaplZone]:
    base = Path(root)
    try:
        dirs = sorted(p for p in base.glob("intel-rapl:*") if (p / "energy_uj").exists())
    except OSError as exc:
        raise MonitorUnavailable(f"rapl: cannot read {base}: {exc}") from exc
    zones = []
    for d in dirs:
        try:
            zone = RaplZone(d)
            zone.raw_uj()  # unreadable without privileges on recent kernels
        except (OSError, ValueError) as exc:
            raise MonitorUnavailable(f"rapl: cannot read {d}: {exc}") from exc
        top_level = d.name.count(":") == 1
        if (names is None and top_level) or (names is not None and zone.name in names):
            zones.append(zone)
    if not zones:
        raise MonitorUnavailable(f"rapl: no readable intel-rapl zone under {base}")
    return zones


class RaplOptions(MonitorOptions):
    """``backend: rapl``: the powercap tree and which zones to add up."""

    root: str = DEFAULT_ROOT
    zones: list[str] | None = Field(default=None, min_length=1)  # None: every package zone
    poll_hz: float = Field(default=1000.0, gt=0)
    update_period_s: float = Field(default=0.001, gt=0)


@register("rapl", options=RaplOptions)
class RaplMonitor(PolledMonitor):
    counter = True

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        zones: list[str] | None = None,
        poll_hz: float = 1000.0,
        update_period_s: float = 0.001,
    ):
        super().__init__(poll_hz, update_period_s)
        self.zones = find_zones(root, zones)
        self.rails = tuple(z.name for z in self.zones)

    def begin(self) -> None:
        for zone in self.zones:
            zone.reset()

    def read(self) -> float:
        return sum(zone.read_j() for zone in self.zones)
