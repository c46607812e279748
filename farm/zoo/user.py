"""User models: a factory named by ``"pkg.mod:factory"``, or a ``torch.export``'d ``.pt2``.

A factory model is measured as the user's own eager module: its package ships with the
artifact (`package_zip`, see `farm.engine.package`) and the board calls the factory. A
``.pt2`` travels as the exported program it is. Every failure here is the user's to fix,
so it is a `farm.errors.UserError` raised from the cause.
"""

from __future__ import annotations

import importlib.machinery
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from farm.engine import package
from farm.engine.artifact import INPUT_SEED, input_shapes
from farm.engine.files import zip_bytes
from farm.errors import UserError

_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16"}


def load_factory(path: str) -> Callable[..., Any]:
    """Import ``module:attr`` (``attr`` may be dotted, e.g. ``Net.create``)."""
    try:
        return package.resolve(path)
    except (ValueError, ImportError, AttributeError, TypeError) as exc:
        raise UserError(str(exc)) from exc


def build_module(path: str, options: Mapping[str, Any], seed: int) -> nn.Module:
    """Call the factory with ``options`` under ``seed`` and check it gave an nn.Module."""
    factory = load_factory(path)
    try:
        module = package.seeded_call(factory, options, seed)
    except TypeError as exc:
        raise UserError(f"model factory {path!r} rejected options {dict(options)}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise UserError(f"model factory {path!r} returned {type(module).__name__}, not nn.Module")
    return module.eval()


def package_zip(path: str) -> bytes:
    """The top-level package (or single module) that ``path``'s module lives in, as a
    deterministic zip: every file under the package's folder but caches and dotfiles,
    in sorted order, so the same sources always give the same sha256."""
    try:
        top = package.top_level(path)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    # the sources on disk, never a package zip already activated (nor sys.modules): an
    # edited file must ship
    spec = importlib.machinery.PathFinder.find_spec(top, package.source_path())
    if spec is None:
        raise UserError(f"cannot import {top!r} for model {path!r}: not found on sys.path")
    folders = list(spec.submodule_search_locations or [])
    if len(folders) > 1:
        raise UserError(f"model {path!r}: {top!r} is a namespace package over {folders}")
    if folders:
        root = Path(folders[0])
        entries = [
            (f"{top}/{f.relative_to(root).as_posix()}", f.read_bytes())
            for f in sorted(root.rglob("*"))
            if f.is_file()
            and f.suffix != ".pyc"
            and not any(
                part == "__pycache__" or part.startswith(".") for part in f.relative_to(root).parts
            )
        ]
    elif spec.origin and spec.origin.endswith(".py"):
        entries = [(f"{top}.py", Path(spec.origin).read_bytes())]
    else:
        raise UserError(f"model {path!r}: {top!r} is not Python source farm can ship")
    if not entries:
        raise UserError(f"model {path!r}: package {top!r} holds no files")
    return zip_bytes(entries, compression=zipfile.ZIP_DEFLATED)


def example_inputs(shape: Any) -> tuple[torch.Tensor, ...]:
    """Seeded float32 inputs, one per shape (batch included)."""
    generator = torch.Generator().manual_seed(INPUT_SEED)
    return tuple(torch.randn(s, generator=generator) for s in _shapes(shape))


def check_forward(module: nn.Module, shape: Any, what: str) -> None:
    """One forward on seeded inputs of ``shape``: a wrong shape fails here, not on a board."""
    try:
        with torch.inference_mode():
            module(*example_inputs(shape))
    except Exception as exc:  # the user's forward may raise anything
        raise UserError(f"{what}: forward on input_shape {list(shape)} failed: {exc}") from exc


def read_program(path: Path) -> torch.export.ExportedProgram:
    """Load a user's ``.pt2`` to check it and read its inputs and parameter count."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.export.load(path)
    except FileNotFoundError as exc:
        raise UserError(f"exported program {str(path)!r} does not exist") from exc
    except Exception as exc:  # a corrupt or foreign file: many possible types
        raise UserError(f"{path}: not a torch.export program: {exc}") from exc


def program_inputs(program: torch.export.ExportedProgram, path: Path) -> tuple[list, str]:
    """The input shapes and dtype a program was exported with (static shapes only)."""
    wanted = set(program.graph_signature.user_inputs)
    shapes: list[list[int]] = []
    dtypes = set()
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in wanted:
            value = node.meta.get("val")
            try:
                shapes.append([int(d) for d in value.shape])
            except (AttributeError, TypeError) as exc:
                raise UserError(
                    f"{path}: input {node.name} has no static shape; give input_shape"
                ) from exc
            dtypes.add(value.dtype)
    if not shapes or len(dtypes) != 1 or next(iter(dtypes)) not in _DTYPE_NAMES:
        raise UserError(f"{path}: farm feeds one floating dtype to tensor inputs only")
    return (shapes[0] if len(shapes) == 1 else shapes), _DTYPE_NAMES[dtypes.pop()]


def _shapes(shape: Any) -> tuple[tuple[int, ...], ...]:
    try:
        return input_shapes(shape)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
