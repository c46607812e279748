"""Power monitors, clock synchronisation, energy and battery life (numpy only).

    open_monitor("synthetic", {...}) -> Monitor     start(), stop() -> Trace
    MonitorService.from_spec(spec)                  pre-idle, task, post-idle capture
    analyze(trace, markers, sync) -> EnergyReport   JSON-able dict
    battery_life_hours(...), inferences_on_share(...)

Importing the package registers every backend; hardware libraries are only
imported when a backend is opened, so a missing one costs nothing until asked for.
"""

from farm.errors import MonitorBusy
from farm.power import hwmon, monsoon, nvml, rapl, replay, synthetic  # noqa: F401  (register)
from farm.power.base import Monitor, Trace, backends, open_monitor, register
from farm.power.battery import BatteryModel, battery_life_hours, inferences_on_share
from farm.power.energy import EnergyReport, analyze, energy_at
from farm.power.service import MonitorService
from farm.power.sync import ClockFit, fit_exchanges, synchronize

__all__ = [
    "BatteryModel",
    "ClockFit",
    "EnergyReport",
    "Monitor",
    "MonitorBusy",
    "MonitorService",
    "Trace",
    "analyze",
    "backends",
    "battery_life_hours",
    "energy_at",
    "fit_exchanges",
    "inferences_on_share",
    "open_monitor",
    "register",
    "synchronize",
]
