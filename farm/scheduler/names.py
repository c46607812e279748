"""The names farm gives what it starts on Ray, spelled once (a leaf: imports nothing).

- ``NAMESPACE``: every farm actor lives in Ray namespace ``farm``, so a client
  finds the head's actors again (Ray's ``job_manager`` habit).
- ``SCHEDULER``: the head's detached scheduler actor.
- ``station_actor(name)``, ``monitor_actor(name)``: a station's and a power
  monitor's actor on a cluster (named so a restarted scheduler finds them).
- ``station_resource(name)``: the custom resource a node advertises for each
  station it serves (``farm station start`` / ``farm head start`` set it);
  ``station_of(resource)`` reads the station back out of one.
"""

from __future__ import annotations

NAMESPACE = "farm"
SCHEDULER = "farm-scheduler"
_STATION_RESOURCE = "station:"


def station_actor(name: str) -> str:
    return f"farm-station-{name}"


def monitor_actor(name: str) -> str:
    return f"farm-monitor-{name}"


def station_resource(name: str) -> str:
    return f"{_STATION_RESOURCE}{name}"


def station_of(resource: str) -> str | None:
    """The station a node resource advertises, or None for any other resource."""
    return resource[len(_STATION_RESOURCE) :] if resource.startswith(_STATION_RESOURCE) else None
