"""Shared fixtures. Fixture modules of each room are registered as plugins below."""

from __future__ import annotations

import os

import pytest

pytest_plugins: list[str] = ["testbed_fixtures", "runtime_fixtures"]


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray for the whole test session (it takes ~4 s to start)."""
    import ray

    from farm.scheduler.cluster import init_embedded

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    init_embedded()  # as `farm submit` starts it: tried again when a busy machine is slow
    yield ray
    ray.shutdown()


@pytest.fixture
def scheduler_cleanup(ray_session):
    """A list to put scheduler actors in: each is killed after the test."""
    actors = []
    yield actors
    for actor in actors:
        ray_session.kill(actor)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "farm.db"
