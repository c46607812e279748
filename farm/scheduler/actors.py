"""Ray wrappers: the scheduler actor on the head, one station actor per node,
one monitor actor per physical power monitor.

The logic lives in plain classes (``core.Scheduler``, ``station.Station``,
``farm.power`` services) so it can be read and tested without Ray; this module
only decides *where* each runs, and translates Ray's errors into farm's own at
the one place an actor call is awaited (:func:`wait`):

- ``farm-scheduler`` (named, in namespace ``farm``; detached on a real head) on
  the head, owning the store;
- ``farm-station-<name>`` on the node that advertises the custom resource
  ``station:<name>`` (``farm station start`` / ``farm head start`` set it), so a
  board's work runs where the board is reachable;
- ``farm-monitor-<name>`` on the station its monitor is plugged into.

The names are spelled once, in :mod:`farm.scheduler.names`.

Every actor asks for ``num_cpus=0``: they wait on boards, not on the CPU, and a
two-core head must still hold hundreds of boards. Stations are threaded
(``max_concurrency``) rather than one process per board. Every actor method is a
real method with typed arguments: nothing is dispatched by name.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import ray

from farm.errors import FarmError, HeadError, MonitorUnavailable, UserError
from farm.scheduler.core import Scheduler
from farm.scheduler.messages import (
    BoardCheck,
    EngineStarted,
    HeadInfo,
    NodeInfo,
    Outcome,
    TaskPayload,
)
from farm.scheduler.names import (
    NAMESPACE,
    SCHEDULER,
    monitor_actor,
    station_actor,
    station_of,
    station_resource,
)
from farm.scheduler.reports import RunningReports
from farm.scheduler.station import Station
from farm.spec import Board, Job, Monitor, PlannedTask
from farm.store import open_writer

log = logging.getLogger(__name__)

SCHEDULER_NAME = SCHEDULER  # the names' old home: farm.scheduler.names spells them now
STATION_CONCURRENCY = 1024
STATS_TIMEOUT_S = 0.5  # well inside a 1 s scrape timeout: a slow monitor misses one scrape


def wait(
    ref: Any,
    what: str,
    *,
    timeout: float | None = None,
    gone: Callable[[str], FarmError] = HeadError,
) -> Any:
    """``ray.get`` that raises only farm's errors: the actor's own ``FarmError``
    as it raised it, anything else it raised as ``FarmError``, and a dead actor or
    an unreachable cluster as ``gone(message)``."""
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, FarmError):
            raise cause from None
        raise FarmError(f"{what}: {type(cause).__name__}: {_one_line(cause)}") from cause
    except ray.exceptions.GetTimeoutError as exc:
        raise gone(f"{what}: no answer within {timeout:.0f}s") from exc
    except ray.exceptions.RayError as exc:
        raise gone(f"{what}: {type(exc).__name__}: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    """An error from another process as one line (a remote traceback is for its log)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


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


class RemoteMonitor:
    """A monitor actor seen from a station: blocking calls, farm's errors only.

    A dead monitor actor becomes ``MonitorUnavailable`` naming the monitor."""

    def __init__(self, actor: Any, name: str = ""):
        self._actor = actor
        self.name = name

    def _wait(self, ref: Any) -> Any:
        return wait(ref, f"power monitor {self.name!r}", gone=MonitorUnavailable)

    def start(self, board: str) -> dict[str, Any]:
        return self._wait(self._actor.start.remote(board))

    def finish(self, board: str, markers: dict, exchanges: list) -> tuple[dict[str, Any], bytes]:
        return self._wait(self._actor.finish.remote(board, markers, exchanges))

    def abort(self, board: str) -> None:
        self._wait(self._actor.abort.remote(board))


def monitor_stats(names: Callable[[], list[str]]) -> Callable[[], list[dict[str, Any]]]:
    """The head's live-power source (``farm.metrics.power.LivePowerCollector``): ask
    the named monitor actors that exist for ``MonitorService.stats()``. A monitor not
    yet used by any task has no actor and no series; one slow to answer is left out of
    this scrape, one gone is looked up again at the next."""

    actors: dict[str, Any] = {}  # found once; a named actor lookup is a GCS round trip

    def stats() -> list[dict[str, Any]]:
        for name in names():
            if name not in actors:
                try:
                    actors[name] = ray.get_actor(monitor_actor(name), namespace=NAMESPACE)
                except ValueError:
                    continue
        asked = {actor.stats.remote(): name for name, actor in actors.items()}
        if not asked:
            return []
        ready, _ = ray.wait(list(asked), num_returns=len(asked), timeout=STATS_TIMEOUT_S)
        found = []
        for ref in ready:
            name = asked[ref]
            try:
                found.append(wait(ref, f"power monitor {name!r}", gone=MonitorUnavailable))
            except MonitorUnavailable:
                actors.pop(name, None)  # gone: look it up again next time
            except FarmError:
                continue
        return [s for s in found if s is not None]

    return stats


@ray.remote(num_cpus=0, max_concurrency=STATION_CONCURRENCY)
class StationActor:
    def __init__(
        self, name: str, scheduler: Any, cache_dir: str, monitors: dict[str, Monitor], placed: bool
    ):
        self._scheduler = scheduler
        self._monitors = monitors
        self._placed = placed
        self._monitor_handles: dict[str, RemoteMonitor] = {}
        self._reports = RunningReports(lambda reports: scheduler.running.remote(reports))
        self.station = Station(
            name, cache_dir=cache_dir, running=self._reports.add, monitor=self._monitor
        )

    def _monitor(self, name: str) -> RemoteMonitor:
        if name not in self._monitor_handles:
            spec = self._monitors[name]
            actor = MonitorActor.options(
                **_placement(spec.station or "head", self._placed, monitor_actor(name))
            ).remote(spec)
            self._monitor_handles[name] = RemoteMonitor(actor, name)
        return self._monitor_handles[name]

    def set_monitors(self, monitors: dict[str, Monitor]) -> None:
        self._monitors.update(monitors)

    def run_task(self, payload: TaskPayload) -> Outcome:
        outcome = self.station.run_task(payload)
        self._reports.overtaken(payload.task_id, payload.attempt)
        return outcome

    def check_board(self, board: Board) -> BoardCheck:
        return self.station.check_board(board)

    def abort(self, task_ids: list[str]) -> int:
        return self.station.abort(task_ids)


@ray.remote(num_cpus=0, max_concurrency=4)
class MonitorActor:
    """One physical monitor. Serves one board at a time (the service enforces it)."""

    def __init__(self, spec: Monitor):
        self._spec = spec
        self._service: Any = None
        try:
            self._open()
        except FarmError:
            # An actor whose constructor raises is dead, and every call on it fails with
            # an opaque ActorDiedError. Staying alive lets each task hear *why* (the
            # MonitorUnavailable naming the monitor), and a replugged monitor recover.
            log.info("monitor %s unavailable for now", spec.name, exc_info=True)

    def _open(self) -> Any:
        from farm.power import MonitorService

        if self._service is None:
            self._service = MonitorService.from_spec(self._spec.model_dump(mode="json"))
        return self._service

    def start(self, board: str) -> Any:
        return self._open().start(board)

    def abort(self, board: str) -> None:
        self._open().abort(board)

    def stats(self) -> dict[str, Any] | None:
        """Live power and sample counts for the head's exporter; None while unavailable."""
        try:
            return self._open().stats()
        except FarmError:
            return None

    def finish(self, board: str, markers: dict, exchanges: list) -> tuple[dict[str, Any], bytes]:
        """Stop, analyse next to the samples, and return the report and compressed trace."""
        service = self._open()
        trace = service.stop(board, markers)
        report = service.analyze(trace, markers, [tuple(x) for x in exchanges])
        return dict(report), trace.to_bytes()


@ray.remote(num_cpus=0, max_concurrency=64)
class SchedulerActor:
    """The head. Its methods are the scheduler's (submit, cancel, progress, running,
    check_board, ping) and the store's read API, answered from the head's store."""

    def __init__(
        self,
        db_path: str,
        *,
        placed: bool,
        cache_dir: str = "~/.cache/farm/station",
        resume: bool = True,
        options: dict[str, Any] | None = None,
        metrics_address: str = "off",
    ):
        from farm.metrics.exporter import HeadMetrics

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        self._placed = placed
        self._cache_dir = cache_dir
        self._stations: dict[str, Any] = {}
        self._monitors: dict[str, Monitor] = {}
        self._me = ray.get_runtime_context().current_actor
        self.store = open_writer(db_path)  # farm's one writable store: the head owns it
        live = monitor_stats(lambda: list(self._monitors))
        metrics = HeadMetrics(self.store, metrics_address, live=live)
        atexit.register(self.close)  # a head stopped with SIGTERM closes its store too
        self.core = Scheduler(
            self.store,
            self._dispatch,
            health_check=self._health,
            abort=self._abort,
            resume=resume,
            **(options or {}),
        )
        metrics.serve(self.core)

    # stations are created lazily, where their resource lives
    def _station(self, name: str) -> Any:
        if name not in self._stations:
            self._stations[name] = StationActor.options(
                **_placement(name, self._placed, station_actor(name))
            ).remote(name, self._me, self._cache_dir, self._monitors, self._placed)
        return self._stations[name]

    def _dispatch(self, station: str, payload: TaskPayload) -> Future:
        return self._station(station).run_task.remote(payload).future()

    def _health(self, station: str, board: Board) -> Future:
        return self._station(station).check_board.remote(board).future()

    def _abort(self, station: str, task_ids: list[str]) -> None:
        self._station(station).abort.remote(task_ids)

    # -- the scheduler ----------------------------------------------------------------

    def submit(
        self,
        job: Job,
        tasks: list[PlannedTask],
        boards: list[Board],
        monitors: list[Monitor],
        source: str | None = None,
        owner: dict[str, Any] | None = None,
    ) -> str:
        missing = self._missing_stations(boards)
        if missing:
            raise UserError(
                "no Ray node serves station(s) "
                + ", ".join(sorted(missing))
                + ": start one with `farm station start --name NAME --address HEAD`"
            )
        new = {m.name: m for m in monitors}
        self._monitors.update(new)
        for station in self._stations.values():
            station.set_monitors.remote(new)
        return self.core.submit(job, tasks, boards, source=source, owner=owner)

    def resume(self, job_id: str, owner: dict[str, Any] | None = None) -> int:
        return self.core.resume(job_id, owner)

    def _missing_stations(self, boards: list[Board]) -> set[str]:
        if not self._placed:
            return set()
        have = ray.cluster_resources()
        stations = {b.station or "head" for b in boards}
        return {s for s in stations if station_resource(s) not in have}

    def cancel(self, job_id: str) -> None:
        self.core.cancel(job_id)

    def running(self, reports: list[EngineStarted]) -> None:
        """A station's batch of "engine started" reports (``farm.scheduler.reports``)."""
        for report in reports:
            self.core.running(report)

    def progress(self, job_id: str):
        return self.core.progress(job_id)

    def check_board(self, board: Board) -> BoardCheck:
        return wait(
            self._station(board.station or "head").check_board.remote(board),
            f"station for {board.name}",
        )

    def close(self) -> None:
        """Stop scheduling and close the store (its log folded into the file): the
        embedded head's last call, before its process ends."""
        self.core.stop()
        with contextlib.suppress(Exception):  # closed already (twice: atexit after close)
            self.store.close()

    def ping(self) -> HeadInfo:
        return HeadInfo(address=None, db=str(self.store.path), running=sorted(self.core.jobs))

    def nodes(self) -> list[NodeInfo]:
        """The cluster's live nodes with the stations they serve."""
        return [
            NodeInfo(
                address=n["NodeManagerAddress"],
                id=n["NodeID"],
                stations=sorted(
                    station for k in n["Resources"] if (station := station_of(k)) is not None
                ),
            )
            for n in ray.nodes()
            if n.get("Alive")
        ]

    # -- the store's read API, from the head's store ----------------------------------

    def job(self, job_id):
        return self.store.job(job_id)

    def jobs(self, **kwargs):
        return self.store.jobs(**kwargs)

    def counts(self, job_id):
        return self.store.counts(job_id)

    def tasks(self, job_id, states=None):
        return self.store.tasks(job_id, states)

    def task(self, task_id):
        return self.store.task(task_id)

    def events(self, task_id):
        return self.store.events(task_id)

    def logs(self, task_id):
        return self.store.logs(task_id)

    def cells(self, job_id):
        return self.store.cells(job_id)

    def latest_cells(self):
        return self.store.latest_cells()

    def match_cells(self, job_a, job_b):
        return self.store.match_cells(job_a, job_b)

    def layers(self, task_id):
        return self.store.layers(task_id)

    def markers(self, task_id):
        return self.store.markers(task_id)

    def trace(self, task_id):
        return self.store.trace(task_id)

    def board_health(self):
        return self.store.board_health()

    def jobs_by_state(self):
        return self.store.jobs_by_state()

    def queue_depth(self):
        return self.store.queue_depth()

    def unfinished_jobs(self):
        return self.store.unfinished_jobs()
