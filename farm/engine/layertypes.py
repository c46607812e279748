"""Names the layer passes of every runtime share (standard library only).

``NONLINEAR``: layer types that apply a non-linear function elementwise or across
a window (what the paper's Table 7 counts as non-linear work), by torch's module
names and the operator names of ONNX and ExecuTorch. ``SUM_TOLERANCE``: a layer
sum further than this from the whole forward is flagged.
"""

from __future__ import annotations

# Layers that apply a non-linear function elementwise or across a window
# (what the paper's Table 7 counts as "non-linear" work).
NONLINEAR = frozenset(
    {
        "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU",
        "SiLU", "Mish", "Sigmoid", "Hardsigmoid", "LogSigmoid", "Tanh", "Hardtanh",
        "Hardswish", "Softplus", "Softsign", "Tanhshrink", "Threshold", "Softmax",
        "Softmax2d", "LogSoftmax", "Softmin", "LocalResponseNorm", "CrossMapLRN2d",
        # the same work as ONNX operators name it
        "Relu", "LeakyRelu", "Selu", "Elu", "Gelu", "HardSigmoid", "HardSwish", "LRN",
    }
)  # fmt: skip

SUM_TOLERANCE = 0.05
GRAPH_ROW = "(graph)"
