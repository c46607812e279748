"""Lowering a torch module to a runtime's program, float or int8.

- ONNX: ``torch.onnx.export(dynamo=True)``; int8 is ONNX Runtime's static QDQ
  quantization restricted to Conv, Gemm and MatMul (its defaults also quantize
  Softmax, which flattens AlexNet's probabilities and breaks its argmax).
- ExecuTorch: ``torch.export`` then ``to_edge_transform_and_lower`` with the
  XNNPACK partitioner; int8 is the PT2E flow with XNNPACK's quantizer, static,
  symmetric, per-channel weights.

Both int8 paths calibrate on `calibration_set`: seeded inputs of the model's own
input shapes. `export_ready` rewrites what a runtime cannot lower (or lowers badly)
and eager does not need rewritten: ``LocalResponseNorm`` becomes `ChannelLRN`, the
same normalisation written with ops XNNPACK takes whole (its 4-D path's 5-D pad and
``avg_pool3d`` have no ExecuTorch kernel and break XNNPACK's int8 pad; its 3-D path's
``avg_pool2d`` counts padding and ``pow`` has a fractional exponent, so XNNPACK leaves
both to ExecuTorch's portable kernels, which made AlexNet slower than eager). The int8
flow leaves the normalisation in float (`_pt2e_int8`): squares of activations in int8
would lose the small ones. The eager artifact, and what eager measures, are unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import operator
import os
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional

CALIBRATION_SEED = 1
CALIBRATION_SIZE = 32
ORT_INT8_OPS = ["Conv", "Gemm", "MatMul"]


class ChannelLRN(nn.Module):
    """``nn.LocalResponseNorm`` (``x / (k + alpha/size · Σ x²)^beta``, the sum over a
    window of ``size`` channels, zero beyond the edges) written so XNNPACK delegates all
    of it: the channels padded with zeros, the window's sum as ``size`` shifted channel
    slices added (the tensor keeps its layout: no view, no pooling over a 1-channel
    image), the power as ``exp(beta · log(·))``. Agrees with eager's to rounding."""

    def __init__(self, lrn: nn.LocalResponseNorm) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = lrn.size, lrn.alpha, lrn.beta, lrn.k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:  # eager refuses it: the same words
            return functional.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        channels = x.shape[1]
        # pad's pairs run from the last dim back: none on the spatial dims, then channels
        pad = (0, 0) * (x.dim() - 2) + (self.size // 2, (self.size - 1) // 2)
        squares = functional.pad(x * x, pad)
        window = squares[:, 0:channels]
        for i in range(1, self.size):
            window = window + squares[:, i : i + channels]
        div = window * (self.alpha / self.size) + self.k
        return x / torch.exp(torch.log(div) * self.beta)


def export_ready(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every LocalResponseNorm replaced by `ChannelLRN`."""
    module = copy.deepcopy(module)
    for sub in list(module.modules()):
        for child_name, child in list(sub.named_children()):
            if type(child) is nn.LocalResponseNorm:
                setattr(sub, child_name, ChannelLRN(child))
    return module.eval()


def calibration_set(example: tuple[torch.Tensor, ...], n: int = CALIBRATION_SIZE,
                    seed: int = CALIBRATION_SEED) -> list[tuple[torch.Tensor, ...]]:  # fmt: skip
    """``n`` seeded standard-normal inputs shaped like ``example``."""
    generator = torch.Generator().manual_seed(seed)
    return [
        tuple(torch.randn(t.shape, generator=generator, dtype=t.dtype) for t in example)
        for _ in range(n)
    ]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch's exporters warn and log at length; the station's log keeps what it needs."""
    names = ("", "torch", "torch.onnx", "torch._dynamo", "onnxscript")  # "": ORT's quantizer
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# ---------------------------------------------------------------------------- ONNX


def to_onnx(module: nn.Module, example: tuple[torch.Tensor, ...]) -> bytes:
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(module, example, dynamo=True, verbose=False)
        return program.model_proto.SerializeToString()


def onnx_int8(model: bytes, calibration: list[tuple[torch.Tensor, ...]]) -> bytes:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    names = [i.name for i in onnx.load_from_string(model).graph.input]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(calibration)

        def get_next(self) -> dict | None:
            item = next(self._items, None)
            if item is None:
                return None
            return {n: t.numpy() for n, t in zip(names, item, strict=True)}

    with tempfile.TemporaryDirectory(prefix="farm-qdq-") as tmp, _quiet():
        source, target = os.path.join(tmp, "f.onnx"), os.path.join(tmp, "q.onnx")
        with open(source, "wb") as f:
            f.write(model)
        quantize_static(
            source,
            target,
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=ORT_INT8_OPS,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        with open(target, "rb") as f:
            return f.read()


def onnx_nodes(model: bytes) -> list[dict[str, Any]]:
    """Each node's name, op, inputs, outputs and the model layer it came from (the
    module path in ``pkg.torch.onnx.name_scopes``), for the board's profile rows."""
    import ast

    import onnx

    out = []
    for node in onnx.load_from_string(model).graph.node:
        layer = ""
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                try:
                    scopes = [s for s in ast.literal_eval(prop.value) if s]
                except (ValueError, SyntaxError):
                    scopes = []
                layer = ".".join(scopes[:-1]) if len(scopes) > 1 else "".join(scopes)
        out.append({
            "name": node.name, "op": node.op_type, "layer": layer,
            "inputs": list(node.input), "outputs": list(node.output),
        })  # fmt: skip
    return _qdq_layers(out)


def _qdq_layers(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ORT's quantizer adds Quantize/DequantizeLinear nodes without name scopes: each
    belongs to the layer whose output it converts ("fc1 (QuantizeLinear)"), or where
    nothing made its input (the model's input, a weight), to the layer that reads it."""
    made_by = {o: n for n in nodes for o in n["outputs"]}
    read_by: dict[str, list[dict[str, Any]]] = {}
    for n in nodes:
        for i in n["inputs"]:
            read_by.setdefault(i, []).append(n)
    for node in nodes:
        if node["layer"] or node["op"] not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        source = node["inputs"][0] if node["inputs"] else ""
        seen = set()
        producer = made_by.get(source)
        while producer is not None and not producer["layer"] and producer["name"] not in seen:
            seen.add(producer["name"])
            producer = made_by.get(producer["inputs"][0]) if producer["inputs"] else None
        owner = producer["layer"] if producer is not None else ""
        reader = node
        while not owner and reader is not None and reader["name"] not in seen:
            seen.add(reader["name"])
            readers = [r for o in reader["outputs"] for r in read_by.get(o, [])]
            reader = readers[0] if readers else None
            owner = reader["layer"] if reader is not None else ""
        owner = owner.split(" (")[0]  # a reader labelled here already: its layer alone
        node["layer"] = f"{owner or node['name']} ({node['op']})"
    return nodes


# ----------------------------------------------------------------------- ExecuTorch


def to_pte(module: nn.Module, example: tuple[torch.Tensor, ...],
           calibration: list[tuple[torch.Tensor, ...]] | None = None) -> bytes:  # fmt: skip
    """The XNNPACK-lowered program; int8 (PT2E, static per-channel) when ``calibration``."""
    lowered = to_xnnpack(module, example, calibration)
    with _quiet():
        return io.BytesIO(lowered.to_executorch().buffer).getvalue()


def to_xnnpack(module: nn.Module, example: tuple[torch.Tensor, ...],
               calibration: list[tuple[torch.Tensor, ...]] | None = None) -> Any:  # fmt: skip
    """The edge program with what XNNPACK takes delegated (an ``EdgeProgramManager``)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with _quiet(), torch.no_grad():
        if calibration is not None:
            module = _pt2e_int8(module, example, calibration)
        program = torch.export.export(module, example)
        return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])


def outside_delegate(lowered: Any) -> dict[str, int]:
    """The operators `to_xnnpack` left to ExecuTorch's portable kernels (name: count):
    each is a hand-off out of XNNPACK and a kernel written for portability, not speed."""
    counts: dict[str, int] = {}
    for node in lowered.exported_program().graph_module.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if name != "executorch_call_delegate":
            counts[name] = counts.get(name, 0) + 1
    return counts


def _pt2e_int8(module: nn.Module, example: tuple[torch.Tensor, ...],
               calibration: list[tuple[torch.Tensor, ...]]) -> nn.Module:  # fmt: skip
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.set_module_type(ChannelLRN, None)  # float: see the module's docstring
    graph = torch.export.export(module, example).module()
    prepared = prepare_pt2e(graph, quantizer)
    for item in calibration:
        prepared(*item)
    return convert_pt2e(prepared)
