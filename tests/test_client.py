"""Ray's errors become farm's at the one place an actor call is awaited."""

from __future__ import annotations

import os
import time

import pytest

from farm.errors import FarmError, HeadError, MonitorUnavailable, NotFound
from farm.procs import started
from farm.scheduler.actors import RemoteMonitor, wait


@pytest.fixture
def actor(ray_session):
    @ray_session.remote(num_cpus=0)
    class Probe:
        def farm_error(self):
            raise NotFound("no job 'x'")

        def bug(self):
            raise KeyError("oops")

        def start(self, board):
            return {"board": board}

        def pid(self):
            return os.getpid()

    handle = Probe.remote()
    yield handle
    ray_session.kill(handle)


def test_a_farm_error_raised_in_an_actor_arrives_as_itself(actor):
    with pytest.raises(NotFound, match="no job 'x'") as caught:
        wait(actor.farm_error.remote(), "head: job")
    assert type(caught.value) is NotFound  # not a RayTaskError wrapping it


def test_any_other_error_in_an_actor_becomes_a_farm_error(actor):
    with pytest.raises(FarmError, match="head: job: KeyError: 'oops'") as caught:
        wait(actor.bug.remote(), "head: job")
    assert "ray" not in type(caught.value).__module__


def test_a_dead_actor_is_a_head_error_or_what_the_caller_names(ray_session, actor):
    assert wait(actor.start.remote("b0"), "monitor") == {"board": "b0"}
    pid = wait(actor.pid.remote(), "probe")
    born = started(pid)
    ray_session.kill(actor)
    # ray.kill only asks: a call made before the actor's process is gone may still run
    deadline = time.monotonic() + 60
    while started(pid) == born and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started(pid) != born, "the killed actor's process lives on"
    with pytest.raises(HeadError, match="head: ping: "):
        wait(actor.start.remote("b0"), "head: ping")
    with pytest.raises(MonitorUnavailable, match="power monitor 'm1'"):
        RemoteMonitor(actor, "m1").start("b0")
