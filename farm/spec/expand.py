"""From a job and an inventory to the list of tasks: one per cell of the matrix.

The matrix is models × targets (their boards × processors) × the cartesian
product of the variants. Its order is the job's own — models as listed, targets
as listed, boards in inventory order, processors as the target lists them (else
the board's order), variant values as listed — so the same files always give
the same tasks with the same indices. A cell reached twice (two targets naming
the same board) is kept once, where it first appeared.
"""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import Field

from farm.errors import SpecError
from farm.spec.base import SpecModel
from farm.spec.inventory import Board, Inventory
from farm.spec.job import Job, Measure, ModelRef, Target, reference_problem
from farm.spec.loader import source_of
from farm.spec.yamlload import format_path


class TaskSpec(SpecModel):
    """One measurement: a model on a board's processor under one variant."""

    index: int = Field(ge=0)
    key: str
    model: ModelRef
    board: str
    processor: str
    variant: dict[str, Any] = Field(default_factory=dict)
    measure: Measure


def expand(job: Job, inventory: Inventory) -> list[TaskSpec]:
    """Every task of ``job`` on ``inventory``, in a deterministic order, without repeats.

    Raises SpecError (naming the job file's line when the job was loaded from
    one) when a target names a board or processor the inventory lacks.
    """
    problem = reference_problem(job, inventory)
    if problem is not None:
        doc = source_of(job)
        if doc is not None:
            raise doc.error(problem.path, problem.message) from problem
        raise SpecError("<job>", None, format_path(problem.path), problem.message) from problem
    tasks: list[TaskSpec] = []
    seen: set[str] = set()
    for model in job.models:
        variants = _variants(job, model)
        for target in job.targets:
            for board, processor in _places(target, inventory):
                for variant in variants:
                    key = task_key(model.name, board.name, processor, variant)
                    if key in seen:
                        continue
                    seen.add(key)
                    tasks.append(
                        TaskSpec(
                            index=len(tasks),
                            key=key,
                            model=model,
                            board=board.name,
                            processor=processor,
                            variant=variant,
                            measure=job.measure,
                        )
                    )
    return tasks


def task_key(model: str, board: str, processor: str, variant: dict[str, Any]) -> str:
    """``kws/local/cpu/activation=relu,threads=2`` — stable, readable, unique per cell."""
    parts = [model, board, processor]
    if variant:
        parts.append(",".join(f"{k}={_value(v)}" for k, v in sorted(variant.items())))
    return "/".join(parts)


def _value(value: Any) -> str:
    return "null" if value is None else str(value)


def _places(target: Target, inventory: Inventory) -> list[tuple[Board, str]]:
    """The (board, processor) pairs a target chooses; boards lacking a listed processor are skipped."""
    out = []
    for board in inventory.boards:
        if not target.chooses(board):
            continue
        names = target.processors or [p.name for p in board.processors]
        out += [(board, name) for name in names if board.processor(name) is not None]
    return out


def _variants(job: Job, model: ModelRef) -> list[dict[str, Any]]:
    """The variant cells for ``model``: its own axes if it has them, else the job's.

    Activation is a zoo-model knob (user models are measured as built), so a
    job-wide activation axis does not multiply user models.
    """
    axes = (model.variants or job.variants).axes()
    if model.zoo is None:
        axes.pop("activation", None)
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]
