"""How much memory a model needs, and how much the board has.

The requirement (the paper's "does it fit" question) is parameter bytes plus
the peak of *live* activation bytes during one forward. The peak is measured,
not estimated: one instrumented forward hooks every module, and each output
tensor gets a ``weakref.finalize`` that fires when Python frees it. Bytes are
counted per storage, so an in-place ReLU that hands back its input's storage is
not counted twice, and a storage stays counted while any tracked tensor still
refers to it.

What hooks cannot see (temporary buffers inside an operator, tensors built by
functional code between modules) shows up in the measured peak RSS instead,
read from the kernel's high-water mark (``VmHWM``).

That mark is the process's, so in a warm engine it would keep the largest past
task's peak (an SVHN after an AlexNet would read AlexNet's). ``start_own_peak``
makes it this task's own before each task: it lets go of what earlier tasks
left resident (other models in the engine's cache, garbage, heap pages the
allocator kept), then resets the mark; where it cannot, it says why, and the
runner passes that on as a warning.

Sizes are in MiB, written "MB" like ``memory_mb`` in the inventory and like the
kernel's "kB" in /proc/meminfo.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farm.engine.board import kb_field

MB = 1 << 20

if TYPE_CHECKING:  # torch is imported where it is used: a runtime without torch reads RSS here
    import torch


def tensors_in(value: Any) -> list[torch.Tensor]:
    """Every tensor in a module input/output (tensor, or nested tuple/list/dict)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in tensors_in(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in tensors_in(item)]
    return []


def storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views share one)."""
    seen: dict[int, int] = {}
    for t in tensors:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def param_bytes(module: torch.nn.Module) -> int:
    """Bytes of parameters and buffers (BatchNorm statistics live in memory too)."""
    return storage_bytes([*module.parameters(), *module.buffers()])


@dataclass
class Probe:
    """What one instrumented forward measured."""

    peak_activation_bytes: int
    # per leaf layer index: (input bytes, output bytes) at its first call
    layer_io: dict[int, tuple[int, int]] = field(default_factory=dict)


class _Liveness:
    """Counts bytes of live activation storages; remembers the peak."""

    def __init__(self) -> None:
        self.refs: dict[int, int] = {}  # storage address -> tracked tensors alive
        self.sizes: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self.refs:
            self.refs[key] = 0
            self.sizes[key] = storage.nbytes()
            self.current += self.sizes[key]
            self.peak = max(self.peak, self.current)
        self.refs[key] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.current -= self.sizes.pop(key)


def probe(
    module: torch.nn.Module,
    example: Any,
    layers: list[tuple[str, torch.nn.Module]],
) -> Probe:
    """Run one instrumented forward; measure peak live activations and layer I/O bytes.

    The example input counts as live for the whole forward (the caller holds it).
    """
    import torch

    live = _Liveness()
    io: dict[int, tuple[int, int]] = {}
    index = {id(m): i for i, (_, m) in enumerate(layers)}

    def on_output(mod: torch.nn.Module, inputs: Any, output: Any) -> None:
        for t in tensors_in(output):
            live.track(t)
        i = index.get(id(mod))
        if i is not None and i not in io:
            io[i] = (storage_bytes(tensors_in(inputs)), storage_bytes(tensors_in(output)))

    handles = [m.register_forward_hook(on_output) for m in module.modules()]
    try:
        for t in tensors_in(example):
            live.track(t)
        with torch.inference_mode():
            args = example if isinstance(example, tuple) else (example,)
            output = module(*args)
        peak = live.peak
        del output
    finally:
        for h in handles:
            h.remove()
    return Probe(peak_activation_bytes=peak, layer_io=io)


def mem_available_mb(meminfo: str = "/proc/meminfo") -> float | None:
    """``MemAvailable`` in MB, or None where the kernel does not say (not Linux)."""
    return kb_field(meminfo, "MemAvailable:")


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark so VmHWM measures from now on.

    Writing "5" to /proc/self/clear_refs does it (Linux >= 4.0). A warm engine
    needs this, or every task would report the peak of the largest past one.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def trim_heap() -> bool:
    """Hand the heap pages the C allocator keeps after frees back to the kernel (glibc's
    ``malloc_trim``); False where there is no such call (another libc, not Linux)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


def start_own_peak(release_others: Callable[[], object] | None = None) -> tuple[bool, str | None]:
    """Make the RSS high-water mark this task's own; returns (reset, why not).

    ``release_others`` drops what earlier tasks left resident (the warm engine's
    other cached models). Then garbage is collected, freed heap handed back, and
    ``VmHWM`` reset to the current RSS. When the reset fails, the reason comes back:
    the peak read at the end is then the process's since it started, not this task's.
    """
    if release_others is not None:
        release_others()
    gc.collect()
    trim_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        return False, (
            f"peak RSS is the engine process's high-water mark, not this model's own: "
            f"could not reset it ({why} writing /proc/self/clear_refs)"
        )
    return True, None


def rss_mb() -> float | None:
    return kb_field("/proc/self/status", "VmRSS:")


def peak_rss_mb() -> float | None:
    return kb_field("/proc/self/status", "VmHWM:")
