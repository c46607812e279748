"""The spec room: inventories and jobs as validated, typed records.

    load_inventory(path) -> Inventory        parse_inventory(text, file=...)
    load_job(path, inventory=, known_models=) -> Job
    parse_job(text, file=..., inventory=, known_models=)
    expand(job, inventory) -> list[TaskSpec]
    plan(job, inventory) -> Plan     (tasks with their candidate boards, boards, monitors)
    json_schema("inventory" | "job") -> dict

Every failure is one ``farm.errors.SpecError`` whose ``str`` is
``file:LINE: field.path: message``. This package imports nothing of farm but
``farm.errors`` (and never Ray or torch): the CLI, the scheduler and the tests
all read specs without starting anything. The one exception is by name: a board's
``transport`` and a monitor's ``backend`` are plug-ins whose models live in their
own modules, imported the first time an inventory names them (:mod:`farm.spec.plugins`).
"""

from farm.spec.cell import VARIANT_DEFAULTS, CellKey, knob, variant_label
from farm.spec.expand import Plan, PlannedTask, TaskSpec, count, expand, plan, task_key
from farm.spec.inventory import Board, Hop, Inventory, Monitor, PowerRef, Processor
from farm.spec.job import Job, Measure, ModelRef, Target, Variants
from farm.spec.loader import json_schema, load_inventory, load_job, parse_inventory, parse_job

__all__ = [
    "VARIANT_DEFAULTS",
    "Board",
    "CellKey",
    "Hop",
    "Inventory",
    "Job",
    "Measure",
    "ModelRef",
    "Monitor",
    "Plan",
    "PlannedTask",
    "PowerRef",
    "Processor",
    "Target",
    "TaskSpec",
    "Variants",
    "count",
    "expand",
    "json_schema",
    "knob",
    "load_inventory",
    "load_job",
    "parse_inventory",
    "parse_job",
    "plan",
    "task_key",
    "variant_label",
]
