#!/usr/bin/env bash
# Install farm and everything its tests need, from nothing, on Debian/Ubuntu.
# Run from the repository root:  bash deploy/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # openssh-server: the test bed's boards are real sshd daemons on loopback ports.
    # systemd: `systemd-analyze verify` checks the units in deploy/systemd/.
    # chromium: the report tests render report.html headless and screenshot it.
    # iproute2 (`ip`) and util-linux (`nsenter`): the test bed's boards behind a jump host live
    # in a network namespace of their own.
    # g++: the ExecuTorch C++ runner (farm/engine/native/runner.cpp) is built from the
    # executorch wheel's headers and library; the station compiles the aoti runtime's
    # AOTInductor libraries with it (torch._inductor.aoti_compile_and_package).
    # prometheus (with promtool) and prometheus-pushgateway: the monitoring tests start
    # their own on loopback ports; the packages' services are not needed.
    # libusb-1.0-0: pyusb's backend, for the Monsoon power monitor (without it pyusb says
    # only "No backend available").
    $SUDO apt-get install -y -qq --no-install-recommends \
        openssh-server openssh-client systemd chromium iproute2 util-linux \
        prometheus prometheus-pushgateway libusb-1.0-0 g++ >/dev/null
fi

PY=${PYTHON:-python3}
# torch first, pinned: any other version pulls gigabytes of CUDA packages.
$PY -m pip install -q "torch==2.13.0"
# everything else at the versions farm is tested with (Ray bounded: see the file)
$PY -m pip install -q -c deploy/constraints.txt -e ".[test,onnx,executorch]"
# The test bed's torch-free board: a venv with only onnxruntime and numpy (no torch),
# built once per machine under ~/.cache/farm/testbed, so the tests download nothing.
$PY -m farm.testing.torchfree build --constraints deploy/constraints.txt
# The ExecuTorch C++ runner, built once per source and executorch version (~/.cache/farm/native).
$PY -m farm.engine.native build
# the `farm` of the python it was installed into (a venv's bin, not whatever PATH finds first)
echo "farm installed: $($PY -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/farm"
