"""What in a result's environment can move a measurement without any code changing.

The engine records, in each result's ``env``, the threads and inter-op
threads in force, niceness, affinity, the load average and CPU steal around
the task, governor and frequency, CPU model, kernel, temperatures before and
after, and the torch and engine versions; the station adds the artifact's
sha256. Older results lack some of these: a key missing on either side is not
a difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# what makes two results measure different things: flagged on the cell
IDENTITY = {
    "engine": ("engine",),
    "torch": ("torch",),
    "artifact": ("artifact",),
    "board": ("cpu_model", "kernel"),
}
EXACT = ("threads", "interop_threads", "nice", "affinity", "governor", "cpu_model", "kernel",
         "torch", "engine", "artifact")  # fmt: skip
# numeric conditions, and how far apart they must be to be worth showing
TOLERANCE = {
    "loadavg_before": ("abs", 1.0),
    "loadavg_after": ("abs", 1.0),
    "cpu_steal_pct": ("abs", 2.0),
    "freq_mhz": ("rel", 0.05),
    "temp_c_before": ("abs", 5.0),
    "temp_c_after": ("abs", 5.0),
}


def facts(result: Mapping[str, Any] | None) -> dict[str, Any]:
    """The environment values of one result (the artifact's hash beside the engine's ``env``)."""
    result = result or {}
    env = dict(result.get("env") or {})
    artifact = result.get("artifact") or {}
    if artifact.get("sha256"):
        env["artifact"] = artifact["sha256"][:12]
    return env


def _number(value: Any) -> float | None:
    """A scalar for the tolerance checks: a number, or the first of a list (a load-average
    triple's one-minute figure, the first CPU's frequency); None for anything else."""
    if isinstance(value, list | tuple) and value:
        value = value[0]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The environment values that differ between two results' ``facts`` (a → b)."""
    out: dict[str, tuple[Any, Any]] = {}
    for key in EXACT:
        if key in a and key in b and a[key] != b[key]:
            out[key] = (a[key], b[key])
    for key, (kind, limit) in TOLERANCE.items():
        x, y = _number(a.get(key)), _number(b.get(key))
        if x is None or y is None:
            continue
        gap = abs(y - x) if kind == "abs" else abs(y - x) / max(abs(x), 1e-9)
        if gap > limit:
            out[key] = (a[key], b[key])
    return out


def changed(diff: Mapping[str, tuple[Any, Any]]) -> list[str]:
    """Which of engine, torch, artifact and board changed, given ``differences``."""
    return [name for name, keys in IDENTITY.items() if any(k in diff for k in keys)]


def short(value: Any) -> str:
    """A value for a table cell: compact, never a wall of JSON."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(short(v) for v in value[:4]) + (",…" if len(value) > 4 else "") + "]"
    if isinstance(value, Mapping):
        return short(value.get("version") or value.get("sha256") or next(iter(value.values()), ""))
    text = str(value)
    return text if len(text) <= 40 else text[:39] + "…"
