"""Plug-ins' spec models: each transport's board model, each power backend's options model.

A transport (``farm/transport/<name>.py``) or a power backend
(``farm/power/<name>.py``) is one file that declares, beside its implementation,
the pydantic model of what the inventory says about it::

    @plugins.board("adb")                  # the board model of ``transport: adb``
    class AdbBoard(Board): ...

    @plugins.options("ina3221")            # the ``options:`` of ``backend: ina3221``
    class Ina3221Options(MonitorOptions): ...

The spec room sits *above* the transports and the monitors (they import it, never
the other way), so the spec cannot import a plug-in to learn its model. It finds
one by name instead, the way Python's entry points do: ``transport: adb`` means
the module ``farm.transport.adb``, ``backend: rapl`` means ``farm.power.rapl``;
:func:`find` imports that module (which registers its model) the first time an
inventory names it, and only then — an inventory of ``local`` boards never
imports the SSH stack. A plug-in module outside those packages (the ``fake``
transport in :mod:`farm.testing.transport`) registers when it is imported. The
names are plain identifiers, checked before any import.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from typing import Literal, TypeVar

from pydantic import BaseModel

Kind = Literal["transport", "backend"]

PACKAGES: dict[Kind, str] = {"transport": "farm.transport", "backend": "farm.power"}
"""Where a plug-in named ``X`` of each kind lives: ``<package>.X``."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_MODELS: dict[Kind, dict[str, type[BaseModel]]] = {"transport": {}, "backend": {}}

M = TypeVar("M", bound=type[BaseModel])


def _register(kind: Kind, name: str) -> Callable[[M], M]:
    def add(cls: M) -> M:
        if not _NAME.match(name):
            raise ValueError(f"{kind} name {name!r}: lower-case letters, digits and '_' only")
        known = _MODELS[kind].get(name)
        if known is not None and known is not cls:
            raise ValueError(f"{kind} {name!r} is already registered by {known.__qualname__}")
        _MODELS[kind][name] = cls
        return cls

    return add


def board(transport: str) -> Callable[[M], M]:
    """Class decorator: the board model of ``transport: <transport>``."""
    return _register("transport", transport)


def options(backend: str) -> Callable[[M], M]:
    """Class decorator: the options model of a monitor with ``backend: <backend>``."""
    return _register("backend", backend)


def find(kind: Kind, name: str) -> type[BaseModel] | None:
    """The model registered for ``name``, importing its module on first use; None if none."""
    model = _MODELS[kind].get(name)
    if model is None and isinstance(name, str) and _NAME.match(name):
        module = f"{PACKAGES[kind]}.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # the plug-in exists but a library it needs does not
                raise
        model = _MODELS[kind].get(name)
    return model


def discover(kind: Kind) -> dict[str, type[BaseModel]]:
    """Every plug-in of ``kind``: those registered and every module of its package that
    registers one (imports them all: for the schema and "known:" lists, not for loading)."""
    package = importlib.import_module(PACKAGES[kind])
    for info in pkgutil.iter_modules(package.__path__):
        if _NAME.match(info.name):
            find(kind, info.name)
    return dict(sorted(_MODELS[kind].items()))


def name_of(model: type[BaseModel]) -> tuple[Kind, str] | None:
    """``(kind, name)`` a model is registered under, if it is a plug-in's."""
    for kind, models in _MODELS.items():
        for name, registered in models.items():
            if registered is model:
                return kind, name
    return None


def known(kind: Kind) -> list[str]:
    """The names ``kind`` accepts, for an error message."""
    return list(discover(kind))
