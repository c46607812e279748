"""The metrics package over a real SQLite store, each test with a fresh registry.

The store is filled the way the scheduler fills it (``add_job``, ``transition``,
``finish``), so the counters move on the store's own state events and the
measurement families read what a sweep leaves behind.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from farm.errors import UserError
from farm.metrics.backfill import backfill
from farm.metrics.cells import MeasurementCollector
from farm.metrics.exporter import parse_address, register_store_families, serve
from farm.metrics.fleet import FarmMetrics, FleetCollector
from farm.metrics.power import LivePowerCollector
from farm.metrics.source import StoreSource
from farm.result import EngineResult
from farm.spec import Measure, ModelRef, PlannedTask, variant_label
from farm.states import BoardHealth, JobState, TaskState
from farm.store import Store


def _task(i: int, board: str, activation: str = "relu") -> PlannedTask:
    return PlannedTask(
        index=i,
        key=f"kws/{board}/cpu/{activation}",
        model=ModelRef(name="kws", zoo="kws"),
        board=board,
        processor="cpu",
        variant={"activation": activation, "threads": None},
        measure=Measure(),
        candidates=[board],
    )


def _result(mean_ms: float, energy_mj: float | None = None) -> EngineResult:
    result = {
        "status": "ok",
        "latency": {"n": 50, "mean_ms": mean_ms, "median_ms": mean_ms * 0.9,
                    "p90_ms": mean_ms * 1.2, "p99_ms": None},
        "memory": {"required_mb": 2.0, "peak_rss_mb": 300.0, "available_mb": 1024.0},
        "layers": [{"index": 0, "name": "fc1", "type": "Linear", "share": 0.75},
                   {"index": 1, "name": "fc2", "type": "Linear", "share": 0.25}],
    }  # fmt: skip
    if energy_mj is not None:
        result["energy"] = {
            "energy_per_inference_mj": {"net": {"mean": energy_mj}},
            "average_power_w": 1.75,
            "alignment": {"uncertainty_s": 2e-4},
            "battery": {"hours": 10.0},
        }
    return EngineResult.model_validate(result)


def _run(store: Store, task_id: str, board: str, state: TaskState, **kw) -> None:
    store.transition(task_id, TaskState.DEPLOYING, board=board, at=100.0, attempt=1)
    store.transition(task_id, TaskState.RUNNING, board=board, at=100.5, deploy_bytes=4096)
    store.finish(task_id, state, board=board, **kw)


@pytest.fixture
def store(db_path):
    store = Store(db_path)
    yield store
    store.close()


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_variant_label_is_short_and_canonical() -> None:
    assert variant_label({"threads": 2, "activation": "tanh"}) == "activation=tanh,threads=2"
    assert variant_label({"threads": None}) == "default"
    assert variant_label({}) == "default"
    # a default spelled out is no variant (the zoo's ReLU, eager, fp32): the same cell
    assert variant_label({"activation": "relu", "runtime": "eager", "precision": "fp32"}) == (
        "default"
    )
    assert variant_label({"runtime": "onnxruntime", "precision": "fp32"}) == "runtime=onnxruntime"


def test_counters_move_on_state_events(store: Store) -> None:
    registry = CollectorRegistry()
    store.subscribe(FarmMetrics(registry).on_event)
    store.add_job("j1", "nightly", {}, [_task(0, "b0"), _task(1, "b1")])
    _run(store, "j1.0", "b0", TaskState.DONE, result=_result(2.0))
    store.transition("j1.1", TaskState.DEPLOYING, board="b1", at=100.0, attempt=1)
    store.transition("j1.1", TaskState.QUEUED, board="b1", error_kind="BoardUnreachable",
                     detail="attempt 1 failed: BoardUnreachable: board b1: refused; retry in 1.0s")  # fmt: skip
    store.transition("j1.1", TaskState.DEPLOYING, board="b1", at=110.0, attempt=2)
    store.finish("j1.1", TaskState.FAILED, board="b1", error="HostKeyMismatch: board b1: changed",
                 error_kind="HostKeyMismatch")  # fmt: skip
    # the kind is stored beside the text, on the task and on each move it caused
    assert store.task("j1.1").error_kind == "HostKeyMismatch"
    assert [e.error_kind for e in store.events("j1.1")][-3:] == ["BoardUnreachable", None,
                                                                 "HostKeyMismatch"]  # fmt: skip
    got = _samples(registry)
    assert got[("farm_task_transitions_total", (("state", "queued"),))] == 3
    assert got[("farm_task_transitions_total", (("state", "deploying"),))] == 3
    assert got[("farm_task_transitions_total", (("state", "done"),))] == 1
    assert got[("farm_task_transitions_total", (("state", "failed"),))] == 1
    assert got[("farm_task_transitions_total", (("state", "cancelled"),))] == 0  # there, at 0
    assert got[("farm_transport_errors_total", (("kind", "BoardUnreachable"),))] == 1
    assert got[("farm_transport_errors_total", (("kind", "HostKeyMismatch"),))] == 1
    assert got[("farm_transport_errors_total", (("kind", "TransportTimeout"),))] == 0
    assert got[("farm_deploy_duration_seconds_count", ())] == 1  # deploying at 100, running 100.5
    assert got[("farm_deploy_duration_seconds_sum", ())] == pytest.approx(0.5)
    assert got[("farm_deploy_bytes_total", (("board", "b0"),))] == 4096  # b1 never ran
    assert ("farm_deploy_bytes_total", (("board", "b1"),)) not in got
    assert got[("farm_task_duration_seconds_count", (("state", "done"),))] == 1
    assert got[("farm_task_duration_seconds_count", (("state", "failed"),))] == 1
    # the done attempt started at 100 (deploying) and ended now: its whole run is observed
    assert got[("farm_task_duration_seconds_sum", (("state", "done"),))] > 1e9 - 100


def test_measurement_families_hold_the_latest_result_per_cell(store: Store, db_path) -> None:
    store.add_job("j1", "nightly", {}, [_task(0, "b0"), _task(1, "b1", "tanh")])
    _run(store, "j1.0", "b0", TaskState.DONE, result=_result(2.0, energy_mj=3.0))
    unfit = {"status": "does_not_fit", "memory": {"required_mb": 4096.0, "available_mb": 1024.0}}
    _run(store, "j1.1", "b1", TaskState.DOES_NOT_FIT, result=EngineResult.model_validate(unfit))
    store.add_job("j2", "nightly", {}, [_task(0, "b0")])
    _run(store, "j2.0", "b0", TaskState.DONE, result=_result(4.0))  # newer: replaces j1.0's
    registry = CollectorRegistry()
    source = StoreSource(db_path)
    registry.register(MeasurementCollector(source))
    got = _samples(registry)
    b0 = (("board", "b0"), ("model", "kws"), ("processor", "cpu"), ("variant", "default"))
    b1 = (("board", "b1"), ("model", "kws"), ("processor", "cpu"), ("variant", "activation=tanh"))
    assert got[("farm_cell_latency_mean_seconds", b0)] == pytest.approx(0.004)
    assert ("farm_cell_energy_per_inference_joules", b0) not in got  # the newest had no meter
    assert got[("farm_cell_latency_seconds", tuple(sorted((*b0, ("quantile", "0.5")))))] == (
        pytest.approx(0.0036)
    )
    assert ("farm_cell_latency_seconds", tuple(sorted((*b0, ("quantile", "0.99"))))) not in got
    assert got[("farm_cell_latency_seconds_count", b0)] == 50
    assert got[("farm_cell_latency_seconds_sum", b0)] == pytest.approx(50 * 0.004)
    assert got[("farm_cell_layer_time_ratio", tuple(sorted((*b0, ("layer", "fc1")))))] == 0.75
    assert got[("farm_cell_memory_required_bytes", b1)] == 4096 * 2**20
    assert got[("farm_cell_memory_limit_bytes", b1)] == 1024 * 2**20
    assert ("farm_cell_latency_mean_seconds", b1) not in got
    stamps = [v for (name, _), v in got.items() if name.startswith("farm_cell_last_measured")]
    assert len(stamps) == 2
    # a result stored after a scrape shows at the next one
    store.add_job("j3", "nightly", {}, [_task(0, "b0")])
    _run(store, "j3.0", "b0", TaskState.DONE, result=_result(1.0, energy_mj=3.0))
    got = _samples(registry)
    assert got[("farm_cell_latency_mean_seconds", b0)] == pytest.approx(0.001)
    assert got[("farm_cell_energy_per_inference_joules", b0)] == pytest.approx(0.003)
    assert got[("farm_cell_battery_life_seconds", b0)] == 36000.0
    assert got[("farm_cell_alignment_uncertainty_seconds", b0)] == 2e-4


def test_fleet_gauges_read_queue_boards_and_jobs(store: Store, db_path) -> None:
    boards = [{"name": "b0"}, {"name": "b1"}]
    store.add_job("hi", "urgent", {}, [_task(0, "b0"), _task(1, "b1")], boards=boards, priority=5)
    store.add_job("lo", "nightly", {}, [_task(0, "b0")])
    store.set_job_state("lo", JobState.RUNNING)
    store.set_job_state("lo", JobState.DONE)
    store.set_board_health("b1", BoardHealth.QUARANTINED, 3, "refused")
    registry = CollectorRegistry()
    registry.register(FleetCollector(StoreSource(db_path), loop_lag=lambda: 0.25))
    got = _samples(registry)
    assert got[("farm_queue_depth", (("band", "high"),))] == 2
    assert got[("farm_queue_depth", (("band", "normal"),))] == 1
    assert got[("farm_queue_depth", (("band", "low"),))] == 0
    assert got[("farm_board_state", (("board", "b0"), ("state", "healthy")))] == 1
    assert got[("farm_board_state", (("board", "b1"), ("state", "quarantined")))] == 1
    assert got[("farm_jobs", (("state", "done"),))] == 1
    assert got[("farm_jobs", (("state", "queued"),))] == 1
    assert got[("farm_scheduler_loop_lag_seconds", ())] == 0.25


def test_live_power_reports_only_monitors_that_record() -> None:
    stats = [
        {"monitor": "m1", "board": "b0", "power_w": 2.5, "samples": 900, "dropped": 3},
        {"monitor": "m2", "board": None, "power_w": None, "samples": 10, "dropped": 0},
    ]
    registry = CollectorRegistry()
    registry.register(LivePowerCollector(lambda: stats, lambda board: f"ch-{board}"))
    got = _samples(registry)
    key = (("board", "b0"), ("channel", "ch-b0"), ("monitor", "m1"))
    assert got[("farm_monitor_power_watts", key)] == 2.5
    assert not any(n == "farm_monitor_power_watts" and ("monitor", "m2") in k for n, k in got)
    assert got[("farm_monitor_samples_dropped_total", (("monitor", "m1"),))] == 3
    assert got[("farm_monitor_samples_total", (("monitor", "m2"),))] == 10


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9500") == ("127.0.0.1", 9500)
    assert parse_address("off") is None
    for bad in ("9500", "host:", "host:99999", ":80"):
        with pytest.raises(UserError, match="--metrics-address"):
            parse_address(bad)


def test_served_scrape_passes_promtool(store: Store, db_path) -> None:
    store.add_job("j1", "nightly", {}, [_task(0, "b0")])
    _run(store, "j1.0", "b0", TaskState.DONE, result=_result(2.0, energy_mj=3.0))
    registry = register_store_families(CollectorRegistry(), StoreSource(db_path))
    FarmMetrics(registry)
    server = serve(registry, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        body = urllib.request.urlopen(url, timeout=10).read()
    finally:
        server.shutdown()
    assert b"farm_cell_latency_mean_seconds{" in body and b"farm_build_info{" in body
    check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_backfill_makes_promtool_blocks(store: Store, db_path, tmp_path) -> None:
    store.add_job("j1", "nightly", {}, [_task(0, "b0")])
    _run(store, "j1.0", "b0", TaskState.DONE, result=_result(2.0, energy_mj=3.0))
    store.add_job("j2", "nightly", {}, [_task(0, "b0")])
    _run(store, "j2.0", "b0", TaskState.DONE, result=_result(3.0))
    path, n = backfill(db_path, tmp_path / "om")
    assert n == 2
    text = path.read_text()
    assert text.rstrip().endswith("# EOF")
    assert text.count("farm_cell_latency_mean_seconds{") == 2  # both nights, stamped
    blocks = tmp_path / "blocks"
    made = subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(path), str(blocks)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    assert any(blocks.glob("*/meta.json"))


def test_source_refuses_a_missing_store(tmp_path) -> None:
    with pytest.raises(UserError, match="no farm store"):
        StoreSource(tmp_path / "nope.db")


def test_polled_monitor_reports_live_power_without_copying_its_capture(tmp_path) -> None:
    from farm.power import MonitorService
    from farm.power.base import open_monitor
    from farm.testing.sysfs import FakeRapl

    fake = FakeRapl(tmp_path, {"package-0": 12.0})
    service = MonitorService(open_monitor("rapl", {"root": str(tmp_path), "poll_hz": 200}),
                             name="bench", pre_idle_s=0, post_idle_s=0)  # fmt: skip
    assert service.stats()["power_w"] is None  # not recording: no live reading
    service.start("b0")
    for _ in range(40):  # the counter advances 10 ms at a time, as RAPL's does
        fake.advance(0.01)
        time.sleep(0.01)
    stats = service.stats()
    assert stats["board"] == "b0" and stats["samples"] > 5
    assert stats["power_w"] is not None and stats["power_w"] > 0
    trace = service.stop("b0")
    after = service.stats()
    assert after["board"] is None and after["power_w"] is None
    assert after["samples"] == len(trace) >= stats["samples"]  # a counter never goes back


def test_monsoon_live_reading_and_drop_count_come_from_the_running_capture() -> None:
    from farm.power.base import open_monitor
    from farm.testing import monsoon_usb

    hw = monsoon_usb.FakeHVPM(drop_every=400, current_ma=lambda t: np.full(len(t), 800.0))
    with monsoon_usb.attach(hw):
        monitor = open_monitor("monsoon", {"vout": 4.0, "chunk": 250})
        assert monitor.live() is None
        monitor.start()
        deadline = time.monotonic() + 30
        while (
            monitor.live() is None or monitor.live().dropped == 0
        ) and time.monotonic() < deadline:
            time.sleep(0.02)
        live = monitor.live()
        trace = monitor.stop()
        monitor.close()
    assert live is not None and live.power_w == pytest.approx(0.8 * 4.0)  # mA × V
    assert 0 < live.dropped <= trace.dropped and 0 < live.samples <= len(trace)
    assert monitor.live() is None  # stopped
