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
import math
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from farm.errors import SpecError
from farm.spec.base import SpecModel
from farm.spec.inventory import Board, Inventory, Monitor
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


class PlannedTask(TaskSpec):
    """A task as the scheduler queues it: its cell, and every board it may run on.

    ``candidates`` are the boards any target of the job that chose this task's
    board would also choose, with the same processor: a task retried after a
    transport error may move to one of them, and fails fast when all are out of
    service.

    Tasks with the same candidates share one list object (``of``), so a job of
    100,000 tasks over 1,000 boards holds, pickles and stores each list once,
    not once per task. Treat the list as read-only.
    """

    candidates: list[str] = Field(min_length=1)

    @classmethod
    def of(cls, task: TaskSpec, candidates: list[str]) -> PlannedTask:
        """``task`` with ``candidates`` as given, the same list object (validation
        would copy it): ``task`` is validated already, ``candidates`` must not be empty."""
        if not candidates:
            raise ValueError(f"{task.key}: a task needs at least one candidate board")
        return cls.model_construct(**dict(task), candidates=candidates)


@dataclass(frozen=True)
class Plan:
    """What a head needs to run a job: its tasks, the boards they may use (in
    name order) and the power monitors of those boards."""

    tasks: list[PlannedTask]
    boards: list[Board]
    monitors: list[Monitor]


def plan(job: Job, inventory: Inventory) -> Plan:
    """``expand``, each task with its candidate boards, and what those boards need.

    Candidates depend on the task's board and processor only: each distinct
    list is built once and shared by every task that has it."""
    chosen = [[b for b in inventory.boards if target.chooses(b)] for target in job.targets]
    chosen_names = [{b.name for b in boards} for boards in chosen]
    shared: dict[tuple[str, str], list[str]] = {}
    out = []
    for task in expand(job, inventory):
        place = (task.board, task.processor)
        if place not in shared:
            candidates: dict[str, None] = {}  # ordered, without repeats
            for boards, names in zip(chosen, chosen_names, strict=True):
                if task.board in names:
                    candidates.update(
                        (b.name, None) for b in boards if b.processor(task.processor) is not None
                    )
            shared[place] = list(candidates) or [task.board]
        out.append(PlannedTask.of(task, shared[place]))
    used = {name for t in out for name in (t.board, *t.candidates)}
    boards = [b for b in sorted(inventory.boards, key=lambda b: b.name) if b.name in used]
    wanted = {b.power.monitor for b in boards if b.power}
    monitors = [m for m in inventory.monitors or [] if m.name in wanted]
    return Plan(out, boards, monitors)


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
    _refuse_past_the_limit(job, inventory)
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


def count(job: Job, inventory: Inventory) -> int:
    """How many tasks ``job`` can make on ``inventory`` at most (repeats counted), without
    building one: models × places × variant cells, multiplied, not enumerated."""
    places = sum(len(_places(target, inventory)) for target in job.targets)
    total = 0
    for model in job.models:
        axes = (model.variants or job.variants).axes()
        if model.zoo is None:
            axes.pop("activation", None)
        total += places * math.prod(len(values) for values in axes.values())
    return total


def _refuse_past_the_limit(job: Job, inventory: Inventory) -> None:
    n = count(job, inventory)
    if n <= job.max_tasks:
        return
    message = (
        f"the matrix is {n:,} tasks, more than max_tasks {job.max_tasks:,}: "
        "fewer variant values, or raise max_tasks in the job"
    )
    path = ("variants",) if job.variants.axes() else ("models",)
    doc = source_of(job)
    if doc is not None:
        raise doc.error(path, message)
    raise SpecError("<job>", None, format_path(path), message)


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
