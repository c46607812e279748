"""Planned tasks built by hand, for tests of the store and the scheduler that need
a job's tasks without planning a job from YAML."""

from __future__ import annotations

from farm.spec import Measure, ModelRef, PlannedTask


def planned_tasks(
    n: int,
    board: str = "b0",
    candidates: list[str] | None = None,
    *,
    model: str = "kws",
    start: int = 0,
    threads: bool = False,
) -> list[PlannedTask]:
    """``n`` tasks of ``model`` on ``board``'s cpu, indexed from ``start``. Each is a
    cell of its own: keyed by its index, or by a ``threads=i`` variant (``threads``)."""
    tasks = []
    for i in range(start, start + n):
        variant = {"threads": i} if threads else {}
        tail = f"threads={i}" if threads else str(i)
        tasks.append(
            PlannedTask(
                index=i,
                key=f"{model}/{board}/cpu/{tail}",
                model=ModelRef(name=model, zoo=model),
                board=board,
                processor="cpu",
                variant=variant,
                measure=Measure(),
                candidates=candidates or [board],
            )
        )
    return tasks
