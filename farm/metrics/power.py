"""Live power: each monitor's current reading while it samples, asked of its actor.

At each scrape the head asks every monitor actor for ``stats()``: the board it is
recording, the mean power of the capture's last moment (``farm.power.base.Live``,
computed next to the samples: no sample buffer crosses a process per scrape),
and how many samples it received and dropped so far.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

STATS_TIMEOUT_S = 0.5  # well inside a 1 s scrape timeout: a slow monitor misses one scrape


class LivePowerCollector(Collector):
    """``stats()`` lists the monitors' ``MonitorService.stats()`` dicts; ``channel_of(board)``
    names the monitor channel a board is wired to (its inventory ``power.channel``)."""

    def __init__(
        self,
        stats: Callable[[], list[dict[str, Any]]],
        channel_of: Callable[[str], str],
    ):
        self._stats = stats
        self._channel_of = channel_of

    def collect(self) -> Iterator[Metric]:
        power = GaugeMetricFamily(
            "farm_monitor_power_watts",
            "Power a monitor reads now, mean of the last 0.1 s, while it records a board",
            labels=["monitor", "channel", "board"],
        )
        samples = CounterMetricFamily(
            "farm_monitor_samples",
            "Samples a monitor received, over every capture",
            labels=["monitor"],
        )
        dropped = CounterMetricFamily(
            "farm_monitor_samples_dropped",
            "Samples a monitor dropped (counted by the device), over every capture",
            labels=["monitor"],
        )
        for s in self._stats():
            if s.get("board") is not None and s.get("power_w") is not None:
                power.add_metric(
                    [s["monitor"], self._channel_of(s["board"]), s["board"]], s["power_w"]
                )
            samples.add_metric([s["monitor"]], s["samples"])
            dropped.add_metric([s["monitor"]], s["dropped"])
        yield from (power, samples, dropped)


def ray_monitor_stats(names: Callable[[], list[str]]) -> Callable[[], list[dict[str, Any]]]:
    """``stats`` for a head: ask the named monitor actors (``farm-monitor-NAME``) that
    exist; a monitor not yet used by any task has no actor and no series."""

    actors: dict[str, Any] = {}  # found once; a named actor lookup is a GCS round trip

    def stats() -> list[dict[str, Any]]:
        import ray

        from farm.scheduler.actors import NAMESPACE

        for name in names():
            if name not in actors:
                try:
                    actors[name] = ray.get_actor(f"farm-monitor-{name}", namespace=NAMESPACE)
                except ValueError:
                    continue
        asked = {actor.stats.remote(): name for name, actor in actors.items()}
        if not asked:
            return []
        ready, _ = ray.wait(list(asked), num_returns=len(asked), timeout=STATS_TIMEOUT_S)
        found = []
        for ref in ready:  # a monitor that is slow or gone is left out of this scrape
            try:
                found.append(ray.get(ref))
            except ray.exceptions.RayActorError:
                actors.pop(asked[ref], None)  # gone: look it up again next time
            except ray.exceptions.RayError:
                continue
        return [s for s in found if s is not None]

    return stats
