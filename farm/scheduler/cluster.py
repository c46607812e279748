"""Finding or starting the Ray side of farm.

- **Embedded** (no address): Ray starts inside this process's session, the
  scheduler actor is private to it and stations need no placement. This is what
  ``farm submit`` does on a laptop: nothing to start beforehand.
- **Head**: ``farm head start`` runs ``ray start --head`` with the head's own
  station resource, then creates the detached, named ``farm-scheduler`` actor
  that owns the store. Clients reach it with ``--address`` or ``RAY_ADDRESS``.
- **Station**: ``farm station start --address HEAD --name NAME`` joins a node
  that advertises ``station:NAME``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import ray

from farm.errors import UserError
from farm.scheduler.actors import NAMESPACE, SCHEDULER_NAME, SchedulerActor, station_resource

STATION_SLOTS = 1000  # a station's resource amount: far more boards than one node will hold


def address_from_env(address: str | None) -> str | None:
    return address or os.environ.get("RAY_ADDRESS") or None


def init_embedded() -> None:
    if not ray.is_initialized():
        ray.init(
            namespace=NAMESPACE,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )


def embedded_scheduler(db: Path, *, cache_dir: str, **options: Any) -> Any:
    """A private scheduler actor for this process's job (the embedded default)."""
    init_embedded()
    return SchedulerActor.remote(
        str(db), placed=False, resume=False, cache_dir=cache_dir, options=options or None
    )


def attach(address: str) -> Any:
    """The named scheduler of a running head."""
    if not ray.is_initialized():
        try:
            ray.init(
                address=address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False
            )
        except (ConnectionError, RuntimeError) as exc:
            raise UserError(f"cannot reach a Ray head at {address}: {exc}") from exc
    try:
        return ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE)
    except ValueError as exc:
        raise UserError(
            f"no farm scheduler on the Ray cluster at {address}: run `farm head start` there"
        ) from exc


def _ray_cli() -> str:
    exe = shutil.which("ray")
    if exe is None:
        raise UserError("the `ray` command is not on PATH (pip install 'ray[default]')")
    return exe


def start_head(
    *, db: Path, port: int, host: str = "127.0.0.1", station: str = "head"
) -> dict[str, Any]:
    """``ray start --head`` plus the detached scheduler. Listens on ``host`` only."""
    resources = json.dumps({station_resource(station): STATION_SLOTS})
    cmd = [
        _ray_cli(), "start", "--head", f"--port={port}", f"--node-ip-address={host}",
        f"--resources={resources}", "--include-dashboard=false", "--disable-usage-stats",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"ray start --head failed: {proc.stderr.strip().splitlines()[-1:]}")
    address = f"{host}:{port}"
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
    scheduler = SchedulerActor.options(
        name=SCHEDULER_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        resources={station_resource(station): 0.001},
    ).remote(str(db), placed=True, resume=True)
    info = ray.get(scheduler.ping.remote())
    return {"address": address, **info}


def start_station(*, address: str, name: str) -> None:
    resources = json.dumps({station_resource(name): STATION_SLOTS})
    cmd = [
        _ray_cli(),
        "start",
        f"--address={address}",
        f"--resources={resources}",
        "--disable-usage-stats",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"ray start --address {address} failed: {proc.stderr.strip()[-300:]}")


def stop_node() -> None:
    subprocess.run([_ray_cli(), "stop", "--force"], capture_output=True, text=True, check=False)
