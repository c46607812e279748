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

from farm.errors import UserError
from farm.metrics.cells import MeasurementCollector
from farm.metrics.fleet import FarmMetrics, FleetCollector, register_build_info
from farm.metrics.power import LivePowerCollector, ray_monitor_stats
from farm.metrics.source import StoreSource
from farm.store import Store

DEFAULT_ADDRESS = "127.0.0.1:9500"


def parse_address(address: str) -> tuple[str, int] | None:
    """``HOST:PORT``, or ``off`` (None). The host is whatever the operator wrote: the
    default listens on the loopback only."""
    if address.strip().lower() == "off":
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--metrics-address: expected HOST:PORT or off, got {address!r}")
    return host.strip("[]"), int(port)


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
    where = parse_address(address)
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
    ``serve(core)`` once it runs. ``monitors()`` names the monitors jobs declared."""

    def __init__(self, store: Store, address: str, monitors: Callable[[], list[str]]):
        self._where = parse_address(address)
        self._store = store
        self._monitors = monitors
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

        self.registry.register(LivePowerCollector(ray_monitor_stats(self._monitors), channel_of))
        self.server = serve(self.registry, *self._where)
