"""The task request, checked once at the door.

A request is a JSON object (docs/internals.md). It is validated by hand here
because the engine ships with the standard library and torch only; unknown
keys are refused so a typo never silently falls back to a default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from farm.engine.pulse import PulseSpec


class RequestError(ValueError):
    """The request cannot be understood; nothing was run."""


@dataclass(frozen=True)
class Request:
    artifact: str
    task_id: str | None = None
    device: str = "cpu"
    threads: int | None = None
    interop_threads: int | None = None
    nice: int = 0
    affinity: tuple[int, ...] | None = None
    memory_mb: float | None = None
    batch: int = 1
    iterations: int = 1000
    warmup: int = 10
    layers: bool = True
    layer_iterations: int = 20
    memory: bool = True
    sync_pulse: PulseSpec | None = None
    board_lock: str | None = None  # the board's measuring lock (farm.engine.measuring)
    runtime: str = "eager"  # a registered runtime (farm.engine.runtimes)
    precision: str = "fp32"  # what the artifact was exported in; recorded

    def to_json(self) -> dict[str, Any]:
        """The request as the JSON object :func:`parse_request` reads back (the one
        serialization: the station sends this, the engine parses it)."""
        out = asdict(self)  # sync_pulse becomes {chips, chip_ms, seed}
        out["affinity"] = list(self.affinity) if self.affinity is not None else None
        return out


def _int(obj: dict, key: str, default: Any, minimum: int) -> Any:
    value = obj.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RequestError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _bool(obj: dict, key: str, default: bool) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise RequestError(f"{key} must be true or false, got {value!r}")
    return value


def _nice(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -20 <= value <= 19:
        raise RequestError(f"nice must be an integer from -20 to 19, got {value!r}")
    return value


def _pulse(value: Any) -> PulseSpec | None:
    if value is None or value is False:
        return None
    if value is True:
        return PulseSpec()
    if not isinstance(value, dict) or set(value) - {"chips", "chip_ms", "seed"}:
        raise RequestError("sync_pulse must be false, true or {chips, chip_ms, seed}")
    spec = PulseSpec(**value)
    if not isinstance(spec.chips, int) or spec.chips < 2:
        raise RequestError("sync_pulse.chips must be an integer >= 2")
    if not isinstance(spec.chip_ms, (int, float)) or spec.chip_ms <= 0:
        raise RequestError("sync_pulse.chip_ms must be a positive number")
    return spec


def parse_request(obj: Any) -> Request:
    """Build a :class:`Request` from decoded JSON, or raise :class:`RequestError`."""
    if not isinstance(obj, dict):
        raise RequestError("a request must be a JSON object")
    unknown = set(obj) - {f.name for f in fields(Request)}
    if unknown:
        raise RequestError(f"unknown request keys: {', '.join(sorted(unknown))}")
    artifact = obj.get("artifact")
    if not isinstance(artifact, str) or not artifact:
        raise RequestError("artifact must be a path")
    device = obj.get("device", "cpu")
    if not isinstance(device, str):
        raise RequestError("device must be a string such as 'cpu' or 'cuda:0'")
    task_id = obj.get("task_id")
    if task_id is not None and not isinstance(task_id, str):
        raise RequestError("task_id must be a string")
    affinity = obj.get("affinity")
    if affinity is not None:
        ok = isinstance(affinity, list) and affinity
        if not ok or not all(isinstance(c, int) and not isinstance(c, bool) for c in affinity):
            raise RequestError("affinity must be a non-empty list of CPU ids")
        affinity = tuple(affinity)
    board_lock = obj.get("board_lock")
    if board_lock is not None and (not isinstance(board_lock, str) or not board_lock):
        raise RequestError("board_lock must be a path or null")
    memory_mb = obj.get("memory_mb")
    if memory_mb is not None and (
        isinstance(memory_mb, bool) or not isinstance(memory_mb, (int, float)) or memory_mb <= 0
    ):
        raise RequestError("memory_mb must be a positive number or null")
    runtime = obj.get("runtime", "eager")
    from farm.engine import runtimes  # stdlib only: no runtime library is imported

    if not isinstance(runtime, str) or runtime not in runtimes.names():
        raise RequestError(f"runtime {runtime!r} is not one of {', '.join(runtimes.names())}")
    precision = obj.get("precision", "fp32")
    if precision not in runtimes.PRECISIONS:
        raise RequestError(f"precision must be one of {', '.join(runtimes.PRECISIONS)}")
    return Request(
        artifact=artifact,
        runtime=runtime,
        precision=precision,
        task_id=task_id,
        device=device,
        threads=_int(obj, "threads", None, 1),
        interop_threads=_int(obj, "interop_threads", None, 1),
        nice=_nice(obj.get("nice", 0)),
        affinity=affinity,
        memory_mb=memory_mb,
        batch=_int(obj, "batch", 1, 1),
        iterations=_int(obj, "iterations", 1000, 1),
        warmup=_int(obj, "warmup", 10, 0),
        layers=_bool(obj, "layers", True),
        layer_iterations=_int(obj, "layer_iterations", 20, 1),
        memory=_bool(obj, "memory", True),
        sync_pulse=_pulse(obj.get("sync_pulse", False)),
        board_lock=board_lock,
    )
