"""The one door to the head: what the CLI (and any other client) asks farm's head.

Two ways in, one interface:

- :meth:`Head.embedded` starts a private head inside this process (Ray in-process,
  a scheduler actor that dies with it): ``farm submit`` on a laptop;
- :meth:`Head.attach` finds the named scheduler of a running head
  (``--address`` / ``RAY_ADDRESS``).

Reading results needs no head at all: :func:`reader` opens the store file
itself when no address is given, and this module imports Ray only when a head
is started or reached (``farm results`` on a laptop never loads Ray). Every Ray
error comes out as farm's own (``HeadError``, ``UserError``...), never as a
``ray.exceptions`` class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farm.errors import UserError
from farm.store import SCHEMA_VERSION, JobProgress, StoreReader, default_db_path, file, open_reader
from farm.store.read import Reader

if TYPE_CHECKING:
    from farm.scheduler.cluster import NodeRecord
    from farm.scheduler.messages import BoardCheck, HeadInfo, NodeInfo
    from farm.spec import Board, Job, Plan

READ_API = frozenset(name for name in vars(Reader) if not name.startswith("_"))
"""The store's read methods, answered alike by a local file and a remote head."""


class RemoteReader:
    """The store's read API answered by a head: same method names, same records."""

    def __init__(self, actor: Any):
        self._actor = actor

    def __getattr__(self, name: str) -> Any:
        if name not in READ_API:
            raise AttributeError(name)
        from farm.scheduler.actors import wait

        method = getattr(self._actor, name)
        return lambda *args, **kwargs: wait(method.remote(*args, **kwargs), f"head: {name}")


class Head:
    """A farm head, embedded in this process or attached to a running one."""

    def __init__(self, actor: Any, *, address: str | None, store: StoreReader | None):
        self._actor = actor
        self.address = address
        self._store = store

    @classmethod
    def embedded(cls, db: Path, *, cache_dir: str, **options: Any) -> Head:
        """A private head for this process's job: Ray in-process, nothing to start first."""
        from farm.scheduler import cluster
        from farm.scheduler.actors import SchedulerActor

        cluster.init_embedded()
        path = Path(db).expanduser() if db else default_db_path()
        file.inspect(path, SCHEMA_VERSION)  # a store that cannot be trusted: refused here
        actor = SchedulerActor.remote(
            str(path), placed=False, resume=False, cache_dir=cache_dir,
            options=options or None,
        )  # fmt: skip
        head = cls(actor, address=None, store=None)
        head.info()  # the actor's writer has created (or migrated) the file...
        head._store = open_reader(path)  # ...which this process only reads
        return head

    @classmethod
    def attach(cls, address: str) -> Head:
        """The named scheduler of the head at ``address``."""
        from farm.scheduler import cluster

        cluster.connect(address)  # sets Ray's environment before Ray is imported
        import ray

        from farm.scheduler.names import NAMESPACE, SCHEDULER

        try:
            actor = ray.get_actor(SCHEDULER, namespace=NAMESPACE)
        except ValueError as exc:
            raise UserError(
                f"no farm scheduler on the Ray cluster at {address}: run `farm head start` there"
            ) from exc
        return cls(actor, address=address, store=None)

    def _wait(self, ref: Any, what: str) -> Any:
        from farm.scheduler.actors import wait

        return wait(ref, f"head: {what}")

    @property
    def reader(self) -> Reader:
        """The head's store, read locally when embedded, through the head when attached."""
        return self._store if self._store is not None else RemoteReader(self._actor)  # type: ignore[return-value]

    def submit(self, job: Job, plan: Plan, *, source: str | None = None) -> str:
        ref = self._actor.submit.remote(
            job, plan.tasks, plan.boards, plan.monitors, source, self._owner()
        )
        return self._wait(ref, "submit")

    def resume(self, job_id: str) -> int:
        """Run what is left of an interrupted job here; how many tasks that is."""
        return self._wait(self._actor.resume.remote(job_id, self._owner()), "resume")

    def _owner(self) -> dict[str, Any] | None:
        """An embedded head's jobs belong to this process: if it dies, they stop."""
        from farm.owner import Owner

        return Owner.me().to_dict() if self.address is None else None

    def progress(self, job_id: str) -> JobProgress | None:
        return self._wait(self._actor.progress.remote(job_id), "progress")

    def cancel(self, job_id: str) -> None:
        self._wait(self._actor.cancel.remote(job_id), "cancel")

    def check_boards(self, boards: Sequence[Board]) -> list[BoardCheck]:
        from farm.scheduler.actors import wait

        refs = [self._actor.check_board.remote(b) for b in boards]
        return [wait(ref, f"check {b.name}") for ref, b in zip(refs, boards, strict=True)]

    def close(self) -> None:
        """An embedded head's end: its scheduler stops and its store is closed cleanly
        (a head started with ``farm head start`` lives on)."""
        if self.address is None:
            self._wait(self._actor.close.remote(), "close")
            if self._store is not None:
                self._store.close()

    def info(self) -> HeadInfo:
        return self._wait(self._actor.ping.remote(), "ping")

    def nodes(self) -> list[NodeInfo]:
        return self._wait(self._actor.nodes.remote(), "nodes")


def reader(address: str | None, db: Path | None) -> Reader:
    """Where to read results: the store file (no Ray) or, with an address, the head."""
    if address is None:
        return open_reader(db)
    return Head.attach(address).reader


def station_cache_dir() -> str:
    """Where a station keeps exported artifacts and the engine zip: ``$FARM_CACHE/station``."""
    from farm.scheduler.cluster import state_root

    return str(state_root() / "station")


def check_boards(boards: Sequence[Board], address: str | None) -> list[BoardCheck]:
    """Health-check boards: from this machine (no Ray), or from a head's stations."""
    if address is not None:
        return Head.attach(address).check_boards(boards)
    from farm.scheduler.station import Station

    station = Station("check", cache_dir=station_cache_dir())
    try:
        return [station.check_board(b) for b in boards]
    finally:
        station.close()


# -- heads and stations this machine runs (Ray nodes of their own) --------------------------


def start_head(*, db: Path, port: int, host: str, metrics_address: str = "off") -> HeadInfo:
    """``ray start --head`` plus the detached scheduler that owns ``db`` (and serves
    ``/metrics`` at ``metrics_address`` unless it is ``off``)."""
    from farm.scheduler import cluster

    return cluster.start_head(
        db=db, port=port, host=host, cache_dir=station_cache_dir(), metrics_address=metrics_address
    )


def stop_head(address: str | None, *, force: bool) -> tuple[NodeRecord, int, list[str]]:
    from farm.scheduler import cluster

    return cluster.stop_head(address, force=force)


def start_station(*, address: str, name: str) -> NodeRecord:
    from farm.scheduler import cluster

    return cluster.start_station(address=address, name=name)


def stop_station(name: str, *, force: bool) -> int:
    from farm.scheduler import cluster

    return cluster.stop_station(name, force=force)
