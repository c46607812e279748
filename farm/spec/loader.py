"""Loading inventories and jobs: the one place where YAML becomes validated specs.

Every failure — a missing file, bad YAML, a wrong type, an unknown board — ends
as exactly one :class:`farm.errors.SpecError` naming the file, the line and the
field, raised ``from`` its cause. When pydantic finds several problems, the one
nearest the top of the file is reported: that is the one a person reads first.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, Field, ValidationError, create_model

from farm.errors import SpecError
from farm.spec import plugins
from farm.spec.base import Problem
from farm.spec.inventory import Inventory, Monitor
from farm.spec.job import Job
from farm.spec.messages import describe
from farm.spec.yamlload import MAX_BYTES, Document, KeyPath, format_path, parse_yaml

_SECRET_WORDS = {"password", "passwd", "pass", "passphrase", "pwd", "secret"}


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate the inventory file at ``path``."""
    return parse_inventory(_read(path), file=str(path))


def load_job(
    path: str | Path,
    *,
    inventory: Inventory | None = None,
    known_models: Collection[str] | None = None,
    known_runtimes: Collection[str] | None = None,
) -> Job:
    """Read and validate the job file at ``path``.

    With ``inventory``, every target must name boards and processors it has; with
    ``known_models`` (the zoo's names), every zoo model must be one of them; with
    ``known_runtimes`` (the engine's registered runtimes), every runtime variant.
    """
    return parse_job(
        _read(path),
        file=str(path),
        inventory=inventory,
        known_models=known_models,
        known_runtimes=known_runtimes,
    )


def parse_inventory(text: str | bytes, file: str = "<string>") -> Inventory:
    """Validate an inventory given as YAML text; ``file`` names it in errors."""
    doc = _document(text, file)
    _refuse_secrets(doc, doc.data, ())
    return _validate(Inventory, doc, {})


def parse_job(
    text: str | bytes,
    file: str = "<string>",
    *,
    inventory: Inventory | None = None,
    known_models: Collection[str] | None = None,
    known_runtimes: Collection[str] | None = None,
) -> Job:
    """Validate a job given as YAML text; relative ``program`` paths resolve against
    ``file``'s directory (the working directory when ``file`` is not a path)."""
    doc = _document(text, file)
    base = Path(file).parent if not file.startswith("<") else Path.cwd()
    context = {"inventory": inventory, "known_models": known_models,
               "known_runtimes": known_runtimes, "base_dir": base}  # fmt: skip
    job = _validate(Job, doc, context)
    _remember_source(job, doc)
    return job


def source_of(job: Job) -> Document | None:
    """The parsed document ``job`` was loaded from, if this process loaded it.

    Kept beside the job rather than in it: a job equals its JSON round trip, and
    the scheduler never sees where it came from. ``expand`` uses it to put file
    and line on a target that does not fit the inventory.
    """
    return _SOURCES.get(id(job))


_SOURCES: dict[int, Document] = {}


def _remember_source(job: Job, doc: Document) -> None:
    _SOURCES[id(job)] = doc
    weakref.finalize(job, _SOURCES.pop, id(job), None)


def json_schema(kind: Literal["inventory", "job"]) -> dict[str, Any]:
    """The JSON Schema of an inventory or a job file (for editors and other tools)."""
    if kind == "inventory":
        return _inventory_with_plugins().model_json_schema()
    if kind == "job":
        return Job.model_json_schema()
    raise ValueError(f"schema kind must be 'inventory' or 'job', not {kind!r}")


def _inventory_with_plugins() -> type[BaseModel]:
    """``Inventory`` with its boards and monitors spelled out per plug-in (every module of
    ``farm/transport/`` and ``farm/power/``), so the schema shows each one's fields: a
    board is any one transport's model, a monitor one backend's with its options model."""
    boards = tuple(plugins.discover("transport").values())
    monitors = tuple(
        create_model(
            f"Monitor_{name}",
            __base__=Monitor,
            backend=(Literal[name], ...),  # type: ignore[valid-type]
            options=(model, Field(default_factory=model)),
        )
        for name, model in plugins.discover("backend").items()
    )
    return create_model(
        "Inventory",
        __base__=Inventory,
        boards=(list[Union[boards]], Field(min_length=1)),  # type: ignore[valid-type]  # noqa: UP007
        monitors=(list[Union[monitors]], Field(default_factory=list)),  # type: ignore[valid-type]  # noqa: UP007
    )


def _read(path: str | Path) -> bytes:
    file = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise SpecError(file, None, None, f"cannot read: {e.strerror or e}") from e
    if len(data) > MAX_BYTES:
        raise SpecError(file, None, None, f"document is larger than {MAX_BYTES} bytes: refused")
    return data


def _document(text: str | bytes, file: str) -> Document:
    doc = parse_yaml(text, file)
    if not isinstance(doc.data, dict):
        kind = type(doc.data).__name__
        raise SpecError(file, doc.line_of(()), None, f"expected a mapping at the top, got {kind}")
    return doc


def _refuse_secrets(doc: Document, data: Any, path: KeyPath) -> None:
    """Refuse password-like keys anywhere: secrets never live in a YAML file."""
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else []
    )
    for key, value in items:
        child = (*path, key)
        if isinstance(key, str) and _looks_secret(key):
            raise doc.error(
                child,
                "secrets do not belong in the inventory: use identity_file (a key file) "
                "or an ssh-agent",
            )
        _refuse_secrets(doc, value, child)


def _looks_secret(key: str) -> bool:
    lowered = key.lower()
    if "password" in lowered or "passphrase" in lowered:
        return True
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower())
    return any(word in _SECRET_WORDS for word in words)


def _validate(model: type[Any], doc: Document, context: dict[str, Any]) -> Any:
    try:
        return model.model_validate(doc.data, context=context)
    except ValidationError as e:
        raise _spec_error(model, doc, e) from e


def _spec_error(model: type[BaseModel], doc: Document, exc: ValidationError) -> SpecError:
    """The problem nearest the top of the file, as a SpecError."""
    best: SpecError | None = None
    for error in exc.errors():
        loc: tuple[str | int, ...] = tuple(error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, Problem):
            loc = (*loc, *cause.path)
        found = _existing(doc.data, loc)
        line = doc.line_of(found)
        field = format_path(
            loc if len(found) == len(loc) or _is_mapping(doc.data, found) else found
        )
        candidate = SpecError(doc.file, line, field or None, describe(model, error, loc, doc.data))
        if best is None or (line or 0) < (best.line or 0):
            best = candidate
    if best is None:  # pydantic always reports at least one error; be safe anyway
        return SpecError(doc.file, None, None, str(exc))
    return best


def _existing(data: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """The longest prefix of ``loc`` that names something in ``data``."""
    found: list[str | int] = []
    for part in loc:
        data = _child(data, part)
        if data is _MISSING:
            break
        found.append(part)
    return tuple(found)


_MISSING = object()


def _child(data: Any, part: str | int) -> Any:
    if isinstance(data, dict) and isinstance(part, str):
        return data.get(part, _MISSING)
    if isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
        return data[part]
    return _MISSING


def _is_mapping(data: Any, path: tuple[str | int, ...]) -> bool:
    """Whether ``path`` names a mapping — a missing key below it is worth naming."""
    for part in path:
        data = data[part]
    return isinstance(data, dict)
