"""Lowered artifacts shared by the runtime tests: each (model, runtime, precision) is
exported once per test session (ExecuTorch's lowering takes tens of seconds)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory):
    """A station's cache (``<dir>/artifacts``) shared by the session's runtime tests."""
    path = tmp_path_factory.mktemp("runtime-station") / "artifacts"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def lowered(export_cache):
    """``lowered(model, runtime, precision)`` -> `farm.export.Exported`, made once."""
    from farm import export

    made: dict[tuple, object] = {}

    def get(model: str, runtime: str, precision: str = "fp32"):
        key = (model, runtime, precision)
        if key not in made:
            made[key] = export.export(
                model, runtime=runtime, precision=precision, cache_dir=export_cache
            )
        return made[key]

    return get


@pytest.fixture
def station(export_cache):
    """A station whose artifacts are the session's (``export_cache``), with fake boards."""
    from farm.scheduler.station import Station
    from farm.testing import transport as fake

    fake.reset()
    station = Station("test", cache_dir=export_cache.parent)
    yield station
    station.close()
    fake.reset()


def kws_payload(variant: dict):
    """One kws task of ``variant`` on the fake board ``f0``, as the head hands it out."""
    from farm.scheduler.messages import TaskPayload
    from farm.spec import Board, Measure, ModelRef, PlannedTask

    board = Board.model_validate(
        {"name": "f0", "transport": "fake", "processors": [{"name": "cpu"}]}, strict=False
    )
    task = PlannedTask(
        index=0, key="kws/f0/cpu", model=ModelRef(name="kws", zoo="kws"), board="f0",
        processor="cpu", variant=variant, measure=Measure(iterations=3, warmup=0),
        candidates=["f0"],
    )  # fmt: skip
    return TaskPayload(task_id="j.0", job_id="j", task=task, board=board, attempt=1)
