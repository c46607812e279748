"""The spec room: every error names its file, line and field; examples load and expand."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from farm import spec
from farm.errors import SpecError, UserError
from farm.spec.yamlload import MAX_BYTES

ROOT = Path(__file__).resolve().parents[1]
ZOO = ["alexnet", "svhn", "kws", "deepear"]


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


INVENTORY = dedent(
    """
    version: 1
    monitors:
      - name: bench
        backend: synthetic
    boards:
      - name: alpha
        tags: [arm, phone]
        processors:
          - name: cpu
          - name: gpu
            device: cuda:0
        power: {monitor: bench}
      - name: beta
        tags: [arm]
        processors:
          - name: cpu
      - name: gamma
        tags: [x86]
        processors:
          - name: cpu
    """
)


@pytest.fixture
def inventory() -> spec.Inventory:
    return spec.parse_inventory(INVENTORY, file="inventory/t.yaml")


def job_text(body: str) -> str:
    """A valid job header followed by ``body`` (so line numbers in tests stay readable)."""
    return "version: 1\nname: t\n" + dedent(body)


def fails(call, *args, **kwargs) -> SpecError:
    with pytest.raises(SpecError) as info:
        call(*args, **kwargs)
    return info.value


# -- error cases: file, line and field exactly ------------------------------------------

JOB_ERRORS = [
    # (id, job text, line, field, words in the message)
    (
        "zero-iterations",
        job_text(
            """
            models: [kws]
            targets:
              - boards: [alpha]
            measure:
              iterations: 0
            """
        ),
        7,
        "measure.iterations",
        "must be >= 1",
    ),
    (
        "negative-iterations",
        job_text("models: [kws]\ntargets: [{boards: [alpha]}]\nmeasure: {iterations: -3}\n"),
        5,
        "measure.iterations",
        "must be >= 1",
    ),
    (
        "unknown-key",
        job_text("models: [kws]\ntargets: [{boards: [alpha]}]\nmeasure:\n  iteration: 5\n"),
        6,
        "measure.iteration",
        "did you mean 'iterations'",
    ),
    (
        "unknown-top-key",
        job_text("models: [kws]\ntargets: [{boards: [alpha]}]\nschedule: nightly\n"),
        5,
        "schedule",
        "unknown key",
    ),
    (
        "wrong-type",
        job_text("models: [kws]\ntargets: [{boards: [alpha]}]\nretries: two\n"),
        5,
        "retries",
        "expected an integer, got a string",
    ),
    (
        "quoted-number",
        job_text("models: [kws]\ntargets: [{boards: [alpha]}]\nmeasure: {warmup: '3'}\n"),
        5,
        "measure.warmup",
        "expected an integer",
    ),
    (
        "negative-retries",
        job_text("models: [kws]\ntargets: [{boards: [alpha]}]\nretries: -1\n"),
        5,
        "retries",
        "must be >= 0",
    ),
    (
        "bad-isolation",
        job_text("models: [kws]\ntargets: [{boards: [alpha]}]\nisolation: cold\n"),
        5,
        "isolation",
        "must be one of",
    ),
    (
        "duplicate-model",
        job_text("models:\n  - kws\n  - svhn\n  - kws\ntargets: [{boards: [alpha]}]\n"),
        6,
        "models[2]",
        "duplicate model name 'kws'",
    ),
    (
        "duplicate-model-mapping",
        job_text(
            """
            models:
              - kws
              - name: kws
                zoo: kws
            targets: [{boards: [alpha]}]
            """
        ),
        5,
        "models[1].name",
        "duplicate model name 'kws'",
    ),
    (
        "unknown-zoo-name",
        job_text("models:\n  - kws\n  - resnet\ntargets: [{boards: [alpha]}]\n"),
        5,
        "models[1]",
        "unknown model 'resnet'",
    ),
    (
        "unknown-zoo-mapping",
        job_text("models:\n  - name: r\n    zoo: resnet\ntargets: [{boards: [alpha]}]\n"),
        5,
        "models[0].zoo",
        "unknown model 'resnet'",
    ),
    (
        "two-sources",
        job_text(
            "models:\n  - name: m\n    zoo: kws\n    program: m.pt2\ntargets: [{boards: [alpha]}]\n"
        ),
        4,
        "models[0]",
        "exactly one of zoo, module, program",
    ),
    (
        "no-source",
        job_text("models:\n  - name: m\ntargets: [{boards: [alpha]}]\n"),
        4,
        "models[0]",
        "got none",
    ),
    (
        "module-needs-shape",
        job_text("models:\n  - name: m\n    module: pkg.mod:build\ntargets: [{boards: [alpha]}]\n"),
        4,
        "models[0].input_shape",
        "required for a module model",
    ),
    (
        "bad-module-path",
        job_text(
            "models:\n  - name: m\n    input_shape: [1, 4]\n    module: pkg/mod.py\n"
            "targets: [{boards: [alpha]}]\n"
        ),
        6,
        "models[0].module",
        "package.module:callable",
    ),
    (
        "bad-input-shape",
        job_text(
            "models:\n  - name: m\n    module: p.m:f\n    input_shape: [1, 0]\n"
            "targets: [{boards: [alpha]}]\n"
        ),
        6,
        "models[0].input_shape[1]",
        "must be > 0",
    ),
    (
        "user-model-activation",
        job_text(
            """
            models:
              - name: m
                program: m.pt2
                variants:
                  activation: [relu, tanh]
            targets: [{boards: [alpha]}]
            """
        ),
        7,
        "models[0].variants.activation",
        "zoo models only",
    ),
    (
        "bad-variant-key",
        job_text("models: [kws]\ntargets: [{boards: [alpha]}]\nvariants:\n  dtype: [fp16]\n"),
        6,
        "variants.dtype",
        "unknown key",
    ),
    (
        "bad-activation",
        job_text("models: [kws]\ntargets: [{boards: [alpha]}]\nvariants:\n  activation: [gelu]\n"),
        6,
        "variants.activation[0]",
        "must be one of",
    ),
    (
        "zero-threads",
        job_text("models: [kws]\ntargets: [{boards: [alpha]}]\nvariants:\n  threads: [2, 0]\n"),
        6,
        "variants.threads[1]",
        "must be > 0",
    ),
    (
        "unknown-board",
        job_text("models: [kws]\ntargets:\n  - boards: [alpha, omega]\n"),
        5,
        "targets[0].boards[1]",
        "unknown board 'omega'",
    ),
    (
        "unknown-processor",
        job_text("models: [kws]\ntargets:\n  - boards: [beta]\n    processors: [cpu, gpu]\n"),
        6,
        "targets[0].processors[1]",
        "no processor 'gpu' on board 'beta'",
    ),
    (
        "tag-matches-nothing",
        job_text("models: [kws]\ntargets:\n  - boards: [gamma]\n  - tags: [arm, watch]\n"),
        6,
        "targets[1].tags[1]",
        "no board is tagged 'watch'",
    ),
    (
        "tags-match-no-single-board",
        job_text("models: [kws]\ntargets:\n  - tags:\n      - phone\n      - x86\n"),
        5,
        "targets[0].tags",
        "no board carries all of",
    ),
    (
        "empty-target",
        job_text("models: [kws]\ntargets:\n  - processors: [cpu]\n"),
        5,
        "targets[0]",
        "give boards (names) or tags",
    ),
    (
        "missing-models",
        "# a job\nversion: 1\nname: t\ntargets: [{boards: [alpha]}]\n",
        2,
        "models",
        "required",
    ),
    (
        "empty-models",
        job_text("models: []\ntargets: [{boards: [alpha]}]\n"),
        3,
        "models",
        "must not be empty",
    ),
    (
        "version-2",
        "version: 2\nname: t\nmodels: [kws]\ntargets: [{boards: [alpha]}]\n",
        1,
        "version",
        "unsupported version 2",
    ),
    (
        "bad-name",
        "version: 1\nname: my job\nmodels: [kws]\ntargets: [{boards: [alpha]}]\n",
        2,
        "name",
        "letters, digits",
    ),
    (
        "duplicate-key",
        job_text("models: [kws]\ntargets: [{boards: [alpha]}]\nmodels: [svhn]\n"),
        5,
        "models",
        "duplicate key (first on line 3)",
    ),
    (
        "model-not-a-mapping",
        job_text("models:\n  - kws\n  - 42\ntargets: [{boards: [alpha]}]\n"),
        5,
        "models[1]",
        "expected a zoo model name or a mapping",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [case[1:] for case in JOB_ERRORS],
    ids=[case[0] for case in JOB_ERRORS],
)
def test_job_errors_name_file_line_and_field(inventory, text, line, field, words):
    err = fails(spec.parse_job, text, file="jobs/x.yaml", inventory=inventory, known_models=ZOO)
    assert (err.file, err.line, err.field) == ("jobs/x.yaml", line, field), str(err)
    assert words in err.message
    assert str(err) == f"jobs/x.yaml:{line}: {field}: {err.message}"


def test_the_error_string_of_the_brief(inventory):
    text = job_text("models: [kws]\ntargets:\n  - boards: [alpha]\nmeasure:\n  iterations: 0\n")
    err = fails(spec.parse_job, text, file="jobs/x.yaml", inventory=inventory)
    assert str(err) == "jobs/x.yaml:7: measure.iterations: must be >= 1"
    assert isinstance(err, UserError)


def test_errors_are_raised_from_their_cause(inventory):
    from pydantic import ValidationError
    from yaml import YAMLError

    bad_value = job_text("models: [kws]\ntargets: [{boards: [alpha]}]\nretries: -1\n")
    assert isinstance(fails(spec.parse_job, bad_value).__cause__, ValidationError)
    assert isinstance(fails(spec.parse_job, "a: [b\n").__cause__, YAMLError)


def test_the_first_problem_in_the_file_is_reported(inventory):
    text = job_text(
        "models: [kws]\ntargets: [{boards: [alpha]}]\nretries: x\nmeasure: {warmup: x}\n"
    )
    err = fails(spec.parse_job, text, file="j.yaml")
    assert (err.line, err.field) == (5, "retries")


BAD_HOSTS = [
    "a..b",
    "'-oProxyCommand=x'",
    '"a\\nb"',
    "'a b'",
    '"a\\tb"',
    '"a\\x01b"',
    ".a",
    "'a;b'",
]
INVENTORY_ERRORS = [
    (
        "duplicate-board",
        dedent(
            """
            version: 1
            boards:
              - name: a
                processors: [{name: cpu}]
              - name: a
                processors: [{name: cpu}]
            """
        ),
        5,
        "boards[1].name",
        "duplicate board name 'a'",
    ),
    (
        "duplicate-processor",
        dedent(
            """
            version: 1
            boards:
              - name: a
                processors:
                  - name: cpu
                  - name: gpu
                    device: cuda
                  - name: cpu
            """
        ),
        8,
        "boards[0].processors[2].name",
        "duplicate processor name 'cpu'",
    ),
    (
        "password",
        dedent(
            """
            version: 1
            boards:
              - name: a
                transport: ssh
                host: 10.0.0.2
                password: hunter2
                processors: [{name: cpu}]
            """
        ),
        6,
        "boards[0].password",
        "identity_file",
    ),
    (
        "passphrase-deep-in-options",
        dedent(
            """
            version: 1
            monitors:
              - name: m
                backend: monsoon
                options:
                  keyPassphrase: x
            boards:
              - name: a
                processors: [{name: cpu}]
            """
        ),
        6,
        "monitors[0].options.keyPassphrase",
        "ssh-agent",
    ),
    (
        "sudo-pass",
        "version: 1\nboards:\n  - name: a\n    sudo_pass: x\n    processors: [{name: cpu}]\n",
        4,
        "boards[0].sudo_pass",
        "secrets do not belong",
    ),
    (
        "unknown-monitor",
        dedent(
            """
            version: 1
            monitors:
              - name: bench
                backend: synthetic
            boards:
              - name: a
                processors: [{name: cpu}]
                power:
                  monitor: benhc
            """
        ),
        9,
        "boards[0].power.monitor",
        "unknown monitor 'benhc'",
    ),
    (
        "bad-backend",
        "version: 1\nmonitors:\n  - name: m\n    backend: fluke\nboards: [{name: a, processors: [{name: c}]}]\n",
        4,
        "monitors[0].backend",
        "must be one of",
    ),
    (
        "ssh-needs-host",
        "version: 1\nboards:\n  - name: a\n    transport: ssh\n    processors: [{name: cpu}]\n",
        3,
        "boards[0].host",
        "required when transport is ssh",
    ),
    (
        "bad-transport",
        "version: 1\nboards:\n  - name: a\n    transport: telnet\n    processors: [{name: cpu}]\n",
        4,
        "boards[0].transport",
        "must be one of",
    ),
    (
        "no-processors",
        "version: 1\nboards:\n  - name: a\n    processors: []\n",
        4,
        "boards[0].processors",
        "must not be empty",
    ),
    (
        "bad-device",
        "version: 1\nboards:\n  - name: a\n    processors:\n      - name: t\n        device: tpu\n",
        6,
        "boards[0].processors[0].device",
        "cpu, cuda or cuda:N",
    ),
    (
        "duplicate-affinity",
        "version: 1\nboards:\n  - name: a\n    processors:\n      - name: c\n        affinity: [0, 1, 0]\n",
        6,
        "boards[0].processors[0].affinity[2]",
        "CPU 0 listed twice",
    ),
    (
        "negative-affinity",
        "version: 1\nboards:\n  - name: a\n    processors:\n      - name: c\n        affinity: [-1]\n",
        6,
        "boards[0].processors[0].affinity[0]",
        "must be >= 0",
    ),
    (
        "empty-affinity",
        "version: 1\nboards:\n  - name: a\n    processors:\n      - name: c\n        affinity: []\n",
        6,
        "boards[0].processors[0].affinity",
        "must not be empty",
    ),
    (
        "zero-memory",
        "version: 1\nboards:\n  - name: a\n    processors:\n      - name: c\n        memory_mb: 0\n",
        6,
        "boards[0].processors[0].memory_mb",
        "must be > 0",
    ),
    (
        "zero-threads",
        "version: 1\nboards:\n  - name: a\n    processors:\n      - name: c\n        threads: 0\n",
        6,
        "boards[0].processors[0].threads",
        "must be > 0",
    ),
    (
        "bad-jump-host",
        "version: 1\nboards:\n  - name: a\n    transport: ssh\n    host: b\n"
        "    proxy_jump: [gw:22, 'u@gw:ssh']\n    processors: [{name: c}]\n",
        6,
        "boards[0].proxy_jump",
        "not a jump host: 'u@gw:ssh' (expected [user@]host[:port])",
    ),
    (
        "bool-is-not-int",
        "version: 1\nboards:\n  - name: a\n    transport: ssh\n    host: h\n    port: true\n"
        "    processors: [{name: c}]\n",
        6,
        "boards[0].port",
        "expected an integer, got a boolean",
    ),
    (
        "version-missing",
        "boards:\n  - name: a\n    processors: [{name: c}]\n",
        1,
        "version",
        "required",
    ),
    (
        "version-3",
        "version: 3\nboards:\n  - name: a\n    processors: [{name: c}]\n",
        1,
        "version",
        "this farm reads version 1",
    ),
    *(
        (
            f"bad-host-{i}",
            f"version: 1\nboards:\n  - name: a\n    transport: ssh\n    host: {host}\n"
            "    processors: [{name: c}]\n",
            5,
            "boards[0].host",
            "not a host name or address",
        )
        for i, host in enumerate(BAD_HOSTS)
    ),
    (
        "hop-starting-with-dash",
        "version: 1\nboards:\n  - name: a\n    transport: ssh\n    host: b\n"
        "    proxy_jump: -oProxyCommand=x\n    processors: [{name: c}]\n",
        6,
        "boards[0].proxy_jump",
        "no leading '-'",
    ),
    (
        "hop-user-starting-with-dash",
        "version: 1\nboards:\n  - name: a\n    transport: ssh\n    host: b\n"
        "    proxy_jump: ['-oX@gw']\n    processors: [{name: c}]\n",
        6,
        "boards[0].proxy_jump[0]",
        "not a user name",
    ),
    (
        "infinite-option",
        "version: 1\nmonitors:\n  - name: m\n    backend: rapl\n    options: {poll_hz: .inf}\n"
        "boards:\n  - name: a\n    processors: [{name: c}]\n",
        5,
        "monitors[0].options.poll_hz",
        "finite number",
    ),
    (
        "empty-station",
        "version: 1\nboards:\n  - name: a\n    station: ''\n    processors: [{name: c}]\n",
        4,
        "boards[0].station",
        "got ''",
    ),
    (
        "empty-monitor-station",
        "version: 1\nmonitors:\n  - name: m\n    backend: rapl\n    station: ''\n"
        "boards:\n  - name: a\n    processors: [{name: c}]\n",
        5,
        "monitors[0].station",
        "got ''",
    ),
    (
        "name-with-slash",
        "version: 1\nboards:\n  - name: lab/a\n    processors: [{name: c}]\n",
        3,
        "boards[0].name",
        "got 'lab/a'",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [case[1:] for case in INVENTORY_ERRORS],
    ids=[case[0] for case in INVENTORY_ERRORS],
)
def test_inventory_errors_name_file_line_and_field(text, line, field, words):
    err = fails(spec.parse_inventory, text, file="inventory/x.yaml")
    assert (err.file, err.line, err.field) == ("inventory/x.yaml", line, field), str(err)
    assert words in err.message


# -- documents that are not specs at all --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("version: 1\nboards: [a, b\nname: x\n", 3, "invalid YAML"),
        ("version: 1\n\tboards: []\n", 2, "invalid YAML"),
        ("- a\n- b\n", 1, "expected a mapping at the top, got list"),
        ("just a string\n", 1, "expected a mapping at the top, got str"),
        ("version: 1\n---\nversion: 1\n", 2, "invalid YAML"),
        ("version: 1\nx: !!python/object/apply:os.system [ls]\n", 2, "unsupported YAML tag"),
        ("version: 1\nx: !!python/name:os.system ''\n", 2, "invalid YAML"),
        ("version: 1\n? [a]\n: b\n", 2, "keys must be strings"),
    ],
)
def test_non_specs_are_refused_with_a_line(text, line, words):
    for parse in (spec.parse_inventory, spec.parse_job):
        err = fails(parse, text, file="f.yaml")
        assert (err.file, err.line) == ("f.yaml", line), str(err)
        assert words in err.message


def test_empty_document():
    err = fails(spec.parse_inventory, "# only a comment\n", file="f.yaml")
    assert (err.file, err.line, err.message) == ("f.yaml", None, "document is empty")
    assert str(err) == "f.yaml: document is empty"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    err = fails(spec.load_inventory, path)
    assert (err.file, err.line, err.field) == (str(path), None, None)
    assert "cannot read" in err.message
    assert isinstance(err.__cause__, FileNotFoundError)


def test_unreadable_file(tmp_path):
    err = fails(spec.load_job, tmp_path)  # a directory cannot be read as a file
    assert err.file == str(tmp_path) and "cannot read" in err.message


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nname: caf\xe9\n")
    err = fails(spec.load_job, path)
    assert "not UTF-8" in err.message


def test_oversized_document_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("version: 1\nnote: '" + "x" * MAX_BYTES + "'\n")
    start = time.perf_counter()
    err = fails(spec.load_inventory, path)
    assert f"larger than {MAX_BYTES} bytes" in err.message
    assert time.perf_counter() - start < 1
    err = fails(spec.parse_job, path.read_text())
    assert "larger than" in err.message


BILLION_LAUGHS = (
    'version: 1\na: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in itertools.pairwise("abcdefghi")
    )
)


@pytest.mark.parametrize("parse", [spec.parse_inventory, spec.parse_job])
def test_alias_bomb_is_refused_quickly(parse):
    start = time.perf_counter()
    err = fails(parse, BILLION_LAUGHS, file="bomb.yaml")
    assert time.perf_counter() - start < 2
    assert "its aliases expand it to more than" in err.message and err.line is not None


def test_merge_key_bomb_is_refused_quickly():
    letters = "abcdefghijklmnopqrstuvwxyz"
    text = "a: &a {x: 1}\n" + "".join(
        f"{c}: &{c} {{<<: [*{p}, *{p}], k{c}: 1}}\n" for p, c in itertools.pairwise(letters)
    )
    start = time.perf_counter()
    err = fails(spec.parse_inventory, text)
    assert time.perf_counter() - start < 2
    assert "document refused" in err.message


def test_deep_nesting_is_refused_not_a_recursion_error():
    err = fails(spec.parse_job, "a: " + "[" * 50_000 + "]" * 50_000)
    assert "nested deeper than" in err.message


def test_anchors_and_merge_keys_still_work(inventory):
    text = dedent(
        """
        version: 1
        boards:
          - &arm
            name: a
            tags: [arm]
            processors: [{name: cpu, threads: 4}]
          - <<: *arm
            name: b
        """
    )
    inv = spec.parse_inventory(text)
    assert [b.name for b in inv.boards] == ["a", "b"]
    assert inv.boards[1].processors[0].threads == 4


# -- the models ---------------------------------------------------------------------------


def test_jump_hosts_are_written_as_openssh_writes_them():
    inv = spec.parse_inventory(
        "version: 1\nboards:\n"
        "  - {name: a, transport: ssh, host: b, proxy_jump: 'u@gw:2222,gw2', processors: [{name: c}]}\n"
        "  - name: z\n    transport: ssh\n    host: b\n    processors: [{name: c}]\n"
        "    proxy_jump: ['[fe80::1]:22', {host: gw, known_hosts: /k, trust_on_first_use: true}]\n"
    )
    a, z = inv.boards
    assert [(h.user, h.host, h.port) for h in a.proxy_jump] == [
        ("u", "gw", 2222),
        (None, "gw2", None),
    ]
    assert [(h.host, h.port) for h in z.proxy_jump] == [("fe80::1", 22), ("gw", None)]
    assert (z.proxy_jump[1].known_hosts, z.proxy_jump[1].trust_on_first_use) == ("/k", True)
    assert z.proxy_jump[0].known_hosts is None  # unset: the board's
    assert a.ssh_config is None and inv.boards[0].port is None


def test_inventory_defaults_follow_the_contract():
    inv = spec.parse_inventory("version: 1\nboards: [{name: b, processors: [{name: cpu}]}]\n")
    board = inv.boards[0]
    assert board.transport == "local" and not hasattr(board, "host")  # no SSH fields on local
    ssh = spec.Board.model_validate({"name": "s", "transport": "ssh", "host": "h",
                                     "processors": [{"name": "cpu"}]})  # fmt: skip
    assert ssh.port is None and ssh.user is None and ssh.trust_on_first_use is False
    assert ssh.known_hosts == "~/.ssh/known_hosts"  # `~` is expanded where it is used
    assert board.cache_dir == "~/.cache/farm" and board.python == "python3"
    assert board.station == "head" and board.connect_timeout_s == 10
    assert board.power is None
    proc = board.processors[0]
    assert (proc.device, proc.threads, proc.affinity, proc.memory_mb) == ("cpu", None, None, None)
    assert inv.monitors == []


def test_job_defaults_follow_the_contract(inventory):
    job = spec.parse_job(job_text("models: [kws]\ntargets: [{boards: [alpha]}]\n"))
    assert (job.priority, job.isolation, job.retries, job.migrate) == (0, "warm", 2, True)
    m = job.measure
    assert (m.iterations, m.warmup, m.layers, m.layer_iterations, m.memory, m.timeout_s) == (
        1000,
        10,
        True,
        20,
        True,
        900,
    )
    assert job.models[0].model_dump() == {
        "name": "kws",
        "zoo": "kws",
        "module": None,
        "program": None,
        "options": {},
        "input_shape": None,
        "variants": None,
    }


def test_models_are_frozen(inventory):
    with pytest.raises(Exception, match="frozen"):
        inventory.boards[0].name = "other"  # type: ignore[misc]
    changed = inventory.boards[0].model_copy(update={"connect_timeout_s": 3.0})
    assert changed.connect_timeout_s == 3.0 and inventory.boards[0].connect_timeout_s == 10


def test_program_paths_resolve_against_the_job_file(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    path = jobs / "mine.yaml"
    path.write_text(
        job_text(
            """
            models:
              - {name: rel, program: models/m.pt2}
              - {name: abs, program: /opt/m.pt2}
              - {name: home, program: ~/m.pt2}
            targets: [{boards: [alpha]}]
            """
        )
    )
    job = spec.load_job(path)
    assert [m.program for m in job.models] == [
        str((jobs / "models" / "m.pt2").resolve()),
        "/opt/m.pt2",
        "~/m.pt2",
    ]


def test_board_round_trips_through_json(inventory):
    """Stations rebuild boards with ``Board.model_validate(board.model_dump(mode="json"))``."""
    for board in inventory.boards:
        assert spec.Board.model_validate(board.model_dump(mode="json")) == board
    job = spec.parse_job(job_text("models: [kws]\ntargets: [{boards: [alpha]}]\n"))
    assert spec.Job.model_validate(job.model_dump(mode="json")) == job


def test_json_schema():
    inv = spec.json_schema("inventory")
    job = spec.json_schema("job")
    assert {"version", "boards", "monitors"} <= set(inv["properties"])
    assert {"models", "targets", "variants", "measure"} <= set(job["properties"])
    assert inv["additionalProperties"] is False
    json.dumps(inv), json.dumps(job)
    with pytest.raises(ValueError):
        spec.json_schema("board")  # type: ignore[arg-type]


# -- expansion ----------------------------------------------------------------------------


def test_expansion_order_and_keys_are_deterministic(inventory):
    text = job_text(
        """
        models:
          - svhn
          - kws
        targets:
          - tags: [arm]
          - boards: [alpha]        # alpha again: its cells are kept once
            processors: [gpu]
        variants:
          threads: [2, null]
          activation: [tanh, relu]
        """
    )
    job = spec.parse_job(text, inventory=inventory, known_models=ZOO)
    tasks = spec.expand(job, inventory)
    keys = [t.key for t in tasks]
    cells = [
        f"{board}/{proc}/activation={act},threads={threads}"
        for board, proc in [("alpha", "cpu"), ("alpha", "gpu"), ("beta", "cpu")]
        for act in ("tanh", "relu")
        for threads in ("2", "null")
    ]
    assert keys == [f"{model}/{cell}" for model in ("svhn", "kws") for cell in cells]
    assert [t.index for t in tasks] == list(range(len(tasks)))
    assert keys == [t.key for t in spec.expand(job, inventory)]
    again = spec.parse_job(text, inventory=inventory, known_models=ZOO)
    assert [t.model_dump() for t in spec.expand(again, inventory)] == [
        t.model_dump() for t in tasks
    ]
    first = tasks[0]
    assert (first.board, first.processor, first.variant) == (
        "alpha",
        "cpu",
        {"activation": "tanh", "threads": 2},
    )
    assert first.measure == job.measure and first.model.name == "svhn"


def test_model_variants_replace_the_jobs_and_user_models_skip_activation(inventory):
    text = job_text(
        """
        models:
          - name: kws-act
            zoo: kws
            variants: {activation: [relu, sigmoid]}
          - svhn
          - {name: mine, module: "pkg.mod:build", input_shape: [1, 16]}
        targets: [{boards: [gamma]}]
        variants:
          activation: [relu, tanh]
          batch: [1, 4]
        """
    )
    job = spec.parse_job(text, inventory=inventory)
    keys = [t.key for t in spec.expand(job, inventory)]
    assert keys == [
        "kws-act/gamma/cpu/activation=relu",
        "kws-act/gamma/cpu/activation=sigmoid",
        "svhn/gamma/cpu/activation=relu,batch=1",
        "svhn/gamma/cpu/activation=relu,batch=4",
        "svhn/gamma/cpu/activation=tanh,batch=1",
        "svhn/gamma/cpu/activation=tanh,batch=4",
        "mine/gamma/cpu/batch=1",
        "mine/gamma/cpu/batch=4",
    ]


def test_duplicate_variant_values_and_overlapping_targets_are_deduped(inventory):
    text = job_text(
        """
        models: [kws]
        targets:
          - boards: [beta]
          - tags: [arm]
        variants: {threads: [1, 1]}
        """
    )
    tasks = spec.expand(spec.parse_job(text, inventory=inventory), inventory)
    assert [t.key for t in tasks] == [
        "kws/beta/cpu/threads=1",
        "kws/alpha/cpu/threads=1",
        "kws/alpha/gpu/threads=1",
    ]


def test_tag_targets_skip_boards_without_the_listed_processor(inventory):
    text = job_text("models: [kws]\ntargets:\n  - tags: [arm]\n    processors: [gpu]\n")
    tasks = spec.expand(spec.parse_job(text, inventory=inventory), inventory)
    assert [t.key for t in tasks] == ["kws/alpha/gpu"]


def test_expand_checks_references_with_the_job_files_lines(inventory):
    text = job_text("models: [kws]\ntargets:\n  - boards: [alpha]\n  - boards: [delta]\n")
    job = spec.parse_job(text, file="jobs/late.yaml")  # no inventory yet: loads fine
    err = fails(spec.expand, job, inventory)
    assert str(err).startswith("jobs/late.yaml:6: targets[1].boards[0]: unknown board 'delta'")


def test_tasks_dump_to_json_for_the_scheduler(inventory):
    job = spec.parse_job(job_text("models: [kws]\ntargets: [{boards: [alpha]}]\n"))
    record = spec.expand(job, inventory)[0].model_dump(mode="json")
    assert record["key"] == "kws/alpha/cpu" and record["index"] == 0
    assert record["model"]["name"] == "kws" and record["model"]["zoo"] == "kws"
    assert record["variant"] == {} and record["measure"]["iterations"] == 1000
    json.dumps(record)


def test_task_key_format():
    assert spec.task_key("kws", "local", "cpu", {"threads": 2, "activation": "relu"}) == (
        "kws/local/cpu/activation=relu,threads=2"
    )
    assert spec.task_key("kws", "local", "cpu", {}) == "kws/local/cpu"


# -- the example files --------------------------------------------------------------------


def test_local_inventory():
    inv = spec.load_inventory(ROOT / "inventory/local.yaml")
    (board,) = inv.boards
    assert (board.name, board.transport, board.tags) == ("local", "local", ["local"])
    (proc,) = board.processors
    assert (proc.name, proc.device, proc.threads, proc.memory_mb) == ("cpu", "cpu", None, None)


def test_paper_testbed_inventory():
    inv = spec.load_inventory(ROOT / "inventory/testbed-paper.yaml")
    assert [m.backend for m in inv.monitors] == ["monsoon"]
    edison = inv.board("edison")
    assert edison is not None
    assert [p.name for p in edison.processors] == ["cpu"]
    assert (edison.processors[0].threads, edison.processors[0].memory_mb) == (1, 1024)
    tegra = inv.board("tegra-k1")
    assert tegra is not None
    assert [p.device for p in tegra.processors] == ["cpu", "cuda:0"]
    assert all(b.transport == "ssh" and b.host for b in inv.boards)
    assert any(b.power and b.power.monitor == "bench-monsoon" for b in inv.boards)


@pytest.mark.parametrize(
    ("job_file", "inventory_file", "count"),
    [
        ("jobs/smoke.yaml", "inventory/local.yaml", 4),
        ("jobs/paper.yaml", "inventory/local.yaml", 2 + 3 + 1 + 3),  # alexnet, svhn, kws × 3, whole deepear, emotion × 3
        # 4 models × (phone cpu, tegra cpu, edison cpu, tegra cuda) × threads [null, 1]
        ("jobs/nightly.yaml", "inventory/testbed-paper.yaml", 4 * 4 * 2),
    ],
)
def test_example_jobs_expand_to_the_expected_counts(job_file, inventory_file, count):
    inv = spec.load_inventory(ROOT / inventory_file)
    job = spec.load_job(ROOT / job_file, inventory=inv, known_models=ZOO)
    tasks = spec.expand(job, inv)
    assert len(tasks) == count
    assert len({t.key for t in tasks}) == count


def test_smoke_is_quick_and_paper_is_the_study():
    smoke = spec.load_job(ROOT / "jobs/smoke.yaml", known_models=ZOO)
    assert {m.zoo for m in smoke.models} == set(ZOO)
    assert smoke.measure.iterations <= 50 and smoke.measure.layer_iterations <= 10
    paper = spec.load_job(ROOT / "jobs/paper.yaml", known_models=ZOO)
    assert paper.measure.iterations == 1000 and paper.measure.layers and paper.measure.memory
    emotion = next(m for m in paper.models if m.name == "deepear-emotion")
    assert (emotion.zoo, emotion.options) == ("deepear", {"part": "emotion"})
    assert emotion.variants is not None
    assert emotion.variants.activation == ["relu", "sigmoid", "tanh"]


def test_spec_imports_nothing_heavy():
    code = (
        "import sys, farm.spec; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'torch', 'paramiko')"
        " or (m.startswith('farm.') and m != 'farm.errors' and not m.startswith('farm.spec'))]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
