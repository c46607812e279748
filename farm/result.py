"""The engine's result, as the head reads it: one versioned, validated record.

The engine (stdlib + torch, on the board) writes a JSON object; the station
validates it on arrival with :func:`parse_engine_result`, so a malformed or
foreign result fails there, once, as :class:`farm.errors.BadOutcome`, and every
room after it (scheduler, store, reports, metrics) reads typed fields.

The engine adds fields over time (host conditions in ``env``, a loader peak in
``memory``, ``warnings``...). Every model here keeps fields it does not name
(``extra="allow"``): they are stored and passed on untouched, and can be read as
attributes, so a newer engine never breaks an older head. What this module names
is what farm's own rooms rely on. ``version`` changes only when a named field
changes meaning.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from farm.errors import BadOutcome

ENGINE_RESULT_VERSION = 1
"""The result shape this head reads (the engine writes ``farm.engine.runner.RESULT_VERSION``)."""


class _Open(BaseModel):
    """A record that keeps the fields it does not name (see the module docstring)."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Latency(_Open):
    """Per-inference latency statistics (ms); ``p99_ms`` is None below 662 samples."""

    n: int
    mean_ms: float
    ci95_low_ms: float | None = None
    ci95_high_ms: float | None = None
    median_ms: float
    median_ci95_low_ms: float | None = None  # order statistics (farm.engine.stats.median_ci95)
    median_ci95_high_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    stdev_ms: float | None = None
    q1_ms: float | None = None
    q3_ms: float | None = None
    iqr_ms: float | None = None
    outliers: int | None = None
    cold_ms: float | None = None
    cpu_median_ms: float | None = None  # the process's CPU time per inference (timing.py)


class LayerRow(_Open):
    """One leaf layer of the layer pass (``energy_mj`` when the board has a monitor)."""

    index: int
    name: str
    type: str
    params: int | None = None
    time_ms: float | None = None
    compute_ms: float | None = None
    share: float | None = None
    nonlinear: bool = False
    input_bytes: int | None = None
    output_bytes: int | None = None
    param_bytes: int | None = None
    resident_bytes: int | None = None
    energy_mj: float | None = None


class LayerPass(_Open):
    iterations: int | None = None
    layer_sum_ms: float | None = None
    layer_compute_sum_ms: float | None = None
    layer_whole_ms: float | None = None
    nonlinear_share: float | None = None
    hook_cost_ns: float | None = None
    hook_interval_cost_ns: float | None = None
    layer_sum_vs_latency: float | None = None
    overhead_pct: float | None = None


class Memory(_Open):
    """Memory as the engine measured it (MB = 2^20 bytes)."""

    param_bytes: int | None = None
    peak_activation_bytes: int | None = None
    required_mb: float | None = None
    available_mb: float | None = None
    available_source: str | None = None
    baseline_rss_mb: float | None = None
    peak_rss_mb: float | None = None
    load_peak_rss_mb: float | None = None  # while the model loaded (the loader's own peak)
    hwm_reset: bool | None = None


class Env(_Open):
    """Where and how the task ran: provenance for reports and drift checks.

    Every field is optional: engines add host conditions (load, governor,
    temperatures...) over time, and an engine that failed early fills few.
    """

    python: str | None = None
    torch: str | None = None
    engine: str | None = None
    platform: str | None = None
    machine: str | None = None
    hostname: str | None = None
    cpu_count: int | None = None
    cpu_model: str | None = None
    kernel: str | None = None
    device: str | None = None
    threads: int | None = None
    interop_threads: int | None = None
    affinity: list[int] | None = None
    nice: int | None = None
    model: dict[str, Any] | None = None
    model_cached: bool | None = None


class EnergyNet(_Open):
    mean: float | None = None
    std: float | None = None
    ci95: list[float | None] | None = None
    n: int | None = None  # the inferences it is over (farm.power.energy.Stat)


class EnergyPerInference(_Open):
    net: EnergyNet = Field(default_factory=EnergyNet)
    gross: EnergyNet = Field(default_factory=EnergyNet)


class Energy(_Open):
    """The station's energy report (``farm.power.analyze``), plus ``battery`` if set."""

    energy_per_inference_mj: EnergyPerInference = Field(default_factory=EnergyPerInference)
    average_power_w: float | None = None
    idle_power_w: float | None = None
    alignment: dict[str, Any] = Field(default_factory=dict)
    quality: dict[str, Any] = Field(default_factory=dict)
    battery: dict[str, Any] | None = None


class Agreement(_Open):
    """A lowered artifact's outputs against eager's on seeded inputs (``farm.export.agree``)."""

    max_abs_diff: float | None = None
    top1: float | None = None  # the share of inputs whose top-1 class is eager's
    n: int | None = None


class Artifact(_Open):
    """What the station ran: its exported artifact (``farm.export.Exported.record``)."""

    sha256: str | None = None
    size_bytes: int | None = None
    runtime: str | None = None
    precision: str | None = None
    export_s: float | None = None
    agreement: Agreement | None = None
    source_sha256: str | None = None


Status = Literal["ok", "does_not_fit", "error"]


class EngineResult(_Open):
    """One task's result: what the engine measured, plus the station's energy."""

    version: int = ENGINE_RESULT_VERSION
    status: Status
    error: str | None = None
    task_id: str | None = None
    latency: Latency | None = None
    layers: list[LayerRow] = Field(default_factory=list)
    layer_pass: LayerPass | None = None
    memory: Memory = Field(default_factory=Memory)
    env: Env = Field(default_factory=Env)
    energy: Energy | None = None
    artifact: Artifact | None = None  # the station's, beside the engine's fields
    warnings: list[str] = Field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON object as the engine (and the station) wrote it: fields it did not
        write stay absent, fields this head does not name are kept."""
        return self.model_dump(mode="json", exclude_unset=True)


def parse_engine_result(raw: Any) -> EngineResult:
    """Validate the engine's JSON on arrival; ``markers`` and ``log`` are not part of
    the record (the station keeps them apart). Raises :class:`BadOutcome`."""
    if not isinstance(raw, dict):
        raise BadOutcome(f"engine result is not a JSON object: {type(raw).__name__}")
    version = raw.get("version")
    if version != ENGINE_RESULT_VERSION:
        raise BadOutcome(
            f"engine result version {version!r}; this head reads version {ENGINE_RESULT_VERSION}"
        )
    body = {k: v for k, v in raw.items() if k not in ("markers", "log")}
    try:
        return EngineResult.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadOutcome(f"engine result: {where}: {first['msg']}") from exc
