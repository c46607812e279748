"""Fake sysfs trees: Linux powercap (RAPL) and an INA3221 hwmon directory.

They are real files in a directory the test chooses, laid out like the kernel's,
so the backends read them with the same code as on real hardware. A background
ticker advances them at a given power so polled captures see energy flow.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


class FakeRapl:
    """``<root>/intel-rapl:N/{name,energy_uj,max_energy_range_uj}`` plus one sub-zone each."""

    def __init__(
        self, root: Path, zones: dict[str, float], max_uj: int = 262_143_328_850, start_uj: int = 0
    ):
        self.root = Path(root)
        self.power = dict(zones)  # name -> watts
        self.max_uj = max_uj
        self.energy = dict.fromkeys(zones, float(start_uj))
        self.dirs: dict[str, Path] = {}
        for i, name in enumerate(zones):
            d = self.root / f"intel-rapl:{i}"
            sub = d / f"intel-rapl:{i}:0"
            sub.mkdir(parents=True, exist_ok=True)
            for zone_dir, zone_name in ((d, name), (sub, "core")):
                (zone_dir / "name").write_text(zone_name + "\n")
                (zone_dir / "max_energy_range_uj").write_text(f"{max_uj}\n")
            (sub / "energy_uj").write_text("0\n")
            self.dirs[name] = d
        self._write()
        self._ticker: threading.Thread | None = None
        self._halt = threading.Event()

    def _write(self) -> None:
        for name, d in self.dirs.items():
            tmp = d / ".energy_uj.tmp"
            tmp.write_text(f"{int(self.energy[name]) % self.max_uj}\n")
            os.replace(tmp, d / "energy_uj")  # sysfs reads are atomic; so must the fake's be

    def advance(self, seconds: float) -> None:
        for name in self.energy:
            self.energy[name] += self.power[name] * seconds * 1e6
        self._write()

    def run(self, period_s: float = 0.001) -> None:
        """Advance with wall time on a thread until ``halt``."""
        self._last = time.monotonic()

        def loop() -> None:
            while not self._halt.wait(period_s):
                now = time.monotonic()
                self.advance(now - self._last)
                self._last = now

        self._ticker = threading.Thread(target=loop, daemon=True)
        self._ticker.start()

    def halt(self) -> None:
        """Stop the ticker, then bring the counters up to this moment: a late-waking
        ticker must not leave energy undelivered."""
        self._halt.set()
        if self._ticker:
            self._ticker.join()
            self.advance(time.monotonic() - self._last)
            self._ticker = None


def fake_ina3221(root: Path, rails: dict[str, tuple[float, float]], legacy: bool = False) -> Path:
    """An INA3221 hwmon dir: rail label -> (mA, mV). ``legacy``: Jetson ``in_power*`` layout."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "name").write_text("ina3221\n")
    for i, (label, (ma, mv)) in enumerate(rails.items(), start=1):
        if legacy:
            (root / f"in_power{i - 1}_input").write_text(f"{round(ma * mv / 1e3)}\n")
            (root / f"rail_name_{i - 1}").write_text(label + "\n")
        else:
            (root / f"curr{i}_input").write_text(f"{round(ma)}\n")
            (root / f"in{i}_input").write_text(f"{round(mv)}\n")
            (root / f"in{i}_label").write_text(label + "\n")
    return root
