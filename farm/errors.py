"""farm's exceptions: one tree, translated at the boundaries.

    FarmError                    anything farm raises on purpose (exit 1)
    ├── UserError                bad input from a person: exit 2, nothing started
    │   ├── SpecError            a YAML file is wrong: names file, line and field
    │   ├── StoreRefused         the store file cannot be trusted (left as it was)
    │   └── MonitorUnavailable   a power monitor named in the inventory is not there
    ├── TransportError           reaching a board failed (raised by farm.transport)
    │   ├── BoardUnreachable     connect refused, DNS, a host name that cannot be, auth, dropped
    │   ├── BoardBusy            another farm holds the board's lease for too long
    │   ├── HostKeyError         the board's host key cannot be trusted
    │   │   ├── UnknownHostKey   not in known_hosts, and trust-on-first-use is off
    │   │   └── HostKeyMismatch  known_hosts holds a different key: refuse
    │   ├── CommandFailed        a remote command exited non-zero (carries the result)
    │   └── TransportTimeout     connect, command or task took longer than allowed
    └── EngineError              the engine on the board reported an error

Callers never see paramiko, invoke or Ray exceptions: the transport and the
scheduler translate them here, raising ``from`` the original cause.
"""

from __future__ import annotations

from dataclasses import dataclass


class FarmError(Exception):
    """Base of every error farm raises on purpose."""

    exit_code = 1


class UserError(FarmError):
    """A person gave farm something it cannot use. The CLI prints one line, exits 2."""

    exit_code = 2


class SpecError(UserError):
    """A YAML document is invalid. ``str()`` is ``file:line: field: message``."""

    def __init__(self, file: str, line: int | None, field: str | None, message: str):
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        where = f"{file}:{line}" if line else file
        what = f"{field}: {message}" if field else message
        # one line, always: a key or value from the document may hold newlines
        super().__init__(f"{where}: {what}".replace("\r", "\\r").replace("\n", "\\n"))


class StoreRefused(UserError):
    """The store is a directory, not a farm store, damaged, or from a newer farm."""


class MonitorUnavailable(UserError):
    """A power monitor the inventory names cannot be opened."""


class TransportError(FarmError):
    """Reaching a board failed. ``board`` names it; ``retryable`` guides the scheduler."""

    retryable = True

    def __init__(self, board: str, message: str):
        self.board = board
        self.message = message  # without the board's name: for lines that name it already
        super().__init__(f"{board}: {message}")


def without_board(exc: BaseException) -> str:
    """An error's text for a line that names its board already (said once, not twice)."""
    return exc.message if isinstance(exc, TransportError) else str(exc)


class BoardUnreachable(TransportError):
    pass


class BoardBusy(TransportError):
    """Another farm measures on the board (it holds the board's lease): not a fault."""


class HostKeyError(TransportError):
    retryable = False


class UnknownHostKey(HostKeyError):
    pass


class HostKeyMismatch(HostKeyError):
    pass


@dataclass(frozen=True)
class CommandResult:
    """What a command on a board returned."""

    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class CommandFailed(TransportError):
    retryable = False

    def __init__(self, board: str, result: CommandResult):
        self.result = result
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        super().__init__(board, f"`{result.command}` exited {result.exit_code}: {tail[0]}")


class TransportTimeout(TransportError):
    pass


class EngineError(FarmError):
    """The engine on a board reported a failure (the message is the engine's)."""
