"""``transport: adb`` — an Android device (a phone, a dev board) through the adb client.

The study's Snapdragon 800 is a phone SoC: a phone is reached with Android's own
debug bridge, not SSH. Every operation is one run of the station's ``adb``
client (the board's ``adb:``, default ``adb`` on PATH) aimed at the board's
``serial`` (``adb devices`` lists them; ``host:port`` for adb over TCP):

- ``run``/``open_process``: ``adb -s SERIAL shell CMD``. adb hands ``CMD`` to the
  device's ``sh -c``, so ``CMD`` is the argv with every element shell-quoted
  (:func:`shell_command`): a job value like ``x; touch /tmp/pwned`` stays data.
  adb's shell protocol (Android 7+) returns the command's exit status and keeps
  stdout and stderr apart; the warm engine speaks JSON lines over the pipes;
- ``put``/``fetch``: ``adb push`` / ``adb pull`` (no shell: the paths are argv);
- ``open`` asks ``adb -s SERIAL get-state`` first, so an unplugged phone or an
  unknown serial is a :class:`BoardUnreachable` naming adb's own words.

The board has no login home that the shell user can write: ``~`` is the board's
``home:`` (``/data/local/tmp``, the one place ``adb shell`` may write on a stock
phone). The engine needs a Python on the device (e.g. Termux's): set ``python:``.
There is no host key: adb authorises the station's key on the phone itself.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator

from farm.errors import BoardUnreachable, CommandFailed, CommandResult
from farm.spec.inventory import Board
from farm.transport.base import Channel, Transport, register, shell_command
from farm.transport.local import LocalChannel, run_here

_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\[\]-]*$")


def _serial(value: str) -> str:
    if not _SERIAL.match(value):
        raise ValueError(
            f"not an adb serial: {value!r} (as `adb devices` lists it: letters, digits, '.',"
            " ':', '-'; host:port for adb over TCP; no leading '-')"
        )
    return value


Serial = Annotated[str, AfterValidator(_serial)]
"""What ``adb devices`` prints: letters and digits, or ``host:port`` for adb over TCP."""

_GONE = re.compile(
    r"^(adb: )?error: (failed to get feature set: )?(device '[^']*' not found|device offline"
    r"|device unauthorized|device still authorizing|no devices/emulators found)\.?$"
)
"""What the adb client (not the device's command) prints when the device is not there."""


class AdbBoard(Board):
    """``transport: adb``: a device the station's adb client sees."""

    transport: Literal["adb"]
    serial: Serial  # as ``adb devices`` lists it
    adb: str = "adb"  # the station's adb client (a path, or a name on PATH)
    home: str = "/data/local/tmp"  # where ``~`` (cache_dir) points on the device


@register("adb", board=AdbBoard)
class AdbTransport(Transport):
    def _adb(self, *args: str) -> list[str]:
        return [self.board.adb, "-s", self.board.serial, *args]

    def _call(
        self, args: list[str], timeout: float, stdin: bytes | None, shown: str
    ) -> CommandResult:
        """One run of the adb client; adb's own failures become the board's."""
        try:
            result = run_here(self.name, self._adb(*args), timeout, stdin, shown)
        except OSError as e:
            raise BoardUnreachable(
                self.name, f"cannot run the adb client {self.board.adb!r}: {e}"
            ) from e
        if result.exit_code == 1 and self._device_gone(result.stderr):
            raise BoardUnreachable(self.name, f"adb: {result.stderr.strip().splitlines()[-1]}")
        return result

    def _device_gone(self, stderr: str) -> bool:
        """adb's own complaint (``error: device 'X' not found``), not the command's."""
        return any(_GONE.match(line) for line in stderr.splitlines())

    def open(self) -> None:
        result = self._call(["get-state"], self.board.connect_timeout_s, None, "adb get-state")
        if result.exit_code != 0 or result.stdout.strip() != "device":
            said = (result.stderr or result.stdout).strip() or f"exit {result.exit_code}"
            raise BoardUnreachable(self.name, f"adb -s {self.board.serial}: {said}")

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> CommandResult:
        command = shell_command(argv)
        return self._check(self._call(["shell", command], timeout, stdin, command), check)

    def put(self, local: Path, remote: str) -> None:
        self._copy("push", str(local), self.expand(remote))

    def fetch(self, remote: str, local: Path) -> None:
        """Copy the device's file ``remote`` to ``local`` (``adb pull``)."""
        self._copy("pull", self.expand(remote), str(local))

    def _copy(self, verb: str, source: str, target: str) -> None:
        shown = f"adb {verb} {source} {target}"
        result = self._call([verb, source, target], 600, None, shown)
        if result.exit_code != 0:
            raise CommandFailed(self.name, result)

    def open_process(self, argv: Sequence[str]) -> Channel:
        try:
            proc = subprocess.Popen(
                self._adb("shell", shell_command(argv)),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # kill() takes the client's process group
            )
        except OSError as e:
            raise BoardUnreachable(self.name, f"cannot run the adb client: {e}") from e
        return LocalChannel(self.name, proc)

    def home(self) -> str:
        return self.board.home
