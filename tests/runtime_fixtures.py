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
