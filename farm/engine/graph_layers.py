"""The per-layer pass of an exported program: every graph node timed, billed by the graph.

Hooks see modules, not work. In a user's model much of the work is functional (a
ReLU written as ``torch.relu``, a skip addition, attention's matmuls and softmax),
and a module such as ``nn.MultiheadAttention`` uses its ``out_proj`` weight without
calling ``out_proj``: hooks on leaves bill that work to whichever leaf ends next
(a transformer's attention landed on ``dropout1``) and report ``out_proj`` at zero.

An exported program says who did what: every node of its graph is one ATen
operation and carries the stack of modules it was traced in (``nn_module_stack``).
So this pass times nodes, not modules:

- a copy of the program's graph gets a *tick* (append a code, read the clock) before
  its first operation and after every operation; the copy shares the program's
  weights and runs the same generated code, so the only difference is the ticks;
- ticked and plain forwards alternate (:func:`farm.engine.layers.interleave`), and
  their difference, per tick, is what one tick costs *in place* — subtracted from
  each node's interval (previous tick to its own);
- node times add up into rows keyed by the innermost module on the node's stack and
  the node's kind of operation (:func:`op_kind`): ``layers.0.self_attn`` with kind
  ``attention`` and, apart, its projections with kind ``linear``; a functional ReLU
  is ``nonlinear`` under the module whose ``forward`` called it;
- what runs before the first operation and after the last (input checks, pytree
  flattening, handing back the output) is the ``(graph)`` row.

A module appears only where it ran an operation, and the weights a row reads are
its parameters, so ``self_attn`` owns ``out_proj``'s weights and ``out_proj`` has no
row of its own.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from farm.engine import layers
from farm.engine.markers import Markers

# ATen operation name (the overload packet's, e.g. "relu" for aten.relu.default) -> kind.
_KINDS: dict[str, frozenset[str]] = {
    "nonlinear": frozenset(
        {
            "relu", "relu6", "leaky_relu", "prelu", "_prelu_kernel", "rrelu", "elu", "selu",
            "celu", "gelu", "silu", "mish", "sigmoid", "hardsigmoid", "log_sigmoid",
            "log_sigmoid_forward", "tanh", "hardtanh", "hardswish", "softplus", "softshrink",
            "hardshrink", "threshold", "glu", "softmax", "_softmax", "_safe_softmax",
            "log_softmax", "_log_softmax",
        }
    ),
    "attention": frozenset(
        {
            "scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
            "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
            "_scaled_dot_product_cudnn_attention", "_native_multi_head_attention",
            "_transformer_encoder_layer_fwd",
        }
    ),
    "matmul": frozenset({"linear", "addmm", "mm", "matmul", "bmm", "baddbmm", "einsum", "addmv", "mv"}),
    "conv": frozenset(
        {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d",
         "conv_transpose2d", "conv_transpose3d"}
    ),
    "norm": frozenset(
        {"batch_norm", "native_batch_norm", "_native_batch_norm_legit_no_training",
         "_native_batch_norm_legit", "layer_norm", "native_layer_norm", "group_norm",
         "native_group_norm", "instance_norm", "rms_norm", "_fused_rms_norm"}
    ),
    "pooling": frozenset(
        {"max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "avg_pool1d",
         "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
         "adaptive_avg_pool3d", "_adaptive_avg_pool2d", "adaptive_max_pool2d"}
    ),
    "dropout": frozenset({"dropout", "native_dropout", "feature_dropout", "alpha_dropout"}),
    "layout": frozenset(
        {"view", "_unsafe_view", "reshape", "transpose", "t", "permute", "unsqueeze", "squeeze",
         "flatten", "unflatten", "contiguous", "clone", "select", "slice", "expand", "narrow",
         "cat", "stack", "split", "split_with_sizes", "chunk", "unbind", "alias", "detach",
         "getitem", "to", "_to_copy", "lift_fresh_copy", "copy"}
    ),
    "reduction": frozenset({"mean", "sum", "amax", "amin", "max", "min", "prod", "var", "std"}),
    "elementwise": frozenset(
        {"add", "add_", "sub", "rsub", "mul", "div", "neg", "pow", "sqrt", "rsqrt", "exp",
         "log", "abs", "clamp", "clamp_min", "clamp_max", "where", "masked_fill", "eq", "ne",
         "lt", "le", "gt", "ge", "logical_not", "logical_and", "bitwise_not", "reciprocal"}
    ),
}  # fmt: skip
_KIND_OF = {name: kind for kind, names in _KINDS.items() for name in names}
# Inside an attention module, the products of activations (no weight), their scaling,
# masking and softmax are the attention itself; its projections (with a weight) stay linear.
_ATTENTION_PARTS = frozenset({"matmul", "nonlinear", "elementwise", "dropout"})
ROOT_ROW = "(root)"


def op_name(node: fx.Node) -> str:
    """``relu`` for ``aten.relu.default``, ``getitem`` for ``operator.getitem``."""
    target = node.target
    return getattr(target, "_opname", None) or getattr(target, "__name__", str(target))


def op_kind(node: fx.Node, owner_type: str) -> str:
    """The kind of work a node does: nonlinear, attention, linear, matmul, conv, norm, ...

    ``owner_type`` is the class of the innermost module that ran it: a module the
    paper counts as non-linear (``LocalResponseNorm``, decomposed into several
    operations) makes all of its operations non-linear, and inside a module whose
    class names attention, the products, softmax and scaling are ``attention``.
    A ``matmul`` that reads a weight is ``linear``.
    """
    if owner_type in layers.NONLINEAR:
        return "nonlinear"
    kind = _KIND_OF.get(op_name(node), "other")
    if kind == "matmul" and any(
        isinstance(a, fx.Node) and a.op == "get_attr" for a in node.all_input_nodes
    ):
        return "linear"
    if kind in _ATTENTION_PARTS and "attention" in owner_type.lower():
        return "attention"
    return kind


def _owner(node: fx.Node) -> tuple[str, str]:
    """(module path, class name) of the innermost module on the node's stack."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", "Module"
    path, cls = list(stack.values())[-1]
    return path, (cls if isinstance(cls, str) else cls.__name__).rsplit(".", 1)[-1]


def _value_bytes(node: Any) -> int:
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    values = value if isinstance(value, (tuple, list)) else [value]
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))


@dataclass
class Row:
    """One row of the result: the work of one module of one kind."""

    module: str
    type: str
    kind: str
    nodes: list[int] = field(default_factory=list)  # indices into Plan.work
    weights: list[str] = field(default_factory=list)  # get_attr targets this row read first

    @property
    def name(self) -> str:
        return self.module or ROOT_ROW


@dataclass
class Plan:
    """The program's operations in order and the row each belongs to."""

    work: list[fx.Node]
    row_of: list[int]
    rows: list[Row]

    @classmethod
    def of(cls, gm: fx.GraphModule) -> Plan:
        work = [n for n in gm.graph.nodes if n.op == "call_function"]
        rows: dict[tuple[str, str], Row] = {}
        row_of: list[int] = []
        claimed: set[str] = set()
        for k, node in enumerate(work):
            path, owner = _owner(node)
            kind = op_kind(node, owner)
            row = rows.setdefault((path, kind), Row(path, owner, kind))
            row.nodes.append(k)
            row_of.append(list(rows).index((path, kind)))
            for arg in node.all_input_nodes:
                if arg.op == "get_attr" and arg.target not in claimed:
                    claimed.add(str(arg.target))
                    row.weights.append(str(arg.target))
        return cls(work, row_of, list(rows.values()))

    def names(self) -> list[str]:
        """Row names: the module path, with the kind where one module has rows of several."""
        kinds: dict[str, int] = {}
        for row in self.rows:
            kinds[row.name] = kinds.get(row.name, 0) + 1
        return [f"{r.name} [{r.kind}]" if kinds[r.name] > 1 else r.name for r in self.rows]

    def infos(self, gm: fx.GraphModule) -> list[layers.LayerInfo]:
        """Static facts per row: the weights it read, the bytes that cross its border."""
        out = []
        for name, row in zip(self.names(), self.rows, strict=True):
            tensors = [functools.reduce(getattr, w.split("."), gm) for w in row.weights]
            inside = {self.work[k] for k in row.nodes}
            read = {
                a
                for k in row.nodes
                for a in self.work[k].all_input_nodes
                if a not in inside and a.op != "get_attr"
            }
            given = {n for n in inside if any(u not in inside for u in n.users)}
            out.append(
                layers.LayerInfo(
                    name=name,
                    type=row.type,
                    params=sum(t.numel() for t in tensors if isinstance(t, torch.nn.Parameter)),
                    param_bytes=sum(t.numel() * t.element_size() for t in tensors),
                    input_bytes=sum(_value_bytes(n) for n in read),
                    output_bytes=sum(_value_bytes(n) for n in given),
                )
            )
        return out


def ticked_copy(gm: fx.GraphModule, tick: Callable[[int], None]) -> fx.GraphModule:
    """``gm`` with ``tick(0)`` before its first operation and ``tick(k + 1)`` after the k-th.

    The copy shares ``gm``'s weights, attributes and forward hooks (an exported module
    checks its inputs in a pre-hook), so a ticked forward differs from a plain one by
    the ticks alone.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecations
        graph = copy.deepcopy(gm.graph)
    work = [n for n in graph.nodes if n.op == "call_function"]
    if work:
        with graph.inserting_before(work[0]):
            graph.call_function(tick, (0,))
    for k, node in enumerate(work):
        with graph.inserting_after(node):
            graph.call_function(tick, (k + 1,))
    ticked = fx.GraphModule(gm, graph)
    # what an exported module's code and hooks read (input specs, range constraints)
    for name, value in vars(gm).items():
        ticked.__dict__.setdefault(name, value)
    for hooks in (
        "_forward_pre_hooks",
        "_forward_pre_hooks_with_kwargs",
        "_forward_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_hooks_always_called",
    ):
        getattr(ticked, hooks).update(getattr(gm, hooks))
    return ticked


def run_graph_pass(
    gm: fx.GraphModule,
    example: Any,
    iterations: int,
    sync: Callable[[], None] | None = None,
) -> layers.LayerPass:
    """``iterations`` ticked forwards of ``gm``, each beside a plain one, interleaved."""
    times: list[int] = []
    codes: list[int] = []
    args = example if isinstance(example, tuple) else (example,)
    ticked = ticked_copy(gm, layers.tick_recorder(times, codes, sync))
    return layers.interleave(
        lambda: ticked(*args), lambda: gm(*args), iterations, sync, times, codes
    )


def summarize(
    lp: layers.LayerPass, plan: Plan, infos: list[layers.LayerInfo]
) -> tuple[list[dict], dict]:
    """Rows (the graph's entry/exit last, ``kind`` and ``module`` added) and the summary."""
    times, graph, tick = layers.tick_times(lp, plan.row_of, len(plan.rows))
    total = sum(times) + graph
    rows = []
    for i, (row, info) in enumerate(zip(plan.rows, infos, strict=True)):
        out = layers.make_row(
            i, info.name, info.type, info, times[i], times[i], total, row.kind == "nonlinear"
        )
        rows.append({**out, "kind": row.kind, "module": row.module})
    graph_row = layers.make_row(len(rows), layers.GRAPH_ROW, "Graph", None, graph, 0.0, total)
    rows.append({**graph_row, "kind": "graph", "module": None})
    summary = layers.pass_summary(
        lp, rows, graph, tick, "in place (ticked vs plain graph forwards, interleaved)"
    )
    summary["attribution"] = "graph nodes"
    summary["nodes"] = len(plan.work)
    return rows, summary


def add_markers(lp: layers.LayerPass, plan: Plan, markers: Markers) -> None:
    """``layer_begin``/``layer_end`` markers, one pair per run of consecutive nodes of a row."""
    layers.add_tick_markers(lp, plan.row_of, markers)
