"""Serving ``/metrics``: from the head's scheduler process, or standalone over a store.

``HeadMetrics`` is what the scheduler actor runs: it subscribes the farm's
counters to the store's state events before the scheduler starts (a resumed
sweep's requeues count), then serves every family once the scheduler runs.
``serve_store`` is ``farm exporter``: the same store-backed families, for labs
that run embedded ``farm submit`` from a timer and have no head.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from farm.addresses import parse_listen_address
from farm.errors import UserError
from farm.metrics.cells import MeasurementCollector
from farm.metrics.fleet import FarmMetrics, FleetCollector, register_build_info
from farm.metrics.power import LivePowerCollector
from farm.metrics.source import StoreSource
from farm.store import StoreWriter

DEFAULT_ADDRESS = "127.0.0.1:9500"


parse_address = parse_listen_address  # its old home


def register_store_families(
    registry: CollectorRegistry, source: StoreSource, loop_lag: Callable[[], float] | None = None
) -> CollectorRegistry:
    """Add every family that reads the store (and ``farm_build_info``) to ``registry``."""
    register_build_info(registry)
    registry.register(FleetCollector(source, loop_lag))
    registry.register(MeasurementCollector(source))
    return registry


def serve(registry: CollectorRegistry, host: str, port: int) -> Any:
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise UserError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    return server


def serve_store(db: Path, address: str, *, ready: Callable[[str], None] = print) -> None:
    """``farm exporter``: serve the store's families until interrupted."""
    where = parse_listen_address(address)
    if where is None:
        raise UserError("farm exporter: --metrics-address off leaves nothing to do")
    source = StoreSource(db)
    server = serve(register_store_families(CollectorRegistry(), source), *where)
    ready(f"serving farm metrics of {db} at http://{where[0]}:{server.server_port}/metrics")
    try:
        threading.Event().wait()
    finally:
        server.shutdown()
        source.close()


class HeadMetrics:
    """The head's exporter. Built before the scheduler (to hear its first events),
    ``serve(core)`` once it runs. ``live()`` lists the monitors' live readings
    (``MonitorService.stats()`` of each, as ``LivePowerCollector`` reads them)."""

    def __init__(self, store: StoreWriter, address: str, live: Callable[[], list[dict[str, Any]]]):
        self._where = parse_listen_address(address)
        self._store = store
        self._live = live
        self.registry = CollectorRegistry()
        self.server: Any = None
        if self._where is not None:
            store.subscribe(FarmMetrics(self.registry).on_event)

    def serve(self, core: Any) -> None:
        if self._where is None:
            return
        register_store_families(self.registry, StoreSource(self._store.path), core.loop_lag_s)

        def channel_of(board: str) -> str:
            state = core.boards.get(board)
            spec = state.spec if state is not None else None
            return spec.power.channel if spec is not None and spec.power is not None else "main"

        self.registry.register(LivePowerCollector(self._live, channel_of))
        self.server = serve(self.registry, *self._where)
