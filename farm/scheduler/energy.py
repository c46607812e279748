"""Energy around one task: the station's side of the power-monitor protocol.

The monitor actor records a pre-task idle window, the task and a post-task idle
window. Around the engine's run the station makes clock exchanges with the
board's engine (board clock ↔ host clock), so the energy step can map the
engine's markers onto the monitor's trace; the engine's sync pulses then refine
that mapping to about one sample. The analysis runs inside the monitor actor,
next to the samples: only the report and the compressed trace travel. The
monitor is anything with ``start``, ``finish`` and ``abort`` (on Ray, the
``RemoteMonitor`` of ``farm.scheduler.actors``); this module never imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from farm.errors import FarmError

EXCHANGES = 8  # clock exchanges before and after the task; the min-RTT filter keeps the best


def measure_with_monitor(
    monitor: Any,
    board: Any,
    run: Callable[[], dict[str, Any]],
    clock_exchange: Callable[[], tuple[int, int, int]],
    log: Callable[[str], None],
) -> tuple[dict[str, Any], bytes | None]:
    """Run the task under the monitor; return the engine result with ``energy`` added,
    and the compressed raw trace.

    One clock exchange comes first and is thrown away: it starts the board's warm
    engine if it is not running. Starting it (importing torch) inside the pre-task
    idle window would inflate the idle baseline, and an exchange that waited for
    it would carry a round trip of seconds into the clock fit.
    """
    clock_exchange()
    monitor.start(board.name)
    try:
        exchanges = [clock_exchange() for _ in range(EXCHANGES)]
        result = run()
        exchanges += [clock_exchange() for _ in range(EXCHANGES)]
    except BaseException:
        _abort_quietly(monitor, board.name, log)
        raise
    if result.get("status") != "ok":
        _abort_quietly(monitor, board.name, log)
        return result, None
    report, trace = monitor.finish(board.name, result["markers"], exchanges)
    battery = getattr(board.power, "battery", None)
    if battery is not None:
        report["battery"] = battery_estimate(battery, report, result)
    for row in report.get("layers", []):  # per-layer energy beside the layer's time
        idx = row["index"]
        if 0 <= idx < len(result.get("layers") or []):
            result["layers"][idx]["energy_mj"] = row["net_mj"]["mean"]
    alignment = report["alignment"]
    log(
        f"energy: {report['energy_per_inference_mj']['net']['mean']} mJ/inference net,"
        f" aligned by {alignment['method']} ± {alignment.get('uncertainty_s')} s"
    )
    for warning in report["quality"].get("warnings", []):
        log(f"power quality: {warning}")
    result["energy"] = report
    return result, trace


def _abort_quietly(monitor: Any, board: str, log: Callable[[str], None]) -> None:
    """Release the monitor after a failed task without hiding the task's own error."""
    try:
        monitor.abort(board)
    except FarmError as exc:
        log(f"power monitor: abort failed: {exc}")


def battery_estimate(
    battery: Any, report: dict[str, Any], result: dict[str, Any]
) -> dict[str, Any]:
    """The paper's §3 estimate from this task's measured energy and idle power."""
    from farm.power import BatteryModel, battery_life_hours, inferences_on_share

    gross = report["energy_per_inference_mj"]["gross"]["mean"]
    idle = report.get("idle_power_w")
    if gross is None or idle is None:
        return {"hours": None, "why": "no energy or idle power measured"}
    model = BatteryModel(
        capacity_mah=battery.capacity_mah,
        voltage_v=battery.voltage_v,
        idle_w=idle,
        low_power_idle_w=battery.low_power_idle_w,
    )
    inference_j = gross / 1e3
    inference_s = result["latency"]["mean_ms"] / 1e3
    try:
        hours = battery_life_hours(
            model,
            inference_j=inference_j,
            inference_s=inference_s,
            period_s=battery.period_s,
            sensor=battery.sensor,
            low_power_idle=battery.low_power_idle_w is not None,
        )
    except ValueError as exc:  # e.g. an inference longer than the duty-cycle period
        return {"hours": None, "why": str(exc)}
    return {
        "hours": hours,
        "period_s": battery.period_s,
        "sensor": battery.sensor,
        "capacity_mah": battery.capacity_mah,
        "voltage_v": battery.voltage_v,
        "idle_w": model.low_power_idle_w if battery.low_power_idle_w is not None else idle,
        "inferences_on_share": inferences_on_share(
            model, inference_j=inference_j, share=battery.share, sensor=battery.sensor
        ),
        "share": battery.share,
    }
