"""ONNX Runtime (CPU execution provider): kind ``onnx`` artifacts, no torch needed.

Threads are per session (``intra_op_num_threads``), so a warm engine builds a new
session when a task asks for another count. The layer pass is ORT's own profiler
(``enable_profiling``): one event per node and run; a node's metadata
``pkg.torch.onnx.name_scopes`` (written by ``torch.onnx.export(dynamo=True)``)
names the module it came from, and nodes ORT fused (Conv+ReLU, Gemm+ReLU) are
labelled with every module they merged, e.g. ``conv1+act1 (fused)``.
"""

from __future__ import annotations

import bisect
import gc
import json
import os
import tempfile
import time
import zipfile
from typing import Any

from farm.engine import bundle
from farm.engine.layertypes import GRAPH_ROW
from farm.engine.runtimes.base import OpRow, Profile, Runtime, Session, register
from farm.engine.stats import fast_mean


@register("onnxruntime")
class OnnxRuntime(Runtime):
    kinds = (bundle.KIND_ONNX,)
    library = "onnxruntime"
    needs_torch = False

    def __init__(self) -> None:
        self.threads = 1

    def set_threads(self, threads: int) -> int:
        self.threads = threads  # applied to each session this runtime builds
        return threads

    def load(self, path: str, manifest: dict[str, Any]) -> OrtSession:
        return OrtSession(path, manifest, self)


class OrtSession(Session):
    form = "onnxruntime"
    impl = "python"

    def __init__(self, path: str, manifest: dict[str, Any], runtime: OnnxRuntime) -> None:
        import onnxruntime as ort

        # the model's bytes are read from the artifact for each session built, not kept:
        # a copy held here would count in the process's RSS beside ORT's own (AlexNet: 244 MB)
        self._ort, self._path, self._runtime = ort, path, runtime
        self.inputs = bundle.example_inputs(manifest)
        with zipfile.ZipFile(path) as archive:
            self.param_bytes = archive.getinfo(bundle.MEMBERS[bundle.KIND_ONNX]).file_size
        self._nodes = list(manifest.get("nodes") or [])
        self._threads = runtime.threads
        self._session = self._new_session(profile=False)
        self._names = [i.name for i in self._session.get_inputs()]
        self._feed = dict(zip(self._names, self.inputs, strict=True))
        self.call = self._call_fn(self._session)

    def _options(self, profile: bool) -> Any:
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if profile:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="farm-ort-"), "p")
        return options

    def _new_session(self, profile: bool) -> Any:
        # a file ORT opens itself (written once beside the artifact): bytes read here would
        # sit beside ORT's parsed copy while the session is built, and count in the peak
        model = bundle.extract(self._path, bundle.MEMBERS[bundle.KIND_ONNX])
        return self._ort.InferenceSession(
            model, self._options(profile), providers=["CPUExecutionProvider"]
        )

    def _call_fn(self, session: Any) -> Any:
        run, feed = session.run, self._feed
        return lambda: run(None, feed)

    def refresh_threads(self) -> None:
        """A cached session built for another thread count is rebuilt (ORT's pools are the
        session's)."""
        if self._threads != self._runtime.threads:
            self._threads = self._runtime.threads
            self._session = self._new_session(profile=False)
            self.call = self._call_fn(self._session)

    @property
    def handle(self) -> Any:
        return self._session

    def output(self) -> Any:
        return self._session.run(None, self._feed)[0]

    def profile(self, iterations: int) -> Profile:
        """ORT's profiler on a session of its own, each profiled run followed by an
        unprofiled run of the timed session, both timed here as the latency pass times
        an inference: the profiled runs' trace gives the rows, the unprofiled runs what
        the profiler added (see `_rows`)."""
        session = self._new_session(profile=True)
        profiled, plain = self._call_fn(session), self.call
        warm = 3  # the profiled session's own warm-up, dropped by `_rows`
        clock = time.perf_counter_ns
        profiled_ns, plain_ns = [0] * (warm + iterations), [0] * (warm + iterations)
        gc_was_enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            for i in range(warm + iterations):
                begin = clock()
                profiled()
                middle = clock()
                plain()
                profiled_ns[i], plain_ns[i] = middle - begin, clock() - middle
        finally:
            if gc_was_enabled:
                gc.enable()
        trace = session.end_profiling()
        try:
            with open(trace) as f:
                events = json.load(f)
        finally:
            os.unlink(trace)
            os.rmdir(os.path.dirname(trace))
        return _rows(events, self._nodes, profiled_ns[warm:], plain_ns[warm:])


def _rows(events: list[dict], nodes: list[dict], profiled_ns: list[int],
          plain_ns: list[int]) -> Profile:  # fmt: skip
    """Layer rows from ORT's trace: each kernel's own time as ORT's profiler reports it,
    and a ``(graph)`` row with the rest of the profiled run, so the rows add up to it.

    ``profiled_ns``/``plain_ns``: each profiled run's whole (timed around
    ``InferenceSession.run``) and the unprofiled run after it; the trace's last
    ``len(profiled_ns)`` runs are theirs (the warm-up is dropped). Rows and whole are
    means over the faster half of the profiled runs (a busy machine only ever adds time:
    `farm.engine.stats.fast_mean`'s reasoning). The ``(graph)`` row is ORT's own work
    around and between its kernels (executor, the input's binding, the output's numpy
    array) *and its profiler's*: the profiler costs a few µs a kernel, some inside the
    kernels' events (a kws Reshape reads 3 µs), so no split of it is measured and the
    rows are left as measured. ``unprofiled_ms`` (the plain runs' fast mean) says what
    the profiler added; the layer pass sets the rows' sum against it and flags a
    difference beyond 5% (on kws the profiler more than doubles an inference)."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )[-len(profiled_ns) :]
    per_run: list[dict[str, list]] = [{} for _ in runs]
    starts = [e["ts"] for e in runs]
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        k = bisect.bisect_right(starts, e["ts"]) - 1
        if k < 0 or e["ts"] > runs[k]["ts"] + runs[k]["dur"]:
            continue
        op = e.get("args", {}).get("op_name", "")
        row = per_run[k].setdefault(label(name[: -len("_kernel_time")], op, nodes), [0.0, op, 0])
        row[0] += e["dur"] * 1000
        row[2] += 1
    whole_ns = profiled_ns[-len(runs) :] if runs else []
    order = sorted(range(len(runs)), key=lambda k: whole_ns[k])
    fast = sorted(order[: max(1, (len(order) + 1) // 2)]) if runs else []
    totals: dict[str, list] = {}
    graph_ns = 0.0
    for k in fast:
        for name, (ns, op, calls) in per_run[k].items():
            row = totals.setdefault(name, [0.0, op, 0])
            row[0] += ns
            row[2] += calls
        graph_ns += max(0.0, whole_ns[k] - sum(ns for ns, _, _ in per_run[k].values()))
    n = max(len(fast), 1)
    rows = [OpRow(name, op, ns / n / 1e6, max(calls // n, 1))
            for name, (ns, op, calls) in totals.items()]  # fmt: skip
    rows.append(OpRow(GRAPH_ROW, "Graph", graph_ns / n / 1e6, 1))
    whole_ms = sum(whole_ns[k] for k in fast) / n / 1e6
    notes = [] if nodes else ["no node metadata: rows are ORT's node names"]
    plain_ms = fast_mean(plain_ns) / 1e6 if plain_ns else None
    return Profile(rows, whole_ms, len(runs), "onnxruntime enable_profiling", notes, plain_ms)


_ACTIVATIONS = {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "HardSigmoid"}


def label(kernel: str, op: str, nodes: list[dict]) -> str:
    """The model layer(s) an ORT kernel ran. ``nodes`` are the exported graph's nodes as
    the manifest lists them (name, op, layer, inputs, outputs). ORT renames what it
    rewrites: ``fused node_linear`` (FusedGemm: Gemm+Relu), ``relu_nchwc`` (a Conv that
    absorbed the Relu after it, in the NCHWc layout); those name every layer merged."""
    by_name = {n["name"]: n for n in nodes}
    base = kernel.removeprefix("fused ").removesuffix("_nchwc")
    node = by_name.get(base) or by_name.get(f"node_{base}")
    if node is None:
        return f"{kernel} (runtime)" if op in ("ReorderInput", "ReorderOutput") else kernel
    core = op.removeprefix("Fused")
    merged = [node]
    if node["op"] in _ACTIVATIONS and core != node["op"]:  # the activation's name, another op
        producer = _producer(node, nodes)
        if producer is not None:
            merged.insert(0, producer)
    elif op.startswith("Fused") or kernel.startswith("fused "):
        consumer = _consumer(node, nodes)
        if consumer is not None and consumer["op"] in _ACTIVATIONS:
            merged.append(consumer)
    layers = list(dict.fromkeys(n["layer"] or n["name"] for n in merged))
    if len(merged) > 1:
        return "+".join(layers) + " (fused)"
    return layers[0]


def _producer(node: dict, nodes: list[dict]) -> dict | None:
    wanted = set(node["inputs"])
    return next((n for n in nodes if wanted & set(n["outputs"])), None)


def _consumer(node: dict, nodes: list[dict]) -> dict | None:
    made = set(node["outputs"])
    readers = [n for n in nodes if made & set(n["inputs"])]
    return readers[0] if len(readers) == 1 else None
