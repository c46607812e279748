"""The repository's Prometheus and Grafana files: checked by the real tools, and the
committed dashboards are exactly what ``grafana/generate.py`` writes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "grafana"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=PROMETHEUS)


def test_scrape_config_is_valid() -> None:
    proc = promtool("check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout


def test_alert_rules_check_and_their_unit_tests_pass() -> None:
    proc = promtool("check", "rules", "farm-rules.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 rules found" in proc.stdout
    proc = promtool("test", "rules", "farm-rules.test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rule_tests_can_fail(tmp_path: Path) -> None:
    """The rule tests are not vacuous: a rule that never fires breaks them."""
    rules = (PROMETHEUS / "farm-rules.yml").read_text()
    (tmp_path / "farm-rules.yml").write_text(rules.replace("> 26 * 3600", "> 260 * 3600"))
    (tmp_path / "farm-rules.test.yml").write_text((PROMETHEUS / "farm-rules.test.yml").read_text())
    proc = subprocess.run(
        ["promtool", "test", "rules", "farm-rules.test.yml"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode != 0 and "FarmNoNightlyResult" in proc.stdout + proc.stderr


def _generator():
    spec = importlib.util.spec_from_file_location("farm_grafana", GRAFANA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_are_what_the_code_generates() -> None:
    gen = _generator()
    committed = sorted(p.stem for p in (GRAFANA / "dashboards").glob("*.json"))
    assert committed == sorted(gen.DASHBOARDS)
    for name, build in gen.DASHBOARDS.items():
        text = (GRAFANA / "dashboards" / f"{name}.json").read_text()
        assert text == gen.render(build), f"{name}.json is stale: run python3 grafana/generate.py"


def test_dashboards_use_the_datasource_variable_and_no_host() -> None:
    for path in (GRAFANA / "dashboards").glob("*.json"):
        dash = json.loads(path.read_text())
        assert dash["schemaVersion"] >= 38  # Grafana 10 or later
        assert dash["templating"]["list"][0]["type"] == "datasource"
        text = path.read_text()
        assert "127.0.0.1" not in text and "localhost" not in text and "http" not in text
        uids = {t["datasource"]["uid"] for p in dash["panels"] for t in p["targets"]}
        assert uids == {"${datasource}"}


def test_provisioning_names_a_prometheus_and_the_dashboards_folder() -> None:
    import yaml

    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/farm-prometheus.yml").read_text())
    assert sources["datasources"][0]["type"] == "prometheus"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/farm.yml").read_text())
    assert providers["providers"][0]["type"] == "file"
