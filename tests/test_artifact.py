"""The artifact format (farm/engine/artifact.py): graph description, file, loader.

These tests build artifacts by hand, without the zoo, the way the board sees them.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from farm.engine import artifact
from farm.engine.artifact import ArtifactError, GraphModule


def _tiny_graph() -> GraphModule:
    """A trunk and two heads on one input: the shape of DeepEar, in miniature."""
    torch.manual_seed(1)
    nodes = [
        ("conv", nn.Conv2d(4, 6, kernel_size=3, padding=1, groups=2), "input"),
        ("act", nn.Tanh(), "conv"),
        ("norm", nn.LocalResponseNorm(size=3, alpha=1e-3, beta=0.5, k=1.5), "act"),
        ("pool", nn.MaxPool2d(kernel_size=2, stride=2), "norm"),
        ("flat", nn.Flatten(), "pool"),
        ("head_a", nn.Linear(6 * 4 * 4, 5, bias=False), "flat"),
        ("head_b", nn.Linear(6 * 4 * 4, 3), "flat"),
        ("prob_b", nn.Softmax(dim=1), "head_b"),
    ]
    return GraphModule(nodes, outputs=["head_a", "prob_b"]).eval()


def _manifest(module: GraphModule, **extra) -> dict:
    return {
        "format": artifact.FORMAT,
        "kind": artifact.KIND_GRAPH,
        "name": "tiny",
        "source": "tests",
        "params": sum(p.numel() for p in module.parameters()),
        "activation": "tanh",
        "input_shape": [1, 4, 8, 8],
        "dtype": "float32",
        "graph": module.describe(),
        **extra,
    }


def _weights(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getvalue()


def _write_named(directory: Path, manifest: dict, members: dict) -> Path:
    """Write an artifact and name it by its sha256, as a cache does."""
    tmp = directory / "tmp.farm"
    artifact.write(tmp, manifest, members)
    final = directory / f"{artifact.sha256_file(tmp)}.farm"
    tmp.rename(final)
    return final


@pytest.fixture
def tiny_file(tmp_path: Path) -> tuple[GraphModule, Path]:
    module = _tiny_graph()
    path = _write_named(tmp_path, _manifest(module), {artifact.WEIGHTS: _weights(module)})
    return module, path


# ----------------------------------------------------------------------- layers


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(4, 8, kernel_size=(3, 5), stride=2, padding=1, groups=4, bias=False),
        nn.Conv1d(2, 4, kernel_size=3, dilation=2),
        nn.Linear(7, 3),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        nn.AvgPool2d(2, count_include_pad=False),
        nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
        nn.BatchNorm2d(8, eps=1e-3, momentum=None),
        nn.Flatten(start_dim=2),
        nn.Dropout(0.3),
        nn.Softmax(dim=-1),
        nn.Sigmoid(),
    ],
)
def test_layer_description_round_trips(layer: nn.Module) -> None:
    description = json.loads(json.dumps(artifact.describe_layer(layer)))
    rebuilt = artifact.build_layer(description)
    assert type(rebuilt) is type(layer)
    assert repr(rebuilt) == repr(layer)
    shapes = {k: v.shape for k, v in layer.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


def test_describe_refuses_layers_outside_the_whitelist() -> None:
    class MyLinear(nn.Linear):  # a subclass may override forward: not the same layer
        pass

    with pytest.raises(ArtifactError, match="whitelist"):
        artifact.describe_layer(nn.GELU())
    with pytest.raises(ArtifactError, match="whitelist"):
        artifact.describe_layer(MyLinear(2, 2))
    with pytest.raises(ArtifactError, match="inplace"):
        artifact.describe_layer(nn.ReLU(inplace=True))


@pytest.mark.parametrize(
    "description",
    [
        {"op": "Module", "args": {}},
        {"op": "__import__", "args": {}},
        {"op": "Linear", "args": {"in_features": 2, "out_features": 2, "device": "meta"}},
        {"op": "Linear", "args": {"in_features": "two"}},
        {"op": "Linear", "args": [1, 2]},
    ],
)
def test_build_layer_refuses_what_the_whitelist_does_not_allow(description: dict) -> None:
    with pytest.raises(ArtifactError):
        artifact.build_layer(description)


# ------------------------------------------------------------------------ graph


def test_graph_runs_branches_and_returns_a_tuple_of_outputs() -> None:
    module = _tiny_graph()
    x = torch.randn(1, 4, 8, 8)
    a, b = module(x)
    trunk = module.flat(module.pool(module.norm(module.act(module.conv(x)))))
    assert torch.equal(a, module.head_a(trunk))
    assert torch.equal(b, module.prob_b(module.head_b(trunk)))
    assert [name for name, _ in module.layers()] == [
        "conv", "act", "norm", "pool", "flat", "head_a", "head_b", "prob_b",
    ]  # fmt: skip


def test_graph_frees_each_intermediate_after_its_last_reader() -> None:
    module = _tiny_graph()
    dropped = {name for names in module._drop_after for name in names}
    # every node output is released except the two graph outputs
    assert dropped == {"conv", "act", "norm", "pool", "flat", "head_b"}
    # "flat" feeds both heads, so it must survive until head_b (step 6) has read it
    assert "flat" in module._drop_after[6]


def test_graph_description_rebuilds_an_equal_module() -> None:
    module = _tiny_graph()
    rebuilt = GraphModule.from_description(json.loads(json.dumps(module.describe())))
    rebuilt.load_state_dict(module.state_dict())
    rebuilt.eval()
    x = torch.randn(1, 4, 8, 8)
    for got, want in zip(rebuilt(x), module(x), strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([("a", nn.ReLU(), "nowhere")], "before it is defined"),
        ([("a", nn.ReLU(), "input"), ("a", nn.ReLU(), "a")], "already taken"),
        ([("forward", nn.ReLU(), "input")], "already taken"),
        ([("outputs", nn.ReLU(), "input")], "already taken"),
        ([("a.b", nn.ReLU(), "input")], "identifier"),
        ([], "at least one node"),
    ],
)
def test_graph_refuses_malformed_node_lists(nodes: list, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        GraphModule(nodes)


# ------------------------------------------------------------------------- file


def test_written_bytes_are_deterministic(tmp_path: Path) -> None:
    module = _tiny_graph()
    first, second = tmp_path / "1.farm", tmp_path / "2.farm"
    artifact.write(first, _manifest(module), {artifact.WEIGHTS: _weights(module)})
    artifact.write(second, _manifest(module), {artifact.WEIGHTS: _weights(module)})
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as zf:
        assert zf.namelist() == [artifact.MANIFEST, artifact.WEIGHTS]
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_load_rebuilds_the_module_with_its_weights(tiny_file) -> None:
    module, path = tiny_file
    loaded = artifact.load(path)
    assert not loaded.module.training
    assert [name for name, _ in loaded.layers] == [name for name, _ in module.layers()]
    assert loaded.meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.meta["params"] == 6 * 2 * 9 + 6 + 96 * 5 + 96 * 3 + 3
    assert "graph" not in loaded.meta
    x = loaded.example_input("cpu")
    assert x.shape == (1, 4, 8, 8)
    for got, want in zip(loaded.module(x), module(x), strict=True):
        assert torch.allclose(got, want)


def test_example_input_is_seeded_and_a_tuple_for_several_inputs(tiny_file) -> None:
    _, path = tiny_file
    loaded = artifact.load(path)
    assert torch.equal(loaded.example_input(), loaded.example_input())
    loaded.meta["input_shape"] = [[1, 3], [1, 2, 2]]
    a, b = loaded.example_input()
    assert (a.shape, b.shape) == ((1, 3), (1, 2, 2))
    assert not torch.equal(a.flatten()[:3], b.flatten()[:3])


def test_a_tampered_artifact_is_refused(tiny_file) -> None:
    _, path = tiny_file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="refusing"):
        artifact.load(path)


def test_a_file_not_named_by_hash_is_loaded_without_the_name_check(tiny_file, tmp_path) -> None:
    _, path = tiny_file
    plain = tmp_path / "model.farm"
    plain.write_bytes(path.read_bytes())
    assert artifact.load(plain).meta["sha256"] == path.stem


def test_unknown_format_and_non_whitelisted_ops_are_refused(tmp_path: Path) -> None:
    module = _tiny_graph()
    weights = {artifact.WEIGHTS: _weights(module)}
    wrong_format = _write_named(tmp_path, _manifest(module, format="farm-artifact/99"), weights)
    with pytest.raises(ArtifactError, match="format"):
        artifact.load(wrong_format)
    manifest = _manifest(module)
    manifest["graph"]["nodes"][1]["op"] = "Module"
    with pytest.raises(ArtifactError, match="whitelist"):
        artifact.load(_write_named(tmp_path, manifest, weights))


def test_weights_that_do_not_match_the_graph_are_refused(tmp_path: Path) -> None:
    module = _tiny_graph()
    other = GraphModule([("head_a", nn.Linear(3, 3), "input")])
    path = _write_named(tmp_path, _manifest(module), {artifact.WEIGHTS: _weights(other)})
    with pytest.raises(ArtifactError, match="weights"):
        artifact.load(path)


class _Payload:
    """Unpickling this would run code: weights_only must refuse it."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_in_the_weights_is_refused(tmp_path: Path, capsys) -> None:
    module = _tiny_graph()
    buffer = io.BytesIO()
    torch.save({"payload": _Payload()}, buffer)
    path = _write_named(tmp_path, _manifest(module), {artifact.WEIGHTS: buffer.getvalue()})
    with pytest.raises(ArtifactError, match="weights"):
        artifact.load(path)
    assert "pwned" not in capsys.readouterr().out


# ---------------------------------------------------------------- program kind


class _SmallCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.pool(self.act(self.conv(x)))))


def test_program_artifact_times_its_own_module_and_hooks_the_unflattened_one(
    tmp_path: Path,
) -> None:
    torch.manual_seed(2)
    model = _SmallCnn().eval()
    x = torch.randn(1, 3, 8, 8)
    program = torch.export.export(model, (x,))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    manifest = {
        "format": artifact.FORMAT,
        "kind": artifact.KIND_PROGRAM,
        "name": "cnn",
        "source": "tests",
        "params": sum(p.numel() for p in model.parameters()),
        "activation": None,
        "input_shape": [1, 3, 8, 8],
        "dtype": "float32",
    }
    path = _write_named(tmp_path, manifest, {artifact.PROGRAM: buffer.getvalue()})
    loaded = artifact.load(path)
    # what is timed is the program as exported; its leaves live in a named variant
    assert (loaded.form, loaded.layer_form) == ("exported", "unflattened")
    assert loaded.layer_root is loaded.layer_module is not loaded.module
    assert loaded.graph is loaded.module  # the layer pass times this graph's nodes
    names = [name for name, _ in loaded.layers]
    assert names == ["conv", "act", "pool", "flat", "fc"]
    fired: list[str] = []
    for name, layer in loaded.layers:
        layer.register_forward_hook(lambda *_, name=name: fired.append(name))
    x = loaded.example_input()
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), model(x), atol=1e-6)
        assert fired == []  # the exported module runs one flat graph: no leaf is called
        assert torch.allclose(loaded.layer_root(x), model(x), atol=1e-6)
    assert fired == names


def test_engine_artifact_imports_only_stdlib_and_torch() -> None:
    source = Path(artifact.__file__).read_text()
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        # the engine's own modules ship with it; nothing else of farm does
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and not node.module.startswith("farm.engine.")
        ):
            roots.add(node.module.split(".")[0])
    third_party = {r for r in roots if r not in sys.stdlib_module_names}
    assert third_party == {"torch"}
