"""pytest plugin: real OpenSSH boards on loopback (see ``farm.testing.testbed``).

``testbed`` is shared by the whole session (3 boards); a test that breaks a
board for good (new host key, SIGSTOP), or needs boards behind a jump host
(``behind=N``), builds its own with ``make_testbed``.
``board_spec(bed, name, **changes)`` gives a board as ``farm.spec`` models it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farm.spec import load_inventory
from farm.testing.testbed import SSHD, BoardClass, Testbed


def _require_sshd() -> None:
    if shutil.which(SSHD) is None and not Path(SSHD).exists():
        pytest.fail("openssh-server is not installed: run `bash deploy/install.sh`")


@pytest.fixture(scope="session")
def testbed(tmp_path_factory) -> Iterator[Testbed]:
    _require_sshd()
    bed = Testbed(tmp_path_factory.mktemp("testbed"), n=3)
    try:
        bed.up()
        yield bed
    finally:
        bed.down()


@pytest.fixture
def make_testbed(tmp_path) -> Iterator[Any]:
    """A factory of private test beds, all torn down after the test."""
    _require_sshd()
    beds: list[Testbed] = []

    def make(n: int = 1, classes: list[BoardClass] | None = None, behind: int = 0) -> Testbed:
        bed = Testbed(tmp_path / f"bed{len(beds)}", classes=classes, n=n, behind=behind)
        beds.append(bed)
        return bed.up()

    try:
        yield make
    finally:
        for bed in beds:
            bed.down()


def board_spec(bed: Testbed, name: str, **changes: Any) -> Any:
    """The test bed's board ``name`` from its inventory, with ``changes`` applied."""
    board = next(b for b in load_inventory(bed.inventory_path).boards if b.name == name)
    return board.model_copy(update=changes) if changes else board
