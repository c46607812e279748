"""The one monitor interface, the Trace it produces, and the backend registry.

A power monitor samples on its *own* timebase. We never trust the host's arrival
time of a sample as its sample time: a sample's time is its index divided by the
nominal rate, counted from the start of the capture (indices skip over dropped
samples). ``t0_host_ns`` records the host's CLOCK_MONOTONIC when the capture
started, which only anchors the trace roughly; ``farm.power.sync`` then finds the
real offset and drift against the board's clock.

Polled backends (RAPL, NVML, hwmon) have no sample clock of their own: the host
reads a counter when it can, so their traces carry explicit ``times_s``.
"""

from __future__ import annotations

import io
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from farm.errors import MonitorUnavailable
from farm.spec import plugins

CHUNK_SAMPLES = 1 << 20


@dataclass
class Trace:
    """Samples of one capture.

    Sample ``k`` covers ``[t_k, t_{k+1})`` in trace seconds and holds ``power_w[k]``
    over it (sample-and-hold). That makes counter-based traces integrate exactly
    and lets one integration rule serve every backend.
    """

    power_w: np.ndarray
    rate_hz: float
    t0_host_ns: int
    index: np.ndarray | None = None  # nominal sample number of each sample; gaps = drops
    times_s: np.ndarray | None = None  # explicit sample times (polled backends)
    source: str = ""
    rails: tuple[str, ...] | None = None  # None: the whole supply; else only these rails
    update_period_s: float = 0.0  # how often the sensor itself refreshes
    dropped: int = 0
    hazards: list[str] = field(default_factory=list)
    host_stop_ns: int | None = None

    def __post_init__(self) -> None:
        self.power_w = np.asarray(self.power_w)
        n = len(self.power_w)
        for name in ("index", "times_s"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} entries for {n} samples")
        if self.rate_hz <= 0:
            raise ValueError("rate_hz must be positive")

    def __len__(self) -> int:
        return len(self.power_w)

    @property
    def nominal_samples(self) -> int:
        """Samples the capture should hold: received + dropped."""
        return len(self) + int(self.dropped)

    def times(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Trace seconds of samples ``start:stop`` (float64)."""
        stop = len(self) if stop is None else min(stop, len(self))
        if self.times_s is not None:
            return np.asarray(self.times_s[start:stop], dtype=np.float64)
        if self.index is not None:
            return self.index[start:stop].astype(np.float64) / self.rate_hz
        return np.arange(start, stop, dtype=np.float64) / self.rate_hz

    @property
    def duration_s(self) -> float:
        if len(self) == 0:
            return 0.0
        return float(self.times(len(self) - 1)[0]) + self._last_dt()

    def _last_dt(self) -> float:
        """How long the last sample holds. A polled trace knows where its capture ended
        (``host_stop_ns``: a counter's last sample runs up to the final read); otherwise
        the last interval repeats the one before, or one nominal period."""
        if self.times_s is not None and len(self) > 1:
            if self.host_stop_ns is not None:
                end = (self.host_stop_ns - self.t0_host_ns) / 1e9
                if end > self.times_s[-1]:
                    return float(end - self.times_s[-1])
            return float(self.times_s[-1] - self.times_s[-2])
        return 1.0 / self.rate_hz

    def chunks(self, size: int = CHUNK_SAMPLES) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(times, power) in float64, ``size`` samples at a time: bounded memory."""
        for start in range(0, len(self), size):
            stop = start + size
            yield self.times(start, stop), np.asarray(self.power_w[start:stop], dtype=np.float64)

    def segment(self, t_start: float, t_stop: float) -> tuple[np.ndarray, np.ndarray]:
        """Samples whose time lies in ``[t_start, t_stop)``."""
        if self.times_s is not None:
            lo, hi = np.searchsorted(self.times_s, [t_start, t_stop])
        elif self.index is not None:
            lo, hi = np.searchsorted(self.index, [t_start * self.rate_hz, t_stop * self.rate_hz])
        else:
            lo = int(np.clip(np.ceil(t_start * self.rate_hz), 0, len(self)))
            hi = int(np.clip(np.ceil(t_stop * self.rate_hz), 0, len(self)))
        return self.times(int(lo), int(hi)), np.asarray(self.power_w[lo:hi], dtype=np.float64)

    # -- storage -------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Compressed: power as float32 (0.1 µW resolution at 1 W is plenty), zlib'd npz."""
        arrays: dict[str, Any] = {
            "power_w": self.power_w.astype(np.float32),
            "meta": np.frombuffer(repr(self._meta()).encode(), dtype=np.uint8),
        }
        if self.index is not None:
            # indices are nearly consecutive: differences compress to almost nothing
            arrays["index_diff"] = np.diff(self.index, prepend=0).astype(np.int64)
        if self.times_s is not None:
            arrays["times_s"] = np.asarray(self.times_s, dtype=np.float64)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return zlib.compress(buf.getvalue(), 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> Trace:
        import ast

        with np.load(io.BytesIO(zlib.decompress(data))) as npz:
            meta = ast.literal_eval(bytes(npz["meta"]).decode())
            index = np.cumsum(npz["index_diff"]) if "index_diff" in npz else None
            times = npz.get("times_s")
            power = npz["power_w"]
        rails = tuple(meta.pop("rails")) if meta.get("rails") is not None else None
        meta.pop("rails", None)
        return cls(power_w=power, index=index, times_s=times, rails=rails, **meta)

    def _meta(self) -> dict[str, Any]:
        return {
            "rate_hz": float(self.rate_hz),
            "t0_host_ns": int(self.t0_host_ns),
            "source": self.source,
            "rails": list(self.rails) if self.rails is not None else None,
            "update_period_s": float(self.update_period_s),
            "dropped": int(self.dropped),
            "hazards": list(self.hazards),
            "host_stop_ns": None if self.host_stop_ns is None else int(self.host_stop_ns),
        }


class Monitor(ABC):
    """A power monitor on one station. ``start()`` begins a capture, ``stop()`` ends it.

    ``stop`` takes the task's markers only so that the synthetic backend can
    synthesize what a meter would have seen; hardware backends ignore them.
    """

    backend: str = ""
    options_model: type[Any]  # the inventory's model of its ``options:`` (set by ``register``)
    update_period_s: float = 0.0

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self, markers: Mapping[str, Any] | None = None) -> Trace: ...

    def close(self) -> None:  # noqa: B027  (an optional hook, not an abstract method)
        """Release the hardware. Default: nothing to release."""

    def live(self) -> Live | None:
        """The capture in progress, as the metrics exporter shows it: the mean power of
        the last moment's samples and the counts so far, read without copying the
        capture. None when not capturing, or when the backend only knows its trace at
        ``stop`` (the synthetic monitor)."""
        return None


@dataclass(frozen=True)
class Live:
    """A running capture at a glance: ``power_w`` over about the last ``LIVE_WINDOW_S``."""

    power_w: float | None
    samples: int
    dropped: int


LIVE_WINDOW_S = 0.1


_BACKENDS: dict[str, Callable[..., Monitor]] = {}


def register(name: str, *, options: type[Any]) -> Callable[[type[Monitor]], type[Monitor]]:
    """Class decorator: make a backend available to ``open_monitor`` as ``name``, its
    ``options:`` described by ``options`` (a :class:`farm.spec.inventory.MonitorOptions`
    subclass: the inventory validates a monitor's options with it when it loads)."""

    def add(cls: type[Monitor]) -> type[Monitor]:
        if name in _BACKENDS:
            raise ValueError(f"power backend {name!r} is already registered")
        plugins.options(name)(options)
        cls.backend = name
        cls.options_model = options
        _BACKENDS[name] = cls
        return cls

    return add


def backends() -> list[str]:
    """Every backend's name (imports each module of ``farm/power/``)."""
    plugins.discover("backend")
    return sorted(_BACKENDS)


def open_monitor(backend: str, options: Mapping[str, Any] | None = None) -> Monitor:
    """Build the named backend. An unknown backend or absent hardware raises MonitorUnavailable."""
    if backend not in _BACKENDS:
        plugins.find("backend", backend)  # ``farm.power.<backend>`` registers itself
    factory = _BACKENDS.get(backend)
    if factory is None:
        raise MonitorUnavailable(
            f"power monitor backend {backend!r} is unknown (known: {', '.join(backends())})"
        )
    try:
        return factory(**dict(options or {}))
    except TypeError as exc:
        raise MonitorUnavailable(f"power monitor {backend!r}: bad options: {exc}") from exc
