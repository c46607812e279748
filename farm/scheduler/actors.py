"""Ray wrappers: the scheduler actor on the head, one station actor per node,
one monitor actor per physical power monitor.

The logic lives in plain classes (``core.Scheduler``, ``station.Station``,
``farm.power`` services) so it can be read and tested without Ray; this module
only decides *where* each runs:

- ``farm-scheduler`` (named, in namespace ``farm``; detached on a real head) on
  the head, owning the store;
- ``farm-station-<name>`` on the node that advertises the custom resource
  ``station:<name>`` (``farm station start`` / ``farm head start`` set it), so a
  board's work runs where the board is reachable;
- ``farm-monitor-<name>`` on the station its monitor is plugged into.

Every actor asks for ``num_cpus=0``: they wait on boards, not on the CPU, and a
two-core head must still hold hundreds of boards. Stations are threaded
(``max_concurrency``) rather than one process per board.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any

import ray

from farm.errors import FarmError
from farm.scheduler.core import Scheduler
from farm.scheduler.station import Station
from farm.store import Store

log = logging.getLogger(__name__)

NAMESPACE = "farm"
SCHEDULER_NAME = "farm-scheduler"
STATION_CONCURRENCY = 1024


def station_resource(name: str) -> str:
    return f"station:{name}"


def _placement(station: str, placed: bool, name: str) -> dict[str, Any]:
    """Where an actor runs, and its name. On a cluster (``placed``), on the node that
    advertises the station, named so that a restarted scheduler finds it again.
    Embedded, private to its owner (no name): it dies with the scheduler that made it."""
    if not placed:
        return {}
    return {
        "resources": {station_resource(station): 0.001},
        "name": name,
        "namespace": NAMESPACE,
        "get_if_exists": True,
    }


@ray.remote(num_cpus=0, max_concurrency=STATION_CONCURRENCY)
class StationActor:
    def __init__(
        self, name: str, scheduler: Any, cache_dir: str, monitors: dict[str, Any], placed: bool
    ):
        self._scheduler = scheduler
        self._monitors = monitors
        self._placed = placed
        self._monitor_handles: dict[str, Any] = {}
        self.station = Station(
            name, cache_dir=cache_dir, report=self._report, monitor=self._monitor
        )

    def _report(self, task_id: str, state: str, at: float, detail: str | None) -> None:
        self._scheduler.report.remote(task_id, state, at, detail)

    def _monitor(self, name: str) -> Any:
        from farm.scheduler.energy import RemoteMonitor

        if name not in self._monitor_handles:
            spec = self._monitors[name]
            actor = MonitorActor.options(
                **_placement(spec.get("station") or "head", self._placed, f"farm-monitor-{name}")
            ).remote(spec)
            self._monitor_handles[name] = RemoteMonitor(actor, name)
        return self._monitor_handles[name]

    def set_monitors(self, monitors: dict[str, Any]) -> None:
        self._monitors.update(monitors)

    def run_task(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.station.run_task(payload)

    def check_board(self, board: dict[str, Any]) -> dict[str, Any]:
        return self.station.check_board(board)

    def abort(self, task_ids: list[str]) -> int:
        return self.station.abort(task_ids)


@ray.remote(num_cpus=0, max_concurrency=4)
class MonitorActor:
    """One physical monitor. Serves one board at a time (the service enforces it)."""

    def __init__(self, spec: dict[str, Any]):
        self._spec = spec
        self._service: Any = None
        try:
            self._open()
        except FarmError:
            # An actor whose constructor raises is dead, and every call on it fails with
            # an opaque ActorDiedError. Staying alive lets each task hear *why* (the
            # MonitorUnavailable naming the monitor), and a replugged monitor recover.
            log.info("monitor %s unavailable for now", spec.get("name"), exc_info=True)

    def _open(self) -> Any:
        from farm.power import MonitorService

        if self._service is None:
            self._service = MonitorService.from_spec(self._spec)
        return self._service

    def call(self, method: str, *args: Any) -> Any:
        if method not in ("start", "abort"):
            raise ValueError(f"not a monitor call: {method}")
        return getattr(self._open(), method)(*args)

    def finish(self, board: str, markers: dict, exchanges: list) -> tuple[dict[str, Any], bytes]:
        """Stop, analyse next to the samples, and return the report and compressed trace."""
        service = self._open()
        trace = service.stop(board, markers)
        report = service.analyze(trace, markers, [tuple(x) for x in exchanges])
        return dict(report), trace.to_bytes()


@ray.remote(num_cpus=0, max_concurrency=64)
class SchedulerActor:
    def __init__(
        self,
        db_path: str,
        *,
        placed: bool,
        cache_dir: str = "~/.cache/farm/station",
        resume: bool = True,
        options: dict[str, Any] | None = None,
    ):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        self._placed = placed
        self._cache_dir = cache_dir
        self._stations: dict[str, Any] = {}
        self._monitors: dict[str, Any] = {}
        self._me = ray.get_runtime_context().current_actor
        self.store = Store(db_path)
        self.core = Scheduler(
            self.store,
            self._dispatch,
            health_check=self._health,
            abort=self._abort,
            resume=resume,
            **(options or {}),
        )

    # stations are created lazily, where their resource lives
    def _station(self, name: str) -> Any:
        if name not in self._stations:
            self._stations[name] = StationActor.options(
                **_placement(name, self._placed, f"farm-station-{name}")
            ).remote(name, self._me, self._cache_dir, self._monitors, self._placed)
        return self._stations[name]

    def _dispatch(self, station: str, payload: dict[str, Any]) -> Future:
        return self._station(station).run_task.remote(payload).future()

    def _health(self, station: str, board: dict[str, Any]) -> Future:
        return self._station(station).check_board.remote(board).future()

    def _abort(self, station: str, task_ids: list[str]) -> None:
        self._station(station).abort.remote(task_ids)

    # -- remote API -----------------------------------------------------------------

    def submit(
        self,
        job: dict[str, Any],
        tasks: list[dict[str, Any]],
        boards: list[dict[str, Any]],
        monitors: list[dict[str, Any]],
        source: str | None = None,
    ) -> str:
        missing = self._missing_stations(boards)
        if missing:
            raise ValueError(
                "no Ray node serves station(s) "
                + ", ".join(sorted(missing))
                + ": start one with `farm station start --name NAME --address HEAD`"
            )
        new = {m["name"]: m for m in monitors}
        self._monitors.update(new)
        for station in self._stations.values():
            station.set_monitors.remote(new)
        return self.core.submit(job, tasks, boards, source=source)

    def _missing_stations(self, boards: list[dict[str, Any]]) -> set[str]:
        if not self._placed:
            return set()
        have = ray.cluster_resources()
        return {
            b.get("station") or "head"
            for b in boards
            if station_resource(b.get("station") or "head") not in have
        }

    def cancel(self, job_id: str) -> None:
        self.core.cancel(job_id)

    def report(self, task_id: str, state: str, at: float, detail: str | None = None) -> None:
        self.core.report(task_id, state, at, detail)

    def progress(self, job_id: str) -> dict[str, Any]:
        return self.core.progress(job_id)

    def check_board(self, board: dict[str, Any]) -> dict[str, Any]:
        return ray.get(self._station(board.get("station") or "head").check_board.remote(board))

    def store_call(self, method: str, *args: Any) -> Any:
        """Read the head's store from a client (``farm results --address ...``)."""
        if method.startswith("_") or method not in _READ_METHODS:
            raise ValueError(f"not a read method: {method}")
        return getattr(self.store, method)(*args)

    def ping(self) -> dict[str, Any]:
        running = sorted(self.core.jobs)
        return {"db": str(self.store.path), "jobs_running": len(running), "running": running}


_READ_METHODS = frozenset(
    {
        "job",
        "jobs",
        "counts",
        "tasks",
        "task",
        "events",
        "logs",
        "results",
        "layers",
        "markers",
        "board_health",
    }
)


class RemoteStore:
    """The store's read methods, answered by the head's scheduler actor."""

    def __init__(self, actor: Any):
        self._actor = actor

    def __getattr__(self, method: str) -> Any:
        if method not in _READ_METHODS:
            raise AttributeError(method)
        return lambda *args: ray.get(self._actor.store_call.remote(method, *args))
