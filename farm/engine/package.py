"""A user's own model code: ``"pkg.mod:factory"`` resolved, and shipped as a package zip.

A ``module:`` model is measured as the user's eager module, so the board runs their
code: the head zips the top-level package (or single module) that ``pkg.mod`` lives in
(`farm.zoo.user.package_zip`), the zip travels content-addressed beside the artifact as
``<sha256>.pkg``, and the engine, after checking that hash against the artifact's
manifest, puts the zip first on ``sys.path`` (zipimport) and calls the factory.

Both sides resolve a factory here, so the head and the board read ``"pkg.mod:attr"`` the
same way. Standard library only at import time: the head's deploy reads
`PACKAGE_SUFFIX` without torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

PACKAGE_SUFFIX = ".pkg"

# Names a user's package may not take: shipping them would replace the engine's own
# code or a library it runs on (importing puts the package zip first on sys.path).
_RESERVED = frozenset({"farm", "torch", "numpy", *sys.stdlib_module_names})

# top-level name -> the package zip on sys.path for it (one version at a time)
_active: dict[str, str] = {}


def split(path: str) -> tuple[str, str]:
    """``"pkg.mod:Net.create"`` -> ``("pkg.mod", "Net.create")``, or ValueError."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"model module {path!r} must look like 'package.module:factory'")
    return module_name, attr


def top_level(path: str) -> str:
    """The package (or module) that ships: ``pkg`` for ``"pkg.mod:f"``; ValueError where
    that name belongs to farm, torch or the standard library."""
    top = split(path)[0].split(".", 1)[0]
    if top in _RESERVED:
        raise ValueError(f"model module {path!r}: package {top!r} cannot ship with a model")
    return top


def resolve(path: str) -> Callable[..., Any]:
    """Import ``module:attr`` (``attr`` may be dotted); ImportError, AttributeError or
    TypeError (not callable) say what is wrong."""
    module_name, attr = split(path)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import {module_name!r} for model {path!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise AttributeError(f"{module_name!r} has no {attr!r} (model {path!r})") from exc
    if not callable(target):
        raise TypeError(f"model factory {path!r} is not callable")
    return target


def seeded_call(factory: Callable[..., Any], options: Mapping[str, Any], seed: int) -> Any:
    """``factory(**options)`` under ``torch.manual_seed(seed)`` in a forked RNG, so the
    head and the board draw the same initial weights and the caller's generator is
    untouched."""
    import torch  # here: the head's deploy imports this module without torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(**dict(options))


def activate(zip_path: str | Path, path: str, *, replace_imported: bool) -> None:
    """Make ``path``'s top-level package import from ``zip_path`` (already verified).

    The zip goes first on ``sys.path``; an earlier version of the same package (another
    artifact's zip) leaves ``sys.path`` and ``sys.modules``, so nothing of it is imported
    any more. A module of that name imported some other way is replaced only with
    ``replace_imported`` (the head, where it is the user's own source): on a board it
    would be a library the engine or torch loaded, and shadowing it is refused.
    """
    top, entry = top_level(path), str(zip_path)
    if _active.get(top) == entry and entry in sys.path:
        return
    if top in sys.modules and top not in _active and not replace_imported:
        raise ValueError(f"package {top!r} is already imported from elsewhere; not replacing it")
    for stale in {_active.pop(top, None), entry}:
        while stale in sys.path:
            sys.path.remove(stale)
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]
    sys.path.insert(0, entry)
    importlib.invalidate_caches()
    _active[top] = entry


def source_path() -> list[str]:
    """``sys.path`` without the package zips put there: where a package's sources are."""
    shipped = set(_active.values())
    return [entry for entry in sys.path if entry not in shipped]
