"""Plug-ins carry their own models: each transport its board model, each power backend its
options model, found by name (``farm.spec.plugins``), with the schema built from them."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from farm import spec
from farm.errors import SpecError
from farm.power import backends
from farm.power import base as power_base
from farm.spec import plugins
from farm.spec.inventory import Board, MonitorOptions
from farm.transport import registered

ROOT = Path(__file__).resolve().parents[1]


def _fails(text: str) -> SpecError:
    with pytest.raises(SpecError) as err:
        spec.parse_inventory(text, file="inventory/x.yaml")
    assert "\n" not in str(err.value)
    return err.value


def test_every_transport_declares_its_board_model_tagged_with_its_name():
    transports = registered()
    assert {"local", "ssh"} <= set(transports)
    for name, cls in transports.items():
        model = cls.board_model
        assert issubclass(model, Board) and plugins.find("transport", name) is model
        assert typing.get_args(model.model_fields["transport"].annotation) == (name,)
    ssh, local = transports["ssh"].board_model, transports["local"].board_model
    assert {"host", "user", "known_hosts", "proxy_jump"} <= set(ssh.model_fields)
    assert set(local.model_fields) == set(Board.model_fields)  # no SSH field on a local board


def test_every_backend_declares_options_that_are_its_constructors_arguments():
    """The options model and the backend agree: same names, same defaults (a drift would
    make the schema lie or a valid inventory fail when the monitor opens)."""
    for name in backends():
        cls = power_base._BACKENDS[name]
        model = cls.options_model
        assert issubclass(model, MonitorOptions) and plugins.find("backend", name) is model
        own = {k: f for k, f in model.model_fields.items() if k not in MonitorOptions.model_fields}
        params = inspect.signature(cls.__init__).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):  # synthetic: a PowerModel
            from farm.power.synthetic import PowerModel

            fields = {f.name: f for f in dataclasses.fields(PowerModel)}
            assert set(own) == set(fields), name
            continue
        args = {k: p for k, p in params.items() if k != "self"}
        assert set(own) == set(args), name
        for key, field in own.items():
            default = args[key].default
            if default is inspect.Parameter.empty:
                assert field.is_required(), (name, key)
            else:
                assert field.get_default(call_default_factory=True) == default, (name, key)


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("boards:\n  - name: a\n    host: x\n    processors: [{name: c}]\n", 4,
         "boards[0].host", "unknown key 'host' for transport local (a key of transport ssh"),
        ("boards:\n  - name: a\n    transport: ssh\n    host: x\n    hots: y\n"
         "    processors: [{name: c}]\n", 6, "boards[0].hots", "did you mean 'host'"),
        ("boards:\n  - name: a\n    transport: ../../x\n    processors: [{name: c}]\n", 4,
         "boards[0].transport", "got '../../x'"),
        ("boards:\n  - name: a\n    transport: base\n    processors: [{name: c}]\n", 4,
         "boards[0].transport", "no transport plug-in by that name"),
        ("monitors: [{name: m, backend: rapl, options: {poll_hz: 0}}]\n"
         "boards: [{name: a, processors: [{name: c}]}]\n", 2,
         "monitors[0].options.poll_hz", "must be > 0"),
        ("monitors:\n  - name: m\n    backend: hwmon\n    options: {rails: [VDD_IN]}\n"
         "boards: [{name: a, processors: [{name: c}]}]\n", 5,
         "monitors[0].options.path", "required when backend is hwmon"),
        ("monitors:\n  - name: m\n    backend: hwmon\nboards: [{name: a, processors: [{name: c}]}]\n",
         3, "monitors[0].options.path", "required when backend is hwmon"),
        ("monitors:\n  - name: m\n    backend: replay\n    options:\n      path: x.csv\n"
         "      rate: 10\nboards: [{name: a, processors: [{name: c}]}]\n", 7,
         "monitors[0].options.rate", "unknown key 'rate' for backend replay (did you mean"),
    ],
    ids=["ssh-field-on-local", "ssh-typo", "path-as-name", "module-not-plugin",
         "bad-option-value", "missing-option", "no-options-at-all", "option-typo"],
)  # fmt: skip
def test_plugin_fields_are_checked_at_load_with_the_yaml_path(text, line, field, words):
    err = _fails("version: 1\n" + text)
    assert (err.file, err.line, err.field) == ("inventory/x.yaml", line, field), str(err)
    assert words in err.message, err.message
    assert ".ssh." not in str(err) and ".local." not in str(err)  # never pydantic's tag path


def test_boards_and_options_round_trip_through_their_json():
    inv = spec.load_inventory(ROOT / "inventory" / "testbed-paper.yaml")
    for board in inv.boards:
        assert spec.Board.model_validate(board.model_dump(mode="json")) == board
    for monitor in inv.monitors:
        dumped = monitor.model_dump(mode="json")
        assert spec.Monitor.model_validate(dumped) == monitor
        written = {"serial": None, "vout": 4.0, "model": "hvpm"}  # what the YAML says, no more
        assert dumped["options"] == written


def test_every_shipped_inventory_loads_unchanged():
    files = sorted((ROOT / "inventory").glob("*.yaml"))
    assert files
    for path in files:
        inv = spec.load_inventory(path)
        assert inv.boards, path


def test_the_schema_shows_each_transports_and_backends_fields():
    schema = spec.json_schema("inventory")
    defs = schema["$defs"]
    boards = {
        ref["$ref"].rsplit("/", 1)[1] for ref in schema["properties"]["boards"]["items"]["anyOf"]
    }
    assert {"LocalBoard", "SshBoard"} <= boards
    assert (
        "host" in defs["SshBoard"]["properties"] and "host" not in defs["LocalBoard"]["properties"]
    )
    assert defs["SshBoard"]["properties"]["transport"]["const"] == "ssh"
    monitors = schema["properties"]["monitors"]["items"]["anyOf"]
    assert len(monitors) == len(backends())
    rapl = defs["Monitor_rapl"]
    assert rapl["properties"]["backend"]["const"] == "rapl"
    assert "zones" in defs["RaplOptions"]["properties"]


def test_an_inventory_loads_without_the_ssh_stack_or_numpy():
    """Plug-ins are imported by name when an inventory names them, and only then; the ssh
    module imports paramiko and fabric when a transport is made, not to validate a board."""
    code = (
        "import sys; from farm import spec;"
        "inv = spec.parse_inventory('version: 1\\nboards: [{name: a, processors: [{name: c}]},"
        " {name: b, transport: ssh, host: h, processors: [{name: c}]}]\\n');"
        "assert type(inv.boards[1]).__name__ == 'SshBoard';"
        "print(sorted(m for m in ('paramiko', 'fabric', 'numpy', 'farm.transport.ssh_connect',"
        " 'farm.power') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, timeout=120)  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_registering_a_name_twice_or_a_bad_name_is_refused():
    class Other(Board):
        transport: typing.Literal["local"] = "local"

    with pytest.raises(ValueError, match="already registered"):
        plugins.board("local")(Other)
    with pytest.raises(ValueError, match="lower-case letters"):
        plugins.board("My-Transport")(Other)
