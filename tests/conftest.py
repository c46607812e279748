"""Shared fixtures. Fixture modules of each room are registered as plugins below.

The suite runs in two phases (``python3 tests/run.py``): everything not marked
``timing`` on xdist workers, then the ``timing`` tests alone. Each worker is a
process of its own with its own session fixtures — its own Ray, its own SSH test
bed, its own temporary directories (pytest gives each worker a base temp of its
own) — and, from ``_private_farm_home`` below, its own farm cache and default
store, so two workers never share a file. A module whose tests share a
module-scoped fixture (a job run once, a Prometheus) stays on one worker
(``xdist_group``), so its fixture is built once.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins: list[str] = ["testbed_fixtures", "runtime_fixtures"]

# The modules that take longest on two workers (measured 2026-12-06), slowest first.
SLOWEST_FIRST = [
    "test_report", "test_farm_ssh", "test_head", "test_interrupts", "test_lease",
    "test_monitoring", "test_aoti", "test_cli", "test_engine", "test_native", "test_export",
    "test_torchfree", "test_slow_board", "test_bootstrap", "test_runtimes",
    "test_store_file", "test_adb", "test_nightly", "test_spec_fuzz",
]  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def _private_farm_home(tmp_path_factory):
    """``FARM_CACHE`` (node records, the cluster token, the station's cache) and
    ``FARM_DB`` of this test session's own, for what a test does not name itself:
    a test never reads or writes ``~/.cache/farm`` or another worker's files."""
    home = tmp_path_factory.mktemp("farm-home")
    saved = {k: os.environ.get(k) for k in ("FARM_CACHE", "FARM_DB")}
    os.environ["FARM_CACHE"] = str(home / "cache")
    os.environ["FARM_DB"] = str(home / "farm.db")
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Keep a module whose tests share a module-scoped fixture on one xdist worker
    (``--dist loadgroup``; xdist hands out the largest groups first).

    ``tryfirst``: xdist's worker reads the ``xdist_group`` marks in its own hook of
    this name, which would otherwise run first and see none, and every test would
    be a group of its own (each worker then built each module fixture, twice)."""
    shared: set[str] = set()
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        for fixturedefs in defs.name2fixturedefs.values() if defs else ():
            if any(d.scope == "module" for d in fixturedefs):
                shared.add(item.module.__name__)
    for item in items:
        if item.module.__name__ in shared:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    # Longest first (tests/run.py passes --no-loadscope-reorder, so xdist hands work out
    # in this order): a long module started last would keep one worker busy alone at
    # the end. The order changes only how long the suite takes, never what it checks.
    first = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: first.get(item.module.__name__, len(first)))
