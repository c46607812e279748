"""Code-annotation markers: the bridge between engine timings and power samples.

Every marker is a time on the board's ``CLOCK_MONOTONIC`` (nanoseconds), a kind,
an iteration and a layer index. They are kept as four parallel columns rather
than a list of dicts: tens of thousands of markers stay cheap to record and to
ship as JSON, and the power analysis reads columns anyway.

The first eight kinds are the contract in docs/internals.md; kinds are only ever
appended so that an index keeps its meaning.
"""

from __future__ import annotations

from collections.abc import Sequence

KINDS = (
    "task_begin",
    "task_end",
    "inference_begin",
    "inference_end",
    "layer_begin",
    "layer_end",
    "pulse_high",
    "pulse_low",
    # extensions: the first forward after load, timed apart from the latency pass
    "cold_begin",
    "cold_end",
)
TASK_BEGIN, TASK_END = 0, 1
INFERENCE_BEGIN, INFERENCE_END = 2, 3
LAYER_BEGIN, LAYER_END = 4, 5
PULSE_HIGH, PULSE_LOW = 6, 7
COLD_BEGIN, COLD_END = 8, 9


class Markers:
    """Append-only marker columns (``t_ns``, ``kind``, ``iteration``, ``layer``)."""

    def __init__(self) -> None:
        self.t_ns: list[int] = []
        self.kind: list[int] = []
        self.iteration: list[int] = []
        self.layer: list[int] = []
        # the latency pass's CPU time per inference (ns, by iteration), beside its windows
        self.inference_cpu_ns: list[int] | None = None

    def __len__(self) -> int:
        return len(self.t_ns)

    def add(self, t_ns: int, kind: int, iteration: int = -1, layer: int = -1) -> None:
        self.t_ns.append(t_ns)
        self.kind.append(kind)
        self.iteration.append(iteration)
        self.layer.append(layer)

    def add_pairs(
        self,
        begins: Sequence[int],
        ends: Sequence[int],
        begin: int,
        end: int,
        cpu_ns: Sequence[int] | None = None,
    ) -> None:
        """Record ``begin``/``end`` markers for iterations 0..n-1 in time order, and
        (the latency pass) each inference's CPU time.

        The timed loop only fills preallocated lists; turning them into
        markers happens here, after the clock has stopped.
        """
        for i, (b, e) in enumerate(zip(begins, ends, strict=True)):
            self.add(b, begin, i)
            self.add(e, end, i)
        if cpu_ns is not None:
            self.inference_cpu_ns = list(cpu_ns)

    def to_json(self, layer_names: Sequence[str] = (), layer_types: Sequence[str] = ()) -> dict:
        """The column-array form of docs/internals.md, sorted by time.

        ``layer_types`` (Conv2d, Linear, ...) lets a power analysis group layers by kind."""
        order = sorted(range(len(self.t_ns)), key=self.t_ns.__getitem__)
        cpu = {}
        if self.inference_cpu_ns is not None:
            cpu = {"cpu_clock": "process_cputime_ns", "inference_cpu_ns": self.inference_cpu_ns}
        return {
            **cpu,
            "clock": "monotonic_ns",
            "kinds": list(KINDS),
            "t_ns": [self.t_ns[i] for i in order],
            "kind": [self.kind[i] for i in order],
            "iteration": [self.iteration[i] for i in order],
            "layer": [self.layer[i] for i in order],
            "layer_names": list(layer_names),
            "layer_types": list(layer_types),
        }
