"""Property tests: whatever the YAML, the loaders end in a valid spec or a SpecError.

Valid inventories and jobs are mutated the ways people (and editors) break
them — keys dropped, values of the wrong type, junk keys, cut and spliced text,
random characters — and fed to both loaders, with and without the context
(inventory, zoo names) that enables the cross-checks. Anything else escaping
(a KeyError, a pydantic or yaml exception, a RecursionError) is a bug.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm import spec
from farm.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
ZOO = ["alexnet", "svhn", "kws", "deepear"]

FUZZ = settings(
    max_examples=600,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SEED_INVENTORIES = [
    (ROOT / "inventory/local.yaml").read_text(),
    (ROOT / "inventory/testbed-paper.yaml").read_text(),
]
SEED_JOBS = [(ROOT / f"jobs/{name}.yaml").read_text() for name in ("smoke", "paper", "nightly")]
SEED_JOBS.append(
    """
version: 1
name: mixed
models:
  - kws
  - {zoo: deepear, name: deepear-emotion, options: {part: emotion}, variants: {activation: [relu, tanh]}}
  - {name: mine, module: "mypkg.models:build", input_shape: [1, 16]}
  - {name: mine2, program: path/model.pt2}
targets:
  - boards: [local]
    tags: [local]
    processors: [cpu]
variants: {activation: [relu], threads: [null, 2], batch: [1]}
measure: {iterations: 5, warmup: 0, layers: false, layer_iterations: 1, memory: false, timeout_s: 1.5}
"""
)
INVENTORIES = [spec.parse_inventory(text) for text in SEED_INVENTORIES]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["cpu", "cuda:1", "local", "kws", "ssh", "relu", "~/x", "0", "", "password"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(data: Any, path: tuple = ()) -> list[tuple]:
    """Every path into ``data`` (the top included)."""
    out = [path]
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += _paths(value, (*path, i))
    return out


def _parent(data: Any, path: tuple) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


@st.composite
def mutated_data(draw, seeds: list[str]) -> str:
    """A seed document with one to three structural mutations, dumped back to YAML."""
    data = copy.deepcopy(yaml.safe_load(draw(st.sampled_from(seeds))))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        action = draw(st.sampled_from(["drop", "replace", "junk-key", "duplicate-item"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "junk-key" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
        elif action == "duplicate-item" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@st.composite
def mutated_text(draw, seeds: list[str]) -> str:
    """A seed document's text cut, spliced or sprinkled with characters."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        i = draw(st.integers(min_value=0, max_value=len(text)))
        j = draw(st.integers(min_value=i, max_value=min(len(text), i + 40)))
        action = draw(st.sampled_from(["delete", "insert", "swap-lines", "indent"]))
        if action == "delete":
            text = text[:i] + text[j:]
        elif action == "insert":
            junk = draw(
                st.one_of(
                    st.text(max_size=8),
                    st.sampled_from(
                        ["&a ", "*a", "<<: *a\n", ": ", "- ", "{", "]", "!!set ", "\t"]
                    ),
                )
            )
            text = text[:i] + junk + text[i:]
        elif action == "swap-lines":
            lines = text.splitlines(keepends=True)
            if len(lines) > 1:
                k = draw(st.integers(min_value=0, max_value=len(lines) - 2))
                lines[k], lines[k + 1] = lines[k + 1], lines[k]
                text = "".join(lines)
        else:
            text = text[:i] + "  " + text[i:]
    return text


def _load_inventory(text: str) -> None:
    try:
        inv = spec.parse_inventory(text, file="fuzz.yaml")
    except SpecError as e:
        _check_error(e)
        return
    assert isinstance(inv, spec.Inventory)
    assert spec.Inventory.model_validate(inv.model_dump(mode="json")) == inv


def _load_job(text: str, inventory: spec.Inventory | None, known: list[str] | None) -> None:
    try:
        job = spec.parse_job(text, file="fuzz.yaml", inventory=inventory, known_models=known)
    except SpecError as e:
        _check_error(e)
        return
    assert isinstance(job, spec.Job)
    for inv in INVENTORIES:
        try:
            tasks = spec.expand(job, inv)
        except SpecError as e:
            _check_error(e)
            continue
        assert len({t.key for t in tasks}) == len(tasks)
        if inventory is inv:
            assert tasks, "a job validated against an inventory has at least one task there"


def _check_error(e: SpecError) -> None:
    """A SpecError worth showing a person: one line, naming the file."""
    assert e.file == "fuzz.yaml"
    assert e.line is None or e.line >= 1
    assert "\n" not in str(e)
    assert str(e).startswith("fuzz.yaml")


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text(text):
    _load_inventory(text)
    _load_job(text, None, None)


@FUZZ
@given(text=mutated_data(SEED_INVENTORIES))
def test_mutated_inventory_data(text):
    _load_inventory(text)


@FUZZ
@given(text=mutated_text(SEED_INVENTORIES))
def test_mutated_inventory_text(text):
    _load_inventory(text)


@FUZZ
@given(
    text=mutated_data(SEED_JOBS),
    inventory=st.sampled_from([None, *INVENTORIES]),
    known=st.sampled_from([None, ZOO]),
)
def test_mutated_job_data(text, inventory, known):
    _load_job(text, inventory, known)


@FUZZ
@given(
    text=mutated_text(SEED_JOBS),
    inventory=st.sampled_from([None, *INVENTORIES]),
    known=st.sampled_from([None, ZOO]),
)
def test_mutated_job_text(text, inventory, known):
    _load_job(text, inventory, known)


@FUZZ
@given(data=values)
def test_random_yaml_values(data):
    text = yaml.safe_dump(data)
    _load_inventory(text)
    _load_job(text, INVENTORIES[0], ZOO)


@settings(max_examples=50, deadline=None, database=None)
@given(depth=st.integers(min_value=3, max_value=12), fan=st.integers(min_value=2, max_value=12))
def test_alias_bombs_are_refused_quickly(depth, fan):
    text = "version: 1\na0: &a0 [lol, lol]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan)}]\n" for i in range(1, depth)
    )
    start = time.perf_counter()
    try:
        spec.parse_inventory(text, file="fuzz.yaml")
    except SpecError as e:
        _check_error(e)
    assert time.perf_counter() - start < 2


def test_the_billion_laughs_is_refused_within_two_seconds():
    text = 'version: 1\nlol: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    text += "".join(f"l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10))
    start = time.perf_counter()
    for parse in (spec.parse_inventory, spec.parse_job):
        try:
            parse(text, file="fuzz.yaml")
        except SpecError as e:
            assert "document refused" in e.message
        else:
            raise AssertionError("a billion laughs was accepted")
    assert time.perf_counter() - start < 2


HOSTILE_HOSTS = ["a..b", "x" * 64 + ".example", "-oProxyCommand=touch /tmp/farm-pwned", "[::1]",
                 "127.0.0.1:22", "host name", "ho\nst", "%00", ".", "é.example", "a" * 300, "0",
                 "localhost", "::1", "1.2.3.4.5", "$(touch /tmp/farm-pwned)"]  # fmt: skip
HOSTILE_PATHS = ["~", "~nobody/x", "/dev/null", "/", "../../etc/passwd", "a\x00b", "",
                 "$(touch /tmp/farm-pwned)", "x; rm -rf ~", "/proc/self/mem", "é/ü"]  # fmt: skip


@settings(max_examples=120, deadline=None, database=None)
@given(
    host=st.one_of(st.sampled_from(HOSTILE_HOSTS), st.text(max_size=70)),
    port=st.one_of(st.integers(min_value=-5, max_value=70000), st.text(max_size=6)),
    paths=st.fixed_dictionaries(
        {
            key: st.one_of(st.sampled_from(HOSTILE_PATHS), st.text(max_size=30))
            for key in ("identity_file", "known_hosts", "cache_dir", "python")
        }
    ),
)
def test_hostile_hosts_ports_and_paths_end_in_a_per_board_error(
    host, port, paths, tmp_path_factory
):
    """Whatever a board's host, port and paths, loading it either refuses the file with
    a SpecError or yields a board that checking and measuring report as one line about
    that board (BoardUnreachable and friends): never an exception, never a traceback."""
    from farm.scheduler.messages import TaskPayload
    from farm.scheduler.station import Station
    from farm.spec import Measure, ModelRef, PlannedTask

    board = {"name": "hostile", "transport": "ssh", "host": host, "port": port, **paths,
             "connect_timeout_s": 0.5, "processors": [{"name": "cpu"}]}  # fmt: skip
    text = yaml.safe_dump({"version": 1, "boards": [board]}, allow_unicode=True)
    try:
        inv = spec.parse_inventory(text, file="fuzz.yaml")
    except SpecError as e:
        _check_error(e)
        return
    station = Station("fuzz", cache_dir=tmp_path_factory.mktemp("station"))
    try:
        board = inv.boards[0]
        check = station.check_board(board)
        assert check.board == "hostile" and not check.ok
        assert "\n" not in check.error and not check.error.startswith("hostile:")
        task = PlannedTask(
            index=0, key="k", model=ModelRef(name="kws", zoo="kws"), board="hostile",
            processor="cpu", variant={}, measure=Measure(), candidates=["hostile"],
        )  # fmt: skip
        outcome = station.run_task(TaskPayload("t.0", "t", task, board, attempt=1))
        assert outcome.state == "failed" and outcome.board_fault, outcome
        assert outcome.error.split(":")[0] in {
            "BoardUnreachable",
            "TransportTimeout",
            "UnknownHostKey",
        }, outcome.error
        assert outcome.error.count("hostile") == 1 + host.count("hostile"), outcome.error
    finally:
        station.close()
    assert not Path("/tmp/farm-pwned").exists()


def test_an_inventory_of_five_thousand_ordinary_boards_loads(tmp_path):
    """A big lab's inventory passes the size limits, written out or merging defaults."""
    ssh = (
        "{transport: ssh, user: ubuntu, port: 22, identity_file: ~/.ssh/farm_ed25519,"
        " known_hosts: ~/.ssh/known_hosts, tags: [rpi, arm]}"
    )
    board = (
        "  - name: b{i}\n    host: 10.0.{a}.{b}\n    station: lab{s}\n    {ssh}\n"
        "    processors:\n      - {{name: cpu, device: cpu, threads: 4}}\n"
        "      - {{name: small, device: cpu, threads: 1, memory_mb: 512}}\n"
    )
    for style in ("written", "merged"):
        lines = []
        for i in range(5000):
            if style == "written":
                own = ssh.strip("{}").replace(", ", "\n    ").replace("\n    arm]", ", arm]")
            else:
                own = f"<<: &ssh {ssh}" if i == 0 else "<<: *ssh"
            lines.append(board.format(i=i, a=i // 250, b=i % 250, s=i % 10, ssh=own))
        path = tmp_path / f"{style}.yaml"
        path.write_text("version: 1\nboards:\n" + "".join(lines))
        inv = spec.load_inventory(path)
        assert len(inv.boards) == 5000
        last = inv.boards[4999]
        assert (last.host, last.user, last.tags) == ("10.0.19.249", "ubuntu", ["rpi", "arm"])
