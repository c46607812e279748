"""Battery life under a periodic inference duty cycle (Lane et al. 2015, §3 and Table 4).

The paper asks: if a device runs one inference every ``period_s`` seconds (they
use a 5-s pause) and idles in between, how long does the battery last? Per
period the device spends

    E_period = E_inference + E_sensor + P_idle · (period_s − t_inference)

where ``E_inference`` is the measured *gross* energy of one inference (J),
``E_sensor`` the energy to capture its input (a microphone window for audio
models, a camera frame for images), and ``P_idle`` the idle power, either the
ordinary idle or a low-power idle mode the platform can drop into between
inferences. The mean power is ``E_period / period_s`` and

    hours = capacity_mAh · voltage_V · 3.6 (J per mWh) / (E_period / period_s) / 3600

The number of inferences a share of the battery allows (the paper's "what
fraction of the battery would N inferences cost", turned around) counts only the
inference and sensor energy, not the idle between them:

    N = share · capacity_mAh · voltage_V · 3.6 / (E_inference + E_sensor)
"""

from __future__ import annotations

from dataclasses import dataclass

J_PER_MAH_V = 3.6  # 1 mAh at 1 V = 3.6 J

# Illustrative sensor costs per inference; override with your own measurements.
SENSOR_ENERGY_J = {"none": 0.0, "microphone": 0.0035, "camera": 0.12}


@dataclass(frozen=True)
class BatteryModel:
    capacity_mah: float
    voltage_v: float
    idle_w: float
    low_power_idle_w: float | None = (
        None  # idle power when the platform can sleep between inferences
    )

    @property
    def capacity_j(self) -> float:
        return self.capacity_mah * self.voltage_v * J_PER_MAH_V


def _sensor_j(sensor: str | float) -> float:
    if isinstance(sensor, str):
        if sensor not in SENSOR_ENERGY_J:
            raise ValueError(f"unknown sensor {sensor!r}; give its energy per inference in J")
        return SENSOR_ENERGY_J[sensor]
    return float(sensor)


def battery_life_hours(
    battery: BatteryModel,
    *,
    inference_j: float,
    inference_s: float,
    period_s: float = 5.0,
    sensor: str | float = "none",
    low_power_idle: bool = False,
) -> float:
    """Hours until the battery is empty running one inference every ``period_s``."""
    if period_s <= 0 or inference_s < 0 or inference_s > period_s:
        raise ValueError("need 0 <= inference_s <= period_s and period_s > 0")
    idle = battery.idle_w
    if low_power_idle:
        if battery.low_power_idle_w is None:
            raise ValueError("this battery model has no low-power idle figure")
        idle = battery.low_power_idle_w
    per_period = inference_j + _sensor_j(sensor) + idle * (period_s - inference_s)
    mean_w = per_period / period_s
    return battery.capacity_j / mean_w / 3600.0


def inferences_on_share(
    battery: BatteryModel, *, inference_j: float, share: float = 1.0, sensor: str | float = "none"
) -> int:
    """How many inferences ``share`` (0–1) of the battery pays for (idle excluded)."""
    if not 0 < share <= 1:
        raise ValueError("share must be in (0, 1]")
    return int(share * battery.capacity_j // (inference_j + _sensor_j(sensor)))
