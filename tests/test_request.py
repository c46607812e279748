"""The engine request's one serialization: ``Request.to_json`` is what the station
sends, ``parse_request`` what the engine reads; nothing is lost between them."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from farm.engine.pulse import PulseSpec
from farm.engine.request import Request, RequestError, parse_request

EVERY_FIELD = Request(
    artifact="/cache/ab12.farm",
    task_id="j1.4",
    device="cuda:0",
    threads=3,
    interop_threads=2,
    nice=5,
    affinity=(0, 2),
    memory_mb=512.5,
    batch=4,
    iterations=77,
    warmup=3,
    layers=False,
    layer_iterations=9,
    memory=False,
    sync_pulse=PulseSpec(chips=8, chip_ms=12.5, seed=3),
    board_lock="/tmp/board/.measuring",
    runtime="onnxruntime",
    precision="int8",
)


def test_every_field_is_set_away_from_its_default_here():
    """So the round trip below covers each field (a new field must be added here)."""
    defaults = Request(artifact="x")
    same = [
        f.name for f in fields(Request) if getattr(EVERY_FIELD, f.name) == getattr(defaults, f.name)
    ]
    assert same == []


def test_every_field_survives_the_round_trip_through_json():
    wire = json.loads(json.dumps(EVERY_FIELD.to_json()))
    assert parse_request(wire) == EVERY_FIELD
    assert parse_request(json.loads(json.dumps(Request(artifact="a").to_json()))) == Request("a")


def test_unknown_keys_are_still_refused():
    wire = EVERY_FIELD.to_json() | {"iteration": 10}
    with pytest.raises(RequestError, match="unknown request keys: iteration"):
        parse_request(wire)


def test_the_engines_defaults_are_the_ones_a_cell_key_leaves_out():
    """A job without a runtime/precision axis runs the request's defaults, so the cell
    key (``farm.spec.VARIANT_DEFAULTS``) may pair it with a job that names them."""
    from farm.spec import VARIANT_DEFAULTS

    plain = Request(artifact="x")
    assert (plain.runtime, plain.precision) == (
        VARIANT_DEFAULTS["runtime"],
        VARIANT_DEFAULTS["precision"],
    )
