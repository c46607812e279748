"""A fake of the ``pynvml`` module (nvidia-ml-py), for machines without an NVIDIA GPU.

Same function names, units and error class as the real module: the total-energy
counter in mJ (refreshing every ``update_period_s``, like the driver's), the
power reading in mW averaged over the last second. ``install(gpu)`` puts it in
``sys.modules`` as ``pynvml``; ``power_usage_calls`` lets a test prove the
averaged reading was never used.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3


class NVMLError(Exception):
    def __init__(self, value: int):
        self.value = value
        super().__init__(
            {3: "Not Supported", 1: "Uninitialized", 2: "Invalid Argument"}.get(
                value, "Unknown Error"
            )
        )


@dataclass
class FakeGpu:
    name: str = "NVIDIA Fake 100"
    power_w: float = 60.0
    supports_energy: bool = True
    update_period_s: float = 0.02
    start_mj: int = 123_456_789
    power_usage_calls: int = 0

    def energy_mj(self, now: float) -> int:
        # the counter only moves at the driver's update ticks
        tick = (now // self.update_period_s) * self.update_period_s
        return self.start_mj + int(self.power_w * tick * 1e3)


def make_module(*gpus: FakeGpu) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    state = {"init": False}

    def check() -> None:
        if not state["init"]:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def nvmlInit() -> None:
        state["init"] = True

    def nvmlShutdown() -> None:
        check()
        state["init"] = False

    def nvmlDeviceGetCount() -> int:
        check()
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(index: int) -> FakeGpu:
        check()
        if not 0 <= index < len(gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return gpus[index]

    def nvmlDeviceGetName(handle: FakeGpu) -> str:
        check()
        return handle.name

    def nvmlDeviceGetTotalEnergyConsumption(handle: FakeGpu) -> int:
        check()
        if not handle.supports_energy:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return handle.energy_mj(time.monotonic())

    def nvmlDeviceGetPowerUsage(handle: FakeGpu) -> int:
        check()
        handle.power_usage_calls += 1
        return int(handle.power_w * 1e3)

    for name, value in list(locals().items()):
        if name.startswith("nvml"):
            setattr(mod, name, value)
    mod.NVMLError = NVMLError  # type: ignore[attr-defined]
    mod.NVML_SUCCESS = NVML_SUCCESS  # type: ignore[attr-defined]
    mod.NVML_ERROR_UNINITIALIZED = NVML_ERROR_UNINITIALIZED  # type: ignore[attr-defined]
    mod.NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED  # type: ignore[attr-defined]
    mod.NVML_ERROR_INVALID_ARGUMENT = NVML_ERROR_INVALID_ARGUMENT  # type: ignore[attr-defined]
    return mod


@contextmanager
def install(*gpus: FakeGpu) -> Iterator[types.ModuleType]:
    saved = sys.modules.get("pynvml")
    sys.modules["pynvml"] = module = make_module(*gpus)
    try:
        yield module
    finally:
        if saved is None:
            sys.modules.pop("pynvml", None)
        else:
            sys.modules["pynvml"] = saved
