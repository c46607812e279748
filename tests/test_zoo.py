"""The model zoo (farm/zoo): the paper's models, their sizes, and export to artifacts.

Parameter counts are the paper's (Lane et al. 2015, Tables 1, 5 and 6), asserted exactly
on the built module and again on the artifact as the engine loads it.
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
import textwrap
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from farm import zoo
from farm.engine import artifact, package
from farm.engine.files import sha256_file, zip_bytes
from farm.errors import UserError
from farm.zoo.registry import Registry
from farm.zoo.user import load_factory

ALEXNET_LAYERS = {
    "conv1": 34_944,
    "conv2": 307_456,
    "conv3": 885_120,
    "conv4": 663_936,
    "conv5": 442_624,
    "fc6": 37_752_832,
    "fc7": 16_781_312,
    "fc8": 4_097_000,
}
EMOTION_LAYERS = {
    "emotion_fc1": 115_200,
    "emotion_fc2": 262_656,
    "emotion_fc3": 262_656,
    "emotion_fc4": 7_182,
}
TOTALS = {"alexnet": 60_965_224, "svhn": 313_546, "kws": 240_919}
OUTPUT_SHAPES = {"alexnet": (1, 1000), "svhn": (1, 10), "kws": (1, 23)}


@dataclass
class ModelRef:
    """Shaped like the spec's ModelRef (farm.spec), which the zoo accepts duck-typed."""

    name: str
    zoo: str | None = None
    module: str | None = None
    program: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    input_shape: list[int] | None = None


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _per_layer(layers: list[tuple[str, nn.Module]]) -> dict[str, int]:
    return {name: _params(layer) for name, layer in layers if _params(layer)}


def _dense(sizes: list[int]) -> int:
    return sum(n_in * n_out + n_out for n_in, n_out in itertools.pairwise(sizes))


def _seeded(name: str, seed: int = 0, **options: Any) -> nn.Module:
    """The zoo module with the weights `export` draws for ``seed``."""
    torch.manual_seed(seed)
    return zoo.get(name).build("relu", **options).eval()


@pytest.fixture(scope="module")
def alexnet(tmp_path_factory) -> tuple[zoo.ArtifactRef, artifact.LoadedModel]:
    """AlexNet exported and loaded once for the module: it is 244 MB of weights."""
    ref = zoo.export("alexnet", cache_dir=tmp_path_factory.mktemp("alexnet"))
    return ref, artifact.load(ref.path)


# --------------------------------------------------------------------- registry


def test_the_zoo_has_the_papers_four_models_with_sources() -> None:
    assert zoo.names() == ["alexnet", "deepear", "kws", "svhn"]
    assert zoo.get("alexnet").input_shape == (1, 3, 227, 227)
    assert zoo.get("svhn").input_shape == (1, 3, 32, 32)
    assert zoo.get("kws").input_shape == (1, 40, 40)
    assert zoo.get("deepear").input_shape == (1, 224)
    assert "Krizhevsky" in zoo.get("alexnet").source
    assert "ICASSP 2014" in zoo.get("kws").source
    assert "DeepEar" in zoo.get("deepear").source
    assert "Torch7" in zoo.get("svhn").source


def test_registration_refuses_duplicates_and_lookups_name_the_zoo() -> None:
    registry = Registry()
    registry.register("m", source="s", input_shape=(1, 2), description="d")(nn.Identity)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("m", source="s", input_shape=(1, 2), description="d")(nn.Identity)
    with pytest.raises(UserError, match=r"unknown zoo model 'resnet'.*alexnet"):
        zoo.get("resnet")


def test_unknown_options_and_activations_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown options"):
        zoo.get("kws").build("relu", width=3)
    with pytest.raises(UserError, match="unknown activation 'gelu'"):
        zoo.get("kws").build("gelu")
    with pytest.raises(UserError, match="part"):
        zoo.get("deepear").build("relu", part="stress")


# ------------------------------------------------------------------- the models


def test_alexnet_matches_table_5_layer_by_layer(alexnet) -> None:
    ref, loaded = alexnet
    built = _seeded("alexnet")
    assert _per_layer(built.layers()) == ALEXNET_LAYERS
    assert _params(built) == sum(ALEXNET_LAYERS.values()) == TOTALS["alexnet"]
    assert _per_layer(loaded.layers) == ALEXNET_LAYERS
    assert ref.params == loaded.meta["params"] == TOTALS["alexnet"]
    groups = {name: layer.groups for name, layer in built.layers() if name.startswith("conv")}
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}
    assert sum(isinstance(layer, nn.LocalResponseNorm) for _, layer in built.layers()) == 2
    x = loaded.example_input()
    with torch.no_grad():
        out = loaded.module(x)
        assert out.shape == (1, 1000)
        assert torch.allclose(out, built(x), atol=1e-5)


@pytest.mark.parametrize("name", ["svhn", "kws"])
def test_small_models_have_the_papers_parameter_counts(name: str) -> None:
    module = _seeded(name)
    assert _params(module) == TOTALS[name]
    with torch.no_grad():
        assert module(torch.randn(zoo.get(name).input_shape)).shape == OUTPUT_SHAPES[name]


def test_svhn_and_kws_layer_sizes() -> None:
    assert _per_layer(_seeded("svhn").layers()) == {
        "conv1": 64 * 3 * 25 + 64,
        "conv2": 64 * 64 * 25 + 64,
        "fc1": 1600 * 128 + 128,
        "fc2": 128 * 10 + 10,
    }
    assert _per_layer(_seeded("kws").layers()) == {
        "fc1": 1600 * 128 + 128,
        "fc2": 128 * 128 + 128,
        "fc3": 128 * 128 + 128,
        "fc4": 128 * 23 + 23,
    }


def test_deepear_emotion_dnn_is_table_6_and_the_whole_is_2_3m() -> None:
    emotion = _seeded("deepear", part="emotion")
    assert _per_layer(emotion.layers()) == EMOTION_LAYERS
    assert _params(emotion) == 647_694
    whole = _seeded("deepear")
    speaker = _dense([224, 640, 640, 640, 23])
    ambient = _dense([224, 512, 512, 512, 19])
    assert _params(whole) == 647_694 + speaker + ambient
    assert abs(_params(whole) - 2_300_000) <= 0.03 * 2_300_000
    assert _params(_seeded("deepear", part="speaker")) == speaker
    assert _params(_seeded("deepear", part="ambient")) == ambient
    with torch.no_grad():
        outputs = whole(torch.randn(1, 224))
    assert [tuple(o.shape) for o in outputs] == [(1, 14), (1, 23), (1, 19)]


@pytest.mark.parametrize("name", ["alexnet", "svhn", "kws", "deepear"])
def test_every_classifier_ends_in_a_softmax(name: str) -> None:
    module = _seeded(name)
    outputs = set(module.outputs)
    ends = [layer for node, layer in module.layers() if node in outputs]
    assert ends and all(isinstance(layer, nn.Softmax) and layer.dim == 1 for layer in ends)
    with torch.no_grad():
        out = module(torch.randn(zoo.get(name).input_shape))
    for probs in out if isinstance(out, tuple) else (out,):
        assert torch.allclose(probs.sum(dim=1), torch.ones(1))


def test_deepear_has_dropout_rows_after_each_hidden_activation() -> None:
    names = [name for name, _ in _seeded("deepear", part="emotion").layers()]
    assert names == [
        "emotion_fc1", "emotion_act1", "emotion_drop1",
        "emotion_fc2", "emotion_act2", "emotion_drop2",
        "emotion_fc3", "emotion_act3", "emotion_drop3",
        "emotion_fc4", "emotion_softmax",
    ]  # fmt: skip
    drops = [m for _, m in _seeded("deepear").layers() if isinstance(m, nn.Dropout)]
    assert len(drops) == 9 and all(not m.training for m in drops)


def test_deepear_head_sizes_are_options() -> None:
    module = _seeded("deepear", part="speaker", speaker_hidden=[100, 50], speaker_classes=7)
    assert _params(module) == _dense([224, 100, 50, 7])
    with torch.no_grad():
        assert module(torch.randn(1, 224)).shape == (1, 7)


@pytest.mark.parametrize(
    ("name", "options"),
    [("alexnet", {}), ("svhn", {}), ("kws", {}), ("deepear", {}), ("deepear", {"part": "emotion"})],
)
@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_activation_option_swaps_every_nonlinearity(name: str, options: dict, act: str) -> None:
    relu = zoo.get(name).build("relu", **options)
    other = zoo.get(name).build(act, **options)
    wanted = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[act]
    relu_names = [n for n, layer in relu.layers() if isinstance(layer, nn.ReLU)]
    assert relu_names, "every model has non-linearities"
    assert [n for n, layer in other.layers() if isinstance(layer, wanted)] == relu_names
    assert not any(isinstance(layer, nn.ReLU) for _, layer in other.layers())
    assert _params(relu) == _params(other)


# ----------------------------------------------------------------------- export


@pytest.mark.parametrize(
    "ref",
    [
        "svhn",
        "kws",
        "deepear",
        ModelRef(name="deepear-emotion", zoo="deepear", options={"part": "emotion"}),
    ],
    ids=["svhn", "kws", "deepear", "deepear-emotion"],
)
def test_exports_are_byte_identical_and_load_to_the_same_outputs(ref, tmp_path: Path) -> None:
    first = zoo.export(ref, cache_dir=tmp_path / "a")
    second = zoo.export(ref, cache_dir=tmp_path / "b")
    data = first.path.read_bytes()
    assert data == second.path.read_bytes()
    assert first.sha256 == second.sha256 == hashlib.sha256(data).hexdigest()
    assert first.path.name == f"{first.sha256}.farm"
    assert first.size_bytes == len(data)

    name = ref if isinstance(ref, str) else ref.name
    options = {} if isinstance(ref, str) else ref.options
    built = _seeded("deepear" if name.startswith("deepear") else name, **options)
    loaded = artifact.load(first.path)
    assert loaded.meta["name"] == name
    assert loaded.meta["format"] == "farm-artifact/1"
    assert loaded.meta["params"] == first.params == _params(built)
    assert loaded.meta["input_shape"] == list(zoo.get(loaded.meta["zoo"]).input_shape)
    assert _per_layer(loaded.layers) == _per_layer(built.layers())
    x = loaded.example_input()
    with torch.no_grad():
        got, want = loaded.module(x), built(x)
    for g, w in zip(
        got if isinstance(got, tuple) else (got,),
        want if isinstance(want, tuple) else (want,),
        strict=True,
    ):
        assert torch.allclose(g, w)


def test_deepear_emotion_artifact_has_table_6_layers(tmp_path: Path) -> None:
    ref = ModelRef(name="deepear-emotion", zoo="deepear", options={"part": "emotion"})
    loaded = artifact.load(zoo.export(ref, cache_dir=tmp_path).path)
    assert _per_layer(loaded.layers) == EMOTION_LAYERS


def test_seed_activation_and_options_change_the_artifact(tmp_path: Path) -> None:
    base = zoo.export("kws", cache_dir=tmp_path)
    other_seed = zoo.export("kws", seed=1, cache_dir=tmp_path)
    sigmoid = zoo.export("kws", activation="sigmoid", cache_dir=tmp_path)
    assert len({base.sha256, other_seed.sha256, sigmoid.sha256}) == 3
    assert artifact.load(sigmoid.path).meta["activation"] == "sigmoid"
    assert any(isinstance(layer, nn.Sigmoid) for _, layer in artifact.load(sigmoid.path).layers)


def test_a_second_export_returns_the_cached_file_without_rebuilding(
    tmp_path: Path, monkeypatch
) -> None:
    first = zoo.export("svhn", cache_dir=tmp_path)
    stat = first.path.stat()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the model was rebuilt")

    monkeypatch.setattr(zoo.ModelInfo, "build", no_rebuild)
    second = zoo.export("svhn", cache_dir=tmp_path)
    assert second == first
    after = second.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.glob("*.farm")) == [first.path.name]


def test_alexnet_cached_export_is_the_same_file(alexnet) -> None:
    ref, _ = alexnet
    again = zoo.export("alexnet", cache_dir=ref.path.parent)
    assert again == ref
    assert ref.sha256 == ref.path.stem


def test_a_tampered_zoo_artifact_is_refused(tmp_path: Path) -> None:
    ref = zoo.export("kws", cache_dir=tmp_path)
    data = bytearray(ref.path.read_bytes())
    data[-5000] ^= 0xFF
    ref.path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="refusing"):
        artifact.load(ref.path)


def test_export_refuses_bad_references(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="as a variant"):
        zoo.export(
            ModelRef(name="k", zoo="kws", options={"activation": "tanh"}), cache_dir=tmp_path
        )
    with pytest.raises(UserError, match="input_shape"):
        zoo.export(ModelRef(name="k", zoo="kws", input_shape=[1, 1600]), cache_dir=tmp_path)
    with pytest.raises(UserError, match="unknown zoo model"):
        zoo.export("vgg16", cache_dir=tmp_path)


# ------------------------------------------------------------------ user models


class _Mlp(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 4))
        self.out = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch) -> str:
    """A module with factories, importable under a fresh name."""
    name = f"farm_user_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def mlp(width=8):
                return nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 4))

            def cnn():
                return nn.Sequential(
                    nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 5)
                )

            def not_a_model():
                return 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.parametrize(
    ("factory", "shape", "options", "params"),
    [
        ("mlp", [1, 16], {"width": 6}, 16 * 6 + 6 + 6 * 4 + 4),
        ("cnn", [1, 3, 8, 8], {}, 4 * 27 + 4 + 36 * 5 + 5),
    ],
)
def test_module_path_models_round_trip_with_their_layers(
    user_package: str, tmp_path: Path, factory: str, shape: list, options: dict, params: int
) -> None:
    ref = ModelRef(
        name="mine", module=f"{user_package}:{factory}", input_shape=shape, options=options
    )
    first = zoo.export(ref, cache_dir=tmp_path / "cache")
    assert zoo.export(ref, cache_dir=tmp_path / "cache").sha256 == first.sha256
    loaded = artifact.load(first.path)
    assert loaded.meta["kind"] == "module"
    assert loaded.meta["params"] == first.params == params
    assert loaded.meta["activation"] is None
    assert loaded.meta["source"] == f"module {user_package}:{factory}"
    assert loaded.meta["factory"] == f"{user_package}:{factory}"
    # the user's module ships beside the artifact, named by its hash
    (shipped,) = first.companions
    assert shipped.parent == first.path.parent
    assert shipped.name == f"{loaded.meta['package_sha256']}.pkg" == f"{sha256_file(shipped)}.pkg"
    with zipfile.ZipFile(shipped) as zf:
        assert zf.namelist() == [f"{user_package}.py"]

    torch.manual_seed(0)  # export's default seed
    original = load_factory(f"{user_package}:{factory}")(**options).eval()
    leaves = [n for n, m in original.named_modules() if n and not list(m.children())]
    assert [name for name, _ in loaded.layers] == leaves
    fired: list[str] = []
    for name, layer in loaded.layers:
        layer.register_forward_hook(lambda *_, name=name: fired.append(name))
    x = loaded.example_input()
    # the user's own class, run eagerly: that is what the latency pass times, and the
    # memory probe follows its leaves
    assert (loaded.form, loaded.layer_root) == ("eager", loaded.module)
    assert type(loaded.module) is type(original)
    assert sys.modules[user_package].__file__.startswith(str(shipped))  # from the zip
    with torch.no_grad():
        assert torch.equal(loaded.module(x), original(x))
    assert fired == leaves
    # the layer pass times a named variant: its export, whose nodes know their modules
    graph, form = loaded.layer_graph(x)
    assert form == "exported" and graph is not loaded.module
    assert isinstance(graph, torch.fx.GraphModule)
    stacks = {
        list(n.meta["nn_module_stack"].values())[-1][0]
        for n in graph.graph.nodes
        if n.op == "call_function" and n.meta.get("nn_module_stack")
    }
    assert set(leaves) <= stacks
    with torch.no_grad():
        assert torch.allclose(graph(x), original(x), atol=1e-6)


def test_an_edited_package_ships_under_a_new_hash_and_runs_as_edited(
    user_package: str, tmp_path: Path
) -> None:
    """The artifact names its package's hash; editing a file changes both, and the
    module loaded is the edited one even in a process that imported the old."""
    ref = ModelRef(name="mine", module=f"{user_package}:mlp", input_shape=[1, 16])
    first = zoo.export(ref, cache_dir=tmp_path / "cache")
    assert artifact.load(first.path).module[1].__class__ is nn.ReLU
    source = next(p for p in sys.path if (Path(p) / f"{user_package}.py").exists())
    edited = Path(source) / f"{user_package}.py"
    edited.write_text(edited.read_text().replace("nn.ReLU()", "nn.Tanh()"))
    second = zoo.export(ref, cache_dir=tmp_path / "cache")
    assert second.sha256 != first.sha256
    assert second.companions[0].name != first.companions[0].name
    assert artifact.load(second.path).module[1].__class__ is nn.Tanh
    # each artifact runs its own package: the first one still loads the ReLU version
    assert artifact.load(first.path).module[1].__class__ is nn.ReLU


def test_a_module_artifact_refuses_a_missing_or_tampered_package(
    user_package: str, tmp_path: Path
) -> None:
    ref = ModelRef(name="mine", module=f"{user_package}:mlp", input_shape=[1, 16])
    exported = zoo.export(ref, cache_dir=tmp_path / "cache")
    (shipped,) = exported.companions
    good = shipped.read_bytes()
    shipped.write_bytes(good + b"\0")
    with pytest.raises(artifact.ArtifactError, match="refusing a corrupted package"):
        artifact.load(exported.path)
    shipped.unlink()
    with pytest.raises(artifact.ArtifactError, match="not beside it"):
        artifact.load(exported.path)


def test_a_shipped_package_never_shadows_a_module_already_imported(tmp_path: Path) -> None:
    """On a board, a name already in sys.modules is a library the engine runs on."""
    shipped = tmp_path / "x.pkg"
    shipped.write_bytes(zip_bytes([("pytest/__init__.py", b"")], compression=zipfile.ZIP_STORED))
    before = list(sys.path)
    with pytest.raises(ValueError, match="already imported"):
        package.activate(shipped, "pytest.plugin:build", replace_imported=False)
    assert sys.path == before and "pytest" in sys.modules
    with pytest.raises(ValueError, match="cannot ship"):
        package.activate(shipped, "torch.nn:Linear", replace_imported=True)


def test_exported_program_files_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = _Mlp().eval()
    program = torch.export.export(model, (torch.randn(1, 16),))
    pt2 = tmp_path / "model.pt2"
    torch.export.save(program, pt2)

    ref = zoo.export(ModelRef(name="mine2", program=str(pt2)), cache_dir=tmp_path / "cache")
    loaded = artifact.load(ref.path)
    assert loaded.meta["input_shape"] == [1, 16]
    assert loaded.meta["params"] == ref.params == _params(model)
    assert [name for name, _ in loaded.layers] == ["body.0", "body.1", "body.2", "out"]
    x = loaded.example_input()
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), model(x), atol=1e-6)
    # a program runs as its own module, and its layer pass times that same graph
    assert loaded.form == "exported"
    assert loaded.layer_graph(x) == (loaded.module, "exported")
    again = zoo.export(ModelRef(name="mine2", program=str(pt2)), cache_dir=tmp_path / "cache")
    assert again == ref


def test_user_model_mistakes_are_user_errors(user_package: str, tmp_path: Path) -> None:
    def export(**fields):
        return zoo.export(ModelRef(name="mine", **fields), cache_dir=tmp_path)

    with pytest.raises(UserError, match="input_shape"):
        export(module=f"{user_package}:mlp")
    with pytest.raises(UserError, match=r"not nn\.Module"):
        export(module=f"{user_package}:not_a_model", input_shape=[1, 16])
    with pytest.raises(UserError, match="has no"):
        export(module=f"{user_package}:missing", input_shape=[1, 16])
    with pytest.raises(UserError, match="cannot import"):
        export(module="no_such_package_xyz:mlp", input_shape=[1, 16])
    with pytest.raises(UserError, match=r"package\.module:factory"):
        export(module="no_colon", input_shape=[1, 16])
    with pytest.raises(UserError, match=r"forward on input_shape \[1, 3\] failed"):
        export(module=f"{user_package}:mlp", input_shape=[1, 3])
    with pytest.raises(UserError, match="cannot ship"):
        export(module="json:loads", input_shape=[1, 16])
    with pytest.raises(UserError, match="zoo models only"):
        zoo.export(
            ModelRef(name="m", module=f"{user_package}:mlp", input_shape=[1, 16]),
            activation="tanh",
            cache_dir=tmp_path,
        )
    with pytest.raises(UserError, match="cannot read"):
        export(program=str(tmp_path / "absent.pt2"))
    (tmp_path / "junk.pt2").write_bytes(b"not a program")
    with pytest.raises(UserError, match=r"not a torch\.export program"):
        export(program=str(tmp_path / "junk.pt2"))


def test_the_engine_loads_an_artifact_without_the_zoo(tmp_path: Path) -> None:
    """What a board does: a fresh interpreter with torch, loading by path alone."""
    ref = zoo.export("svhn", cache_dir=tmp_path)
    script = textwrap.dedent(
        f"""
        import sys
        from farm.engine import artifact
        loaded = artifact.load({str(ref.path)!r})
        print(loaded.meta["params"], loaded.module(loaded.example_input()).shape[1])
        print(sorted(m for m in sys.modules if m.startswith("farm")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    counts, modules = done.stdout.strip().splitlines()
    assert counts == f"{TOTALS['svhn']} 10"
    assert "farm.zoo" not in modules
    assert "farm.errors" not in modules


def test_the_zoos_names_are_known_without_torch_and_are_the_registered_ones() -> None:
    probe = (
        "import sys; from farm import zoo; names = zoo.names(); assert 'torch' not in sys.modules;"
        " assert names == zoo.REGISTRY.names() == sorted(zoo.NAMES), names; print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert res.stdout.strip() == "ok", res.stderr
