"""The study's own numbers (Lane et al. 2015, Tables 2-7), as shipped reference data.

``data/paper.json`` holds only values read from the paper, each with the table,
row and column it came from; a table that could not be read is empty and says
why. Everything here answers "what did the study report for this cell?", with
``None`` and a reason where the reference data has nothing, so the report can
say so rather than guess.
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


@dataclass(frozen=True)
class Reference:
    """The study's tables: values by (model, processor), layer rows, non-linear shares."""

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

    def model_label(self, zoo: str) -> str | None:
        return self.data["models"].get(zoo)

    def table(self, number: str) -> dict[str, Any]:
        return self.data["tables"][number]

    def missing(self, number: str) -> str | None:
        """Why table ``number`` has no values, or None when it has some."""
        table = self.table(number)
        if table.get("values") or table.get("layers"):
            return None
        return table.get("missing") or "no values in the reference data"

    def value(self, number: str, zoo: str, processor: str) -> tuple[float | None, str]:
        """The study's value for a model on a processor, and where it comes from (or why not)."""
        for entry in self.table(number).get("values", []):
            if entry.get("model") == zoo and entry.get("processor") == processor:
                if entry.get("value") is None:
                    return None, entry.get("reason") or "the study reports no value"
                return float(entry["value"]), entry["where"]
        return None, self.missing(number) or f"the study's Table {number} has no such cell"

    def layers(self, number: str, zoo: str) -> list[dict[str, Any]]:
        """The study's layer rows (Table 5 or 6) for a model, in order."""
        return [r for r in self.table(number).get("layers", []) if r.get("model") == zoo]

    def nonlinear_share(self, zoo: str, activation: str) -> float | None:
        """The study's Table 7: the share of runtime in non-linear layers."""
        for entry in self.table("7").get("values", []):
            if entry.get("model") == zoo and entry.get("activation") == activation:
                return entry.get("share")
        return None


@cache
def reference() -> Reference:
    """The packaged reference data, checked against the inventory's processor names."""
    text = resources.files("farm.report").joinpath("data/paper.json").read_text()
    ref = Reference(json.loads(text))
    known = set(get_args(PaperProcessor))
    if set(ref.data["processors"]) != known:
        raise RuntimeError(f"data/paper.json processors differ from the inventory's: {known}")
    return ref


def ratio(farm: float | None, study: float | None) -> float | None:
    """farm / study, or None when either is missing or the study's is zero."""
    if farm is None or not study:
        return None
    return farm / study
