"""farm's Grafana dashboards, as code (Grafana's ``grafana-foundation-sdk``).

    python3 grafana/generate.py        # rewrites grafana/dashboards/*.json

The JSON files are committed (Grafana's file provisioning loads them) and a test
checks they are exactly what this file generates, so edit here, then run it.
Every panel reads the datasource chosen in the ``datasource`` variable: no host
is written into a dashboard.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
SCHEMA_VERSION = 39  # Grafana 10.4
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
CELL = 'model=~"$model", board=~"$board", processor=~"$processor"'


def _query(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        query = query.legend_format(legend)
    return query.instant() if instant else query.range()


def _series(title: str, unit: str, *queries: prometheus.Dataquery, span: int = 12):
    panel = timeseries.Panel().title(title).unit(unit).datasource(DATASOURCE).span(span).height(8)
    for q in queries:
        panel = panel.with_target(q)
    return panel


def _datasource_var() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def _label_var(name: str, query: str, *, multi: bool = True) -> dashboard.QueryVariable:
    var = (
        dashboard.QueryVariable(name)
        .label(name)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(multi)
    )
    return var.include_all(True).all_value(".*") if multi else var


def _dashboard(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["farm"])
        .time("now-24h", "now")
        .refresh("1m")
        .with_variable(_datasource_var())
    )


def overview() -> dashboard.Dashboard:
    d = _dashboard("farm-overview", "farm overview", "Queue, throughput, board health, failures")
    return (
        d.with_panel(
            _series(
                "Queue depth",
                "short",
                _query("sum by (band) (farm_queue_depth)", "{{band}}"),
            )
        )
        .with_panel(
            _series(
                "Throughput (tasks ending per second)",
                "ops",
                _query(
                    'sum by (state) (rate(farm_task_transitions_total{state=~"done|does-not-fit|failed|cancelled"}[$__rate_interval]))',
                    "{{state}}",
                ),
            )
        )
        .with_panel(
            stat.Panel()
            .title("Boards by health")
            .datasource(DATASOURCE)
            .span(8)
            .height(6)
            .with_target(
                _query("count by (state) (farm_board_state == 1)", "{{state}}", instant=True)
            )
        )
        .with_panel(
            stat.Panel()
            .title("Jobs by state")
            .datasource(DATASOURCE)
            .span(8)
            .height(6)
            .with_target(_query("sum by (state) (farm_jobs)", "{{state}}", instant=True))
        )
        .with_panel(
            stat.Panel()
            .title("Scheduler loop lag")
            .unit("s")
            .datasource(DATASOURCE)
            .span(8)
            .height(6)
            .with_target(_query("max(farm_scheduler_loop_lag_seconds)", instant=True))
        )
        .with_panel(
            _series(
                "Failures: failed tasks and transport errors",
                "short",
                _query(
                    'sum(increase(farm_task_transitions_total{state="failed"}[$__rate_interval]))',
                    "failed tasks",
                ),
                _query(
                    "sum by (kind) (increase(farm_transport_errors_total[$__rate_interval]))",
                    "{{kind}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Scheduler loop lag",
                "s",
                _query("max(farm_scheduler_loop_lag_seconds)", "lag"),
            )
        )
        .with_panel(
            _series(
                "Task and deploy durations (p90)",
                "s",
                _query(
                    "histogram_quantile(0.9, sum by (le) (rate(farm_task_duration_seconds_bucket[$__rate_interval])))",
                    "task",
                ),
                _query(
                    "histogram_quantile(0.9, sum by (le) (rate(farm_deploy_duration_seconds_bucket[$__rate_interval])))",
                    "deploy",
                ),
            )
        )
    )


def measurements() -> dashboard.Dashboard:
    d = _dashboard(
        "farm-measurements",
        "farm measurements",
        "Latency, energy, memory and layer shares per model × board × processor × variant",
    )
    cells = "{{model}} {{board}}/{{processor}} {{variant}}"
    for name in ("model", "board", "processor"):
        scope = {
            "model": "",
            "board": '{model=~"$model"}',
            "processor": '{model=~"$model", board=~"$board"}',
        }
        d = d.with_variable(
            _label_var(
                name,
                f"label_values(farm_cell_last_measured_timestamp_seconds{scope[name]}, {name})",
            )
        )
    # one series per cell, one metric each
    for title, unit, selector in (
        ("Latency (mean)", "s", f"farm_cell_latency_mean_seconds{{{CELL}}}"),
        ("Latency (median)", "s", f'farm_cell_latency_seconds{{{CELL}, quantile="0.5"}}'),
        (
            "Energy per inference (net of idle)",
            "J",
            f"farm_cell_energy_per_inference_joules{{{CELL}}}",
        ),
        ("Average power", "watt", f"farm_cell_power_watts{{{CELL}}}"),
        ("Battery life (estimate)", "s", f"farm_cell_battery_life_seconds{{{CELL}}}"),
    ):
        d = d.with_panel(_series(title, unit, _query(selector, cells)))
    return (
        d.with_panel(
            _series(
                "Memory against the processor's limit",
                "bytes",
                _query(f"farm_cell_memory_required_bytes{{{CELL}}}", "required " + cells),
                _query(f"farm_cell_memory_peak_rss_bytes{{{CELL}}}", "peak RSS " + cells),
                _query(
                    f"max by (board, processor) (farm_cell_memory_limit_bytes{{{CELL}}})",
                    "limit {{board}}/{{processor}}",
                ),
            )
        )
        .with_panel(
            bargauge.Panel()
            .title("Layer shares of the forward pass (latest run)")
            .unit("percentunit")
            .datasource(DATASOURCE)
            .span(12)
            .height(10)
            .with_target(
                _query(f"farm_cell_layer_time_ratio{{{CELL}}}", "{{model}} {{layer}}", instant=True)
            )
        )
        .with_panel(
            _series(
                "Alignment uncertainty",
                "s",
                _query(f"farm_cell_alignment_uncertainty_seconds{{{CELL}}}", cells),
            )
        )
        .with_panel(
            table.Panel()
            .title("Age of each cell's latest result")
            .unit("s")
            .datasource(DATASOURCE)
            .span(24)
            .height(8)
            .with_target(
                _query(
                    f"time() - farm_cell_last_measured_timestamp_seconds{{{CELL}}}",
                    cells,
                    instant=True,
                )
            )
        )
    )


def board_detail() -> dashboard.Dashboard:
    d = _dashboard(
        "farm-board", "farm board detail", "One board: live power, its cells, its health"
    )
    d = d.with_variable(_label_var("board", "label_values(farm_board_state, board)", multi=False))
    return (
        d.with_panel(
            _series(
                "Live power",
                "watt",
                _query('farm_monitor_power_watts{board="$board"}', "{{monitor}} {{channel}}"),
                span=24,
            )
        )
        .with_panel(
            statetimeline.Panel()
            .title("Health (quarantine periods)")
            .datasource(DATASOURCE)
            .span(24)
            .height(5)
            .with_target(_query('farm_board_state{board="$board"} == 1', "{{state}}"))
        )
        .with_panel(
            table.Panel()
            .title("Its cells: when each was last measured")
            .unit("dateTimeAsIso")
            .datasource(DATASOURCE)
            .span(12)
            .height(8)
            .with_target(
                _query(
                    'farm_cell_last_measured_timestamp_seconds{board="$board"} * 1000',
                    "{{model}} {{processor}} {{variant}}",
                    instant=True,
                )
            )
        )
        .with_panel(
            _series(
                "Its cells' latency (mean)",
                "s",
                _query(
                    'farm_cell_latency_mean_seconds{board="$board"}',
                    "{{model}} {{processor}} {{variant}}",
                ),
            )
        )
    )


DASHBOARDS = {
    "farm-overview": overview,
    "farm-measurements": measurements,
    "farm-board": board_detail,
}


def render(build) -> str:
    """The dashboard's JSON as committed: sorted keys, two-space indent, final newline."""
    model = build().build()
    model.schema_version = SCHEMA_VERSION
    for number, panel in enumerate(model.panels or [], start=1):  # ids and refIds Grafana wants
        panel.id_val = number
        for letter, target in zip("ABCDEFGH", panel.targets or [], strict=False):
            target.ref_id = letter
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, build in DASHBOARDS.items():
        (OUT / f"{name}.json").write_text(render(build))
    return 0


if __name__ == "__main__":
    sys.exit(main())
