"""``backend: ina3221``: Jetson rail monitors read from sysfs. We have no Jetson: the fake
below lays out the files both kernel drivers create (names, units, enables, the
``name``/``update_interval`` files and the device symlinks), and the backend reads them
with the code it runs on a board."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from farm import spec
from farm.errors import MonitorUnavailable, SpecError
from farm.power import analyze, open_monitor
from farm.power import markers as mk
from farm.power.ina3221 import Ina3221Monitor, Ina3221Options, chips
from farm.power.synthetic import fake_task_markers


class FakeIna3221:
    """One INA3221 under a fake sysfs ``root``, in the mainline hwmon form
    (``/sys/class/hwmon/hwmonN`` → ``devices/.../1-0040/hwmon/hwmonN``: ``name``,
    ``in[1-3]_{label,enable,input}`` mV, ``curr[1-3]_input`` mA, ``in[4-6]_input`` µV
    shunt, ``shunt[1-3]_resistor`` µΩ, ``update_interval`` ms) or NVIDIA's ``ina3221x``
    iio form (``bus/i2c/drivers/ina3221x/1-0040/iio:device0``: ``rail_name_K``,
    ``in_{voltage,current,power}K_input`` mV/mA/mW, K = 0..2)."""

    SHUNT_UOHM = 10_000

    def __init__(self, root: Path, rails: dict[str, tuple[float, float]], *, form: str = "hwmon",
                 address: str = "1-0040", index: int = 0, disabled: tuple[int, ...] = (),
                 update_interval_ms: int = 2):  # fmt: skip
        self.form, self.rails = form, dict(rails)  # label -> (mV, mA)
        device = root / "devices/platform/7000c400.i2c/i2c-1" / address
        if form == "hwmon":
            self.dir = device / "hwmon" / f"hwmon{index}"
            link = root / "class/hwmon" / f"hwmon{index}"
            files = {"name": "ina3221", "update_interval": str(update_interval_ms),
                     "samples": "4", "in7_label": "sum of shunt voltages"}  # fmt: skip
            for k in (1, 2, 3):
                files[f"in{k}_enable"] = "0" if k in disabled else "1"
                files[f"shunt{k}_resistor"] = str(self.SHUNT_UOHM)
                files[f"curr{k}_crit"] = files[f"curr{k}_max"] = "32760"
                files[f"curr{k}_crit_alarm"] = files[f"curr{k}_max_alarm"] = "0"
        else:
            self.dir = device / f"iio:device{index}"
            link = root / "bus/i2c/drivers/ina3221x" / address
            files = {"name": "ina3221x", "running_mode": "1"}
        self.dir.mkdir(parents=True)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(self.dir if form == "hwmon" else device)
        for name, text in files.items():
            (self.dir / name).write_text(text + "\n")
        for k, label in enumerate(self.rails):
            if form == "hwmon":
                (self.dir / f"in{k + 1}_label").write_text(label + "\n")
            else:
                (self.dir / f"rail_name_{k}").write_text(label + "\n")
                (self.dir / f"crit_current_limit_{k}").write_text("6800\n")
            self.set(label, *self.rails[label])

    def set(self, label: str, mv: float, ma: float) -> None:
        """The rail's new reading, written as the kernel updates it: each file at once."""
        k = list(self.rails).index(label)
        self.rails[label] = (mv, ma)
        if self.form == "hwmon":
            shunt_uv = ma * self.SHUNT_UOHM / 1e3
            values = {
                f"in{k + 1}_input": mv,
                f"curr{k + 1}_input": ma,
                f"in{k + 4}_input": shunt_uv,
            }
        else:
            values = {f"in_voltage{k}_input": mv, f"in_current{k}_input": ma,
                      f"in_power{k}_input": mv * ma / 1e3}  # fmt: skip
        for name, value in values.items():
            tmp = self.dir / f".{name}"
            tmp.write_text(f"{round(value)}\n")
            os.replace(tmp, self.dir / name)


RAILS = {"VDD_IN": (5000, 1000), "VDD_CPU": (1000, 400), "VDD_GPU": (1000, 200)}


def _capture(monitor, seconds=0.1):
    monitor.start()
    time.sleep(seconds)
    return monitor.stop()


@pytest.mark.parametrize("form", ["hwmon", "iio"])
def test_finds_the_chip_by_its_driver_and_reads_volts_times_amps(tmp_path, form):
    FakeIna3221(tmp_path, RAILS, form=form)
    (tmp_path / "class/hwmon/hwmon9").mkdir(parents=True)  # another sensor: not an INA3221
    (tmp_path / "class/hwmon/hwmon9/name").write_text("coretemp\n")
    assert len(chips(tmp_path)) == 1
    monitor = open_monitor("ina3221", {"root": str(tmp_path), "rails": ["VDD_CPU", "VDD_GPU"]})
    assert isinstance(monitor, Ina3221Monitor) and monitor.counter is False
    trace = _capture(monitor)
    assert trace.rails == ("VDD_CPU", "VDD_GPU")
    np.testing.assert_allclose(trace.power_w, 0.6, rtol=1e-3)  # 1 V x 0.4 A + 1 V x 0.2 A


def test_disabled_channels_are_skipped_and_two_chips_are_one_monitor(tmp_path):
    FakeIna3221(tmp_path, RAILS, disabled=(3,))  # VDD_GPU's channel is off
    FakeIna3221(tmp_path, {"VDD_SOC": (1000, 300), "VDD_DDR": (1200, 500)},
                address="1-0041", index=1)  # fmt: skip
    monitor = open_monitor("ina3221", {"root": str(tmp_path)})
    assert monitor.rails == ("VDD_IN", "VDD_CPU", "VDD_SOC", "VDD_DDR")
    np.testing.assert_allclose(_capture(monitor).power_w, 5.0 + 0.4 + 0.3 + 0.6, rtol=1e-3)
    with pytest.raises(MonitorUnavailable, match=r"rails \['VDD_GPU'\] not found"):
        open_monitor("ina3221", {"root": str(tmp_path), "rails": ["VDD_GPU"]})


def test_one_device_and_the_chips_conversion_time_caps_the_poll_rate(tmp_path):
    chip = FakeIna3221(tmp_path, RAILS, update_interval_ms=10)
    monitor = open_monitor("ina3221", {"device": str(chip.dir), "poll_hz": 1000})
    assert monitor.poll_hz == pytest.approx(100.0) and monitor.update_period_s == 0.01


def test_no_chip_is_a_clear_error(tmp_path):
    with pytest.raises(MonitorUnavailable, match="ina3221: no enabled INA3221 channel"):
        open_monitor("ina3221", {"root": str(tmp_path)})


def test_its_options_are_checked_when_the_inventory_loads():
    text = (
        "version: 1\nmonitors:\n  - name: jetson\n    backend: ina3221\n    options:\n"
        "      rails: [VDD_IN]\n      pol_hz: 100\nboards:\n  - name: tx2\n"
        "    processors: [{name: cpu}]\n    power: {monitor: jetson}\n"
    )
    with pytest.raises(SpecError) as err:
        spec.parse_inventory(text, file="inventory/jetson.yaml")
    assert (err.value.line, err.value.field) == (7, "monitors[0].options.pol_hz")
    assert "did you mean 'poll_hz'" in err.value.message
    inv = spec.parse_inventory(text.replace("pol_hz", "poll_hz"))
    options = inv.monitors[0].options
    assert isinstance(options, Ina3221Options) and options.rails == ["VDD_IN"]
    assert inv.monitors[0].model_dump()["options"] == {"rails": ["VDD_IN"], "poll_hz": 100.0}


@pytest.mark.timing  # the fake's rail follows the task's inference windows in real time
def test_energy_end_to_end_through_the_rails(tmp_path):
    """A task on a fake Jetson whose VDD_IN draws 2 W idle and 5 W while inferring: the
    energy pipeline recovers both. The "engine" thread marks each inference when it really
    begins and ends (as the engine does), so a late wake-up on a busy machine moves the
    marker with the power step instead of turning into an error."""
    chip = FakeIna3221(tmp_path, {"VDD_IN": (5000, 400)})
    monitor = open_monitor("ina3221", {"root": str(tmp_path), "poll_hz": 1000})
    # inferences long beside the poll period: a poll thread starved for a few ms on a busy
    # machine sees a step late, and that must stay small beside the window
    markers = fake_task_markers(start_ns=time.monotonic_ns() + 300_000_000, iterations=5,
                                inference_ms=200, gap_ms=50, chips=0, jitter=0)  # fmt: skip
    planned = list(mk.parse(markers).inference)
    actual: list[tuple[int, int]] = []

    def engine() -> None:  # 5 W during each inference, 2 W otherwise
        for begin, end in planned:
            time.sleep(max(0.0, (int(begin) - time.monotonic_ns()) / 1e9))
            began = time.monotonic_ns()
            chip.set("VDD_IN", 5000, 1000)
            time.sleep(max(0.0, (int(end) - time.monotonic_ns()) / 1e9))
            chip.set("VDD_IN", 5000, 400)
            actual.append((began, time.monotonic_ns()))

    monitor.start()
    board = threading.Thread(target=engine)
    board.start()
    board.join()
    kinds = {k: markers["kinds"].index(k) for k in ("inference_begin", "inference_end", "task_end")}
    for row, (kind, it) in enumerate(zip(markers["kind"], markers["iteration"], strict=True)):
        if kind in (kinds["inference_begin"], kinds["inference_end"]):
            markers["t_ns"][row] = actual[it][0 if kind == kinds["inference_begin"] else 1]
        elif kind == kinds["task_end"]:
            markers["t_ns"][row] = max(markers["t_ns"][row], actual[-1][1] + 50_000_000)
    time.sleep(max(0.0, (max(markers["t_ns"]) - time.monotonic_ns()) / 1e9) + 0.3)
    report = analyze(monitor.stop(), markers, None)
    assert report["inferences"] == 5
    assert report["idle_power_w"] == pytest.approx(2.0, rel=0.05)
    duration_ms = np.mean([(e - b) / 1e6 for b, e in actual])
    gross = report["energy_per_inference_mj"]["gross"]["mean"]
    assert gross == pytest.approx(5.0 * duration_ms, rel=0.15)  # 5 W x each inference
    assert any("covers only the rails read: VDD_IN" in w for w in report["quality"]["warnings"])
