"""The ``.farm`` artifact: one model, its graph and its weights, in one deterministic zip.

Layout of format ``farm-artifact/1`` (every member stored, timestamps fixed at 1980-01-01,
so the bytes and therefore the sha256 depend only on the content)::

    manifest.json   format, kind, name, source, params, activation, input_shape, dtype,
                    options, seed, and for kind "graph" the graph description, for kind
                    "module" the ``factory`` ("pkg.mod:attr") and ``package_sha256``
    weights.pt      kinds "graph" and "module": the state_dict, written by ``torch.save``
    program.pt2     kind "program": a ``torch.export.save``'d ExportedProgram

Why two kinds. The paper's models (``farm.zoo``) are small chains and trees of standard
layers, so they travel as a *graph description* of whitelisted ``torch.nn`` layers plus a
state_dict: the board rebuilds real ``nn.Conv2d`` / ``nn.Linear`` modules, the per-layer pass
hooks exactly the layers the paper's tables name, and nothing executable is unpickled
(``torch.load(weights_only=True)``). A user's own model can be anything, so it travels as a
``torch.export`` program when the user gave one (``program:``), timed as the program's own
module. A factory the user gave (``module:``) runs as their own eager code: kind "module"
names the factory and the sha256 of their package zip, which sits beside the artifact as
``<sha256>.pkg`` (`farm.engine.package`); the board checks that hash, imports the zip, calls
the factory and loads the seeded weights (``weights_only=True``) into what it built.

Why a whitelist. The description names layer types by string. Resolving such strings with
``getattr(torch.nn, name)`` would let a file pick any callable; ``_LAYERS`` below is the
complete list of what a graph artifact may build, with the constructor arguments each takes.

This module runs on the board: it imports the standard library and torch only, never the
zoo. The zoo imports it to *write* artifacts, so the format lives in this one file.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from farm.engine.files import sha256_file, zip_bytes
from farm.engine.package import PACKAGE_SUFFIX, activate, resolve, seeded_call

FORMAT = "farm-artifact/1"
MANIFEST = "manifest.json"
WEIGHTS = "weights.pt"
PROGRAM = "program.pt2"
KIND_GRAPH = "graph"
KIND_PROGRAM = "program"
KIND_MODULE = "module"

# Seed of ``LoadedModel.example_input``: every board feeds the same numbers.
INPUT_SEED = 0

_SHA_NAME = re.compile(r"^([0-9a-f]{64})\.farm$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}

_CONV_ARGS = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "bias",
    "padding_mode",
)
_BN_ARGS = ("num_features", "eps", "momentum", "affine", "track_running_stats")

# op name -> (class, constructor arguments, each also an attribute of the built layer)
_LAYERS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "Conv1d": (nn.Conv1d, _CONV_ARGS),
    "Conv2d": (nn.Conv2d, _CONV_ARGS),
    "Linear": (nn.Linear, ("in_features", "out_features", "bias")),
    "ReLU": (nn.ReLU, ()),
    "Sigmoid": (nn.Sigmoid, ()),
    "Tanh": (nn.Tanh, ()),
    "MaxPool2d": (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    "AvgPool2d": (
        nn.AvgPool2d,
        ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    ),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, ("output_size",)),
    "LocalResponseNorm": (nn.LocalResponseNorm, ("size", "alpha", "beta", "k")),
    "BatchNorm1d": (nn.BatchNorm1d, _BN_ARGS),
    "BatchNorm2d": (nn.BatchNorm2d, _BN_ARGS),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
    "Dropout": (nn.Dropout, ("p",)),
    "Softmax": (nn.Softmax, ("dim",)),
    "LogSoftmax": (nn.LogSoftmax, ("dim",)),
    "Identity": (nn.Identity, ()),
}
_OP_OF_TYPE = {cls: op for op, (cls, _) in _LAYERS.items()}


class ArtifactError(ValueError):
    """An artifact is corrupt, tampered with, of an unknown format, or cannot be described."""


# ---------------------------------------------------------------------------- layers


def describe_layer(layer: nn.Module) -> dict[str, Any]:
    """``{"op": ..., "args": {...}}`` for a whitelisted layer; JSON-able, rebuilt by `build_layer`.

    The exact type is required (not a subclass): a subclass may override ``forward``, and
    the board would silently run the parent's.
    """
    op = _OP_OF_TYPE.get(type(layer))
    if op is None:
        raise ArtifactError(
            f"layer type {type(layer).__name__} is not in the artifact whitelist "
            f"({', '.join(sorted(_LAYERS))})"
        )
    if getattr(layer, "return_indices", False) or getattr(layer, "inplace", False):
        raise ArtifactError(f"{op} with return_indices/inplace cannot be part of a graph")
    _, arg_names = _LAYERS[op]
    args = {name: _to_json(_layer_arg(layer, name)) for name in arg_names}
    return {"op": op, "args": args}


def build_layer(description: Mapping[str, Any]) -> nn.Module:
    """Construct the layer `describe_layer` described (fresh weights, loaded later)."""
    op = description.get("op")
    args = description.get("args", {})
    if not isinstance(op, str) or op not in _LAYERS:
        raise ArtifactError(f"layer op {op!r} is not in the artifact whitelist")
    if not isinstance(args, Mapping):
        raise ArtifactError(f"{op}: args must be an object, not {type(args).__name__}")
    cls, allowed = _LAYERS[op]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ArtifactError(f"{op}: unknown arguments {unknown}")
    try:
        return cls(**{name: _from_json(value) for name, value in args.items()})
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{op}: cannot build with {dict(args)}: {exc}") from exc


def _layer_arg(layer: nn.Module, name: str) -> Any:
    value = getattr(layer, name)
    if name == "bias":  # the layer holds the Parameter; the constructor takes a flag
        return value is not None
    return value


def _to_json(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    return value


# ----------------------------------------------------------------------------- graph


class _Ticking:
    """Arms a graph's ticks for a ``with`` block: two dict writes, no generator and no
    ``Module.__setattr__``, since the layer pass enters it between timed forwards."""

    __slots__ = ("graph", "tick")

    def __init__(self, graph: GraphModule, tick: Callable[[int], None]) -> None:
        self.graph, self.tick = graph, tick

    def __enter__(self) -> None:
        self.graph.__dict__["_tick"] = self.tick

    def __exit__(self, *_: object) -> None:
        self.graph.__dict__["_tick"] = None


class GraphModule(nn.Module):
    """A small DAG of whitelisted one-input layers with named inputs, run in listed order.

    ``nodes`` is a list of ``(name, layer, input)``: the layer reads the tensor called
    ``input`` (a graph input or an earlier node) and its output is called ``name``. A
    chain is every node reading the previous one; branches (DeepEar's three heads on one
    audio frame) are nodes reading the same name. Layers are registered under their node
    name, so the state_dict reads ``conv1.weight`` and the per-layer pass reports
    ``conv1``. Intermediate tensors are dropped after their last reader, so peak memory
    matches a plain ``nn.Sequential`` rather than holding every activation.
    """

    def __init__(
        self,
        nodes: Sequence[tuple[str, nn.Module, str]],
        inputs: Sequence[str] = ("input",),
        outputs: Sequence[str] | None = None,
    ):
        super().__init__()
        self.inputs: tuple[str, ...] = tuple(inputs)
        self._tick: Callable[[int], None] | None = None  # see `ticking`
        self.outputs: tuple[str, ...] = ()  # set below; claimed now so no node takes the name
        self._drop_after: list[list[str]] = []
        defined: set[str] = set()
        for name in self.inputs:
            self._check_new_name(name, defined)
            defined.add(name)
        self._steps: list[tuple[str, str]] = []
        for name, layer, source in nodes:
            self._check_new_name(name, defined)
            if source not in defined:
                raise ArtifactError(f"node {name!r} reads {source!r} before it is defined")
            if not isinstance(layer, nn.Module):
                raise ArtifactError(f"node {name!r} is a {type(layer).__name__}, not a layer")
            self.add_module(name, layer)
            self._steps.append((name, source))
            defined.add(name)
        if not self._steps:
            raise ArtifactError("a graph needs at least one node")
        self.outputs = tuple(outputs) if outputs else (self._steps[-1][0],)
        missing = [o for o in self.outputs if o not in defined]
        if missing:
            raise ArtifactError(f"graph outputs {missing} are not defined")
        self._drop_after = self._liveness()

    def _check_new_name(self, name: str, defined: set[str]) -> None:
        if not isinstance(name, str) or not _NODE_NAME.match(name):
            raise ArtifactError(f"node name {name!r} must be a Python identifier")
        if name in defined or hasattr(self, name):
            raise ArtifactError(f"node name {name!r} is already taken")

    def _liveness(self) -> list[list[str]]:
        """For each step, the node outputs nobody reads afterwards (and are not outputs)."""
        last_use = {name: i for i, (name, _) in enumerate(self._steps)}
        for i, (_, source) in enumerate(self._steps):
            if source in last_use:
                last_use[source] = i
        drop: list[list[str]] = [[] for _ in self._steps]
        for name, i in last_use.items():
            if name not in self.outputs:
                drop[i].append(name)
        return drop

    def forward(self, *xs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(xs) != len(self.inputs):
            raise TypeError(f"expected {len(self.inputs)} inputs {self.inputs}, got {len(xs)}")
        env = dict(zip(self.inputs, xs, strict=True))
        tick = self._tick
        if tick is None:
            for (name, source), dead in zip(self._steps, self._drop_after, strict=True):
                env[name] = self._modules[name](env[source])
                for gone in dead:
                    del env[gone]
        else:  # the same loop, with a tick before the first node and after each
            tick(0)
            for k, ((name, source), dead) in enumerate(
                zip(self._steps, self._drop_after, strict=True)
            ):
                env[name] = self._modules[name](env[source])
                for gone in dead:
                    del env[gone]
                tick(k + 1)
        out = tuple(env[name] for name in self.outputs)
        return out[0] if len(out) == 1 else out

    def ticking(self, tick: Callable[[int], None]) -> _Ticking:
        """Within a ``with`` block, forwards call ``tick(0)`` before the first node and
        ``tick(k + 1)`` after node k (its dead inputs dropped): the per-layer pass's
        clock reads in the graph's own loop (`farm.engine.layers.run_tick_pass`),
        without hooks, so every layer keeps ``Module.__call__``'s fast path."""
        return _Ticking(self, tick)

    def layers(self) -> list[tuple[str, nn.Module]]:
        """Every node's layer in execution order (they are all leaves)."""
        return [(name, self._modules[name]) for name, _ in self._steps]

    def describe(self) -> dict[str, Any]:
        """The JSON graph description stored in the manifest."""
        nodes = [
            {"name": name, "input": source, **describe_layer(self._modules[name])}
            for name, source in self._steps
        ]
        return {"inputs": list(self.inputs), "outputs": list(self.outputs), "nodes": nodes}

    @classmethod
    def from_description(cls, graph: Any) -> GraphModule:
        """Rebuild from `describe`'s output; every malformed field is an `ArtifactError`."""
        if not isinstance(graph, Mapping) or not isinstance(graph.get("nodes"), list):
            raise ArtifactError("manifest graph must be an object with a 'nodes' list")
        nodes = []
        for node in graph["nodes"]:
            if not isinstance(node, Mapping):
                raise ArtifactError(f"graph node must be an object, not {node!r}")
            nodes.append((node.get("name"), build_layer(node), node.get("input")))
        return cls(nodes, inputs=graph.get("inputs", ["input"]), outputs=graph.get("outputs"))


# ------------------------------------------------------------------------- the file


def input_shapes(value: Any) -> tuple[tuple[int, ...], ...]:
    """Normalise a manifest ``input_shape``: ``[1, 3, 32, 32]`` (one input, batch included)
    or ``[[1, 16], [1, 4]]`` (several inputs) -> a tuple of shapes."""
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        shapes = tuple(tuple(s) for s in value)
    else:
        shapes = (tuple(value),) if isinstance(value, (list, tuple)) else ()
    if not shapes or any(
        not s or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s)
        for s in shapes
    ):
        raise ArtifactError(f"input_shape {value!r} must be positive integers, batch first")
    return shapes


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The canonical JSON encoding (sorted keys) that makes manifests byte-stable."""
    return (json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode()


def write(path: str | Path, manifest: Mapping[str, Any], members: Mapping[str, bytes]) -> None:
    """Write a deterministic artifact zip: manifest first, then members by name, all stored
    with fixed timestamps and permissions (weights do not compress, and stored members
    keep the bytes independent of the zlib version)."""
    entries = [(MANIFEST, manifest_bytes(manifest)), *sorted(members.items())]
    Path(path).write_bytes(zip_bytes(entries, compression=zipfile.ZIP_STORED))


FORM_EAGER = "eager"  # a module run as written: the zoo's GraphModule, a user's own code
# an ExportedProgram's own module (``program.module()``): a ``program:`` model as given,
# or the variant of a ``module:`` model whose graph the layer pass times
FORM_EXPORTED = "exported"
FORM_UNFLATTENED = "unflattened"  # ``torch.export.unflatten``: leaves to hook, slower


@dataclass
class LoadedModel:
    """A model ready to run: ``module`` in eval mode, its leaf ``layers`` in execution order
    (the per-layer pass hooks these) and the manifest's ``meta`` plus the file's sha256.

    ``form`` says what ``module`` is. Where the hookable leaves belong to another form of
    the same model (an exported program's leaves exist only once it is unflattened, which
    runs 2–3× slower), ``layer_module`` is that form and ``layer_form`` its name: the
    latency is the model's own form, the layer pass a named variant, never a substitute.
    ``graph`` is the model as a ``torch.fx`` graph whose nodes carry their module stack
    (an exported program's own module): where it is set, the layer pass times its nodes
    (`farm.engine.graph_layers`) instead of hooking ``layers``. A user's eager module has
    no such graph of its own; with ``export_layers`` the layer pass gets one from
    `layer_graph`, a named variant.
    """

    module: nn.Module
    layers: list[tuple[str, nn.Module]]
    meta: dict[str, Any] = field(default_factory=dict)
    form: str = FORM_EAGER
    layer_module: nn.Module | None = None
    layer_form: str = FORM_EAGER
    graph: torch.fx.GraphModule | None = None
    export_layers: bool = False
    _exports: dict[tuple, torch.fx.GraphModule | Exception] = field(
        default_factory=dict, repr=False
    )

    def layer_graph(self, example: Any) -> tuple[torch.fx.GraphModule | None, str]:
        """The graph whose nodes the layer pass times, and the name of its form; ``None``
        where the layer pass hooks ``layers`` instead.

        An exported program's graph is the module the latency pass timed. A user's eager
        module (``export_layers``) is exported here with ``torch.export`` on the task's own
        input: hooks on its leaves would bill functional work (``torch.relu``, attention's
        products) to whichever leaf ran next, the graph's nodes say who did it. That export
        is a variant, form ``exported``, never what the latency reports; it shares the
        module's weights and is kept for the next task with inputs of the same shapes.
        torch.export's own error passes through (the caller hooks the leaves instead), and
        is kept too: a model that cannot be traced is not traced again every task.
        """
        if not self.export_layers:
            return self.graph, self.form
        args = example if isinstance(example, tuple) else (example,)
        key = tuple((tuple(t.shape), t.dtype, str(t.device)) for t in args)
        if key not in self._exports:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations
                    self._exports[key] = torch.export.export(self.module, args).module()
            except Exception as exc:  # torch.export raises many types; all mean "cannot"
                self._exports[key] = exc
        found = self._exports[key]
        if isinstance(found, Exception):
            raise found
        return found, FORM_EXPORTED

    @property
    def layer_root(self) -> nn.Module:
        """The module whose forward the layer pass and the memory probe run."""
        return self.layer_module if self.layer_module is not None else self.module

    def example_input(self, device: str | torch.device = "cpu", batch: int = 1) -> Any:
        """Seeded random input of the manifest's shape(s) — whose first dimension is the
        batch, 1 in the zoo — with that dimension scaled by ``batch``; a tuple for several
        inputs. Drawn on the CPU, then moved, so every device sees the same numbers."""
        dtype = _DTYPES.get(self.meta.get("dtype", "float32"))
        if dtype is None:
            raise ArtifactError(f"unsupported input dtype {self.meta.get('dtype')!r}")
        generator = torch.Generator().manual_seed(INPUT_SEED)
        tensors = tuple(
            torch.randn((shape[0] * batch, *shape[1:]), generator=generator, dtype=dtype).to(device)
            for shape in input_shapes(self.meta.get("input_shape"))
        )
        return tensors[0] if len(tensors) == 1 else tensors


def load(path: str | Path) -> LoadedModel:
    """Open an artifact for measurement.

    When the file is named ``<sha256>.farm`` (as in every cache) its bytes must hash to
    that name, or `ArtifactError` (a ValueError): a corrupted or tampered cache entry must
    not be measured as if it were the model.
    """
    path = Path(path)
    digest = sha256_file(path)
    named = _SHA_NAME.match(path.name)
    if named and named.group(1) != digest:
        raise ArtifactError(f"{path}: content hashes to {digest}, refusing a corrupted artifact")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ArtifactError(f"{path}: not a farm artifact (bad zip)") from exc
    with archive:
        manifest = _read_manifest(archive, path)
        if manifest["kind"] == KIND_GRAPH:
            module, layers = _load_graph(archive, manifest, path)
            loaded = LoadedModel(module=module, layers=layers)
        elif manifest["kind"] == KIND_MODULE:
            loaded = _load_module(archive, manifest, path)
        else:
            loaded = _load_program(archive, path)
    loaded.meta = {key: value for key, value in manifest.items() if key != "graph"}
    loaded.meta["sha256"] = digest
    return loaded


def _member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    try:
        return archive.read(name)
    except KeyError as exc:
        raise ArtifactError(f"{path}: member {name} is missing") from exc


def _read_manifest(archive: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(_member(archive, MANIFEST, path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: manifest is not JSON") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ArtifactError(f"{path}: format {found!r} is not {FORMAT}")
    if manifest.get("kind") not in (KIND_GRAPH, KIND_PROGRAM, KIND_MODULE):
        raise ArtifactError(f"{path}: unknown artifact kind {manifest.get('kind')!r}")
    input_shapes(manifest.get("input_shape"))
    return manifest


def _load_graph(
    archive: zipfile.ZipFile, manifest: Mapping[str, Any], path: Path
) -> tuple[nn.Module, list[tuple[str, nn.Module]]]:
    module = GraphModule.from_description(manifest.get("graph"))
    _load_weights(module, archive, manifest, path)
    return module, module.layers()


def _load_weights(
    module: nn.Module, archive: zipfile.ZipFile, manifest: Mapping[str, Any], path: Path
) -> None:
    """The artifact's state_dict into ``module`` (tensors only: ``weights_only=True``),
    every key matched; then eval mode."""
    try:
        state = torch.load(
            io.BytesIO(_member(archive, WEIGHTS, path)), map_location="cpu", weights_only=True
        )
        module.load_state_dict(state, strict=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, TypeError) as exc:
        raise ArtifactError(f"{path}: weights do not match the model: {exc}") from exc
    params = sum(p.numel() for p in module.parameters())
    if params != manifest.get("params"):
        raise ArtifactError(f"{path}: {params} parameters, manifest says {manifest.get('params')}")
    module.eval()


def _load_module(archive: zipfile.ZipFile, manifest: Mapping[str, Any], path: Path) -> LoadedModel:
    """A user's eager module: their package, verified, imported; the factory called.

    The package must sit beside the artifact as ``<package_sha256>.pkg`` and hash to that
    name (the manifest, inside the hashed artifact, says which), or nothing of it is
    imported. The latency pass times this module as the user wrote it; the layer pass
    times its export (`LoadedModel.layer_graph`), and hooks the leaves listed here only
    where torch.export cannot trace it. The memory probe follows those leaves.
    """
    digest, factory_path = manifest.get("package_sha256"), manifest.get("factory")
    if not isinstance(digest, str) or not _SHA.match(digest) or not isinstance(factory_path, str):
        raise ArtifactError(f"{path}: a module artifact needs factory and package_sha256")
    shipped = path.parent / f"{digest}{PACKAGE_SUFFIX}"
    try:
        found = sha256_file(shipped)
    except OSError as exc:
        raise ArtifactError(f"{path}: its package {shipped.name} is not beside it") from exc
    if found != digest:
        raise ArtifactError(f"{shipped}: content hashes to {found}, refusing a corrupted package")
    options = manifest.get("options") or {}
    if not isinstance(options, Mapping):
        raise ArtifactError(f"{path}: options must be an object")
    try:
        activate(shipped, factory_path, replace_imported=False)
        module = seeded_call(resolve(factory_path), options, int(manifest.get("seed") or 0))
    except Exception as exc:  # the user's code may raise anything while building
        raise ArtifactError(f"{path}: factory {factory_path!r} failed: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise ArtifactError(f"{path}: factory {factory_path!r} did not return an nn.Module")
    _load_weights(module, archive, manifest, path)
    leaves = [
        (name, sub)
        for name, sub in module.named_modules()
        if name and next(sub.children(), None) is None
    ]
    return LoadedModel(module, leaves or [("model", module)], form=FORM_EAGER, export_layers=True)


def _load_program(archive: zipfile.ZipFile, path: Path) -> LoadedModel:
    """Load a torch.export program: its own module is timed, and its graph's nodes.

    ``program.module()`` is the program as exported (one flat graph); that is the model
    measured, and the layer pass times that graph's nodes (``graph``), billed to the
    modules on each node's stack. The unflattened module (the user's own module
    hierarchy, 2–3× slower) is kept for the memory probe, which follows activations
    through module outputs. When unflatten fails or finds no submodules, the whole
    program is one layer named ``program``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecations
        try:
            program = torch.export.load(io.BytesIO(_member(archive, PROGRAM, path)))
        except (RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as exc:
            raise ArtifactError(f"{path}: cannot load the exported program: {exc}") from exc
        exported = program.module()  # keeps the mode it was exported in (refuses eval())
        try:
            module: nn.Module = torch.export.unflatten(program)
        except Exception:  # unflatten is best effort: fall back to the whole program
            return LoadedModel(
                exported, [("program", exported)], form=FORM_EXPORTED, graph=exported
            )
    # InterpreterModules default to running through torch.fx.Interpreter (about 4x slower
    # per call on a small MLP); the generated code computes the same thing.
    for sub in module.modules():
        if hasattr(sub, "_run_with_interpreter"):
            sub._run_with_interpreter = False
    module.eval()
    leaves = [
        (name, sub)
        for name, sub in module.named_modules()
        if name and next(sub.children(), None) is None
    ]
    # Unflattened leaves are all InterpreterModules: name each by the class it was
    # exported from (Linear, ReLU, ...), so per-layer tables and the non-linear share
    # read the same as for zoo models.
    types = {
        path: cls.rsplit(".", 1)[-1]
        for node in program.graph.nodes
        for path, cls in (node.meta.get("nn_module_stack") or {}).values()
        if isinstance(cls, str)
    }
    for name, sub in leaves:
        if name in types:
            sub.farm_layer_type = types[name]
    if not leaves:
        return LoadedModel(exported, [("program", exported)], form=FORM_EXPORTED, graph=exported)
    return LoadedModel(
        exported,
        leaves,
        form=FORM_EXPORTED,
        layer_module=module,
        layer_form=FORM_UNFLATTENED,
        graph=exported,
    )
