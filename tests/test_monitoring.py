"""Monitoring end to end: a real farm head scraped by a real Prometheus.

The head (``farm head start --metrics-address``) runs a short sweep on the SSH
test bed; board0 is metered by a RAPL monitor reading a fake powercap tree that
this process advances at a known power. Prometheus (Debian's package) scrapes the
head every second with the repository's alert rules loaded. Then every panel
query of every committed dashboard, template variables filled in from
Prometheus's own label values, must return data through Prometheus's HTTP API.
The same store then feeds ``farm exporter``, ``farm metrics backfill`` and an
embedded run pushes to a real pushgateway.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_head import Farm, job_file

from farm.store import Store
from farm.testing.sysfs import FakeRapl
from farm.testing.testbed import Testbed, free_port
from farm.testing.waiting import wait_for

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
RULES = ROOT / "deploy" / "prometheus" / "farm-rules.yml"
RAPL_WATTS = 7.5
SWEEP_CELLS = 3  # kws on board0, board1, board2
SCRAPED_S = 120  # a scrape has 1 s to answer; on a loaded machine some miss it


def http_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read())


def http_text(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read().decode()


def start_daemon(argv: list[str], ready_url: str, log: Path) -> subprocess.Popen:
    """A Prometheus-family daemon, returned once ``ready_url`` answers."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"{argv[0]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return urllib.request.urlopen(ready_url, timeout=2).status == 200
        except OSError:
            return False

    wait_for(ready, 60, f"{argv[0]} to be ready")
    return proc


def stop_daemon(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Prometheus:
    """A real Prometheus on a free loopback port, own config and storage."""

    def __init__(self, root: Path, target: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "farm-head", "static_configs": [{"targets": [target]}]}
            ],
        }
        self.config = root / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        argv = [
            "prometheus", f"--config.file={self.config}", f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]  # fmt: skip
        self.proc = start_daemon(argv, f"{self.url}/-/ready", root / "prometheus.log")

    def api(self, path: str, **params: Any) -> Any:
        reply = http_json(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}")
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, expr: str, **params: Any) -> list[dict[str, Any]]:
        return self.api("query", query=expr, **params)["result"]

    def targets(self) -> str:
        """What Prometheus says of its scrapes (for a failure message)."""
        active = self.api("targets")["activeTargets"]
        return "; ".join(
            f"{t['scrapeUrl']} {t['health']} {t['lastError']!r} {t['lastScrapeDuration']:.2f}s"
            for t in active
        )

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step=1)["result"]


@pytest.fixture(scope="module")
def rapl(tmp_path_factory) -> Iterator[FakeRapl]:
    fake = FakeRapl(tmp_path_factory.mktemp("powercap"), {"package-0": RAPL_WATTS})
    fake.run(period_s=0.01)
    yield fake
    fake.halt()


@pytest.fixture(scope="module")
def metered_inventory(testbed: Testbed, rapl: FakeRapl, tmp_path_factory) -> Path:
    """The test bed with board0 on a RAPL monitor (and a battery to estimate)."""
    doc = yaml.safe_load(testbed.inventory_path.read_text())
    doc["monitors"] = [
        {
            "name": "bench-rapl",
            "backend": "rapl",
            "station": "head",
            "options": {"root": str(rapl.root), "poll_hz": 100, "pre_idle_s": 2, "post_idle_s": 2},
        }
    ]
    board0 = next(b for b in doc["boards"] if b["name"] == "board0")
    board0["power"] = {
        "monitor": "bench-rapl",
        "channel": "package",
        "battery": {"capacity_mah": 2300, "voltage_v": 3.8, "period_s": 5.0},
    }
    path = tmp_path_factory.mktemp("inventory") / "metered.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def swept(testbed: Testbed, metered_inventory: Path, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A head with its /metrics, a Prometheus scraping it, and one finished sweep."""
    farm = Farm(tmp_path_factory.mktemp("monitored"))
    metrics = f"127.0.0.1:{farm.metrics_port}"
    prom = None
    try:
        farm.start_head()
        prom = Prometheus(farm.root, metrics)
        wait_for(lambda: prom.query('up{job="farm-head"} == 1'), SCRAPED_S, "the first scrape")
        started = time.time()
        job = job_file(farm.root, "nightly", iterations=300)
        doc = yaml.safe_load(job.read_text())  # each cell on its own board: board0 is metered
        job.write_text(yaml.safe_dump({**doc, "migrate": False, "retries": 3}))
        farm.ok("submit", str(job), "-i", str(metered_inventory), "--address", farm.address)
        try:
            wait_for(
                lambda: len(prom.query("farm_cell_last_measured_timestamp_seconds")) == SWEEP_CELLS,
                SCRAPED_S,
                "Prometheus to scrape every cell's result",
            )
        except pytest.fail.Exception as exc:
            raise AssertionError(f"{exc}; targets: {prom.targets()}") from None
        yield {"farm": farm, "prom": prom, "metrics": metrics, "start": started}
    finally:
        if prom is not None:
            stop_daemon(prom.proc)
        farm.run("head", "stop", "--address", farm.address, timeout=60)
        farm.kill_everything()


# -- dashboards against the real Prometheus ---------------------------------------------------

_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")
_RANGE_VARS = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "5m"}


def fill(text: str, values: dict[str, str]) -> str:
    for name, value in {**_RANGE_VARS, **values}.items():
        text = text.replace(name if name.startswith("$__") else f"${name}", value)
    return text


def resolve_variables(dash: dict[str, Any], prom: Prometheus) -> dict[str, str]:
    """Each query variable takes the first value Prometheus offers for it (in order,
    so later variables see earlier choices), as Grafana does on load."""
    values: dict[str, str] = {}
    for var in dash["templating"]["list"]:
        if var["type"] == "datasource":
            continue
        found = _LABEL_VALUES.match(var["query"])
        assert found, f"{dash['uid']}: variable {var['name']} is not a label_values query"
        params = {"match[]": fill(found["match"], values)} if found["match"] else {}
        options = prom.api(f"label/{found['label']}/values", **params)
        assert options, f"{dash['uid']}: variable {var['name']} has no values"
        values[var["name"]] = options[0]
    return values


def test_every_dashboard_panel_returns_data(swept: dict[str, Any]) -> None:
    prom: Prometheus = swept["prom"]
    assert {p.stem for p in DASHBOARDS} == {"farm-overview", "farm-measurements", "farm-board"}
    end = time.time()
    checked = 0
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        assert dash["schemaVersion"] >= 36
        values = resolve_variables(dash, prom)
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            for target in panel["targets"]:
                expr = fill(target["expr"], values)
                assert "$" not in expr, f"unfilled variable in {expr}"
                if target.get("instant"):
                    result = prom.query(expr)
                else:
                    result = prom.query_range(expr, swept["start"], end)
                assert result, f"{dash['uid']} / {panel['title']}: no data for {expr} ({values})"
                checked += 1
    assert checked >= 20


def test_live_power_reads_the_monitor_while_it_samples(swept: dict[str, Any]) -> None:
    prom: Prometheus = swept["prom"]
    series = prom.query_range(
        'farm_monitor_power_watts{monitor="bench-rapl"}', swept["start"], time.time()
    )
    assert [s["metric"]["board"] for s in series] == ["board0"]
    assert series[0]["metric"]["channel"] == "package"
    watts = [float(v) for _, v in series[0]["values"]]
    assert len(watts) >= 3  # seen at several scrapes while board0 was measured
    # The fake's counter advances on a ticker thread of this process in wall-time steps;
    # a busy machine delays a step, so one 0.1 s window can read low and the next high.
    # At load 20 a step can miss a whole window (0 W there). Their median is the power
    # the fake delivers; none is negative or off by a factor.
    assert statistics.median(watts) == pytest.approx(RAPL_WATTS, rel=0.1), watts
    assert all(0 <= v < 3 * RAPL_WATTS for v in watts), watts
    samples = prom.query('farm_monitor_samples_total{monitor="bench-rapl"}')
    assert float(samples[0]["value"][1]) > 100
    # the measurements of board0 carry its energy, from the same monitor
    energy = prom.query('farm_cell_energy_per_inference_joules{board="board0"}')
    # the fake draws the same power busy as idle: an inference costs nothing net of idle
    assert len(energy) == 1 and abs(float(energy[0]["value"][1])) < 1e-3
    power = prom.query('farm_cell_power_watts{board="board0"}')
    assert float(power[0]["value"][1]) == pytest.approx(RAPL_WATTS, rel=0.2)


def test_counters_and_rules_on_the_real_prometheus(swept: dict[str, Any]) -> None:
    prom: Prometheus = swept["prom"]
    done = prom.query('farm_task_transitions_total{state="done"}')
    assert float(done[0]["value"][1]) == SWEEP_CELLS
    assert prom.query('farm_queue_depth{band="normal"} == 0')
    assert prom.query('farm_jobs{state="done"} == 1')
    assert prom.query("farm_build_info == 1")
    # what the deploy steps pushed, counted on their events: the tasks' logs say the same
    store = Store(swept["farm"].db, readonly=True)
    try:
        job = store.job("latest")
        assert job is not None
        logs = [line.line for task in store.tasks(job.id) for line in store.logs(task.id)]
    finally:
        store.close()
    logged = sum(int(n) for line in logs for n in re.findall(r"\((\d+) bytes\)", line))
    pushed = prom.query("sum(farm_deploy_bytes_total)")
    assert (float(pushed[0]["value"][1]) if pushed else 0.0) == logged
    groups = prom.api("rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == {
        "FarmHeadDown", "FarmBoardQuarantined", "FarmNoNightlyResult",
        "FarmMonitorDroppingSamples", "FarmCellStale",
    }  # fmt: skip
    assert all(r["health"] == "ok" for r in rules.values()), rules
    assert rules["FarmHeadDown"]["state"] == "inactive"  # the head answers
    assert rules["FarmNoNightlyResult"]["state"] == "inactive"  # measured just now


def test_a_real_scrape_passes_promtool_check_metrics(swept: dict[str, Any]) -> None:
    body = http_text(f"http://{swept['metrics']}/metrics")
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # bounded labels: no job or task id anywhere in the exposition
    job_ids = {j.id for j in swept["farm"].store().jobs(limit=100)}
    assert job_ids and not any(job_id in body for job_id in job_ids)


# -- the same store, without a head ---------------------------------------------------------------


def test_standalone_exporter_serves_the_store(swept: dict[str, Any]) -> None:
    farm: Farm = swept["farm"]
    port = free_port()
    log = farm.root / "exporter.log"
    argv = [
        *_farm_argv(),
        "exporter",
        "--db",
        str(farm.db),
        "--metrics-address",
        f"127.0.0.1:{port}",
    ]
    proc = start_daemon(argv, f"http://127.0.0.1:{port}/metrics", log)
    try:
        body = http_text(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop_daemon(proc)
    assert body.count("farm_cell_last_measured_timestamp_seconds{") == SWEEP_CELLS
    assert 'farm_jobs{state="done"} 1.0' in body
    assert "farm_scheduler_loop_lag_seconds" not in body  # no scheduler in this process


def test_backfill_cli_writes_openmetrics_for_promtool(swept: dict[str, Any]) -> None:
    farm: Farm = swept["farm"]
    out = farm.root / "backfill"
    proc = farm.ok("metrics", "backfill", "--db", str(farm.db), "--out", str(out))
    assert f"{SWEEP_CELLS} results written" in proc.stdout
    made = subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics",
         str(out / "farm-history.om"), str(farm.root / "blocks")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr


def test_bad_metrics_address_is_one_line_exit_2(swept: dict[str, Any]) -> None:
    farm: Farm = swept["farm"]
    proc = farm.run("exporter", "--db", str(farm.db), "--metrics-address", "nowhere")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --metrics-address: expected HOST:PORT or off, got 'nowhere'"
    ]


def test_embedded_submit_pushes_to_a_real_pushgateway(testbed: Testbed, tmp_path: Path) -> None:
    port = free_port()
    gateway = start_daemon(
        ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"],
        f"http://127.0.0.1:{port}/-/ready",
        tmp_path / "pushgateway.log",
    )
    try:
        farm = Farm(tmp_path)
        job = job_file(tmp_path, "pushed", boards=["board1"])
        url = f"http://127.0.0.1:{port}"
        proc = farm.ok("submit", str(job), "-i", str(testbed.inventory_path), "--pushgateway", url)
        assert f"pushed pushed to {url}" in proc.stderr
        body = http_text(f"{url}/metrics")
    finally:
        stop_daemon(gateway)
    lines = [ln for ln in body.splitlines() if ln.startswith("farm_cell_latency_mean_seconds{")]
    assert len(lines) == 1, body[-2000:]
    for label in ('board="board1"', 'farm_job="pushed"', 'job="farm"', 'model="kws"'):
        assert label in lines[0]
    assert "pushed-" not in body  # the job's name groups it, never its id


def _farm_argv() -> list[str]:
    import sys

    return [sys.executable, "-m", "farm.cli"]
