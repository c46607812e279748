"""From a validated job and inventory to what the scheduler needs.

``farm.spec.expand`` gives the matrix; here each task also learns its
*candidates* — every board its target could have chosen that has the same
processor — so a task retried after a transport error can move to a sibling
board, and a task whose candidates are all quarantined can fail fast.
"""

from __future__ import annotations

from typing import Any

from farm import spec


def _matches(target: Any, board: Any) -> bool:
    names = list(getattr(target, "boards", None) or [])
    tags = set(getattr(target, "tags", None) or [])
    if names and board.name not in names:
        return False
    return tags <= set(board.tags or [])


def plan(
    job: Any, inventory: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Return (tasks, boards, monitors) as plain dicts ready for the scheduler actor."""
    tasks = spec.expand(job, inventory)
    by_name = {b.name: b for b in inventory.boards}
    out = []
    for task in tasks:
        record = task.model_dump(mode="json")
        candidates: list[str] = []
        for target in job.targets:
            chosen = [b for b in inventory.boards if _matches(target, b)]
            if task.board not in {b.name for b in chosen}:
                continue
            for b in chosen:
                has_proc = any(p.name == task.processor for p in b.processors)
                if has_proc and b.name not in candidates:
                    candidates.append(b.name)
        record["candidates"] = candidates or [task.board]
        out.append(record)
    used = {t["board"] for t in out} | {c for t in out for c in t["candidates"]}
    boards = [by_name[name].model_dump(mode="json") for name in sorted(used)]
    monitor_names = {b["power"]["monitor"] for b in boards if b.get("power")}
    monitors = [
        m.model_dump(mode="json") for m in (inventory.monitors or []) if m.name in monitor_names
    ]
    return out, boards, monitors
