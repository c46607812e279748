"""Who runs a job, and whether it still does.

An embedded ``farm submit`` is its job's head: when it dies (killed, the laptop
closed, a power cut) nothing is left to finish the job or to say it stopped. So
the store records the owner of each embedded job — host, pid, and the process's
start time and boot, so that a pid reused after the owner died, or after a
reboot, is not mistaken for it — and the next farm that opens the store asks
:meth:`Owner.alive`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from farm.procs import started

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:  # not Linux: the start time alone must do
        return ""


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: int | None  # clock ticks after boot (/proc/PID/stat), None where unknown
    boot: str

    @classmethod
    def me(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), started(os.getpid()), _boot())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Owner:
        return cls(data["host"], int(data["pid"]), data.get("started"), data.get("boot", ""))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def alive(self) -> bool | None:
        """True or False on the owner's own host; None elsewhere (no way to tell)."""
        if self.host != socket.gethostname():
            return None
        if self.boot and self.boot != _boot():
            return False  # the machine rebooted since
        return started(self.pid) == self.started

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"
