"""The study's own numbers (Lane et al. 2015, Tables 1-7), as shipped reference data.

``data/paper.json`` holds the values of the paper's text, each with the table,
row and column it was read from (``where``). Everything here answers "what did
the study report for this?", with ``None`` and a reason where the study has no
value, so the report says so rather than guesses.

Which of the study's models a cell is (``study_model``): the zoo model it was
built from and its options. DeepEar is two of the study's rows: the whole model
(three DNNs, Tables 1-4) and its emotion DNN alone (Tables 6 and 7); each is
compared only with its own tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, get_args

from farm.spec.inventory import PaperProcessor

METRIC_TABLES = {"energy": "2", "time": "3", "battery": "4"}
"""The study's table for each whole-model metric."""

PROCESSORS: tuple[str, ...] = get_args(PaperProcessor)
"""The study's processors, in its tables' column order."""


@dataclass(frozen=True)
class Reference:
    """The study's tables: values by (model, processor), layer rows, activation shares."""

    data: dict[str, Any]

    @property
    def citation(self) -> str:
        return self.data["citation"]

    @property
    def url(self) -> str:
        return self.data["url"]

    @property
    def provenance(self) -> dict[str, Any]:
        return self.data["provenance"]

    def processor_label(self, pid: str) -> str:
        return self.data["processors"].get(pid, pid)

    def limit_mb(self, pid: str | None) -> tuple[float | None, str]:
        """The memory the study says a processor may use (MB), and where it says so."""
        entry = self.data.get("limits_mb", {}).get(pid or "")
        if entry is None:
            return None, "the study states no memory limit for it"
        return float(entry["mb"]), entry["where"]

    def model_name(self, key: str | None) -> str | None:
        """The study's name of a model (``Deep KWS``), None for a model the study lacks."""
        entry = self.data["models"].get(key or "")
        return entry["name"] if entry else None

    def model_tables(self, key: str | None) -> list[str]:
        entry = self.data["models"].get(key or "")
        return list(entry["tables"]) if entry else []

    def table(self, number: str) -> dict[str, Any]:
        return self.data["tables"][number]

    def missing(self, number: str) -> str | None:
        """Why table ``number`` has no values, or None when it has some."""
        table = self.table(number)
        if table.get("values") or table.get("layers") or table.get("rows"):
            return None
        return table.get("missing") or "no values in the reference data"

    def value(self, number: str, key: str | None, processor: str) -> tuple[float | None, str]:
        """The study's value for a model on a processor, and where it comes from (or why not)."""
        if number not in self.model_tables(key):
            return None, self._not_in(number, key)
        for entry in self.table(number).get("values", []):
            if entry.get("model") == key and entry.get("processor") == processor:
                if entry.get("value") is None:
                    return None, entry.get("reason") or "the study reports no value"
                return float(entry["value"]), entry["where"]
        return None, f"the study's Table {number} has no such cell"

    def row(self, number: str, key: str | None) -> dict[str, Any] | None:
        """Table 1's row for a model."""
        return next((r for r in self.table(number).get("rows", []) if r["model"] == key), None)

    def layers(self, number: str, key: str | None) -> list[dict[str, Any]]:
        """The study's layer rows (Table 5 or 6) for a model, in order."""
        return [r for r in self.table(number).get("layers", []) if r.get("model") == key]

    def activation_share(self, key: str | None, activation: str) -> tuple[float | None, str]:
        """The study's Table 7: the activation layers' share of runtime (a fraction)."""
        for entry in self.table("7").get("values", []):
            if entry.get("model") == key and entry.get("activation") == activation:
                return entry["percent"] / 100, entry["where"]
        return None, self._not_in("7", key)

    def _not_in(self, number: str, key: str | None) -> str:
        name = self.model_name(key)
        if name is None:
            return "not one of the study's models"
        tables = self.model_tables(key)
        return f"the study has {name} in Tables {', '.join(tables)} only"


@cache
def reference() -> Reference:
    """The packaged reference data, checked against the inventory's processor names."""
    text = resources.files("farm.report").joinpath("data/paper.json").read_text()
    ref = Reference(json.loads(text))
    if set(ref.data["processors"]) != set(PROCESSORS):
        raise RuntimeError(f"data/paper.json processors differ from the inventory's: {PROCESSORS}")
    return ref


def study_model(zoo: str | None, options: dict[str, Any] | None) -> str | None:
    """Which of the study's models a zoo model with these options is (None: none of them)."""
    options = options or {}
    if zoo == "deepear":
        part = options.get("part", "whole")
        return {"whole": "deepear", "emotion": "deepear-emotion"}.get(part)
    return zoo if zoo in ("alexnet", "svhn", "kws") else None


def ratio(farm: float | None, study: float | None) -> float | None:
    """farm / study, or None when either is missing or the study's is zero."""
    if farm is None or not study:
        return None
    return farm / study
