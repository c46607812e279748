"""NVIDIA GPUs through NVML (the ``pynvml`` module of nvidia-ml-py).

Only the total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since
the driver loaded; Volta and later) is used. ``nvmlDeviceGetPowerUsage`` is a
power *averaged over about a second* on most boards: reading it as if it were
instantaneous smears every inference shorter than a second, so a GPU without
the counter is reported unavailable rather than measured wrongly. The counter
itself refreshes far slower than a Monsoon samples (tens of ms): windows much
shorter than ``update_period_s`` are flagged. Covers the GPU board only.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from pydantic import Field

from farm.errors import MonitorUnavailable
from farm.power.base import register
from farm.power.polling import PolledMonitor
from farm.spec.inventory import MonitorOptions


def _pynvml() -> Any:
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise MonitorUnavailable(
            "nvml: the pynvml package (nvidia-ml-py) is not installed"
        ) from exc


class NvmlOptions(MonitorOptions):
    """``backend: nvml``: which GPU (NVML's index)."""

    index: int = Field(default=0, ge=0)
    poll_hz: float = Field(default=50.0, gt=0)
    update_period_s: float = Field(default=0.1, gt=0)


@register("nvml", options=NvmlOptions)
class NvmlMonitor(PolledMonitor):
    counter = True

    def __init__(self, index: int = 0, poll_hz: float = 50.0, update_period_s: float = 0.1):
        super().__init__(poll_hz, update_period_s)
        self.nvml = nv = _pynvml()
        try:
            nv.nvmlInit()
            self.handle = nv.nvmlDeviceGetHandleByIndex(index)
            name = nv.nvmlDeviceGetName(self.handle)
            nv.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except nv.NVMLError as exc:
            raise MonitorUnavailable(
                f"nvml: GPU {index} has no total-energy counter ({exc}); "
                "its averaged power reading is not a substitute"
            ) from exc
        self.rails = (f"gpu{index}:{name if isinstance(name, str) else name.decode()}",)

    def read(self) -> float:
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1e3
        except self.nvml.NVMLError as exc:
            raise OSError(f"nvml read failed: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(self.nvml.NVMLError):
            self.nvml.nvmlShutdown()
