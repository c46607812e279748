"""A fake ``adb`` client: the hardware-we-lack stand-in for an Android phone.

``install(directory, serials)`` writes an executable ``adb`` shaped like the real
client's command line (platform-tools 29's words and exit codes) whose "devices"
are this machine: ``adb -s SERIAL shell CMD`` runs ``CMD`` with ``sh -c`` (as
adbd does on the phone), ``push``/``pull`` copy files, ``devices`` and
``get-state`` list the serials it was given. An unknown serial is refused as
adb refuses it (``error: device 'X' not found``, exit 1). Every invocation's argv
is appended, one JSON list a line, to ``<directory>/adb.log``, so a test can see
exactly what the transport asked for.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

_SCRIPT = r"""#!{python}
import json, os, shutil, sys, time

SERIALS = {serials}
LOG = {log}


def fail(text, code=1):
    sys.stderr.write(text + "\n")
    sys.exit(code)


def main(args):
    with open(LOG, "a") as log:
        log.write(json.dumps(args) + "\n")
    serial = os.environ.get("ANDROID_SERIAL")
    while args and args[0].startswith("-"):
        if args[0] == "-s" and len(args) > 1:
            serial, args = args[1], args[2:]
        else:
            fail(f"adb: unknown option {{args[0]}}")
    if not args:
        fail("adb: usage: no command")
    command, rest = args[0], args[1:]
    if command == "devices":
        print("List of devices attached")
        for s in SERIALS:
            print(f"{{s}}\tdevice")
        print()
        return 0
    if command in ("version", "help"):
        print("Android Debug Bridge version 1.0.41 (farm's fake)")
        return 0
    if command not in ("get-state", "shell", "push", "pull"):
        fail(f"adb: unknown command {{command}}")
    if serial is None:
        if len(SERIALS) != 1:
            fail("adb: error: more than one device/emulator" if SERIALS
                 else "adb: no devices/emulators found")
        serial = SERIALS[0]
    if serial not in SERIALS:
        if command in ("push", "pull"):
            fail(f"adb: error: failed to get feature set: device '{{serial}}' not found")
        fail(f"error: device '{{serial}}' not found")
    if command == "get-state":
        print("device")
        return 0
    if command == "shell":
        if not rest:
            fail("adb: interactive shells are not faked")
        os.execvp("sh", ["sh", "-c", " ".join(rest)])
    if len(rest) != 2:
        fail(f"adb: usage: {{command}} SRC DST")
    source, target = rest
    began = time.monotonic()
    if not os.path.exists(source):
        if command == "push":
            fail(f"adb: error: cannot stat '{{source}}': No such file or directory")
        fail(f"adb: error: failed to stat remote object '{{source}}': No such file or directory")
    if os.path.isdir(target):
        target = os.path.join(target, os.path.basename(source))
    try:
        shutil.copyfile(source, target)
    except OSError as e:
        where = "remote couldn't create file" if command == "push" else "cannot create file"
        fail(f"adb: error: failed to copy '{{source}}' to '{{target}}': {{where}}: {{e.strerror}}")
    size = os.path.getsize(target)
    took = max(time.monotonic() - began, 1e-6)
    verb = "pushed" if command == "push" else "pulled"
    print(f"{{source}}: 1 file {{verb}}, 0 skipped. {{size / took / 1e6:.1f}} MB/s"
          f" ({{size}} bytes in {{took:.3f}}s)")
    return 0


sys.exit(main(sys.argv[1:]))
"""


def install(directory: Path, serials: list[str]) -> Path:
    """Write the fake ``adb`` into ``directory`` (put it first on PATH, or name it in a
    board's ``adb:``); its devices are ``serials``. Returns the executable's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "adb"
    log = directory / "adb.log"
    path.write_text(
        _SCRIPT.format(python=sys.executable, serials=repr(list(serials)), log=repr(str(log)))
    )
    path.chmod(0o755)
    return path


def calls(directory: Path) -> list[list[str]]:
    """Every argv the fake was run with, oldest first."""
    log = Path(directory) / "adb.log"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line]
