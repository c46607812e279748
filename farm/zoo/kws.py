"""Deep KWS, the keyword-spotting DNN of Chen, Parada and Heigold (Lane et al. Table 1).

Input is a window of 40 frames of 40 log-mel filterbank energies (flattened to 1600),
three hidden layers of 128 units, and 23 outputs: 22 keywords plus the filler class.
"""

from __future__ import annotations

from torch import nn

from farm.engine.artifact import GraphModule
from farm.zoo.layers import chain, dense_stack
from farm.zoo.registry import register

FRAMES = 40
MEL_BANDS = 40
HIDDEN = 128
OUTPUTS = 22 + 1  # keywords + filler


@register(
    "kws",
    source=(
        "Chen, Parada, Heigold. Small-footprint keyword spotting using deep neural "
        "networks. ICASSP 2014"
    ),
    input_shape=(1, FRAMES, MEL_BANDS),
    description="Deep KWS: 1600 -> 128 -> 128 -> 128 -> 23; 240,919 parameters",
)
def build(activation: str = "relu") -> nn.Module:
    sizes = [FRAMES * MEL_BANDS, HIDDEN, HIDDEN, HIDDEN, OUTPUTS]
    return GraphModule(chain([("flatten", nn.Flatten()), *dense_stack(sizes, activation)]))
