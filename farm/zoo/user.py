"""User models: a factory named by ``"pkg.mod:factory"``, or a ``torch.export``'d ``.pt2``.

Both travel to the board as a torch.export program (artifact kind ``program``): the board
has torch but not the user's package, and an exported program needs no Python code of
theirs. Every failure here is the user's to fix, so it is a `farm.errors.UserError`
raised from the cause.
"""

from __future__ import annotations

import importlib
import io
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from farm.engine.artifact import INPUT_SEED, input_shapes
from farm.errors import UserError

_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16"}


def load_factory(path: str) -> Callable[..., Any]:
    """Import ``module:attr`` (``attr`` may be dotted, e.g. ``Net.create``)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"model module {path!r} must look like 'package.module:factory'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import {module_name!r} for model {path!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise UserError(f"{module_name!r} has no {attr!r} (model {path!r})") from exc
    if not callable(target):
        raise UserError(f"model factory {path!r} is not callable")
    return target


def build_module(path: str, options: Mapping[str, Any], seed: int) -> nn.Module:
    """Call the factory with ``options`` under ``seed`` and check it gave an nn.Module."""
    factory = load_factory(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            module = factory(**options)
        except TypeError as exc:
            raise UserError(
                f"model factory {path!r} rejected options {dict(options)}: {exc}"
            ) from exc
    if not isinstance(module, nn.Module):
        raise UserError(f"model factory {path!r} returned {type(module).__name__}, not nn.Module")
    return module.eval()


def example_inputs(shape: Any) -> tuple[torch.Tensor, ...]:
    """Seeded float32 inputs, one per shape (batch included)."""
    generator = torch.Generator().manual_seed(INPUT_SEED)
    return tuple(torch.randn(s, generator=generator) for s in _shapes(shape))


def export_module(module: nn.Module, shape: Any, what: str) -> bytes:
    """``torch.export.export`` then ``torch.export.save``: the bytes of a ``.pt2``."""
    try:
        program = torch.export.export(module, example_inputs(shape))
    except Exception as exc:  # torch.export raises many types; all mean "cannot export"
        raise UserError(f"{what}: torch.export failed: {exc}") from exc
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


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
