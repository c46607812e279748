"""Starting the Ray side of farm: Ray in this process, head and station nodes.

Clients do not come here: ``farm.client`` (``Head.embedded`` / ``Head.attach``)
is the door, and it calls ``init_embedded`` / ``connect`` below.

- **Embedded** (no address): Ray starts inside this process's session, the
  scheduler actor is private to it and stations need no placement. This is what
  ``farm submit`` does on a laptop: nothing to start beforehand.
- **Head**: ``farm head start`` runs ``ray start --head`` with the head's own
  station resource, then creates the detached, named ``farm-scheduler`` actor
  that owns the store. Clients reach it with ``--address`` or ``RAY_ADDRESS``.
- **Station**: ``farm station start --address HEAD --name NAME`` joins a node
  that advertises ``station:NAME``.

Every node farm starts is *its own*: a private Ray temp dir, and a marker in
the environment of every process of the node (``FARM_RAY_NODE=<id>``; Ray's
daemons and workers inherit it, while their process titles and groups do not
say which node they belong to). A small JSON record under
``$FARM_CACHE/{heads,stations}/`` names both, so ``farm head stop`` kills that
node's processes and nothing else. ``ray stop`` would kill every Ray on the
machine, other heads and other users' sessions included.

Two Ray habits need care on a single machine:

- Ray rewrites ``127.0.0.1`` to the machine's outward IP (so that other
  machines could join). A head asked to listen on the loopback would then be
  unreachable at the address it printed, so for loopback addresses farm sets
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's own switch for "this cluster is
  one machine") in the node and in the client, before Ray is imported.
- Ray clusters authenticate with a token. farm keeps one in
  ``$FARM_CACHE/auth_token`` (created by the first ``farm head start``) and
  hands it to nodes and clients via ``RAY_AUTH_TOKEN_PATH``, unless the user set
  ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH``/``RAY_AUTH_MODE`` themselves. A
  station on another machine needs a copy of that file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from farm.addresses import LOOPBACK, free_port, parse_listen_address, split_address
from farm.errors import HeadError, UserError
from farm.procs import descendants, started
from farm.scheduler.messages import HeadInfo
from farm.scheduler.names import NAMESPACE, SCHEDULER, station_resource

STATION_SLOTS = 1000  # a station's resource amount: far more boards than one node will hold
MARKER_ENV = "FARM_RAY_NODE"
START_TIMEOUT_S = 120.0
EMBEDDED_START_TRIES = 3
STOP_GRACE_S = 10.0


# -- where things are -------------------------------------------------------------


def state_root() -> Path:
    """``$FARM_CACHE``, else ``~/.cache/farm``: node records and the cluster token."""
    return Path(os.environ.get("FARM_CACHE") or "~/.cache/farm").expanduser()


def address_from_env(address: str | None) -> str | None:
    return address or os.environ.get("RAY_ADDRESS") or None


# -- environment shared by nodes and clients ----------------------------------------


def _token_file(*, create: bool) -> Path | None:
    path = state_root() / "auth_token"
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path if path.exists() else None


def ray_env(host: str, *, create_token: bool = False) -> dict[str, str]:
    """The variables a node or client for a head on ``host`` needs (see module doc)."""
    env: dict[str, str] = {}
    if host in LOOPBACK:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    user_set = any(os.environ.get(k) for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"))
    if "RAY_AUTH_MODE" not in os.environ and not user_set:
        token = _token_file(create=create_token)
        if token is not None:
            env["RAY_AUTH_MODE"] = "token"
            env["RAY_AUTH_TOKEN_PATH"] = str(token)
    return env


def _prepare_client(address: str) -> None:
    """Set up this process to talk to ``address``. Must run before ``import ray``:
    Ray reads these variables once, at import."""
    host, _ = split_address(address)
    env = ray_env(host)
    if "ray" in sys.modules and any(os.environ.get(k) != v for k, v in env.items()):
        raise UserError(  # else ray.init would retry an unreachable address for minutes
            "internal: Ray was imported before the client environment was set; "
            f"export {' '.join(f'{k}={v}' for k, v in env.items())} and retry"
        )
    os.environ.update(env)


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# -- joining Ray as a driver ----------------------------------------------------------------------------


def init_embedded() -> None:
    """Start a private Ray inside this process (once), every listener on the loopback
    (GCS, raylet, agents, workers): an embedded run has no reason to open ports to the lab."""
    if "ray" not in sys.modules:  # read at import: keep 127.0.0.1 as given (module doc)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if not ray.is_initialized():
        # A private, in-process Ray: its notice that token auth is on (it is, and
        # stays so) says nothing to a person running `farm submit`.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
        for attempt in range(1, EMBEDDED_START_TRIES + 1):
            try:
                ray.init(
                    namespace=NAMESPACE,
                    _node_ip_address="127.0.0.1",
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
                return
            except Exception as exc:  # Ray raises bare Exception when its node does not come up
                # Ray gives its raylet a fixed 30 s to come up; a busy machine can need
                # more. The attempt's processes are gone with its shutdown: try again.
                if "timed out during startup" not in str(exc) or attempt == EMBEDDED_START_TRIES:
                    raise HeadError(f"could not start Ray in this process: {exc}") from exc
                ray.shutdown()


def connect(address: str) -> None:
    """Join this process to the Ray cluster at ``address`` as a driver (once)."""
    _prepare_client(address)
    import ray

    if ray.is_initialized():
        return
    host, port = split_address(address)
    # ray.init retries an unreachable address for minutes: say so at once instead
    if not _reachable(host, port):
        raise UserError(f"cannot reach a Ray head at {address}: nothing listens there")
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError) as exc:
        raise UserError(f"cannot reach a Ray head at {address}: {exc}") from exc


# -- node records ---------------------------------------------------------------------


@dataclass
class NodeRecord:
    """What farm remembers about a Ray node it started on this machine."""

    kind: str  # "head" | "station"
    key: str  # the head's port, or the station's name
    address: str  # the head's address (a station's head)
    temp_dir: str
    marker: str
    started: float
    db: str | None = None

    @property
    def path(self) -> Path:
        return record_path(self.kind, self.key)

    def save(self) -> None:
        """Temp file + ``os.replace``: a reader never sees half a record."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, kind: str, key: str) -> NodeRecord | None:
        path = record_path(kind, key)
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise UserError(f"{path}: unreadable node record ({exc}); delete it") from exc


def record_path(kind: str, key: str) -> Path:
    return state_root() / f"{kind}s" / f"{key}.json"


def records(kind: str) -> list[NodeRecord]:
    folder = state_root() / f"{kind}s"
    found = (NodeRecord.load(kind, p.stem) for p in sorted(folder.glob("*.json")))
    return [r for r in found if r is not None]


# -- node processes ---------------------------------------------------------------------


def node_pids(marker: str) -> list[int]:
    """Live processes (zombies excluded) whose environment carries ``marker``, and
    their descendants: Ray's dashboard and runtime-env agents retitle themselves,
    which overwrites the environment block ``/proc`` shows, so only their parent
    (the raylet) says they belong to the node."""
    pids = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARKER_ENV) == marker:
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # gone meanwhile, or another user's process
    below = [p for p in descendants(*pids) if p != os.getpid() and started(p) is not None]
    return sorted({*pids, *below})


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_node(record: NodeRecord, *, force: bool = False) -> int:
    """Stop every process of the node and wait until they are gone. ``force``:
    SIGKILL at once (a crash); else SIGTERM, then SIGKILL after a grace period.
    Returns how many processes there were."""
    # the tree is read before anything dies: an agent orphaned by its raylet leaves it
    seen = {p: started(p) for p in node_pids(record.marker)}
    _signal_all(list(seen), signal.SIGKILL if force else signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    pids = list(seen)
    while pids:
        time.sleep(0.1)
        seen.update({p: started(p) for p in node_pids(record.marker) if p not in seen})
        pids = [p for p, t in seen.items() if t is not None and started(p) == t]
        if pids and time.monotonic() > deadline:
            _signal_all(pids, signal.SIGKILL)
            deadline = time.monotonic() + STOP_GRACE_S
    count = len(seen)
    record.path.unlink(missing_ok=True)
    shutil.rmtree(record.temp_dir, ignore_errors=True)
    return count


def _ray_cli() -> str:
    exe = shutil.which("ray")
    if exe is None:
        raise UserError("the `ray` command is not on PATH (pip install 'ray[default]')")
    return exe


_LOOPBACK_WORKER_NODE = """
# `ray start` for a second node of a one-machine (loopback) cluster. Ray refuses
# worker nodes when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and without it rewrites
# 127.0.0.1 to the outward IP the loopback-only head does not listen on. So run
# Ray's own CLI with the check passed and loopback addresses left as they are.
import sys
import ray._private.ray_constants as constants
import ray._private.services as services
from ray.scripts.scripts import main
constants.ENABLE_RAY_CLUSTER = True
resolve = services.resolve_ip_for_localhost
services.resolve_ip_for_localhost = lambda h: h if h in ("127.0.0.1", "::1") else resolve(h)
sys.argv = ["ray", *sys.argv[1:]]
sys.exit(main())
"""


def _start_node(kind: str, key: str, address: str, args: list[str], **extra: Any) -> NodeRecord:
    """``ray start ARGS`` as a node of its own; returns once Ray says it is up."""
    host, _ = split_address(address)
    # a short path: Ray's unix sockets live under it (at most 107 bytes)
    temp_dir = tempfile.mkdtemp(prefix=f"farm-{kind}-")
    record = NodeRecord(
        kind=kind,
        key=key,
        address=address,
        temp_dir=temp_dir,
        marker=secrets.token_hex(8),
        started=time.time(),
        **extra,
    )
    env = {**os.environ, **ray_env(host, create_token=kind == "head")}
    env[MARKER_ENV] = record.marker
    args = [
        "start", *args, f"--temp-dir={temp_dir}", "--disable-usage-stats",
        f"--dashboard-agent-listen-port={free_port()}",
    ]  # fmt: skip
    if host in LOOPBACK:
        args.append("--node-ip-address=127.0.0.1")
    if host in LOOPBACK and kind != "head":
        cmd = [sys.executable, "-c", _LOOPBACK_WORKER_NODE, *args]
    else:
        cmd = [_ray_cli(), *args]
    log_path = Path(temp_dir) / "ray-start.log"
    record.save()  # before starting: a failed start is still cleaned up by `stop`
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.run(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=START_TIMEOUT_S
            )
            failed = proc.returncode != 0
        except subprocess.TimeoutExpired:
            failed = True
    if failed:
        lines = log_path.read_text(errors="replace").strip().splitlines()
        why = next((ln for ln in reversed(lines) if ln.strip()), "no output")
        kill_node(record, force=True)
        raise UserError(f"`ray start` for {kind} {key} failed: {why.strip()}")
    return record


# -- head ---------------------------------------------------------------------------------


def start_head(
    *,
    db: Path,
    port: int,
    host: str = "127.0.0.1",
    station: str = "head",
    cache_dir: str | Path = "~/.cache/farm/station",
    metrics_address: str = "off",
) -> HeadInfo:
    """``ray start --head`` plus the detached scheduler that owns ``db`` (and resumes
    its unfinished jobs), serving ``/metrics`` at ``metrics_address`` (or ``off``).
    Listens on ``host`` only; the head lives on after this returns."""
    address = f"{host}:{port}"
    existing = NodeRecord.load("head", str(port))
    if existing is not None and node_pids(existing.marker):
        raise UserError(f"a farm head already runs on port {port}: `farm head stop` it first")
    if existing is not None:  # a crashed head left its record: clear it
        kill_node(existing, force=True)
    if not _port_free(host, port):
        raise UserError(f"port {port} on {host} is in use")
    metrics = parse_listen_address(metrics_address)
    if metrics is not None and not _port_free(*metrics):
        raise UserError(f"--metrics-address {metrics_address}: the port is in use")
    db = Path(db).expanduser().resolve()
    resources = json.dumps({station_resource(station): STATION_SLOTS})
    args = [
        "--head", f"--port={port}", f"--resources={resources}",
        "--include-dashboard=false", f"--ray-client-server-port={free_port()}",
    ]  # fmt: skip
    record = _start_node("head", str(port), address, args, db=str(db))
    try:
        cache = str(Path(cache_dir).expanduser())
        return _create_scheduler(address, db, station, cache, metrics_address)
    except BaseException:
        kill_node(record, force=True)
        raise


def _create_scheduler(
    address: str, db: Path, station: str, cache_dir: str, metrics_address: str
) -> HeadInfo:
    connect(address)
    from farm.scheduler.actors import SchedulerActor, wait

    scheduler = SchedulerActor.options(
        name=SCHEDULER,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        resources={station_resource(station): 0.001},
    ).remote(
        str(db), placed=True, resume=True, cache_dir=cache_dir, metrics_address=metrics_address
    )
    info = wait(
        scheduler.ping.remote(),
        f"the farm scheduler did not start on {address}",
        timeout=START_TIMEOUT_S,
    )
    return HeadInfo(address=address, db=info.db, running=info.running)


def _port_free(host: str, port: int) -> bool:
    """Nothing listens there (a port held only by closing connections counts as free)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1" if host == "localhost" else host, port))
        except OSError:
            return False
    return True


def find_head(address: str | None) -> NodeRecord:
    """The record of the head this machine runs at ``address`` (or its only head)."""
    if address is not None:
        _, port = split_address(address)
        record = NodeRecord.load("head", str(port))
        if record is None:
            raise UserError(f"this machine started no farm head on port {port}")
        return record
    heads = records("head")
    if len(heads) != 1:
        listed = ", ".join(r.address for r in heads) or "none"
        raise UserError(f"which head? give --address (heads started here: {listed})")
    return heads[0]


def stop_head(address: str | None, *, force: bool = False) -> tuple[NodeRecord, int, list[str]]:
    """Stop the head this machine runs at ``address`` and, first, every station this
    machine joined to it (left running, its raylet would outlive the head re-parented
    to init). Returns the head's record, how many processes there were, and the
    stations stopped with it."""
    record = find_head(address)
    stations = stations_of(record)
    count = sum(kill_node(s, force=force) for s in stations)
    return record, count + kill_node(record, force=force), [s.key for s in stations]


def stations_of(head: NodeRecord) -> list[NodeRecord]:
    """The stations this machine started and joined to ``head`` (the same port, the same
    host or both on the loopback)."""
    host, port = split_address(head.address)

    def same(address: str) -> bool:
        h, p = split_address(address)
        return p == port and (h == host or (h in LOOPBACK and host in LOOPBACK))

    return [r for r in records("station") if same(r.address)]


# -- stations -----------------------------------------------------------------------------


def start_station(*, address: str, name: str) -> NodeRecord:
    """Join a node advertising ``station:NAME`` to the head at ``address``."""
    existing = NodeRecord.load("station", name)
    if existing is not None and node_pids(existing.marker):
        raise UserError(f"station {name} already runs here: `farm station stop` it first")
    if existing is not None:
        kill_node(existing, force=True)
    host, port = split_address(address)
    if not _reachable(host, port):
        raise UserError(f"cannot reach a Ray head at {address}: nothing listens there")
    resources = json.dumps({station_resource(name): STATION_SLOTS})
    return _start_node(
        "station", name, address, [f"--address={address}", f"--resources={resources}"]
    )


def stop_station(name: str, *, force: bool = False) -> int:
    record = NodeRecord.load("station", name)
    if record is None:
        raise UserError(f"this machine started no station {name!r}")
    return kill_node(record, force=force)
