"""farm's exceptions: one tree, translated at the boundaries.

    FarmError                    anything farm raises on purpose (exit 1)
    ├── UserError                bad input from a person: exit 2, nothing started
    │   ├── SpecError            a YAML file is wrong: names file, line and field
    │   └── NotFound             no job or task by the id a person gave
    ├── HeadError                the head cannot be reached, or a call to it broke
    ├── StoreError               the results database refused a write or a file
    │   ├── IllegalTransition    a state change the graph in farm.states forbids
    │   ├── UnknownTask          a write names a task the store does not hold
    │   └── StoreRefused         the file cannot be trusted, left as it was (exit 2):
    │       └── SchemaTooNew     a directory, not a farm store, damaged, or from a newer farm
    ├── TransportError           reaching a board failed (raised by farm.transport)
    │   ├── BoardUnreachable     connect refused, DNS, a host name that cannot be, auth, dropped
    │   ├── BoardBusy            another farm holds the board's lease for too long
    │   ├── HostKeyError         the board's host key cannot be trusted
    │   │   ├── UnknownHostKey   not in known_hosts, and trust-on-first-use is off
    │   │   └── HostKeyMismatch  known_hosts holds a different key: refuse
    │   ├── CommandFailed        a remote command exited non-zero (carries the result)
    │   └── TransportTimeout     connect, command or task took longer than allowed
    ├── DeployGroupError         some boards of a fan-out deploy failed (per-board map)
    ├── MonitorError             a power monitor could not record
    │   ├── MonitorUnavailable   the monitor named in the inventory is not there
    │   └── MonitorBusy          it is recording another board
    └── EngineError              the engine on the board reported an error
        └── BadOutcome           its result JSON is not the versioned shape farm reads

``TransportError.retryable`` says whether the same task may simply run again
(a lost connection: yes; a command that failed or a host key refused: no); the
station reads it when it tells the scheduler what an outcome means.

A failure that crosses a process (station → scheduler → store → metrics) travels
as a ``Failure`` record: its kind (the class's name), its message and what it means
(retryable, the board's fault, quarantine now); the store keeps the kind beside
the message, so nothing downstream parses it back out of a string.

Callers never see paramiko, invoke, sqlite or Ray exceptions: the transport,
the store and the client translate them here, raising ``from`` the original cause.
"""

from __future__ import annotations

from dataclasses import dataclass


class FarmError(Exception):
    """Base of every error farm raises on purpose."""

    exit_code = 1


class UserError(FarmError):
    """A person gave farm something it cannot use. The CLI prints one line, exits 2."""

    exit_code = 2


class CannotLower(FarmError):
    """A runtime cannot take a model or precision (a missing operator, a lowering that
    fails): the cell does not fit, with the runtime's own reason (`farm.export`)."""


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


class NotFound(UserError):
    """No job or task by the id a person gave."""


class HeadError(FarmError):
    """The head could not be reached, or a call to it failed outside farm's own errors."""


class StoreError(FarmError):
    """The results database refused a write, or cannot be read by this farm."""


class IllegalTransition(StoreError):
    """A state change the graph in ``farm.states`` forbids. Nothing was written."""

    def __init__(self, what: str, current: str, target: str):
        self.what = what
        self.current = current
        self.target = target
        super().__init__(f"{what}: illegal move {current} → {target}")


class UnknownTask(StoreError):
    """A write names a task (or job) the store does not hold."""


class StoreRefused(StoreError):
    """The store file cannot be trusted (a directory, not a farm store, damaged, from
    a newer farm); refused before anything wrote to it. A person's to mend: exit 2."""

    exit_code = 2


class SchemaTooNew(StoreRefused):
    """The database was written by a newer farm; this one will not guess its shape."""


class MonitorError(FarmError):
    """A power monitor could not record. Raised mid-run: not a person's input error."""


class MonitorUnavailable(MonitorError):
    """A power monitor the inventory names cannot be opened (now, or any more)."""


class MonitorBusy(MonitorError):
    """The monitor is already recording another board (a monitor serves one at a time)."""


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


class DeployGroupError(FarmError):
    """Some boards of a fan-out failed. ``results`` holds every board's outcome
    (``farm.deploy.DeployResults``: ``{board: DeployReport | the error}``)."""

    def __init__(self, results):
        self.results = results
        failed = results.failed
        lines = [
            f"{name}: {type(e).__name__}: {without_board(e)}" for name, e in sorted(failed.items())
        ]
        super().__init__(
            f"deploy failed on {len(failed)} of {len(results)} boards: " + "; ".join(lines)
        )


class EngineError(FarmError):
    """The engine on a board reported a failure (the message is the engine's)."""


class BadOutcome(EngineError):
    """The engine's result JSON failed validation on arrival (wrong version or shape)."""


@dataclass(frozen=True)
class Failure:
    """A failure as data. ``str(failure)`` is how it reads (``Kind: message``)."""

    kind: str  # the exception's class (``BoardUnreachable``...); ``engine``: the engine's own
    message: str
    retryable: bool = False  # the same task may run again, here or on a sibling board
    board_fault: bool = False  # the board failed, not the task
    quarantine: bool = False  # take the board out of service now

    @classmethod
    def of(cls, exc: BaseException, *, board_fault: bool = False, quarantine: bool = False) -> Failure:
        """From an exception; ``retryable`` is the exception's own say (``TransportError``)."""
        return cls(
            type(exc).__name__,
            str(exc),
            retryable=bool(getattr(exc, "retryable", False)),
            board_fault=board_fault,
            quarantine=quarantine,
        )

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"
