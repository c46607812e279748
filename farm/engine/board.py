"""What the board was doing around a task: load, CPU steal, clock, temperature.

Each reader returns None where the board does not say (no /proc, no cpufreq,
no thermal zones): a missing fact is reported as missing, never guessed.
``busy_warnings`` turns the readings into the short warnings a result carries,
so a number taken on a busy board says so.

Standard library only, and self-contained: ``farm.deploy.probe`` sends this very
file to a board that has no engine (nor perhaps torch) yet and runs it with
``python -c``, so a board's facts are read by one piece of code wherever asked.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from pathlib import Path

# A board is "busy" when the 1-minute load before the task is at least this
# fraction of its usable CPUs: another process then shares the cores we time.
BUSY_LOAD_PER_CPU = 0.5
BUSY_STEAL_PCT = 5.0  # a hypervisor took this much CPU from the guest
HOT_C = 80.0


def loadavg() -> list[float] | None:
    """The 1, 5 and 15-minute load averages."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def cpu_ticks(stat: str = "/proc/stat") -> tuple[int, int] | None:
    """(steal, total) jiffies over all CPUs, for ``steal_pct`` between two readings."""
    try:
        with open(stat) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    values = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    return values[7], sum(values[:8])


def steal_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100.0 * (after[0] - before[0]) / (after[1] - before[1]), 2)


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def governor(cpu: int = 0) -> str | None:
    return _read(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in info:
            info[key.strip()] = value.strip()
    return info


def freq_mhz(cpu: int = 0) -> float | None:
    """The current clock of ``cpu``: cpufreq where present, else /proc/cpuinfo."""
    khz = _read(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq")
    if khz is not None and khz.isdigit():
        return int(khz) / 1000
    try:
        return float(_cpuinfo()["cpu MHz"])
    except (KeyError, ValueError):
        return None


def cpu_model() -> str | None:
    info = _cpuinfo()
    # x86 says "model name"; ARM boards say "Hardware" or only "Processor"/"CPU part"
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        if info.get(key):
            return info[key]
    return platform.processor() or None


def temp_c(root: str = "/sys/class/thermal") -> float | None:
    """The hottest thermal zone in °C."""
    temps = []
    for zone in sorted(Path(root).glob("thermal_zone*")):
        raw = _read(zone / "temp")
        if raw is not None and raw.lstrip("-").isdigit():
            temps.append(int(raw) / 1000)
    return max(temps) if temps else None


def facts() -> dict:
    """Facts read once per task: they do not change while it runs."""
    return {
        "governor": governor(),
        "freq_mhz": freq_mhz(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
    }


def busy_warnings(
    load_before: list[float] | None,
    cpus: int,
    steal: float | None,
    temps: tuple[float | None, float | None],
) -> list[str]:
    """Short warnings for a result measured on a board that was not quiet."""
    out = []
    if load_before is not None and load_before[0] >= BUSY_LOAD_PER_CPU * cpus:
        out.append(f"board busy: load {load_before[0]:.1f} on {cpus} CPUs")
    if steal is not None and steal >= BUSY_STEAL_PCT:
        out.append(f"CPU steal {steal:.1f}% during the task")
    hottest = max((t for t in temps if t is not None), default=None)
    if hottest is not None and hottest >= HOT_C:
        out.append(f"board hot: {hottest:.0f} C")
    return out


def kb_field(path: str, name: str) -> float | None:
    """A ``Name:  123 kB`` line of a /proc file, in MB (None where absent)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def disk_free_mb(path: str) -> float | None:
    """Free space where ``path`` lives (its nearest existing parent if not yet made)."""
    p = Path(os.path.expanduser(path)).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free / 2**20
    except OSError:
        return None


RUNTIME_MODULES = {
    "eager": "torch",
    "onnxruntime": "onnxruntime",
    "executorch": "executorch.extension.pybindings._portable_lib",
    "aoti": "torch",  # torch loads the compiled library; the board needs no compiler
}
"""The module each runtime needs on the board (``executorch-native`` needs a built
runner instead: :func:`native_runner`)."""


def _finds(module: str) -> str | None:
    """None when ``module`` is on the board's Python path, else a one-line reason.

    Found, not imported: importing torch or ExecuTorch takes 2-20 s, too long for a
    probe that every ``inventory check`` runs. The engine's runtime imports it and turns
    a failing import into the task's does-not-fit reason.
    """
    import importlib.util

    top = module.split(".")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing or broken
        found = False
    if found:
        return None
    if top != module and importlib.util.find_spec(top) is not None:
        return f"{top} in {sys.executable} lacks {module}"
    return f"{top} is not installed in {sys.executable}"


def native_runner(cache: str) -> str | None:
    """None when ``<cache>/native`` holds an ExecuTorch C++ runner built for the
    executorch installed here (``farm.engine.native``'s ``runner-<key>.json``), else why not."""
    from importlib.metadata import version

    try:
        installed = version("executorch")
    except Exception:
        return f"executorch is not installed in {sys.executable} (the runner links its wheel)"
    folder = Path(os.environ.get("FARM_NATIVE_DIR") or Path(os.path.expanduser(cache)) / "native")
    for meta in sorted(folder.glob("runner-*.json")):
        try:
            built = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        runner = meta.with_suffix("")
        if built.get("executorch") == installed and os.access(runner, os.X_OK):
            return None
    return f"no ExecuTorch C++ runner built in {folder} (`farm board bootstrap` builds one)"


def runtimes(cache: str) -> tuple[list[str], dict[str, str]]:
    """The runtimes this board can run, and for each other one why not."""
    why = {name: _finds(module) for name, module in RUNTIME_MODULES.items()}
    why["executorch-native"] = native_runner(cache)
    able = [name for name, reason in why.items() if reason is None]
    return able, {name: reason for name, reason in why.items() if reason is not None}


def probe(cache: str) -> dict:
    """What a board is, before anything is deployed to it: python and torch versions
    (torch's by its metadata), the runtimes it can run, CPU, memory and free disk at
    the cache."""
    try:
        from importlib.metadata import version

        torch = version("torch")
    except Exception:
        torch = None
    able, unavailable = runtimes(cache)
    return {
        "python": platform.python_version(),
        "torch": torch,
        "runtimes": able,
        "unavailable": unavailable,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_total_mb": kb_field("/proc/meminfo", "MemTotal:"),
        "memory_available_mb": kb_field("/proc/meminfo", "MemAvailable:"),
        "governor": governor(),
        "disk_free_mb": disk_free_mb(cache),
    }


if __name__ == "__main__":  # `python -c <this file> CACHE_DIR`: farm.deploy.probe
    print(json.dumps(probe(sys.argv[1])))
