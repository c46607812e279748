"""An embedded run's measurements, pushed to a Prometheus pushgateway when it ends.

The grouping key is the job's *name* (``farm_job``): tonight's push of
``nightly`` replaces last night's, where a job id would leave one group per
night behind on the gateway forever.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.registry import Collector

from farm.errors import FarmError
from farm.metrics.cells import cell_families
from farm.metrics.source import StoreSource

PUSH_JOB = "farm"
TIMEOUT_S = 10.0


class _JobCells(Collector):
    def __init__(self, source: StoreSource, job_id: str):
        self._source = source
        self._job_id = job_id

    def collect(self):
        return iter(cell_families(self._source.newest_cells(self._job_id)))


def push_job(url: str, source: StoreSource, job_id: str, job_name: str) -> None:
    """Replace the ``farm_job=<job_name>`` group on the gateway at ``url`` with the
    measurement families of the job's cells."""
    registry = CollectorRegistry()
    registry.register(_JobCells(source, job_id))
    try:
        push_to_gateway(
            url, job=PUSH_JOB, grouping_key={"farm_job": job_name}, registry=registry,
            timeout=TIMEOUT_S,
        )  # fmt: skip
    except OSError as exc:  # urllib's URLError and HTTPError are OSErrors
        raise FarmError(f"--pushgateway {url}: push failed: {exc}") from exc
