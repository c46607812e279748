"""The transport interface, and the registry that picks one by the board's ``transport``.

A transport is how farm reaches one board: run a command, copy a file, keep a
long-lived process (the warm engine) talking JSON lines. Implementations live one
per module (``local``, ``ssh``, ``fake``) and register themselves by name with
:func:`register`, which refuses a second registration under the same name — a
typo'd plugin must not silently replace the real SSH transport.

Two rules every implementation keeps:

- argv is a list, never a string. Where a remote shell sits in between, every
  element is quoted with :func:`shell_command` so a job value like
  ``x; touch /tmp/pwned`` arrives as data, not as a second command;
- only :class:`farm.errors.TransportError` subclasses leave a transport, raised
  ``from`` the library error that caused them.
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from farm.errors import CommandFailed, CommandResult, UserError
from farm.spec import plugins

Board = Any
"""A ``farm.spec`` board (typed loosely: the transport reads attributes only)."""


def shell_command(argv: Sequence[str]) -> str:
    """One shell command line that runs exactly ``argv``: each element quoted."""
    if not argv:
        raise ValueError("empty argv")
    return " ".join(shlex.quote(str(a)) for a in argv)


# How long ``Channel.close`` waits for the process to exit on its own before killing it.
# An engine with torch loaded takes seconds to tear down on a busy or Edison-class
# board; a kill loses its exit status and its last lines, so the wait is generous.
CLOSE_GRACE_S = 20.0


class Channel(abc.ABC):
    """A long-lived process on a board, spoken to in lines (the warm engine).

    ``read_line`` returns ``""`` once the process closed its stdout; then
    ``exit_status`` says how it ended (``None`` when unknown, e.g. the
    connection dropped) and ``stderr_tail`` holds the last of its stderr.
    """

    exit_status: int | None = None

    @abc.abstractmethod
    def send_line(self, line: str) -> None:
        """Write ``line`` and a newline to the process's stdin."""

    @abc.abstractmethod
    def read_line(self, timeout: float) -> str:
        """The next stdout line without its newline; ``""`` at end of output.

        Raises :class:`farm.errors.TransportTimeout` when no full line arrives
        within ``timeout`` seconds.
        """

    @property
    @abc.abstractmethod
    def alive(self) -> bool:
        """Whether the process may still answer."""

    @property
    @abc.abstractmethod
    def stderr_tail(self) -> str:
        """The last few kB the process wrote to stderr."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close stdin and let the process end on its own (the engine exits on EOF).

        A process still running after :data:`CLOSE_GRACE_S` is killed.
        """

    @abc.abstractmethod
    def kill(self) -> None:
        """End the process now (SIGKILL), e.g. after it missed a deadline."""


class Transport(abc.ABC):
    """How farm reaches one board. One instance per board, reused across tasks."""

    board_model: type[Any]  # the inventory's model of its boards (set by ``register``)

    def __init__(self, board: Board):
        self.board = board
        self.name: str = board.name

    @abc.abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run ``argv`` on the board and wait at most ``timeout`` seconds.

        Raises ``CommandFailed`` on a non-zero exit unless ``check=False``, and
        ``TransportTimeout`` (after ending the command) when it runs too long.
        """

    @abc.abstractmethod
    def put(self, local: Path, remote: str) -> None:
        """Copy the local file to ``remote`` (its directory must exist)."""

    @abc.abstractmethod
    def open_process(self, argv: Sequence[str]) -> Channel:
        """Start ``argv`` on the board with pipes for stdin, stdout and stderr."""

    def stat(self, remote: str) -> tuple[int, int] | None:
        """``(size, mtime in whole seconds)`` of a board file, or None if it is absent.

        The default runs ``stat`` on the board; transports with a cheaper way
        (SFTP, the local file system) override it."""
        result = self.run(
            ["stat", "-c", "%s %Y", "--", self.expand(remote)], timeout=30, check=False
        )
        if result.exit_code != 0:
            return None
        size, mtime = result.stdout.split()
        return int(size), int(mtime)

    @abc.abstractmethod
    def home(self) -> str:
        """The login user's home directory on the board (where ``~`` points)."""

    def expand(self, path: str) -> str:
        """``path`` with a leading ``~`` replaced by the board's home."""
        if path == "~" or path.startswith("~/"):
            return self.home().rstrip("/") + path[1:]
        return path

    def host_key(self) -> str | None:
        """The board's host key as ``<type> SHA256:<fingerprint>``; None where there is none."""
        return None

    def open(self) -> None:  # noqa: B027 - optional hook, nothing to open by default
        """Establish the connection now, so reachability and host-key errors surface early."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Release connections. The transport may be used again afterwards (it reconnects)."""

    def _check(self, result: CommandResult, check: bool) -> CommandResult:
        if check and not result.ok:
            raise CommandFailed(self.name, result)
        return result

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


T = TypeVar("T", bound=type[Transport])
_REGISTRY: dict[str, type[Transport]] = {}


def register(name: str, *, board: type[Any]) -> Callable[[T], T]:
    """Class decorator: make a transport available as ``transport: <name>``, its boards
    described by ``board`` (a :class:`farm.spec.inventory.Board` subclass whose
    ``transport`` is ``Literal[name]``: the inventory validates them with it)."""

    def add(cls: T) -> T:
        if name in _REGISTRY:
            raise ValueError(
                f"transport {name!r} is already registered by {_REGISTRY[name].__qualname__}"
            )
        if not (isinstance(cls, type) and issubclass(cls, Transport)):
            raise TypeError(f"{cls!r} is not a Transport subclass")
        plugins.board(name)(board)
        _REGISTRY[name] = cls
        cls.board_model = board
        return cls

    return add


def registered() -> dict[str, type[Transport]]:
    """Every transport: name → class (imports each module of ``farm/transport/``)."""
    plugins.discover("transport")
    return dict(_REGISTRY)


def connect(board: Board) -> Transport:
    """The transport named by ``board.transport``, connected.

    Connecting here (not at the first command) makes an unreachable board or an
    untrusted host key fail at the one place callers expect it.
    """
    kind = getattr(board, "transport", None)
    if kind not in _REGISTRY and isinstance(kind, str):
        plugins.find("transport", kind)  # ``farm.transport.<kind>`` registers itself
    cls = _REGISTRY.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise UserError(
            f"board {board.name!r}: unknown transport {kind!r}; known: {sorted(registered())}"
        )
    transport = cls(board)
    transport.open()
    return transport
