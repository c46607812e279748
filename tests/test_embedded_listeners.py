"""An embedded `farm submit`'s Ray listens on the loopback only."""

from __future__ import annotations

import subprocess
import sys

from farmcli import ROOT

PROBE = """
import psutil
from farm.scheduler.cluster import init_embedded
init_embedded()
import ray
me = psutil.Process()
ours = {p.pid for p in me.children(recursive=True)} | {me.pid}
loopback = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
found = [(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
         if c.status == psutil.CONN_LISTEN and c.pid in ours]
print("LISTENERS", found)
print("OFF", [f for f in found if f[1] not in loopback])
ray.shutdown()
"""


def test_embedded_ray_listens_on_the_loopback_only():
    env_path = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    import os

    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **env_path}
    env["PATH"] = os.environ.get("PATH", env_path["PATH"])
    res = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)
    assert lines["LISTENERS"] != "[]"  # Ray's processes were seen listening
    assert lines["OFF"] == "[]", lines["OFF"]
