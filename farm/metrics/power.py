"""Live power: each monitor's current reading while it samples, asked of its actor.

At each scrape the head asks every monitor actor for ``stats()``
(the scheduler actor's ``monitor_stats`` makes the Ray calls): the board it is
recording, the mean power of the capture's last moment (``farm.power.base.Live``,
computed next to the samples: no sample buffer crosses a process per scrape),
and how many samples it received and dropped so far.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


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
