"""A sweep as the report reads it: one ``Cell`` per task, with its result and layers.

A cell is one model on one board's processor under one variant. It answers the
questions every table asks of it (a metric's mean and 95% CI, why it has no
value, which of the study's processors it stands for) so the tables, figures and
files never dig through result JSON themselves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from farm import store
from farm.report import source, vocabulary
from farm.report.paper import study_model
from farm.report.tables import flat, is_busy, warnings_of
from farm.result import EngineResult, Env
from farm.spec import CellKey
from farm.spec.cell import effective
from farm.spec.inventory import Inventory
from farm.states import TaskState
from farm.store.read import Reader


@dataclass(frozen=True)
class Estimate:
    """A measured value with its 95% confidence interval (bounds None when not known).

    ``value`` is the headline: the median for time (robust to a busy board's stray
    inferences; its interval from order statistics), the mean for energy. ``mean`` is
    the mean beside a median (None where the value is the mean)."""

    value: float
    low: float | None = None
    high: float | None = None
    n: int | None = None
    mean: float | None = None


@dataclass(frozen=True)
class Cell:
    """One task of the sweep: where it ran, what it measured, and why not if it did not."""

    stored: store.Cell  # the store's record: the task and its validated result
    layers: list[dict[str, Any]] = field(default_factory=list)  # the store's layer rows
    paper: str | None = None  # the study's processor this board/processor stands for

    @property
    def task(self) -> str:
        return self.stored.task.id

    @property
    def model(self) -> str:
        return self.stored.task.model

    @property
    def place(self) -> str:
        """``board/processor``, plus any knob the variant changes other than the
        activation (``farm.spec.cell.effective``: a default named is no change)."""
        base = f"{self.stored.task.board}/{self.stored.task.processor}"
        other = {k: v for k, v in effective(self.variant).items() if k != "activation"}
        if not other:
            return base
        return base + " " + ",".join(f"{k}={v}" for k, v in other.items())

    @property
    def variant(self) -> dict[str, Any]:
        return self.stored.task.variant

    @property
    def state(self) -> str:
        return self.stored.task.state.value

    @property
    def result(self) -> EngineResult | None:
        """The store's validated result (None: the task has none)."""
        return self.stored.result

    @property
    def env(self) -> Env:
        """Where and how it ran (an empty ``Env`` for a task without a result); fields a
        newer engine adds are kept as attributes (``Env.model_extra``)."""
        return self.result.env if self.result is not None else Env()

    @property
    def activation(self) -> str:
        """The non-linearity the model ran with (the zoo's default is ReLU)."""
        return self.variant.get("activation") or self.model_meta.get("activation") or "relu"

    @property
    def model_meta(self) -> dict[str, Any]:
        """The artifact's manifest as the engine recorded it (``env.model``)."""
        return self.env.model or {}

    @property
    def zoo(self) -> str:
        """The zoo model behind a cell (a job may rename it, e.g. ``deepear-emotion``)."""
        return self.model_meta.get("zoo") or self.model

    @property
    def options(self) -> dict[str, Any]:
        """The model's build options as the artifact recorded them (``{part: emotion}``)."""
        return dict(self.model_meta.get("options") or {})

    @property
    def study(self) -> str | None:
        """Which of the study's models this is (``deepear`` whole, ``deepear-emotion``...)."""
        return study_model(self.zoo, self.options)

    @property
    def params(self) -> int | None:
        return self.model_meta.get("params")

    @property
    def input_shape(self) -> str | None:
        shape = self.model_meta.get("input_shape")
        return "×".join(str(d) for d in shape) if shape else None

    @property
    def key(self) -> CellKey:
        """What pairs a cell across two sweeps (``farm.spec.CellKey``): model, board,
        processor and the options in effect, a default named or not (ReLU, eager, fp32)."""
        return self.stored.key

    @property
    def warnings(self) -> list[str]:
        """Every warning the result carries: the engine's, then the power analysis's."""
        return warnings_of(self.result)

    @property
    def busy(self) -> bool:
        """Measured on a board that was not quiet (load, CPU steal)."""
        return any(is_busy(w) for w in self.warnings)

    def time_ms(self) -> Estimate | None:
        """The median with its 95% CI (order statistics), the mean beside it."""
        lat = self.result.latency if self.result is not None else None
        if lat is None:
            return None
        return Estimate(
            lat.median_ms, lat.median_ci95_low_ms, lat.median_ci95_high_ms, lat.n, lat.mean_ms
        )

    def energy_mj(self) -> Estimate | None:
        """Net energy per inference (above idle), the study's figure."""
        energy = self.result.energy if self.result is not None else None
        net = energy.energy_per_inference_mj.net if energy is not None else None
        if net is None or net.mean is None:
            return None
        low, high = net.ci95 or (None, None)
        return Estimate(net.mean, low, high, net.n)

    def battery_h(self) -> Estimate | None:
        energy = self.result.energy if self.result is not None else None
        hours = (energy.battery or {}).get("hours") if energy is not None else None
        return None if hours is None else Estimate(hours)

    def memory(self, name: str) -> float | None:
        """A memory figure in MB: ``required_mb``, ``available_mb``, ``peak_rss_mb``,
        ``load_peak_rss_mb`` (None when the result lacks it)."""
        if self.result is None:
            return None
        value = getattr(self.result.memory, name, None)
        return value if value is not None else getattr(self.result, name, None)

    @property
    def activation_share(self) -> float | None:
        """Table 7's figure: the activation layers' share of the layer pass (None: none)."""
        return vocabulary.activation_share(self.layers) if self.layers else None

    def reason(self, metric: str) -> str:
        """Why this cell has no value for ``metric`` (``time``, ``energy``, ``battery``)."""
        if self.state == TaskState.DOES_NOT_FIT.value:
            need, have = self.memory("required_mb"), self.memory("available_mb")
            if need is not None and have is not None:
                return f"does not fit: needs {need:.0f} MB, has {have:.0f} MB"
            why = (self.stored.task.error or "").strip().splitlines()  # a runtime's reason
            return f"does not fit: {why[0][:80]}" if why else "does not fit"
        if self.state == TaskState.FAILED.value:
            first = (self.stored.task.error or "").strip().splitlines()
            return "failed" + (f": {first[0][:80]}" if first else "")
        if self.state != TaskState.DONE.value:
            return self.state
        if metric == "energy":
            return "no power monitor on this board"
        if metric == "battery":
            return (
                "no battery given for this board"
                if self.result is not None and self.result.energy is not None
                else "no power monitor on this board"
            )
        return "not measured"


@dataclass(frozen=True)
class Sweep:
    """A job and its cells, in task order."""

    job: store.JobRecord
    cells: list[Cell]

    @property
    def id(self) -> str:
        return self.job.id

    def models(self) -> list[str]:
        return list(dict.fromkeys(c.model for c in self.cells))

    def places(self) -> list[str]:
        return list(dict.fromkeys(c.place for c in self.cells))

    def cell(self, model: str, place: str, activation: str | None = None) -> Cell | None:
        """The cell of ``model`` at ``place`` (with ``activation``, or the default one)."""
        for c in self.cells:
            if c.model == model and c.place == place:
                if activation is None and c.variant.get("activation") in (None, "relu"):
                    return c
                if activation is not None and c.activation == activation:
                    return c
        return None


def paper_processors(inventory: Inventory | None) -> dict[tuple[str, str], str]:
    """(board, processor) -> the study's processor the inventory says it stands for."""
    if inventory is None:
        return {}
    return {(b.name, p.name): p.paper for b in inventory.boards for p in b.processors if p.paper}


def load(reader: Reader, ref: str, inventory: Inventory | None = None) -> Sweep:
    """The sweep of job ``ref`` (an id or ``latest``), read through ``farm.report.source``."""
    job = source.job(reader, ref)
    paper = paper_processors(inventory)
    cells = [
        Cell(
            stored,
            _layers(reader, stored) if stored.result else [],
            paper.get((stored.task.board, stored.task.processor)),
        )
        for stored in source.cells(reader, job.id)
    ]
    return Sweep(job, cells)


def _layers(reader: Reader, stored: store.Cell) -> list[dict[str, Any]]:
    """The store's layer rows, with the operation ``kind`` a graph's rows carry in the
    result (an exported model's layer pass; zoo and eager rows have none)."""
    extra = {
        row.index: {k: getattr(row, k) for k in ("kind", "module") if hasattr(row, k)}
        for row in (stored.result.layers if stored.result else [])
    }
    return [asdict(r) | extra.get(r.index, {}) for r in source.layers(reader, stored.task.id)]


def records(sweep: Sweep) -> list[dict[str, Any]]:
    """One flat record per cell: the results CSV columns, plus the report's own."""
    out = []
    for c in sweep.cells:
        env = c.env
        out.append(
            {
                **flat(c.stored),
                "zoo": c.zoo,
                "options": _scalar(c.options) if c.options else None,
                "activation": c.activation,
                "study_model": c.study,
                "params": c.params,
                "input_shape": c.input_shape,
                "paper_processor": c.paper,
                "activation_share": c.activation_share,
                "load_peak_rss_mb": c.memory("load_peak_rss_mb"),
                "busy": c.busy,
                "warnings": "; ".join(c.warnings) or None,
                "reason": None if c.state == TaskState.DONE.value else c.reason("time"),
                "artifact_sha256": c.model_meta.get("sha256"),
                "engine": _scalar(env.engine),
                "torch": env.torch,
                "threads": env.threads,
            }
        )
    return out


def layer_records(sweep: Sweep) -> list[dict[str, Any]]:
    """One flat record per layer of every cell (``layers.csv``), numbered from 1 as the
    study numbers them, with the study's type and group (``farm.report.vocabulary``)."""
    out = []
    for c in sweep.cells:
        for r, grp in zip(c.layers, vocabulary.group(c.layers), strict=True):
            out.append(
                {
                    "task": c.task, "model": c.model, "board": c.stored.task.board,
                    "processor": c.stored.task.processor, "activation": c.activation,
                    "number": r["index"] + 1, "name": r["name"], "type": r["type"],
                    "kind": r.get("kind"), "study_type": vocabulary.study_type(r),
                    "group": grp, "params": r.get("params"), "time_ms": r.get("time_ms"),
                    "share": r.get("share"), "resident_bytes": r.get("resident_bytes"),
                    "energy_mj": r.get("energy_mj"), "busy": c.busy,
                }
            )  # fmt: skip
    return out


def _scalar(value: Any) -> Any:
    """A value fit for one CSV cell: dicts and lists become compact JSON."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value
