"""The test bed and every fake, in one place, shipped with the package so tests,
benchmarks and demos on any machine can use them. Nothing here is imported by
farm's own code except the ``fake`` transport's registration.

    testbed.py    real OpenSSH boards on loopback ports (``deploy/testbed``)
    transport.py  ``transport: fake``: in-process boards that answer instantly
    monsoon_usb.py  a Monsoon HVPM on USB, beneath the real ``monsoon`` package
    pynvml.py     ``pynvml`` shaped like NVIDIA's library
    sysfs.py      powercap (RAPL) and hwmon sysfs trees
    waiting.py    ``wait_for`` and ``wait_job``: the tests' one way to poll
    plans.py      planned tasks built by hand, for store and scheduler tests

Fakes stand in only for hardware we do not have, shaped exactly like the real
library's or sysfs interface.
"""
