"""The inventory: which boards exist, how to reach them, and what measures their power.

Each transport and each power backend declares its own model (see
:mod:`farm.spec.plugins`); this module holds what they share: the board's common
fields, a monitor's, and the SSH-style host, user and jump-host types a network
transport reuses.

The YAML shape is pinned in ``docs/internals.md``; these models are that shape.
Paths (``identity_file``, ``known_hosts``, ``ssh_config``, ``cache_dir``) stay as
written — ``~`` is expanded by whoever uses them, on the machine that uses them
(the station, or the board for ``cache_dir``), never here.

``host``, ``port``, ``user`` and ``identity_file`` of an SSH board (and of each
``proxy_jump`` hop) may be left to an ssh_config, as OpenSSH would: ``host`` can
be a ``Host`` alias, and an unset ``port``/``user``/``identity_file`` takes the
config's ``Port``/``User``/``IdentityFile`` (else 22, the login user, the agent).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_serializer,
    model_validator,
)

from farm.spec import plugins
from farm.spec.base import DEVICE_PATTERN, Name, Problem, SpecModel, Version, duplicates

Device = Annotated[str, StringConstraints(pattern=DEVICE_PATTERN)]
"""A torch device string the engine accepts."""

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")


def _host(value: str) -> str:
    """A DNS name, an ssh_config alias or an IP address, refused here rather than at
    connect: an empty label (``a..b``), a leading ``-`` (ssh would read an option),
    whitespace or control characters."""
    if ":" in value:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise ValueError(f"not an IPv6 address: {value!r}") from None
        return value
    long = [label for label in value.split(".") if len(label) > 63]
    if len(value) > 253 or not _HOST_NAME.match(value) or long:
        raise ValueError(
            f"not a host name or address: {value!r} (labels of at most 63 letters, digits,"
            " '-' and '_' joined by single dots; no leading '-', no spaces or control"
            " characters)"
        )
    return value


def _user(value: str) -> str:
    if not value or value.startswith("-") or any(c.isspace() or not c.isprintable() or c in "@:"
                                                 for c in value):  # fmt: skip
        raise ValueError(
            f"not a user name: {value!r} (no leading '-', spaces, control characters, '@' or ':')"
        )
    return value


Host = Annotated[str, AfterValidator(_host)]
"""A board's or a jump host's ``host``."""

User = Annotated[str, AfterValidator(_user)]
"""A login name on a board or a jump host."""

PaperProcessor = Literal[
    "tegra-k1-cpu", "tegra-k1-gpu", "snapdragon-800-cpu", "snapdragon-800-dsp", "edison-cpu"
]
"""The processors of Lane et al. 2015; ``farm report`` sets a cell beside the study's."""


class MonitorOptions(SpecModel):
    """What every monitor's ``options:`` may hold; each backend's model adds its own keys
    (``farm/power/<backend>.py``, registered with :func:`farm.spec.plugins.options`).

    Serialised with the keys the inventory set only: the backend applies its own
    defaults, so a monitor opened from a dumped spec behaves as the YAML says."""

    model_config = ConfigDict(allow_inf_nan=False)  # no option means .inf; JSON has none

    pre_idle_s: float = Field(default=1.0, ge=0)  # idle captured before a task
    post_idle_s: float = Field(default=1.0, ge=0)  # and after it

    @model_serializer(mode="wrap")
    def _only_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


class Monitor(SpecModel):
    """A power monitor (a Monsoon, RAPL, NVML, ...) plugged into a station."""

    name: Name
    backend: str
    station: Name = "head"
    # validated even when left out: a backend with a required option (hwmon's path) says so
    options: SerializeAsAny[MonitorOptions] = Field(default_factory=dict, validate_default=True)

    @classmethod
    def field_model(cls, field: str, data: Any) -> type[BaseModel] | None:
        """The model of ``field`` for this mapping: ``options`` is its backend's."""
        if field == "options" and isinstance(data, dict) and isinstance(data.get("backend"), str):
            return plugins.find("backend", data["backend"])
        return None

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if plugins.find("backend", value) is None:
            raise UnknownPlugin("backend", value)
        return value

    @field_validator("options", mode="wrap")
    @classmethod
    def _backend_options(cls, value: Any, handler: Any, info: ValidationInfo) -> Any:
        """``options`` validated by the backend's own model."""
        model = plugins.find("backend", info.data.get("backend", ""))
        if model is None or isinstance(value, model):
            return value if model is not None else handler(value)
        if isinstance(value, MonitorOptions):
            value = value.model_dump()
        return model.model_validate(value, context=info.context)


class Battery(SpecModel):
    """The board's battery and duty cycle for the paper's battery-life estimate (§3, Table 4)."""

    capacity_mah: float = Field(gt=0)
    voltage_v: float = Field(gt=0)
    period_s: float = Field(default=5.0, gt=0)  # one inference every period (the paper: 5 s)
    sensor: Literal["none", "microphone", "camera"] | float = "none"  # or J per inference
    low_power_idle_w: float | None = Field(default=None, ge=0)  # idle power in a sleep mode
    share: float = Field(default=0.1, gt=0, le=1)  # inferences possible on this share


class PowerRef(SpecModel):
    """Which monitor channel measures a board (and, optionally, its battery)."""

    monitor: Name
    channel: str = "main"
    battery: Battery | None = None


class Processor(SpecModel):
    """One way to run on a board: a torch device with its threads, CPUs and memory."""

    name: Name
    device: Device = "cpu"
    threads: PositiveInt | None = None
    affinity: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, min_length=1)
    memory_mb: PositiveInt | None = None
    paper: PaperProcessor | None = None  # the study's processor this one stands for

    @field_validator("affinity")
    @classmethod
    def _unique_cpus(cls, value: list[int] | None) -> list[int] | None:
        cpus = value or []
        for i, first in duplicates([str(cpu) for cpu in cpus]):
            raise Problem((i,), f"CPU {cpus[i]} listed twice (first at affinity[{first}])")
        return value


def hop_shorthand(text: str) -> dict[str, Any]:
    """``user@host:port`` (user and port optional; ``[v6]:port``) as a hop mapping."""
    user, _, rest = text.rpartition("@")
    host, port = rest, None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else None
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    if not host or (port is not None and not port.isdigit()) or (user == "" and "@" in text):
        raise ValueError(f"not a jump host: {text!r} (expected [user@]host[:port])")
    hop: dict[str, Any] = {"host": host}
    if user:
        hop["user"] = user
    if port is not None:
        hop["port"] = int(port)
    return hop


class Hop(SpecModel):
    """A jump host between the station and a board (OpenSSH's ``ProxyJump``).

    Written as ``user@host:port`` or as a mapping. ``known_hosts`` and
    ``trust_on_first_use`` left unset mean the board's: a hop's host key is
    checked as strictly as the board's own.
    """

    host: Host
    port: int | None = Field(default=None, ge=1, le=65535)
    user: User | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    trust_on_first_use: bool | None = None


class Board(SpecModel):
    """What every board has, whatever reaches it: the base of each transport's board model.

    A transport declares its own board model (``farm/transport/<name>.py``,
    registered with :func:`farm.spec.plugins.board`): ``local`` adds nothing, ``ssh``
    its host, user, keys and jump hosts, ``adb`` the phone's serial. Validating a
    mapping as ``Board`` picks that model by the mapping's ``transport`` (default
    ``local``), so ``Board.model_validate(board.model_dump(mode="json"))`` gives the
    board back, and an inventory's boards are each validated by their own model.
    """

    name: Name
    transport: str = "local"
    python: str = "python3"
    cache_dir: str = "~/.cache/farm"
    # the board's lock, whoever asks (any account, any cache_dir): a bare name lives in
    # /run/lock (else /dev/shm, /tmp) on the board; an absolute path needs a directory
    # every account can write. Boards that are one machine share it; one machine that
    # stands for several boards (a test bed) gives each its own.
    board_lock: Annotated[
        str, StringConstraints(pattern=r"^(/[^\x00\n\r]+|[A-Za-z0-9][A-Za-z0-9._-]*)$")
    ] = "farm-board"
    station: Name = "head"
    tags: list[str] = Field(default_factory=list)
    connect_timeout_s: float = Field(default=10, gt=0)
    # start-up: the engine's first answer (a torch import) and the first clock exchange;
    # a Raspberry Pi 3 imports torch in about 30 s, a 500 MHz Atom in minutes
    startup_timeout_s: float = Field(default=300, gt=0)
    command_timeout_s: float = Field(default=30, gt=0)  # one short request to a running engine
    processors: list[Processor] = Field(min_length=1)
    power: PowerRef | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Board:
        for i, first in duplicates([p.name for p in self.processors]):
            name = self.processors[i].name
            raise Problem(
                ("processors", i, "name"),
                f"duplicate processor name {name!r} (first at processors[{first}])",
            )
        return self

    @classmethod
    def model_for(cls, data: Any) -> type[Board]:
        """The board model that validates ``data`` (a mapping): its transport's."""
        if cls is not Board or not isinstance(data, dict):
            return cls
        tag = data.get("transport", "local")
        model = plugins.find("transport", tag) if isinstance(tag, str) else None
        if model is None:
            raise UnknownPlugin("transport", tag)
        return model  # type: ignore[return-value]

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """``Board.model_validate(mapping)`` validates with the mapping's transport's model."""
        if cls is Board and isinstance(obj, dict):
            try:
                model = cls.model_for(obj)
            except UnknownPlugin as e:
                raise e.validation_error(cls.__name__, obj) from None
            return model.model_validate(obj, **kwargs)
        return super().model_validate(obj, **kwargs)

    def processor(self, name: str) -> Processor | None:
        """The processor called ``name``, if the board has one."""
        return next((p for p in self.processors if p.name == name), None)


class UnknownPlugin(ValueError):
    """A ``transport:`` or ``backend:`` that names no plug-in."""

    def __init__(self, kind: plugins.Kind, name: Any):
        self.kind, self.name = kind, name
        known = ", ".join(repr(k) for k in plugins.known(kind))
        super().__init__(f"must be one of {known}, got {name!r} (no {kind} plug-in by that name)")

    def validation_error(self, title: str, data: Any) -> ValidationError:
        """This problem as pydantic's error at the ``transport``/``backend`` key."""
        return ValidationError.from_exception_data(
            title,
            [{"type": "value_error", "loc": (self.kind,), "input": data.get(self.kind),
              "ctx": {"error": self}}],
        )  # fmt: skip


def _by_transport(value: Any, handler: Any, info: ValidationInfo) -> Any:
    """An inventory's board: validated by its transport's model (a model passes as is)."""
    if isinstance(value, Board):
        return value
    return Board.model_validate(value, context=info.context)


AnyBoard = Annotated[SerializeAsAny[Board], WrapValidator(_by_transport)]
"""A board of any registered transport (serialised with its own model's fields)."""


class Inventory(SpecModel):
    """Every board and monitor farm knows about."""

    version: Version
    monitors: list[Monitor] = Field(default_factory=list)
    boards: list[AnyBoard] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Inventory:
        for i, first in duplicates([m.name for m in self.monitors]):
            name = self.monitors[i].name
            raise Problem(
                ("monitors", i, "name"),
                f"duplicate monitor name {name!r} (first at monitors[{first}])",
            )
        for i, first in duplicates([b.name for b in self.boards]):
            name = self.boards[i].name
            raise Problem(
                ("boards", i, "name"), f"duplicate board name {name!r} (first at boards[{first}])"
            )
        known = [m.name for m in self.monitors]
        for i, board in enumerate(self.boards):
            if board.power and board.power.monitor not in known:
                raise Problem(
                    ("boards", i, "power", "monitor"),
                    f"unknown monitor {board.power.monitor!r}; known: {known or 'none'}",
                )
        return self

    def board(self, name: str) -> Board | None:
        """The board called ``name``, if there is one."""
        return next((b for b in self.boards if b.name == name), None)
