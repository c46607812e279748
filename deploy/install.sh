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
    $SUDO apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
fi

PY=${PYTHON:-python3}
# torch first, pinned: any other version pulls gigabytes of CUDA packages.
$PY -m pip install -q "torch==2.13.0"
# everything else at the versions farm is tested with (Ray bounded: see the file)
$PY -m pip install -q -c deploy/constraints.txt -e ".[test]"
echo "farm installed: $(command -v farm)"
