"""Fakes of the power-monitor interfaces we have no hardware for, shaped exactly like
the real ones: a Monsoon HVPM on USB (beneath the real ``monsoon`` package), ``pynvml``,
and powercap/hwmon sysfs trees.
Shipped with the package so tests and demos on any machine can use them."""
