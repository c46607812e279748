"""The farm's own families: what the scheduler does, how the queue and boards stand.

Counters and histograms move on the store's state events, through one entry
point, ``FarmMetrics.on_event``: the store publishes every committed change and
nothing else in farm calls into metrics. Gauges that describe *now* (queue
depth, boards by health, jobs by state, the loop's lag) are read at scrape time
by ``FleetCollector``, so they are right after a restart too.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import farm
from farm.errors import TransportError
from farm.metrics.source import StoreSource
from farm.nightly import BoardDrift, degraded
from farm.states import TaskState
from farm.store import Event, TaskEvent

TASK_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
DEPLOY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _transport_error_kinds() -> frozenset[str]:
    kinds, todo = set(), [TransportError]
    while todo:
        cls = todo.pop()
        kinds.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(kinds)


class FarmMetrics:
    """Counters and histograms of the scheduler, fed by ``on_event``."""

    def __init__(self, registry: CollectorRegistry):
        self.transitions = Counter(
            "farm_task_transitions",
            "Task state transitions, by the state entered",
            ["state"],
            registry=registry,
        )
        self.task_seconds = Histogram(
            "farm_task_duration_seconds",
            "From a task attempt's start (deploying) to its end, by the state it ended in",
            ["state"],
            buckets=TASK_BUCKETS,
            registry=registry,
        )
        self.deploy_seconds = Histogram(
            "farm_deploy_duration_seconds",
            "A task's deploy step: from deploying to running (connect, export, push, verify)",
            buckets=DEPLOY_BUCKETS,
            registry=registry,
        )
        self.deploy_bytes = Counter(
            "farm_deploy_bytes",
            "Bytes the deploy step pushed to boards (engine, weights, users' packages), by board",
            ["board"],
            registry=registry,
        )
        self.transport_errors = Counter(
            "farm_transport_errors",
            "Transport errors met by tasks, by kind (the error's class)",
            ["kind"],
            registry=registry,
        )
        self._kinds = _transport_error_kinds()
        self._started: dict[str, float] = {}  # attempt start of each in-flight task
        # every label value exists from the start, at 0: a rate over "no failure yet"
        # is 0, not an absent series (the label sets are small and known)
        for state in TaskState:
            self.transitions.labels(state.value)
        for kind in sorted(self._kinds):
            self.transport_errors.labels(kind)

    def on_event(self, event: Event) -> None:
        if not isinstance(event, TaskEvent):
            return
        state = TaskState(event.to_state)
        self.transitions.labels(state.value).inc()
        if state is TaskState.DEPLOYING:
            self._started[event.task_id] = event.at
            return
        started = self._started.get(event.task_id)
        if state is TaskState.RUNNING:
            if started is not None:  # deploying → running: the deploy step
                self.deploy_seconds.observe(max(0.0, event.at - started))
            if event.deploy_bytes and event.board:
                self.deploy_bytes.labels(event.board).inc(event.deploy_bytes)
            return
        self._started.pop(event.task_id, None)  # back to the queue, or the end
        if state.is_terminal() and started is not None:
            self.task_seconds.labels(state.value).observe(max(0.0, event.at - started))
        if event.error_kind in self._kinds:  # a failure or a retry, with its kind
            self.transport_errors.labels(event.error_kind).inc()


class FleetCollector(Collector):
    """Queue depth, boards by health, jobs by state, read from the store at scrape time;
    the scheduler loop's lag when this process runs the loop."""

    def __init__(self, source: StoreSource, loop_lag: Callable[[], float] | None = None):
        self._source = source
        self._loop_lag = loop_lag
        self._drift: tuple[int, dict[str, BoardDrift]] | None = None  # (results version, drift)

    def _board_drift(self) -> dict[str, BoardDrift]:
        """The performance health check (``farm.nightly.degraded``), redone only when a
        result has been stored since the last scrape."""
        version = self._source.version()
        if self._drift is None or self._drift[0] != version:
            self._drift = (version, degraded(self._source))
        return self._drift[1]

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily(
            "farm_queue_depth", "Queued tasks, by priority band", labels=["band"]
        )
        for band, n in self._source.queue_bands().items():
            queue.add_metric([band], n)
        yield queue
        boards = GaugeMetricFamily(
            "farm_board_state",
            "1 for each board's current health state (healthy, quarantined)",
            labels=["board", "state"],
        )
        for board, state in sorted(self._source.board_states().items()):
            boards.add_metric([board, state], 1)
        yield boards
        ratio = GaugeMetricFamily(
            "farm_board_performance_ratio",
            "A board's median latency over its same-tag peers' (1 = like its peers)",
            labels=["board"],
        )
        bad = GaugeMetricFamily(
            "farm_board_degraded",
            "1 when a board's median latency drifts more than k MADs from its same-tag peers",
            labels=["board"],
        )
        for board, drift in sorted(self._board_drift().items()):
            ratio.add_metric([board], drift.ratio)
            bad.add_metric([board], 1 if drift.degraded else 0)
        yield ratio
        yield bad
        jobs = GaugeMetricFamily("farm_jobs", "Jobs in the store, by state", labels=["state"])
        for state, n in sorted(self._source.job_counts().items()):
            jobs.add_metric([state], n)
        yield jobs
        if self._loop_lag is not None:
            yield GaugeMetricFamily(
                "farm_scheduler_loop_lag_seconds",
                "How far the scheduler loop is behind its own wake-up (0 while it keeps up)",
                value=self._loop_lag(),
            )


def register_build_info(registry: CollectorRegistry) -> None:
    info = Gauge(
        "farm_build_info",
        "farm's version and Python's, as labels; always 1",
        ["version", "python"],
        registry=registry,
    )
    info.labels(farm.__version__, platform.python_version()).set(1)
