"""Slow boards for the test bed: a control group with a CPU quota and a memory limit.

The study's Intel Edison is a 500 MHz Atom with 1 GB: it imports torch in
minutes, not seconds. A test-bed board imitates one by running its ``sshd`` —
and so every session, engine and shell it starts, which inherit the group — in
a cgroup whose CPU quota is a share of one core (``cpu.cfs_quota_us`` over
``cpu.cfs_period_us`` in cgroup v1, ``cpu.max`` in v2) and, optionally, whose
memory is limited (``memory.limit_in_bytes`` / ``memory.max``).

Groups are made under this process's own group of each controller, named
uniquely, and removed by :meth:`SlowGroup.remove` once their processes are gone.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class CgroupError(RuntimeError):
    """The machine offers no writable cgroup for the limit asked for."""


def _own_path(controller: str) -> str | None:
    """This process's group for ``controller`` ("" for cgroup v2), from /proc/self/cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or (controller == "" and controllers == ""):
            return path
    return None


def _controller_dir(controller: str) -> tuple[Path, bool]:
    """The directory to make groups in for ``controller``, and whether it is cgroup v1."""
    v1 = ROOT / controller
    own = _own_path(controller)
    if (v1 / "cgroup.procs").exists() and own is not None:
        return v1 / own.lstrip("/"), True
    v2_own = _own_path("")
    unified = ROOT / "unified" if (ROOT / "unified" / "cgroup.controllers").exists() else ROOT
    if v2_own is not None and controller in (unified / "cgroup.controllers").read_text().split():
        return unified / v2_own.lstrip("/"), False
    raise CgroupError(f"no writable {controller} cgroup under {ROOT} (cgroup v1 or v2)")


class SlowGroup:
    """One board's groups: ``cpu`` (a share of a core) and, optionally, ``memory_mb``."""

    def __init__(self, label: str, cpu: float, memory_mb: int | None = None):
        if not 0 < cpu <= 64:
            raise ValueError(f"cpu share must be in (0, 64], got {cpu}")
        self.name = f"farm-{label}-{secrets.token_hex(3)}"
        self.cpu = cpu
        self.memory_mb = memory_mb
        self.dirs: list[Path] = []

    def create(self) -> SlowGroup:
        try:
            base, v1 = _controller_dir("cpu")
            group = self._mkdir(base)
            quota = max(1000, int(self.cpu * PERIOD_US))
            if v1:
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            if self.memory_mb:
                base, v1 = _controller_dir("memory")
                group = self._mkdir(base)  # in cgroup v2, the same group as the CPU's
                limit = self.memory_mb * 1024 * 1024
                (group / ("memory.limit_in_bytes" if v1 else "memory.max")).write_text(str(limit))
        except OSError as exc:
            self.remove()
            raise CgroupError(f"cannot make cgroup {self.name}: {exc}") from exc
        return self

    @classmethod
    def existing(cls, dirs: list[str]) -> SlowGroup:
        """The groups made earlier (by another process) at ``dirs``, to empty and remove."""
        group = cls("existing", 1.0)
        group.dirs = [Path(d) for d in dirs]
        return group

    def _mkdir(self, base: Path) -> Path:
        group = base / self.name
        if group not in self.dirs:
            group.mkdir()
            self.dirs.append(group)
        return group

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the groups: a shell joins them, then becomes ``argv``."""
        join = " && ".join(f'echo $$ > "${i + 1}/cgroup.procs"' for i in range(len(self.dirs)))
        shift = len(self.dirs)
        return [
            "/bin/sh",
            "-c",
            f'{join} && shift {shift} && exec "$@"',
            "sh",
            *map(str, self.dirs),
            *argv,
        ]

    def pids(self) -> list[int]:
        """Every process in the groups (sessions that left the daemon's tree included)."""
        found: set[int] = set()
        for group in self.dirs:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (group / "cgroup.procs").read_text().split())
        return sorted(found)

    def remove(self, timeout: float = 10) -> None:
        """Remove the (emptied) groups; the kernel refuses while a process remains."""
        deadline = time.monotonic() + timeout
        for group in reversed(self.dirs):
            while group.exists():
                try:
                    os.rmdir(group)
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        self.dirs = []
