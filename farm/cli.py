"""The ``farm`` command.

Exit codes: 0 success (``submit``: every cell has a result, does-not-fit
included); 1 a task or command failed; 2 bad input (one line naming file, line
and field; nothing started).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from farm.errors import FarmError, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Measure deep-learning inference on real boards: latency, energy, layers, memory.",
)
head_app = typer.Typer(no_args_is_help=True, help="Run a Ray head that owns the queue.")
station_app = typer.Typer(no_args_is_help=True, help="Join this machine to a head as a station.")
models_app = typer.Typer(no_args_is_help=True, help="The model zoo.")
inventory_app = typer.Typer(no_args_is_help=True, help="Boards and monitors.")
app.add_typer(head_app, name="head")
app.add_typer(station_app, name="station")
app.add_typer(models_app, name="models")
app.add_typer(inventory_app, name="inventory")

out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error is one line, whatever the width

DbOpt = Annotated[
    Path | None, typer.Option("--db", help="SQLite results file [env FARM_DB]", show_default=False)
]
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="Ray head address [env RAY_ADDRESS]", show_default=False),
]
InventoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        "-i",
        help="inventory YAML [env FARM_INVENTORY; default inventory/local.yaml]",
    ),
]


def _db(db: Path | None):
    from farm.store import Store

    return Store(db)


def _inventory_path(path: Path | None) -> Path | None:
    if path is not None:
        return path
    env = os.environ.get("FARM_INVENTORY")
    if env:
        return Path(env)
    default = Path("inventory/local.yaml")
    return default if default.exists() else None


LOCAL_INVENTORY = """
version: 1
boards:
  - name: local
    transport: local
    tags: [local]
    processors:
      - name: cpu
        device: cpu
"""
"""The embedded default when no inventory file is given or found: this machine."""


def _load_inventory(path: Path | None):
    from farm import spec

    path = _inventory_path(path)
    if path is None:
        return spec.parse_inventory(LOCAL_INVENTORY, file="<built-in local inventory>")
    return spec.load_inventory(path)


def _cache_dir() -> str:
    """Where a station keeps exported artifacts and the engine zip: ``$FARM_CACHE/station``."""
    from farm.scheduler.cluster import state_root

    return str(state_root() / "station")


def _store_for(address: str | None, db: Path | None):
    from farm.scheduler import cluster

    address = cluster.address_from_env(address)
    if address is None:
        return _db(db)
    scheduler = cluster.attach(address)  # before importing Ray: it sets Ray's environment
    from farm.scheduler.actors import RemoteStore

    return RemoteStore(scheduler)


# -- submit ----------------------------------------------------------------------


@app.command()
def submit(
    job_file: Annotated[Path, typer.Argument(help="job YAML")],
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    address: AddressOpt = None,
    detach: Annotated[bool, typer.Option(help="print the job id and return at once")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Run a job: every model × target × variant cell, with a progress bar and a results table."""
    from farm import spec, zoo
    from farm.scheduler import cluster
    from farm.scheduler.plan import plan

    inv = _load_inventory(inventory)
    job = spec.load_job(job_file, inventory=inv, known_models=zoo.names())
    tasks, boards, monitors = plan(job, inv)
    address = cluster.address_from_env(address)
    if address is None:
        store = _db(db)
        scheduler = cluster.embedded_scheduler(store.path, cache_dir=_cache_dir())
    else:
        store = None
        scheduler = cluster.attach(address)  # before `import ray`: it sets Ray's environment
    import ray

    job_dict = job.model_dump(mode="json")
    try:
        job_id = ray.get(scheduler.submit.remote(job_dict, tasks, boards, monitors, str(job_file)))
    except ray.exceptions.RayTaskError as exc:
        raise UserError(_one_line(exc.cause if exc.cause else exc)) from exc
    if detach:
        if address is None:
            err.print("[yellow]--detach needs a running head (--address); waiting here instead[/]")
        else:
            sys.stdout.write(job_id + "\n")
            return
    err.print(f"job [bold]{job_id}[/]: {len(tasks)} tasks")
    final = _follow(scheduler, job_id, len(tasks), quiet=quiet)
    reader = store if store is not None else _store_for(address, db)
    _print_results(reader, job_id)
    counts = final["counts"]
    bad = counts.get("failed", 0) + counts.get("cancelled", 0)
    raise typer.Exit(1 if bad else 0)


def _one_line(exc: BaseException) -> str:
    """An error from the head as one line (a remote traceback is for the head's log)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _follow(scheduler: Any, job_id: str, total: int, *, quiet: bool) -> dict[str, Any]:
    import ray

    from farm.store import JobState, TaskState

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    ) as progress:
        bar = progress.add_task("measuring", total=total, detail="")
        while True:
            p = ray.get(scheduler.progress.remote(job_id))
            counts = p["counts"]
            finished = sum(n for s, n in counts.items() if TaskState(s).is_terminal())
            detail = " ".join(f"{k}={v}" for k, v in sorted(counts.items()) if k not in ("done",))
            progress.update(bar, completed=finished, detail=detail)
            if JobState(p["state"]).is_terminal():
                return p
            time.sleep(0.25)


def _print_results(store: Any, job_id: str) -> None:
    from farm.report.tables import results_table

    rows = store.results(job_id)
    out.print(results_table(rows, title=f"{job_id}"))
    for row in rows:
        if row["state"] == "failed":
            err.print(f"[red]{row['id']}[/] {escape(row['key'])}: {escape(row['error'])}")


# -- reading results ---------------------------------------------------------------


@app.command()
def status(
    job: Annotated[str | None, typer.Argument(help="job id, or 'latest'")] = None,
    db: DbOpt = None,
    address: AddressOpt = None,
) -> None:
    """Jobs and their task counts; board health."""
    store = _store_for(address, db)
    if job is not None:
        record = store.job(job)
        if record is None:
            raise UserError(f"no job {job!r}")
        table = Table("task", "key", "state", "attempts", "board", "error", header_style="bold")
        for t in store.tasks(record["id"]):
            table.add_row(
                t["id"], t["key"], t["state"], str(t["attempts"]), t["board"], t["error"] or ""
            )
        out.print(table)
        return
    table = Table("job", "state", "tasks", "created", header_style="bold", title="jobs")
    for j in store.jobs(limit=20):
        counts = store.counts(j["id"])
        table.add_row(
            j["id"],
            j["state"],
            " ".join(f"{k}={v}" for k, v in sorted(counts.items())),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j["created"])),
        )
    out.print(table)
    health = store.board_health()
    if health:
        boards = Table(
            "board", "state", "failures", "last error", header_style="bold", title="boards"
        )
        for name, row in sorted(health.items()):
            boards.add_row(name, row["state"], str(row["failures"]), row["last_error"] or "")
        out.print(boards)


@app.command()
def results(
    job: Annotated[str, typer.Argument(help="job id, or 'latest'")] = "latest",
    fmt: Annotated[str, typer.Option("--format", help="table | json | csv")] = "table",
    layers: Annotated[bool, typer.Option(help="also print per-layer tables")] = False,
    db: DbOpt = None,
    address: AddressOpt = None,
) -> None:
    """A job's results."""
    from farm.report.tables import layers_table, results_table, to_csv, to_json

    if fmt not in ("table", "json", "csv"):
        raise UserError(f"--format: expected table, json or csv, got {fmt!r}")
    store = _store_for(address, db)
    record = store.job(job)
    if record is None:
        raise UserError(f"no job {job!r}")
    rows = store.results(record["id"])
    if fmt == "json":
        sys.stdout.write(to_json(record, rows) + "\n")
    elif fmt == "csv":
        sys.stdout.write(to_csv(rows))
    else:
        out.print(results_table(rows, title=f"{record['id']} ({record['state']})"))
        if layers:
            for row in rows:
                if row["state"] == "done":
                    out.print(layers_table(store.layers(row["id"]), title=row["key"]))


@app.command()
def logs(task: str, db: DbOpt = None, address: AddressOpt = None) -> None:
    """A task's state history and log lines."""
    store = _store_for(address, db)
    if store.task(task) is None:
        raise UserError(f"no task {task!r} (task ids look like JOB.N; see `farm status JOB`)")
    lines = [
        (e["at"], f"[{e['state']}] {e['board'] or ''} {e['detail'] or ''}")
        for e in store.events(task)
    ]
    lines += [(x["at"], x["line"]) for x in store.logs(task)]
    for at, line in sorted(lines, key=lambda x: x[0]):
        out.print(
            f"{time.strftime('%H:%M:%S', time.localtime(at))}.{int(at % 1 * 1000):03d} {line}",
            markup=False,
            highlight=False,
        )


@app.command()
def cancel(
    job: Annotated[str, typer.Argument(help="job id, or 'latest'")],
    address: AddressOpt = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for the job to end; 0: don't")] = 60,
) -> None:
    """Cancel a job on a running head: queued tasks are dropped, running ones end as cancelled."""
    from farm.scheduler import cluster

    address = cluster.address_from_env(address)
    if address is None:
        raise UserError("cancel needs a running head: --address or RAY_ADDRESS")
    scheduler = cluster.attach(address)
    import ray

    from farm.scheduler.actors import RemoteStore
    from farm.store import JobState

    store = RemoteStore(scheduler)
    record = store.job(job)
    if record is None:
        raise UserError(f"no job {job!r} on the head at {address}")
    job_id = record["id"]
    if JobState(record["state"]).is_terminal():
        err.print(f"{job_id} already ended: {record['state']}")
        return
    ray.get(scheduler.cancel.remote(job_id))  # wait for delivery: this process exits next
    deadline = time.monotonic() + wait
    state = record["state"]
    while time.monotonic() < deadline:
        state = ray.get(scheduler.progress.remote(job_id))["state"]
        if JobState(state).is_terminal():
            break
        time.sleep(0.25)
    counts = " ".join(f"{k}={v}" for k, v in sorted(store.counts(job_id).items()))
    err.print(f"{job_id}: {state} ({counts})")


# -- specs, models, inventory -----------------------------------------------------


@app.command()
def schema(kind: Annotated[str, typer.Argument(help="inventory | job")]) -> None:
    """Print the JSON Schema of an inventory or job file."""
    from farm import spec

    if kind not in ("inventory", "job"):
        raise UserError(f"schema: expected 'inventory' or 'job', got {kind!r}")
    sys.stdout.write(json.dumps(spec.json_schema(kind), indent=2) + "\n")


@models_app.command("list")
def models_list() -> None:
    """The zoo: the paper's models, their inputs and parameter counts."""
    from farm import zoo

    table = Table("name", "input", "params", "source", header_style="bold")
    for name in zoo.names():
        info = zoo.get(name)
        params = sum(p.numel() for p in info.build().parameters())
        table.add_row(name, "×".join(map(str, info.input_shape)), f"{params:,}", info.source)
    out.print(table)


@inventory_app.command("check")
def inventory_check(inventory: InventoryOpt = None, address: AddressOpt = None) -> None:
    """Reach every board: host key, python and torch, free disk and memory, engine deployed."""
    inv = _load_inventory(inventory)
    from farm.scheduler import cluster

    address = cluster.address_from_env(address)
    boards = [b.model_dump(mode="json") for b in inv.boards]
    if address is None:
        from farm.scheduler.station import Station

        station = Station("check", cache_dir=_cache_dir())
        reports = [station.check_board(b) for b in boards]
        station.close()
    else:
        scheduler = cluster.attach(address)  # before importing Ray: it sets Ray's environment
        import ray

        reports = ray.get([scheduler.check_board.remote(b) for b in boards])
    table = Table(
        "board", "reachable", "host key", "python", "torch", "disk free GB", "mem avail MB", "engine",
        header_style="bold",
    )  # fmt: skip
    for r in reports:
        table.add_row(
            r["board"],
            "[green]yes[/]" if r.get("reachable") else "[red]no[/]",
            str(r.get("host_key", "-")),
            str(r.get("python", "-")),
            str(r.get("torch", "-")),
            f"{r['disk_free_gb']:.1f}" if r.get("disk_free_gb") is not None else "-",
            f"{r['mem_available_mb']:.0f}" if r.get("mem_available_mb") is not None else "-",
            "yes" if r.get("engine_deployed") else "no",
        )
    out.print(table)
    for r in reports:
        if r.get("error"):
            err.print(f"[red]{escape(r['board'])}[/]: {escape(r['error'])}", highlight=False)
    raise typer.Exit(0 if all(r.get("ok") for r in reports) else 1)


# -- head and stations ---------------------------------------------------------------


@head_app.command("start")
def head_start(
    db: DbOpt = None,
    port: Annotated[int, typer.Option(help="Ray GCS port")] = 6379,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """Start a Ray head with the farm scheduler (resumes unfinished jobs in the store)."""
    from farm.scheduler import cluster
    from farm.store import default_db_path

    info = cluster.start_head(
        db=(db or default_db_path()).expanduser(), port=port, host=host, cache_dir=_cache_dir()
    )
    out.print(f"head running at [bold]{info['address']}[/] (store {info['db']})")
    if info.get("running"):
        out.print(f"  resumed: {', '.join(info['running'])}")
    out.print(f"  farm submit JOB --address {info['address']}")


@head_app.command("stop")
def head_stop(
    address: AddressOpt = None,
    force: Annotated[bool, typer.Option(help="SIGKILL at once (as in a crash)")] = False,
) -> None:
    """Stop a head this machine started, and only it (the store keeps everything)."""
    from farm.scheduler import cluster

    record, count = cluster.stop_head(cluster.address_from_env(address), force=force)
    out.print(f"head {record.address} stopped ({count} processes)")


@head_app.command("status")
def head_status(address: AddressOpt = None) -> None:
    """Is a head reachable, and what is it doing: store, running jobs, nodes and stations."""
    from farm.scheduler import cluster

    address = cluster.address_from_env(address) or "127.0.0.1:6379"
    scheduler = cluster.attach(address)
    import ray

    from farm.scheduler.actors import RemoteStore

    info = ray.get(scheduler.ping.remote())
    store = RemoteStore(scheduler)
    out.print(f"head {address}: store {info['db']}, {info['jobs_running']} job(s) running")
    for job_id in info.get("running", []):
        counts = " ".join(f"{k}={v}" for k, v in sorted(store.counts(job_id).items()))
        out.print(f"  {job_id}: {counts}")
    table = Table("node", "id", "stations", header_style="bold", title="nodes")
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        stations = sorted(k.split(":", 1)[1] for k in n["Resources"] if k.startswith("station:"))
        table.add_row(n["NodeManagerAddress"], n["NodeID"][:12], ", ".join(stations))
    out.print(table)


@station_app.command("start")
def station_start(
    address: Annotated[str, typer.Option(help="the head's address, host:port")],
    name: Annotated[str, typer.Option(help="station name boards refer to")],
) -> None:
    """Join this machine to a head, serving the boards whose `station:` is NAME."""
    from farm.scheduler import cluster

    cluster.start_station(address=address, name=name)
    out.print(f"station {name} joined {address}")


@station_app.command("stop")
def station_stop(
    name: Annotated[str, typer.Option(help="the station to stop")],
    force: Annotated[bool, typer.Option(help="SIGKILL at once")] = False,
) -> None:
    """Take a station this machine started off its head."""
    from farm.scheduler import cluster

    count = cluster.stop_station(name, force=force)
    out.print(f"station {name} stopped ({count} processes)")


def main() -> None:
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except FarmError as exc:  # UserError (exit 2) included
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
