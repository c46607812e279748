"""A job: which models to measure, on which targets, with which variants and how.

The YAML shape is pinned in ``docs/internals.md``. Checks that need more than
the job itself — is ``kws`` a model the zoo knows, does board ``tegra`` exist —
run when the loader passes a validation *context* (``known_models``,
``inventory``, ``base_dir``); without one the job is checked on its own, and
:func:`farm.spec.expand` checks the references against the inventory it gets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from farm.spec.base import Name, Options, Problem, SpecModel, Version, duplicates
from farm.spec.inventory import Board, Inventory

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


class Variants(SpecModel):
    """Axes of the variant matrix; a task runs one value of each given axis.

    ``activation`` swaps the zoo models' nonlinearity (the study's relu/sigmoid/tanh
    comparison); ``threads`` overrides the processor's thread count (``null`` keeps
    it); ``batch`` multiplies the first (batch) dimension of the model's input;
    ``runtime`` names the engine's runtime (`farm.engine.runtimes`: eager,
    onnxruntime, executorch) and ``precision`` the artifact's (fp32, or int8 by
    the runtime's static quantization), both made on the station (`farm.export`).
    """

    activation: list[Literal["relu", "sigmoid", "tanh"]] | None = Field(default=None, min_length=1)
    threads: list[PositiveInt | None] | None = Field(default=None, min_length=1)
    batch: list[PositiveInt] | None = Field(default=None, min_length=1)
    runtime: list[str] | None = Field(default=None, min_length=1)
    precision: list[Literal["fp32", "int8"]] | None = Field(default=None, min_length=1)

    @field_validator("runtime")
    @classmethod
    def _known_runtimes(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        """With a ``known_runtimes`` context (the engine's registered names, which the
        loader's caller passes like ``known_models``), every name must be one of them."""
        known: Collection[str] | None = (info.context or {}).get("known_runtimes")
        for i, name in enumerate(value or []):
            if known is not None and name not in known:
                raise Problem(
                    (i,), f"unknown runtime {name!r}; registered: {', '.join(sorted(known))}"
                )
        return value

    def axes(self) -> dict[str, list[Any]]:
        """The given axes in a fixed (alphabetical) order, each value once, as listed."""
        out = {}
        for axis in sorted(type(self).model_fields):
            values = getattr(self, axis)
            if values is not None:
                out[axis] = list(dict.fromkeys(values))
        return out


MAX_TASKS = 200_000
"""A job's matrix past this many tasks is refused unless the job raises ``max_tasks``."""


class Measure(SpecModel):
    """How each task measures: the study's 1000 inferences, a layer pass, memory."""

    # upper bounds: the engine preallocates per inference, and a board has little memory
    iterations: int = Field(default=1000, ge=1, le=1_000_000)
    warmup: int = Field(default=10, ge=0, le=1_000_000)
    layers: bool = True
    layer_iterations: int = Field(default=20, ge=1, le=100_000)
    memory: bool = True
    timeout_s: float = Field(default=900, gt=0, le=7 * 86400, allow_inf_nan=False)
    # None: the board's own
    startup_timeout_s: float | None = Field(default=None, gt=0, le=86400, allow_inf_nan=False)


def _name_or_mapping(schema: dict[str, Any]) -> None:
    """The JSON Schema of a model entry says what the loader accepts: a bare zoo
    name, or the mapping (an editor would otherwise mark ``- kws`` as an error)."""
    mapping = {k: v for k, v in schema.items() if k not in ("title", "description")}
    for key in mapping:
        del schema[key]
    schema["anyOf"] = [{"type": "string", "description": "a zoo model's name"}, mapping]


class ModelRef(SpecModel):
    """One model to measure: a zoo model, a user factory (``module``) or an exported program.

    In YAML a bare string is a zoo name: ``kws`` means ``{name: kws, zoo: kws}``.
    """

    model_config = ConfigDict(json_schema_extra=_name_or_mapping)

    name: Name
    zoo: str | None = None
    module: str | None = None
    program: str | None = None
    options: Options = Field(default_factory=dict)
    input_shape: list[PositiveInt] | None = Field(default=None, min_length=1)
    variants: Variants | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_zoo_name(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data, "zoo": data}
        if not isinstance(data, dict):
            raise ValueError("expected a zoo model name or a mapping with a name")
        return data

    @field_validator("module")
    @classmethod
    def _module_path(cls, value: str | None) -> str | None:
        if value is not None and not _MODULE.match(value):
            raise ValueError(f"{value!r} is not of the form 'package.module:callable'")
        return value

    @field_validator("program")
    @classmethod
    def _program_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Relative program paths are relative to the job file, wherever farm runs."""
        base = (info.context or {}).get("base_dir")
        if value and base and not value.startswith("~") and not os.path.isabs(value):
            return str(Path(base, value).resolve())
        return value

    @field_validator("zoo")
    @classmethod
    def _known_zoo(cls, value: str | None, info: ValidationInfo) -> str | None:
        known: Collection[str] | None = (info.context or {}).get("known_models")
        if value is not None and known is not None and value not in known:
            raise ValueError(f"unknown model {value!r}; the zoo has {', '.join(sorted(known))}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelRef:
        given = [k for k in ("zoo", "module", "program") if getattr(self, k) is not None]
        if len(given) != 1:
            found = f"got {', '.join(given)}" if given else "got none"
            raise ValueError(f"give exactly one of zoo, module, program ({found})")
        if self.module is not None and self.input_shape is None:
            raise Problem(("input_shape",), "required for a module model (e.g. [1, 16])")
        if self.zoo is None and self.variants and self.variants.activation not in (None, ["relu"]):
            raise Problem(
                ("variants", "activation"), "activation variants apply to zoo models only"
            )
        return self


class Target(SpecModel):
    """Where to run: boards by name and/or tag, and which of their processors."""

    boards: list[Name] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    processors: list[Name] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _chooses_something(self) -> Target:
        if not self.boards and not self.tags:
            raise ValueError("give boards (names) or tags")
        return self

    def chooses(self, board: Board) -> bool:
        """Whether ``board`` is one of this target's boards."""
        if self.boards and board.name not in self.boards:
            return False
        return set(self.tags) <= set(board.tags)


class Job(SpecModel):
    """A measurement job: the model × target × variant matrix and how to run it."""

    version: Version
    name: Name
    priority: int = 0
    isolation: Literal["warm", "process"] = "warm"
    retries: int = Field(default=2, ge=0)
    migrate: bool = True
    # seconds from submission: a task still waiting then for a quarantined board fails
    deadline_s: float = Field(default=3600, gt=0, le=365 * 86400, allow_inf_nan=False)
    # the matrix is counted before it is built: a job past this many tasks is refused
    max_tasks: int = Field(default=MAX_TASKS, ge=1)
    models: list[ModelRef] = Field(min_length=1)
    targets: list[Target] = Field(min_length=1)
    variants: Variants = Field(default_factory=Variants)
    measure: Measure = Field(default_factory=Measure)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Job:
        for i, first in duplicates([m.name for m in self.models]):
            name = self.models[i].name
            raise Problem(
                ("models", i, "name"), f"duplicate model name {name!r} (first at models[{first}])"
            )
        inventory = (info.context or {}).get("inventory")
        if inventory is not None:
            problem = reference_problem(self, inventory)
            if problem:
                raise problem
        return self


def reference_problem(job: Job, inventory: Inventory) -> Problem | None:
    """The first target of ``job`` that does not fit ``inventory``, located; else None."""
    for t, target in enumerate(job.targets):
        named = []
        for i, name in enumerate(target.boards):
            board = inventory.board(name)
            if board is None:
                known = ", ".join(b.name for b in inventory.boards)
                return Problem(
                    ("targets", t, "boards", i), f"unknown board {name!r}; known: {known}"
                )
            named.append(board)
        chosen = [b for b in inventory.boards if target.chooses(b)]
        if not chosen:
            pool = named or inventory.boards
            for i, tag in enumerate(target.tags):
                if not any(tag in b.tags for b in pool):
                    return Problem(("targets", t, "tags", i), f"no board is tagged {tag!r}")
            return Problem(("targets", t, "tags"), f"no board carries all of {target.tags}")
        for i, proc in enumerate(target.processors or []):
            lacking = [b.name for b in named if b.processor(proc) is None]
            if lacking or not any(b.processor(proc) for b in chosen):
                on = f"board {lacking[0]!r}" if lacking else "any matching board"
                return Problem(("targets", t, "processors", i), f"no processor {proc!r} on {on}")
    return None
