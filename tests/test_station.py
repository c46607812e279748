"""A station turns one attempt into a typed Outcome: what an error means is the
error's to say, and an engine result is validated as it arrives."""

from __future__ import annotations

import pytest

from farm import deploy
from farm.errors import CommandFailed, CommandResult
from farm.result import ENGINE_RESULT_VERSION, parse_engine_result
from farm.scheduler.lease import MEASURING_FILE
from farm.scheduler.messages import TaskPayload
from farm.scheduler.station import Station
from farm.spec import Board, Measure, ModelRef, PlannedTask
from farm.states import TaskState
from farm.testing import transport as fake


@pytest.fixture
def station(tmp_path):
    fake.reset()
    station = Station("test", cache_dir=tmp_path / "station")
    yield station
    station.close()
    fake.reset()


def _payload(board="f0"):
    spec = Board.model_validate(
        {"name": board, "transport": "fake", "processors": [{"name": "cpu"}]}, strict=False
    )
    task = PlannedTask(
        index=0, key=f"kws/{board}/cpu", model=ModelRef(name="kws", zoo="kws"), board=board,
        processor="cpu", variant={}, measure=Measure(iterations=3, warmup=0), candidates=[board],
    )  # fmt: skip
    return TaskPayload(task_id="j.0", job_id="j", task=task, board=spec, attempt=1)


def test_a_task_on_a_fake_board_is_done_with_a_typed_result(station):
    reports = []
    station._running = reports.append
    outcome = station.run_task(_payload())
    assert outcome.state is TaskState.DONE, outcome.error
    assert outcome.result.latency.n == 3 and outcome.markers["kinds"][0] == "task_begin"
    assert [(r.task_id, r.attempt) for r in reports] == [("j.0", 1)]
    assert outcome.running_at == reports[0].at
    # the first deploy pushed the engine and the weights; the second finds them there
    assert outcome.deploy_bytes == reports[0].deploy_bytes > 100_000
    again = station.run_task(_payload())
    assert again.state is TaskState.DONE and again.deploy_bytes == reports[1].deploy_bytes == 0


def test_the_engine_is_told_the_boards_measuring_lock_beside_its_lease(station, monkeypatch):
    requests = []
    real = fake.FakeTransport._result
    monkeypatch.setattr(
        fake.FakeTransport, "_result", lambda self, r: requests.append(r) or real(self, r)
    )
    assert station.run_task(_payload()).state is TaskState.DONE
    payload = _payload()
    # the measuring lock sits beside the lease, board-wide (any account, any cache_dir)
    assert [r["board_lock"] for r in requests] == [payload.board.board_lock + MEASURING_FILE]


def test_a_lost_board_is_retryable(station):
    fake.set_down("f0")
    outcome = station.run_task(_payload())
    assert outcome.state is TaskState.FAILED and "BoardUnreachable" in outcome.error
    assert outcome.retryable and outcome.board_fault and not outcome.quarantine
    assert outcome.failure.kind == "BoardUnreachable"
    assert outcome.running_at is None  # it never reached the engine


def test_a_command_that_failed_is_not_retried_like_a_lost_connection(station, monkeypatch):
    def failing(transport, board, files):
        result = CommandResult("sha256sum -- x", 1, "", "sha256sum: x: Input/output error")
        raise CommandFailed(board.name, result)

    monkeypatch.setattr(deploy, "deploy", failing)
    outcome = station.run_task(_payload())
    assert outcome.state is TaskState.FAILED and "CommandFailed" in outcome.error
    assert not outcome.retryable and outcome.board_fault


def test_a_malformed_engine_result_fails_the_task_on_arrival(station, monkeypatch):
    real = fake.FakeTransport._result

    def old_engine(self, request):
        result = real(self, request)
        del result["version"]
        return result

    monkeypatch.setattr(fake.FakeTransport, "_result", old_engine)
    outcome = station.run_task(_payload())
    assert outcome.state is TaskState.FAILED
    assert outcome.error.startswith("BadOutcome: ") and "version None" in outcome.error


def test_the_result_record_keeps_what_newer_engines_add():
    raw = {
        "version": ENGINE_RESULT_VERSION,
        "status": "ok",
        "latency": {"n": 2, "mean_ms": 1.0, "median_ms": 1.0},
        "memory": {"peak_rss_mb": 10.0, "load_peak_rss_mb": 30.0},
        "env": {"threads": 2, "governor": "performance", "loadavg_before": [0.1, 0.2, 0.3]},
        "layer_pass": {"layer_sum_outside_5pct": True},
        "warnings": ["cpu steal 3%"],
        "markers": {"t_ns": []},
        "log": ["hello"],
    }
    result = parse_engine_result(raw)
    assert result.env.threads == 2 and result.env.governor == "performance"
    assert result.memory.load_peak_rss_mb == 30.0 and result.layer_pass.layer_sum_outside_5pct
    assert result.warnings == ["cpu steal 3%"]
    stored = result.to_json()
    assert "markers" not in stored and "log" not in stored
    assert stored["env"]["loadavg_before"] == [0.1, 0.2, 0.3]
    assert parse_engine_result({**raw, **stored}) == result


def test_the_engine_writes_the_version_the_head_reads():
    from farm.engine.runner import RESULT_VERSION

    assert RESULT_VERSION == ENGINE_RESULT_VERSION


@pytest.mark.parametrize(
    "raw, says",
    [
        ({"status": "ok"}, "version None"),
        ({"version": 2, "status": "ok"}, "version 2"),
        ({"version": 1, "status": "fine"}, "status"),
        ({"version": 1, "status": "ok", "latency": {"n": "many"}}, "latency.n"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_what_the_head_refuses(raw, says):
    from farm.errors import BadOutcome

    with pytest.raises(BadOutcome, match=says):
        parse_engine_result(raw)
