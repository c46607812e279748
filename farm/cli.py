"""The ``farm`` command.

Exit codes: 0 success (``submit``: every cell has a result, does-not-fit
included); 1 a task or command failed (``compare``: a cleanly measured cell
regressed); 2 bad input (one line naming file, line and field; nothing started);
3 ``compare`` could not judge (a cell was measured on a busy board or a check
warned, and no clean cell regressed); 130 interrupted.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys


def _interrupted_on_import(kind: type[BaseException], value: BaseException, tb: object) -> None:
    """A Ctrl-C while farm's own modules load (before ``main``): one line, not a traceback."""
    if issubclass(kind, KeyboardInterrupt):
        sys.stderr.write("interrupted while farm started: nothing was done\n")
        sys.stderr.flush()
        os._exit(130)
    sys.__excepthook__(kind, value, tb)


if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "farm":  # the program, not a library
    sys.excepthook = _interrupted_on_import

# ruff: noqa: E402 (the hook above is set first: the imports below take the longest)
import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from farm.errors import FarmError, HeadError, NotFound, UserError
from farm.states import TaskState

if TYPE_CHECKING:
    from farm.client import Head
    from farm.store import JobProgress
    from farm.store.read import Reader

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
db_app = typer.Typer(no_args_is_help=True, help="The results store: check it, back it up.")
board_app = typer.Typer(no_args_is_help=True, help="Make boards ready.")
metrics_app = typer.Typer(no_args_is_help=True, help="Prometheus metrics of the store.")
app.add_typer(head_app, name="head")
app.add_typer(metrics_app, name="metrics")
app.add_typer(station_app, name="station")
app.add_typer(models_app, name="models")
app.add_typer(inventory_app, name="inventory")
app.add_typer(db_app, name="db")
app.add_typer(board_app, name="board")


def _width() -> int | None:
    """A terminal's own width; in a pipe or a log, wide enough never to cut a cell
    (rich would wrap to 80 columns and cut words and numbers)."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return None
    return 100_000


class _Doing:
    """What the command is doing, for the one line a Ctrl-C prints (typer turns an
    interrupt anywhere in a command into a silent exit 130)."""

    what = ""  # "" : a command that says nothing special when interrupted
    said = False  # the interruption was already reported


def _doing(what: str) -> None:
    _Doing.what = what


out = Console(width=_width())
err = Console(stderr=True, soft_wrap=True)  # an error is one line, whatever the width


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


FormatOpt = Annotated[Format, typer.Option("--format", help="table | json | csv")]


def _emit(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: Format, *, title: str | None = None
) -> None:
    """A listing as a rich table, a JSON list of objects, or CSV with a header."""
    if fmt is Format.json:
        sys.stdout.write(json.dumps(_records(columns, rows), indent=2) + "\n")
    elif fmt is Format.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows(rows)
        sys.stdout.write(buffer.getvalue())
    else:
        table = Table(*columns, header_style="bold", title=title)
        for r in rows:
            table.add_row(*("-" if v is None else str(v) for v in r))
        out.print(table)


KEEP_COLUMNS = 5
"""A table's first columns (model, board, variant, state, the headline time) stay at any
width, and so does its ``warn`` column: a number is never shown without its warnings."""


def _fit(table: Table, width: int | None = None) -> Table:
    """``table`` as it fits ``width`` columns (the terminal's) without cutting a number:
    each column is as wide as its widest cell, unwrapped; where they do not all fit,
    columns from the right are left out (never the first ones nor ``warn``; the caption
    names them; ``--format csv`` or a wider terminal shows them) and the first columns'
    words may wrap."""
    from rich.text import Text

    width = width or out.width

    def cell_width(cell: Any) -> int:
        text = Text.from_markup(cell) if isinstance(cell, str) else cell
        return max((Text(line).cell_len for line in str(text).splitlines()), default=0)

    def total() -> int:
        return sum(needed) + 3 * len(needed) + 1

    needed = [max([cell_width(c.header), *(cell_width(x) for x in c.cells)]) for c in table.columns]
    for column, w in zip(table.columns, needed, strict=True):
        column.no_wrap, column.min_width = True, w
    dropped: list[str] = []
    droppable = [i for i, c in enumerate(table.columns) if i >= KEEP_COLUMNS and c.header != "warn"]
    while droppable and total() > width:
        i = droppable.pop()
        dropped.insert(0, str(table.columns.pop(i).header))
        needed.pop(i)
    if total() > width:  # the kept columns' words may wrap
        for column in table.columns:
            if column.justify == "left":
                column.no_wrap, column.min_width, column.overflow = False, None, "fold"
    if dropped:
        note = f"not shown at {width} columns: {', '.join(dropped)} (--format csv has all)"
        table.caption = f"{table.caption}\n{note}" if table.caption else note
    return table


def _records(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, r, strict=True)) for r in rows]


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _counts(counts: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()))


DbOpt = Annotated[
    Path | None, typer.Option("--db", help="SQLite results file [env FARM_DB]", show_default=False)
]
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="Ray head address [env RAY_ADDRESS]", show_default=False),
]
MetricsAddressOpt = Annotated[
    str,
    typer.Option("--metrics-address", help="serve Prometheus /metrics at HOST:PORT, or `off`"),
]
InventoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        "-i",
        help="inventory YAML [env FARM_INVENTORY; default inventory/local.yaml]",
    ),
]


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


def _address(address: str | None) -> str | None:
    return address or os.environ.get("RAY_ADDRESS") or None


def _reader(address: str | None, db: Path | None) -> Reader:
    """The results, from the store file (no Ray) or, with an address, the head."""
    from farm import client

    return client.reader(_address(address), db)


def _attach(address: str | None, verb: str) -> Head:
    from farm.client import Head

    address = _address(address)
    if address is None:
        raise UserError(f"{verb} needs a running head: --address or RAY_ADDRESS")
    return Head.attach(address)


# -- submit ----------------------------------------------------------------------


@app.command()
def submit(
    job_file: Annotated[Path, typer.Argument(help="job YAML")],
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    address: AddressOpt = None,
    detach: Annotated[bool, typer.Option(help="print the job id and return at once")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    pushgateway: Annotated[
        str | None,
        typer.Option(help="push the job's measurements to this Prometheus pushgateway URL"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="validate, count and print the task matrix; start nothing")
    ] = False,
) -> None:
    """Run a job: every model × target × variant cell, with a progress bar and a results table."""
    _doing("reading the job: nothing was started")
    from farm import spec, zoo
    from farm.client import Head, station_cache_dir

    address = _address(address)
    if detach and address is None:
        raise UserError("--detach needs a running head (--address or RAY_ADDRESS): nothing started")
    # everything the files say is checked before any head is contacted or started
    inv = _load_inventory(inventory)
    from farm.engine import runtimes  # the registry only: no runtime library is imported

    job = spec.load_job(
        job_file, inventory=inv, known_models=zoo.names(), known_runtimes=runtimes.names()
    )
    plan = spec.plan(job, inv)
    if address is None:  # a head elsewhere imports users' modules itself
        _check_user_modules(job)
    if dry_run:
        _emit(["index", "key", "candidates"],
              [[t.index, t.key, ", ".join(t.candidates)] for t in plan.tasks], Format.table,
              title=f"{job.name}: {len(plan.tasks)} tasks (dry run: nothing started)")  # fmt: skip
        return
    if address is None:
        path = _db_path(db)
        _inspect_store(path)  # a store it cannot trust is refused before Ray starts
        _doing("starting Ray in this process: no job was submitted, nothing ran")
        head = Head.embedded(path, cache_dir=station_cache_dir())
    else:
        _doing(f"reaching the head at {address}: no job was submitted")
        head = Head.attach(address)
    _doing(
        f"submitting {job.name}: if it was stored, `farm status` shows it"
        + (" interrupted (`farm resume` runs it)" if address is None else "")
    )
    job_id = head.submit(job, plan, source=str(job_file))
    _doing("")
    if detach:
        sys.stdout.write(job_id + "\n")
        return
    err.print(f"job [bold]{job_id}[/]: {len(plan.tasks)} tasks")
    push = (
        None if pushgateway is None else partial(_push, pushgateway, address, db, job_id, job.name)
    )
    _run_to_the_end(head, job_id, len(plan.tasks), quiet=quiet, then=push)


def _check_user_modules(job: Any) -> None:
    """A ``module:`` model whose package this machine cannot find: one line, exit 2, before
    Ray starts (the head would import it to export the model)."""
    import importlib.util

    from farm.spec.loader import source_of

    for i, model in enumerate(job.models):
        if model.module is None:
            continue
        top = model.module.split(":")[0].split(".")[0]
        if importlib.util.find_spec(top) is None:
            message = f"no package {top!r} importable here (PYTHONPATH?)"
            doc = source_of(job)
            if doc is not None:
                raise doc.error(("models", i, "module"), message)
            raise UserError(f"models[{i}].module: {message}")


@app.command()
def resume(
    job: Annotated[str, typer.Argument(help="an interrupted job's id, or 'latest'")],
    db: DbOpt = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Run what is left of a job whose farm died (``farm status`` shows it interrupted)."""
    from farm import client
    from farm.client import Head, station_cache_dir
    from farm.store import SCHEMA_VERSION

    path = _db_path(db)
    found = _existing_store(path)
    if found.schema == SCHEMA_VERSION:  # an older store is upgraded by the writer first
        reader = client.reader(None, path)  # read-only: a refusal changes no byte
        try:
            if reader.job(job) is None:
                raise NotFound(f"no job {job!r} in {path}")
        finally:
            reader.close()  # type: ignore[attr-defined]
    head = Head.embedded(path, cache_dir=station_cache_dir())
    record = head.reader.job(job)
    if record is None:
        raise NotFound(f"no job {job!r}")
    left = head.resume(record.id)
    err.print(f"job [bold]{record.id}[/]: resuming, {left} tasks left")
    total = sum(head.reader.counts(record.id).values())
    _run_to_the_end(head, record.id, total, quiet=quiet)


def _run_to_the_end(
    head: Head, job_id: str, total: int, *, quiet: bool, then: Callable[[], None] | None = None
) -> NoReturn:
    """Follow the job to its end, print its results, run ``then`` (a push), exit 0, 1 (a
    task failed or was cancelled) or 130 (interrupted)."""
    try:
        final = _follow(head, job_id, total, quiet=quiet)
    except KeyboardInterrupt:
        _interrupted(head, job_id)
    _doing(f"printing the results: {job_id} ended, its results are stored")
    _print_results(head.reader, job_id)
    _doing(f"closing the head: {job_id} ended, its results are stored")
    head.close()
    _doing(f"finishing: {job_id} ended, its results are stored")  # up to the exit itself
    if then is not None:
        then()
    bad = final.counts.get(TaskState.FAILED, 0) + final.counts.get(TaskState.CANCELLED, 0)
    raise typer.Exit(1 if bad else 0)


def _push(url: str, address: str | None, db: Path | None, job_id: str, name: str) -> None:
    """An embedded run's measurements to a pushgateway (a head is scraped instead)."""
    if address is not None:
        err.print("[yellow]--pushgateway: a head serves its own /metrics; nothing pushed[/]")
        return
    from farm.metrics.push import push_job
    from farm.metrics.source import StoreSource
    from farm.store import default_db_path

    source = StoreSource(db or default_db_path())
    try:
        push_job(url, source, job_id, name)
    finally:
        source.close()
    err.print(f"pushed {name} to {url}")


def _interrupted(head: Head, job_id: str) -> NoReturn:
    """Ctrl-C while following a job. A head's job goes on without us; a job this
    process runs itself is cancelled (its engines stopped), the store says so, exit 130.
    A second Ctrl-C leaves at once: the next farm to open the store marks it interrupted."""
    _Doing.said = True
    if head.address is not None:
        err.print(
            f"detached: {job_id} goes on at the head {head.address};"
            f" `farm status {job_id} --address {head.address}` follows it"
        )
        raise typer.Exit(130)
    err.print(f"interrupted: cancelling {job_id} (Ctrl-C again to leave at once)")
    head.cancel(job_id)
    while True:
        p = head.progress(job_id)
        if p is None or p.state.is_terminal():
            break
        time.sleep(0.1)
    head.close()
    err.print(f"{job_id}: {p.state if p else 'gone'} ({_counts(p.counts) if p else ''})")
    raise typer.Exit(130)


def _follow(head: Head, job_id: str, total: int, *, quiet: bool) -> JobProgress:
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
            p = head.progress(job_id)
            if p is None:
                raise HeadError(f"the head lost job {job_id}")
            detail = _counts({k: v for k, v in p.counts.items() if k is not TaskState.DONE})
            progress.update(bar, completed=p.finished, detail=detail)
            if p.state.is_terminal():
                return p
            time.sleep(0.25)


def _print_results(reader: Reader, job_id: str) -> None:
    from farm.report.tables import results_table

    cells = reader.cells(job_id)
    out.print(_fit(results_table(cells, title=f"{job_id}")))
    for cell in cells:
        if cell.task.state is TaskState.FAILED:
            err.print(
                f"[red]{cell.task.id}[/] {escape(cell.task.key)}: {escape(cell.task.error or '')}"
            )


# -- reading results ---------------------------------------------------------------


@app.command()
def status(
    job: Annotated[str | None, typer.Argument(help="job id, or 'latest'")] = None,
    fmt: FormatOpt = Format.table,
    db: DbOpt = None,
    address: AddressOpt = None,
) -> None:
    """Jobs and their task counts; board health. With a job: its tasks."""
    store = _reader(address, db)
    if job is not None:
        record = store.job(job)
        if record is None:
            raise NotFound(f"no job {job!r}")
        rows = [
            [t.id, t.key, t.state, t.attempts, t.board, t.error] for t in store.tasks(record.id)
        ]
        _emit(["task", "key", "state", "attempts", "board", "error"], rows, fmt)
        return
    jobs = [
        [j.id, j.state, _counts(store.counts(j.id)), _when(j.created)] for j in store.jobs(limit=20)
    ]
    from farm import nightly

    health = store.board_health()
    drift = nightly.degraded(store)  # boards slower than their same-tag peers
    boards = [
        [
            name,
            *((b.state, b.failures, b.last_error) if b else ("-", 0, None)),
            _drift(drift.get(name)),
        ]
        for name in sorted(health.keys() | drift.keys())
        for b in [health.get(name)]
    ]
    job_columns, board_columns = (
        ["job", "state", "tasks", "created"],
        ["board", "state", "failures", "last error", "performance"],
    )
    if fmt is Format.json:  # one document with both listings
        doc = {"jobs": _records(job_columns, jobs), "boards": _records(board_columns, boards)}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif fmt is Format.csv:  # CSV holds one table: the jobs (boards: the table or JSON)
        _emit(job_columns, jobs, fmt)
    else:
        _emit(job_columns, jobs, fmt, title="jobs")
        if boards:
            _emit(board_columns, boards, fmt, title="boards")


def _drift(d: Any) -> str | None:
    """A board's standing among its same-tag peers, for `farm status`."""
    if d is None:
        return None
    text = f"{100 * (d.ratio - 1):+.1f}% vs peers ({d.score:+.1f} MAD, {d.cells} cells)"
    return f"degraded: {text}" if d.degraded else text


@app.command()
def compare(
    jobs: Annotated[
        list[str] | None,
        typer.Argument(help="A B (job ids or 'latest'); or B alone", show_default=False),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="A when only B is given: previous | last-nightly | JOB [default: previous]"
        ),
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="smallest change that matters (0.05 = 5%)")
    ] = 0.05,
    alpha: Annotated[float, typer.Option(help="significance level after correction")] = 0.05,
    correction: Annotated[str, typer.Option(help="bh (Benjamini–Hochberg) | holm")] = "bh",
    statistic: Annotated[
        str,
        typer.Option(
            help="what a verdict rests on: wall (latency and energy) | cpu (CPU time per"
            " inference; a busy board does not void it)"
        ),
    ] = "wall",
    fmt: FormatOpt = Format.table,
    db: DbOpt = None,
    address: AddressOpt = None,
) -> None:
    """Compare two jobs cell by cell (default: the latest finished job against the last
    finished one of its name).

    Verdicts rest on each inference's wall-clock latency and net energy (--statistic
    wall), or on its CPU time (--statistic cpu); the other figures are shown beside. A
    cell measured on a busy board (wall only), hot or with steal, or whose layer sum or
    power alignment warned, on either side, is "unreliable", never a verdict.

    Exit: 0 nothing regressed; 1 a cleanly measured cell regressed; 3 could not judge
    (a cell unreliable, none regressed); 2 bad input.
    """
    from farm import nightly
    from farm.nightly import render

    result = nightly.compare_jobs(
        _reader(address, db),
        jobs or [],
        baseline=baseline,
        threshold=threshold,
        alpha=alpha,
        correction=correction,
        statistic=statistic,
    )
    if fmt is Format.json:
        sys.stdout.write(render.comparison_json(result) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(render.comparison_csv(result))
    else:
        out.print(render.comparison_table(result))
    raise typer.Exit(result.exit_code)


@app.command()
def trend(
    name: Annotated[str, typer.Option(help="the jobs' name")] = "nightly",
    last: Annotated[int, typer.Option(help="how many of the latest nights")] = 30,
    fmt: FormatOpt = Format.table,
    db: DbOpt = None,
    address: AddressOpt = None,
) -> None:
    """Each cell's nightly medians and the change points found in them."""
    from farm import nightly
    from farm.nightly import render

    series = nightly.trend_jobs(_reader(address, db), name=name, last=last)
    if fmt is Format.json:
        sys.stdout.write(render.trend_json(series) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(render.trend_csv(series))
    else:
        out.print(render.trend_table(series, f"{name}: last {last} nights"))


@app.command()
def results(
    job: Annotated[str, typer.Argument(help="job id, or 'latest'")] = "latest",
    fmt: FormatOpt = Format.table,
    layers: Annotated[bool, typer.Option(help="also print per-layer tables")] = False,
    db: DbOpt = None,
    address: AddressOpt = None,
) -> None:
    """A job's results."""
    from farm.report.tables import layers_table, results_table, to_csv, to_json

    store = _reader(address, db)
    record = store.job(job)
    if record is None:
        raise NotFound(f"no job {job!r}")
    cells = store.cells(record.id)
    if fmt is Format.json:
        sys.stdout.write(to_json(record, cells) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(to_csv(cells))
    else:
        out.print(_fit(results_table(cells, title=f"{record.id} ({record.state})")))
        if layers:
            for cell in cells:
                if cell.task.state is TaskState.DONE:
                    out.print(layers_table(store.layers(cell.task.id), title=cell.task.key))


@app.command()
def report(
    job: Annotated[str, typer.Argument(help="job id, or 'latest'")] = "latest",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="write report.md/.html, cells.csv/.json, PNGs here")
    ] = None,
    against: Annotated[
        str | None, typer.Option("--against", help="another job id: the change per cell")
    ] = None,
    inventory: InventoryOpt = None,
    db: DbOpt = None,
    address: AddressOpt = None,
) -> None:
    """The study's tables and figures from a sweep, beside the study's own."""
    from farm.report import build, cells
    from farm.report.markdown import to_terminal

    store = _reader(address, db)
    inv = _load_inventory(inventory)  # says which of the study's processors a board stands for
    sweep = cells.load(store, job, inv)
    doc = build.assemble(sweep, cells.load(store, against, inv) if against else None)
    if out_dir is None:
        to_terminal(doc, out)
        return
    _out_dir(out_dir)
    try:
        paths = build.write(doc, sweep, out_dir)
    except OSError as exc:  # the disk filled, or the folder changed under us
        raise FarmError(f"{out_dir}: the report could not be written: {exc}") from exc
    out.print(f"report of {sweep.id}: {paths['report.html']} ({len(paths)} files in {out_dir})")


@app.command()
def logs(
    task: str, fmt: FormatOpt = Format.table, db: DbOpt = None, address: AddressOpt = None
) -> None:
    """A task's state history and log lines, in time order."""
    store = _reader(address, db)
    if store.task(task) is None:
        raise NotFound(f"no task {task!r} (task ids look like JOB.N; see `farm status JOB`)")
    lines = [(e.at, _event_line(e)) for e in store.events(task)]
    lines += [(x.at, x.line) for x in store.logs(task)]
    lines.sort(key=lambda x: x[0])
    if fmt is not Format.table:
        _emit(["at", "line"], lines, fmt)
        return
    for at, line in lines:
        out.print(
            f"{time.strftime('%H:%M:%S', time.localtime(at))}.{int(at % 1 * 1000):03d} {line}",
            markup=False,
            highlight=False,
        )


def _event_line(e: Any) -> str:
    """One history event: its state, board, detail and, on a failure or a retry, why."""
    line = f"[{e.to_state}] {e.board or ''} {e.detail or ''}".rstrip()
    if e.error:
        line += f": {e.error}"
    return line


@app.command()
def cancel(
    job: Annotated[str, typer.Argument(help="job id, or 'latest'")],
    address: AddressOpt = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for the job to end; 0: don't")] = 60,
) -> None:
    """Cancel a job on a running head: queued tasks are dropped, running ones end as cancelled."""
    head = _attach(address, "cancel")
    record = head.reader.job(job)
    if record is None:
        raise NotFound(f"no job {job!r} on the head at {head.address}")
    if record.state.is_terminal():
        err.print(f"{record.id} already ended: {record.state}")
        return
    head.cancel(record.id)  # waits for delivery: this process exits next
    deadline = time.monotonic() + wait
    state = record.state
    while time.monotonic() < deadline:
        progress = head.progress(record.id)
        state = progress.state if progress is not None else state
        if state.is_terminal():
            break
        time.sleep(0.25)
    err.print(f"{record.id}: {state} ({_counts(head.reader.counts(record.id))})")


# -- specs, models, inventory -----------------------------------------------------


@app.command()
def schema(kind: Annotated[str, typer.Argument(help="inventory | job")]) -> None:
    """Print the JSON Schema of an inventory or job file."""
    from farm import spec

    if kind not in ("inventory", "job"):
        raise UserError(f"schema: expected 'inventory' or 'job', got {kind!r}")
    sys.stdout.write(json.dumps(spec.json_schema(kind), indent=2) + "\n")


@models_app.command("list")
def models_list(fmt: FormatOpt = Format.table) -> None:
    """The zoo: the paper's models, their inputs and parameter counts."""
    from farm import zoo

    rows = []
    for name in zoo.names():
        info = zoo.get(name)
        params = sum(p.numel() for p in info.build().parameters())
        shown = f"{params:,}" if fmt is Format.table else params
        rows.append([name, "×".join(map(str, info.input_shape)), shown, info.source])
    _emit(["name", "input", "params", "source"], rows, fmt)


@inventory_app.command("check")
def inventory_check(
    inventory: InventoryOpt = None, fmt: FormatOpt = Format.table, address: AddressOpt = None
) -> None:
    """Reach every board: host key, python and torch, the runtimes it can run, free disk
    and memory, engine deployed (json: ``unavailable`` says why each other runtime is not)."""
    from farm import client

    inv = _load_inventory(inventory)
    checks = client.check_boards(inv.boards, _address(address))
    table = fmt is Format.table
    rows = []
    for c in checks:
        p = c.probe
        rows.append([
            c.board,
            ("[green]yes[/]" if c.reachable else "[red]no[/]") if table else c.reachable,
            c.host_key,
            p.python if p else None,
            p.torch if p else None,
            (", ".join(p.runtimes) or "none" if table else p.runtimes) if p else None,
            *([] if table else [p.unavailable if p else None]),
            (f"{p.disk_free_mb / 1024:.1f}" if table else p.disk_free_mb / 1024) if p else None,
            (f"{p.memory_available_mb:.0f}" if table else p.memory_available_mb)
            if p and p.memory_available_mb is not None else None,
            ("yes" if c.engine_deployed else "no") if table else c.engine_deployed,
        ])  # fmt: skip
    _emit(
        ["board", "reachable", "host key", "python", "torch", "runtimes",
         *([] if table else ["unavailable"]), "disk free GB", "mem avail MB", "engine"],
        rows, fmt,
    )  # fmt: skip
    for c in checks:
        if c.error:
            err.print(f"[red]{escape(c.board)}[/]: {escape(c.error)}", highlight=False)
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)


# -- the store ----------------------------------------------------------------------


def _db_path(db: Path | None) -> Path:
    from farm.store import default_db_path

    return (db or default_db_path()).expanduser()


def _inspect_store(path: Path) -> Any:
    """What the store at ``path`` holds (``None``: nothing there), read without a byte
    changed; a file farm cannot trust is refused (one line, exit 2) before anything
    opens it for writing."""
    from farm.store import SCHEMA_VERSION, file

    return file.inspect(path, SCHEMA_VERSION)


def _existing_store(path: Path) -> Any:
    """A store that must be there already (resume, backfill, exporter): no file is created
    for a typo'd ``--db``."""
    found = _inspect_store(path)
    if found is None:
        raise UserError(f"{path}: no farm store there yet (nothing has run with it)")
    return found


def _readable_store(path: Path) -> Path:
    """A store a read-only command can read as it is: there, trusted, this farm's schema."""
    from farm.store import SCHEMA_VERSION

    found = _existing_store(path)
    if found.schema < SCHEMA_VERSION:
        raise UserError(
            f"{path}: written by an older farm (schema {found.schema}); a command that"
            " writes (farm submit, farm head start) upgrades it"
        )
    return path


def _found(found: Any) -> str:
    return (
        f"{found.path}: a farm store, schema {found.schema}, {found.jobs} jobs, {found.tasks}"
        f" tasks, {found.results} results; {found.size_bytes / 2**20:.1f} MiB"
        + (f" (+{found.wal_bytes / 2**20:.1f} MiB not yet checkpointed)" if found.wal_bytes else "")
    )


@db_app.command("check")
def db_check(db: DbOpt = None) -> None:
    """Whether the store can be trusted (farm's, this farm's schema, PRAGMA quick_check):
    what it holds, or why not (exit 2). Changes nothing."""
    from farm.store import SCHEMA_VERSION, file

    path = _db_path(db)
    found = file.inspect(path, SCHEMA_VERSION)
    if found is None:
        raise UserError(f"{path}: no farm store there")
    out.print(_found(found), markup=False, highlight=False)


@db_app.command("backup")
def db_backup(
    dest: Annotated[Path, typer.Argument(help="the new file to copy the store to")],
    db: DbOpt = None,
) -> None:
    """A consistent copy of the store (SQLite's online backup), while farm may be writing it."""
    from farm.store import SCHEMA_VERSION, file

    found = file.backup(_db_path(db), dest.expanduser(), SCHEMA_VERSION)
    out.print(_found(found), markup=False, highlight=False)


@board_app.command("bootstrap")
def board_bootstrap(
    boards: Annotated[list[str] | None, typer.Argument(help="boards (default: all)")] = None,
    inventory: InventoryOpt = None,
    trust_host_key: Annotated[
        bool, typer.Option(help="record an unknown host key (TOFU, once) and its fingerprint")
    ] = False,
) -> None:
    """Make fresh boards ready: python, torch, cache, engine, the ExecuTorch C++ runner, facts.
    Safe to run again."""
    from farm import bootstrap

    reports = bootstrap.bootstrap_many(
        _load_inventory(inventory), boards or [], trust_host_key=trust_host_key
    )
    out.print(bootstrap.table(reports))
    raise typer.Exit(0 if all(r.ok for r in reports) else 1)


# -- head and stations ---------------------------------------------------------------


@head_app.command("start")
def head_start(
    db: DbOpt = None,
    port: Annotated[int, typer.Option(help="Ray GCS port", min=1, max=65535)] = 6379,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    metrics_address: MetricsAddressOpt = "127.0.0.1:9500",
) -> None:
    """Start a Ray head with the farm scheduler (resumes unfinished jobs in the store)."""
    from farm import client
    from farm.store import default_db_path

    path = (db or default_db_path()).expanduser()
    _inspect_store(path)  # a store it cannot trust is refused before Ray starts
    info = client.start_head(
        db=path,
        port=port,
        host=host,
        metrics_address=metrics_address,
    )
    out.print(f"head running at [bold]{info.address}[/] (store {info.db})")
    if metrics_address != "off":
        out.print(f"  metrics: http://{metrics_address}/metrics")
    if info.running:
        out.print(f"  resumed: {', '.join(info.running)}")
    out.print(f"  farm submit JOB --address {info.address}")


@head_app.command("stop")
def head_stop(
    address: AddressOpt = None,
    force: Annotated[bool, typer.Option(help="SIGKILL at once (as in a crash)")] = False,
) -> None:
    """Stop a head this machine started, with the stations this machine joined to it
    (the store keeps everything)."""
    from farm import client

    record, count, stations = client.stop_head(_address(address), force=force)
    also = f"; stations stopped with it: {', '.join(stations)}" if stations else ""
    out.print(f"head {record.address} stopped ({count} processes){also}")


@head_app.command("status")
def head_status(address: AddressOpt = None, fmt: FormatOpt = Format.table) -> None:
    """Is a head reachable, and what is it doing: store, running jobs, nodes and stations."""
    from farm.client import Head

    address = _address(address) or "127.0.0.1:6379"
    head = Head.attach(address)
    info = head.info()
    nodes = [[n.address, n.id[:12], ", ".join(n.stations)] for n in head.nodes()]
    if fmt is not Format.table:
        _emit(["node", "id", "stations"], nodes, fmt)
        return
    out.print(f"head {address}: store {info.db}, {len(info.running)} job(s) running")
    for job_id in info.running:
        out.print(f"  {job_id}: {_counts(head.reader.counts(job_id))}")
    _emit(["node", "id", "stations"], nodes, fmt, title="nodes")


@station_app.command("start")
def station_start(
    address: Annotated[str, typer.Option(help="the head's address, host:port")],
    name: Annotated[str, typer.Option(help="station name boards refer to")],
) -> None:
    """Join this machine to a head, serving the boards whose `station:` is NAME."""
    from farm import client

    client.start_station(address=address, name=name)
    out.print(f"station {name} joined {address}")


@station_app.command("stop")
def station_stop(
    name: Annotated[str, typer.Option(help="the station to stop")],
    force: Annotated[bool, typer.Option(help="SIGKILL at once")] = False,
) -> None:
    """Take a station this machine started off its head."""
    from farm import client

    count = client.stop_station(name, force=force)
    out.print(f"station {name} stopped ({count} processes)")


# -- metrics -------------------------------------------------------------------------------


@app.command()
def exporter(db: DbOpt = None, metrics_address: MetricsAddressOpt = "127.0.0.1:9501") -> None:
    """Serve the store's metrics to Prometheus without a head (until interrupted)."""
    from farm.metrics.exporter import serve_store

    serve_store(_readable_store(_db_path(db)), metrics_address, ready=err.print)


@metrics_app.command("backfill")
def metrics_backfill(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the OpenMetrics file")],
    db: DbOpt = None,
) -> None:
    """Write the store's history as OpenMetrics for `promtool tsdb create-blocks-from openmetrics`."""
    from farm.metrics.backfill import backfill

    store = _readable_store(_db_path(db))
    _out_dir(out_dir)
    try:
        path, n = backfill(store, out_dir)
    except OSError as exc:
        raise FarmError(f"{out_dir}: the history could not be written: {exc}") from exc
    out.print(f"{n} results written to {path}")
    out.print(f"  promtool tsdb create-blocks-from openmetrics {path} PROMETHEUS_DATA_DIR")


def _out_dir(path: Path) -> Path:
    """An ``--out`` folder farm can write into, made if need be; else one line, exit 2
    (called once the rest of the command's input was checked)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {path}: cannot make that folder: {exc.strerror}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"--out {path}: not a folder this account can write into")
    return path


def _usage_errors() -> tuple[type[Exception], ...]:
    """The exceptions a command line mistake raises. typer 0.29 vendors click, and its
    errors derive from ``typer.TyperException``; older typer raises click's own."""
    kinds: list[type[Exception]] = [typer.TyperException]
    try:
        import click
    except ImportError:
        return tuple(kinds)
    return (*kinds, click.ClickException)


def main() -> None:
    sys.excepthook = sys.__excepthook__  # from here on, main says what an interrupt stopped
    rc = _run()
    if rc == 130 and not _Doing.said:
        err.print(f"interrupted{' while ' + _Doing.what if _Doing.what else ''}", highlight=False)
        _Doing.said = True
    if "ray" in sys.modules:  # Ray's C++ teardown after Python's runs with Ctrl-C unhandled
        rc = _shut_ray_down(rc)
        import logging
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the exit code is decided
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


def _run() -> int:
    """The command's exit code; every farm error, usage error and interrupt as one line."""
    try:
        rc = app(standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except FarmError as exc:  # UserError (exit 2) included
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return 130
    except _usage_errors() as exc:
        message = exc.format_message()  # type: ignore[attr-defined]
        if type(exc).__name__ == "NoArgsIsHelpError":  # `farm` alone: the help is the answer
            err.print(message, markup=False, highlight=False)
        else:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            line = " ".join(message.split())
            err.print(f"[red]usage:[/] {line}{hint}", highlight=False)
        return 2


def _shut_ray_down(rc: int) -> int:
    """An embedded run's Ray is shut down here, not by Ray's atexit hook, where a Ctrl-C
    prints "Exception ignored in atexit callback" and a traceback. Interrupted, it says
    so in one line and finishes the shutdown (its processes must not outlive farm)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return rc
    import signal

    try:
        ray.shutdown()
        return rc
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not _Doing.said:
            err.print("interrupted while Ray shut down: what ran is stored; finishing the shutdown")
        ray.shutdown()
        return 130


if __name__ == "__main__":
    main()
