"""One measurement task, start to finish: the engine's main job.

The order of steps matters and is fixed:

1. the process (niceness, CPU affinity, threads) and what the board is doing
   (load, CPU steal, temperature), and baseline memory readings,
2. the optional sync pulse,
3. load the artifact (or take it from the warm engine's cache) onto the device,
4. refuse early if the parameters alone exceed the memory available,
5. the cold inference — the very first forward after load, un-instrumented —
   then, for a ``module:`` model, its export for the layer pass; the RSS
   high-water mark so far is the *loader's* peak, and it is reset here so that
   ``peak_rss_mb`` is inference's alone,
6. one instrumented forward measuring peak live activations; refuse with
   ``does_not_fit`` if parameters + peak exceed the memory available,
7. warmup, then the latency pass (one inference at a time),
8. the per-layer pass (instrumented forwards interleaved with plain ones: ticks
   between a zoo graph's layers and between an exported graph's nodes, hooks on
   the leaves of any other model),
9. the sync pulse again, peak RSS, the board's state after, and the result
   with the warnings a reader must see (a busy board, a layer sum off by >5%).

A failure becomes ``status: "error"`` with the message: the caller always
gets one result object back, and the board's engine keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from farm.engine import board, bundle, host, measuring, memory, process, pulse, runtimes, stats
from farm.engine.layertypes import GRAPH_ROW, NONLINEAR, SUM_TOLERANCE
from farm.engine.markers import (
    COLD_BEGIN,
    COLD_END,
    INFERENCE_BEGIN,
    INFERENCE_END,
    TASK_BEGIN,
    TASK_END,
    Markers,
)
from farm.engine.request import Request
from farm.engine.timing import Timed, forward_fn, time_inferences

if TYPE_CHECKING:  # torch is imported by the eager runtime's steps only (a board may lack it)
    import torch


log = logging.getLogger("farm.engine")

Loader = Callable[[str], Any]  # path -> LoadedModel (module, example_input, layers, meta)


def _default_loader(path: str) -> Any:
    from farm.engine import artifact  # imported late: it is the heavy part of a cold start

    return artifact.load(path)


class ModelCache:
    """Loaded models by (artifact path, device), least recently used evicted first.

    The warm engine keeps a few models so that a sweep over threads or
    iterations does not pay the load every task. Artifacts are named by their
    sha256, so a path always holds the same model.
    """

    def __init__(self, capacity: int = 2, loader: Loader | None = None) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self.loader = loader or _default_loader
        self._models: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def get(self, path: str, device: torch.device) -> tuple[Any, bool]:
        """The model on ``device`` and whether it was just loaded."""
        key = (path, str(device))
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key], False
        self._make_room()
        model = self.loader(path)
        for module in _distinct(model.module, getattr(model, "layer_root", None)):
            module.to(device)
            with contextlib.suppress(NotImplementedError):  # an exported module refuses
                module.eval()  # eval(): it keeps the mode it was exported in
        if self.capacity > 0:
            self._models[key] = model
        return model, True

    def session(
        self, path: str, runtime: runtimes.Runtime, manifest: dict
    ) -> tuple[runtimes.Session, bool]:
        """A runtime's loaded session for ``path`` and whether it was just loaded."""
        key = (path, f"runtime:{runtime.name}")
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key], False
        self._make_room()
        session = runtime.load(path, manifest)
        if self.capacity > 0:
            self._models[key] = session
        return session, True

    def _make_room(self) -> None:
        while self._models and len(self._models) >= max(self.capacity, 1):
            self._models.popitem(last=False)  # make room before loading the next one

    def forget(self, path: str, device: Any) -> None:
        self._models.pop((path, str(device)), None)

    def keep_only(self, path: str) -> None:
        """Drop every model but this artifact's (on any device or runtime), so that memory
        read next is this model's own."""
        for key in [k for k in self._models if k[0] != path]:
            del self._models[key]

    def __len__(self) -> int:
        return len(self._models)


def _timed_runner(session: runtimes.Session) -> Callable[[int], Timed]:
    """``n -> Timed``: the common loop over the session's one call, or the runtime's own
    timed run where it times in its own process (a native runner)."""
    call = session.call
    if call is not None:
        return lambda n: time_inferences(call, n)
    return session.timed_run


def _distinct(*modules: Any) -> list[Any]:
    return list({id(m): m for m in modules if m is not None}.values())


class DoesNotFit(Exception):
    def __init__(self, required_mb: float, available_mb: float):
        self.required_mb = required_mb
        self.available_mb = available_mb
        super().__init__(f"needs {required_mb:.1f} MB, {available_mb:.1f} MB available")


def _is_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", MemoryError) if torch else MemoryError
    return isinstance(exc, (MemoryError, oom))


class Unfit(Exception):
    """The runtime cannot take this task (its own reason): the result is ``does_not_fit``."""


RESULT_VERSION = 1
"""The shape of the result object; the head refuses a version it does not read."""


def run_task(request: Request, cache: ModelCache | None = None) -> dict:
    """Run one measurement task and return the result object of docs/internals.md."""
    task = _Task(request, ModelCache(capacity=0) if cache is None else cache)
    with contextlib.ExitStack() as held:  # the board's measuring lock, until the result is done
        try:
            waited = held.enter_context(measuring.hold(request.board_lock, request.task_id))
            task.env["board_lock_wait_s"] = waited.seconds
            if warning := waited.warning():
                task.warnings.append(warning)
            task.run()
        except (DoesNotFit, Unfit, runtimes.RuntimeUnavailable) as e:
            task.finish("does_not_fit", str(e))
        except Exception as e:
            if _is_oom(e):  # the allocator disagreed with our estimate: same answer, honestly
                task.finish("does_not_fit", f"out of memory: {e}")
                return task.result
            log.exception("task %s failed", request.task_id)
            task.finish("error", f"{type(e).__name__}: {e}")
        else:
            task.finish("ok", None)
    return task.result


class _Task:
    """The state of one task while it runs (see the module docstring for the steps)."""

    def __init__(self, request: Request, cache: ModelCache) -> None:
        self.req = request
        self.cache = cache
        self.markers = Markers()
        self.layer_names: list[str] = []
        self.layer_types: list[str] = []
        self.mem: dict[str, Any] = {}
        self.env: dict[str, Any] = {}
        self.warnings: list[str] = []
        self._ticks_before: tuple[int, int] | None = None
        self.result: dict[str, Any] = {
            "version": RESULT_VERSION,
            "task_id": request.task_id,
            "status": None,
            "error": None,
            "warnings": self.warnings,
            "model_form": None,
            "latency": None,
            "layers": [],
            "layer_pass": None,
            "memory": self.mem,
            "markers": None,
            "env": self.env,
        }

    def run(self) -> None:
        req = self.req
        self.markers.add(time.monotonic_ns(), TASK_BEGIN)
        self.mem["hwm_reset"] = False
        if req.memory:  # the peak read at the end is this task's own (farm.engine.memory)
            own = lambda: self.cache.keep_only(req.artifact)  # noqa: E731
            self.mem["hwm_reset"], why = memory.start_own_peak(own)
            self.warnings.extend([why] if why else [])
        self.mem["baseline_rss_mb"] = memory.rss_mb()
        avail_before = memory.mem_available_mb()
        runtime = runtimes.get(req.runtime)
        self.env["runtime"] = runtime.name
        self.env["precision"] = req.precision
        missing = runtime.available()
        if missing is not None:
            raise Unfit(f"runtime {runtime.name}: {missing}")
        self._own_process(runtime)
        if runtime.name == "eager":
            self._run_eager(avail_before)
        else:
            self._run_session(runtime, avail_before)

    def _run_eager(self, avail_before: float | None) -> None:
        """The eager runtime: torch's own instruments (activation probe, ticks, hooks)."""
        import torch

        from farm.engine import layers

        req = self.req
        device = torch.device(req.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {req.device} requested but CUDA is not available")
        self.env["device"] = str(device)
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
        self._pulse()

        model, fresh = self.cache.get(req.artifact, device)
        self.env["model_cached"] = not fresh
        self.env["model"] = dict(getattr(model, "meta", {}) or {})
        self.result["model_form"] = getattr(model, "form", "eager")
        module, leaf_layers = model.module, list(model.layers)
        # the class the latency pass times: a module: model's is the user's own
        self.env["model_class"] = f"{type(module).__module__}.{type(module).__qualname__}"
        self.layer_names = [name for name, _ in leaf_layers]
        self.layer_types = [layers.layer_type(mod) for _, mod in leaf_layers]
        example = model.example_input(device, batch=req.batch)
        self._check_fit(memory.param_bytes(module), 0, device, avail_before, fresh)

        run_once = forward_fn(module, example)
        layer_root = getattr(model, "layer_root", module)
        with torch.inference_mode():
            cold = time_inferences(run_once, 1, sync)
        self.markers.add(cold.mono_begin[0], COLD_BEGIN)
        self.markers.add(cold.mono_end[0], COLD_END)
        # a module: model is exported for its layer pass here, so that tracing's memory
        # counts as loading's, not inference's
        graph, graph_form = self._layer_graph(model, example) if req.layers else (None, "")
        if req.memory:  # what loading took; from here on the high-water mark is inference's
            self.mem["load_peak_rss_mb"] = memory.peak_rss_mb()
            self.mem["hwm_reset"] = memory.reset_peak_rss()
        probe = memory.probe(layer_root, example, leaf_layers)
        self._check_fit(memory.param_bytes(module), probe.peak_activation_bytes, device,
                        avail_before, fresh)  # fmt: skip

        with torch.inference_mode():
            for _ in range(req.warmup):
                run_once()
            if sync is not None:
                sync()
            timed = time_inferences(run_once, req.iterations, sync)
        self.markers.add_pairs(timed.mono_begin, timed.mono_end, INFERENCE_BEGIN, INFERENCE_END,
                               timed.cpu_ns())  # fmt: skip
        self.result["latency"] = stats.summarize(
            timed.latencies_ms(), cold.latencies_ms()[0], timed.cpu_ns()
        )
        self.env["gc_paused_while_timing"] = True

        if graph is not None:
            self._graph_layer_pass(graph, example, sync)
            self.result["layer_pass"]["model_form"] = graph_form
        elif req.layers and leaf_layers:
            layer_run = run_once if layer_root is module else forward_fn(layer_root, example)
            self._layer_pass(layer_run, layer_root, leaf_layers, probe, device, sync)
            self.result["layer_pass"]["model_form"] = getattr(model, "layer_form", "eager")

        self._pulse()

    def _run_session(self, runtime: runtimes.Runtime, avail_before: float | None) -> None:
        """Any other runtime, through its `runtimes.Session`: the same steps, the same
        timing loop (or the runtime's own, for one that times in its own process), the
        runtime's own per-operator profile for the layer pass."""
        req = self.req
        if req.device != "cpu":
            raise Unfit(f"runtime {runtime.name} runs on the CPU here, not {req.device}")
        self.env["device"] = "cpu"
        bundle.verified(req.artifact)
        manifest = bundle.read_manifest(req.artifact)
        if manifest.get("kind") not in runtime.kinds:
            raise Unfit(
                f"runtime {runtime.name} loads {'/'.join(runtime.kinds)} artifacts, "
                f"not {manifest.get('kind')!r}"
            )
        self._pulse()
        session, fresh = self.cache.session(req.artifact, runtime, manifest)
        if hasattr(session, "refresh_threads"):
            session.refresh_threads()
        self.env["model_cached"] = not fresh
        self.env["model"] = {k: v for k, v in manifest.items() if k != "nodes"}
        self.env["runtime_impl"] = session.impl
        self.result["model_form"] = session.form
        self.env["model_class"] = session.form
        self._check_fit(session.param_bytes, 0, "cpu", avail_before, fresh)
        run = _timed_runner(session)
        cold = run(1)
        self.markers.add(cold.mono_begin[0], COLD_BEGIN)
        self.markers.add(cold.mono_end[0], COLD_END)
        if req.memory:
            self.mem["load_peak_rss_mb"] = memory.peak_rss_mb()
            self.mem["hwm_reset"] = memory.reset_peak_rss()
        self.mem["peak_activation_bytes"] = None  # the runtime's arena is not visible to us
        if req.warmup:
            run(req.warmup)
        timed = run(req.iterations)
        self.markers.add_pairs(timed.mono_begin, timed.mono_end, INFERENCE_BEGIN, INFERENCE_END)
        runner_rss = getattr(session, "peak_rss_bytes", None)  # a runtime in its own process
        if req.memory and runner_rss:
            self.mem["runner_peak_rss_mb"] = runner_rss / 2**20
        self.result["latency"] = stats.summarize(timed.latencies_ms(), cold.latencies_ms()[0])
        self.env["gc_paused_while_timing"] = session.call is not None
        if req.memory:  # inference's peak, before the profiler builds a session of its own
            self.mem["peak_rss_mb_before_layers"] = memory.peak_rss_mb()
        if req.layers:
            self._profile_pass(session)
        self._pulse()

    def _pulse(self) -> None:
        spec = self.req.sync_pulse
        if spec is None:
            return
        pattern = pulse.drive(spec, self.markers)
        self.env.setdefault("sync_pulse", {
            "chips": spec.chips, "chip_ms": spec.chip_ms, "seed": spec.seed, "pattern": pattern,
        })  # fmt: skip

    def _profile_pass(self, session: runtimes.Session) -> None:
        """The runtime's own per-operator profile as layer rows, with the ±5% sum check."""
        profile = session.profile(self.req.layer_iterations)
        if profile is None or not profile.rows:
            notes = profile.notes if profile is not None else []
            self.warnings.append(
                "layer pass: " + ("; ".join(notes) or f"{session.form} has no profiler")
            )
            return
        total = sum(r.time_ms for r in profile.rows)
        rows = []
        for i, r in enumerate(profile.rows):
            rows.append({
                "index": i, "name": r.name, "type": r.op, "time_ms": r.time_ms,
                "compute_ms": r.time_ms, "share": r.time_ms / total if total else None,
                "nonlinear": r.op in NONLINEAR, "calls": r.calls,
            })  # fmt: skip
        # rows add up to the unprofiled whole where the runtime measured one (their
        # `(graph)` row holds the rest), else to the profiled runs' own whole
        whole = profile.unprofiled_ms or profile.whole_ms
        ratio = total / whole if whole else None
        unprofiled = profile.unprofiled_ms
        summary = {
            "iterations": profile.iterations,
            "layer_sum_ms": total,
            "layer_compute_sum_ms": total,
            "layer_whole_ms": profile.whole_ms,
            "whole_unhooked_ms": profile.unprofiled_ms,  # eager's name: the plain whole
            "graph_ms": next((r.time_ms for r in profile.rows if r.name == GRAPH_ROW), None),
            # what the profiler added to an inference (eager's name: what its hooks add)
            "overhead_pct": 100 * (profile.whole_ms / unprofiled - 1) if unprofiled else None,
            "layer_sum_vs_whole": ratio,
            "layer_sum_outside_5pct": ratio is None or abs(ratio - 1) > SUM_TOLERANCE,
            "nonlinear_share": (
                sum(r["time_ms"] for r in rows if r["nonlinear"]) / total if total else None
            ),
            "source": profile.source,
            "notes": profile.notes,
            "model_form": session.form,
        }
        self.layer_names = [r["name"] for r in rows]
        self.layer_types = [r["type"] for r in rows]
        if summary["layer_sum_outside_5pct"]:
            if unprofiled:
                self.warnings.append(
                    f"layer sum {ratio or 0:.2f}x the unprofiled runs (outside 5%): the rows are "
                    f"profiled runs', and {profile.source} adds {summary['overhead_pct']:.0f}% "
                    "to an inference (its cost between kernels is in the (graph) row)"
                )
            else:
                self.warnings.append(
                    f"layer sum {ratio or 0:.2f}x the profiled runs (outside 5%): the runtime's "
                    "operators do not account for its whole inference"
                )
        summary["layer_sum_vs_latency"] = total / self.result["latency"]["median_ms"]
        self.result["layers"] = rows
        self.result["layer_pass"] = summary

    def _own_process(self, runtime: runtimes.Runtime) -> None:
        """Niceness, affinity, then threads (their default follows the affinity); record."""
        req = self.req
        self.env.update(host.describe())
        self.env.update(board.facts())
        self.env["inherited_env"] = process.inherited_environment()
        self.env["nice"] = process.apply_nice(req.nice)
        self.env["affinity"] = process.apply_affinity(req.affinity)
        try:
            self.env["threads"] = runtime.set_threads(req.threads or process.usable_cpus())
        except runtimes.ThreadsFixed as exc:
            raise Unfit(str(exc)) from exc
        if runtime.name == "eager":
            self.env["interop_threads"] = host.apply_interop_threads(req.interop_threads)
        elif req.interop_threads is not None:
            raise Unfit(f"runtime {runtime.name} has no inter-op threads to set")
        self.env["loadavg_before"] = board.loadavg()
        self.env["temp_c_before"] = board.temp_c()
        self._ticks_before = board.cpu_ticks()

    def _check_fit(
        self,
        param_bytes: int,
        activation_bytes: int,
        device: torch.device,
        avail_before: float | None,
        fresh: bool,
    ) -> None:
        """Record the requirement; raise :class:`DoesNotFit` when it exceeds what is free."""
        required = (param_bytes + activation_bytes) / memory.MB
        if self.req.memory_mb is not None:
            available, source = float(self.req.memory_mb), "memory_mb"
        elif getattr(device, "type", device) == "cuda":
            import torch

            # the model is already on the device: its parameters count as available to it
            free, _ = torch.cuda.mem_get_info(device)
            available, source = (free + param_bytes) / memory.MB, "cuda_free"
        elif avail_before is not None:
            # read before loading; a cached model was already resident, so add it back
            available = avail_before + (0 if fresh else param_bytes / memory.MB)
            source = "MemAvailable"
        else:
            available, source = None, None
        self.mem.update(
            param_bytes=param_bytes,
            peak_activation_bytes=activation_bytes,
            required_mb=required,
            available_mb=available,
            available_source=source,
        )
        if available is not None and required > available:
            self.cache.forget(self.req.artifact, device)
            raise DoesNotFit(required, available)

    def _layer_pass(
        self,
        run_once: Callable[[], Any],
        root: torch.nn.Module,
        leaf_layers: list[tuple[str, torch.nn.Module]],
        probe: memory.Probe,
        device: torch.device,
        sync: Callable[[], None] | None,
    ) -> None:
        import torch

        from farm.engine import layers

        infos = []
        for i, (name, mod) in enumerate(leaf_layers):
            in_b, out_b = probe.layer_io.get(i, (0, 0))
            infos.append(
                layers.LayerInfo(
                    name=name,
                    type=self.layer_types[i],
                    params=sum(p.numel() for p in mod.parameters()),
                    param_bytes=memory.param_bytes(mod),
                    input_bytes=in_b,
                    output_bytes=out_b,
                )
            )
        if hasattr(root, "ticking") and len(root.layers()) == len(leaf_layers):
            # a zoo graph: clock reads in its own loop between layers, no hooks
            with torch.inference_mode():
                lp = layers.run_tick_pass(root, run_once, self.req.layer_iterations, sync)
            layers.add_tick_markers(lp, list(range(len(infos))), self.markers)
            self._layer_result(*layers.summarize_ticked(lp, infos))
            return
        interval = layers.calibrate_interval_cost(device)
        with torch.inference_mode():
            lp = layers.run_layer_pass(run_once, leaf_layers, self.req.layer_iterations, sync)
        layers.add_markers(lp, self.markers)
        self._layer_result(*layers.summarize(lp, infos, interval))

    def _layer_graph(self, model: Any, example: Any) -> tuple[torch.fx.GraphModule | None, str]:
        """The graph the layer pass times node by node and its form (`LoadedModel.layer_graph`),
        or ``None``: hook the leaf layers. A model torch.export cannot trace is still
        measured; a warning says its layer pass hooked the leaves instead."""
        layer_graph = getattr(model, "layer_graph", None)
        if layer_graph is None:
            return None, ""
        try:
            return layer_graph(example)
        except Exception as exc:  # torch.export refuses much that eager code does, many ways
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            self.warnings.append(
                f"layer pass: torch.export could not trace the model ({reason}); "
                "its leaf modules were hooked instead"
            )
            return None, ""

    def _graph_layer_pass(
        self, graph: torch.fx.GraphModule, example: Any, sync: Callable[[], None] | None
    ) -> None:
        """Time every node of an exported graph (see `farm.engine.graph_layers`)."""
        import torch

        from farm.engine import graph_layers

        plan = graph_layers.Plan.of(graph)
        infos = plan.infos(graph)
        self.layer_names = [info.name for info in infos]
        self.layer_types = [info.type for info in infos]
        with torch.inference_mode():
            lp = graph_layers.run_graph_pass(graph, example, self.req.layer_iterations, sync)
        graph_layers.add_markers(lp, plan, self.markers)
        self._layer_result(*graph_layers.summarize(lp, plan, infos))

    def _layer_result(self, rows: list[dict], summary: dict) -> None:
        """Record a layer pass's rows and summary, with the checks a reader must see."""
        summary.setdefault("source", "eager")
        # against the latency pass too: taken at another time, so for reference only
        summary["layer_sum_vs_latency"] = (
            summary["layer_sum_ms"] / self.result["latency"]["median_ms"]
        )
        if summary["layer_sum_outside_5pct"]:
            self.warnings.append(
                f"layer sum {summary['layer_sum_vs_whole']:.2f}x the plain forwards (outside 5%)"
            )
        self.result["layers"] = rows
        self.result["layer_pass"] = summary

    def finish(self, status: str, error: str | None) -> None:
        self.markers.add(time.monotonic_ns(), TASK_END)
        # a runtime's profiler builds a second session: inference's peak is the one before it
        before = self.mem.get("peak_rss_mb_before_layers")
        self.mem["peak_rss_mb"] = (
            (before if before is not None else memory.peak_rss_mb()) if self.req.memory else None
        )
        self.env["loadavg_after"] = board.loadavg()
        self.env["temp_c_after"] = board.temp_c()
        self.env["cpu_steal_pct"] = board.steal_pct(self._ticks_before, board.cpu_ticks())
        self.warnings[:0] = board.busy_warnings(
            self.env.get("loadavg_before"),
            process.usable_cpus(),
            self.env["cpu_steal_pct"],
            (self.env.get("temp_c_before"), self.env["temp_c_after"]),
        )
        self.result["status"] = status
        self.result["error"] = error
        self.result["markers"] = self.markers.to_json(self.layer_names, self.layer_types)
