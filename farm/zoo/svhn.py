"""The SVHN digit classifier of the Torch7 supervised-learning tutorial (Lane et al. Table 1).

Tutorial ``2_model.lua``, ``convnet`` branch: two 5×5 convolutions of 64 maps, each followed
by the non-linearity and 2×2 max-pooling, a 128-unit hidden layer and 10 outputs. The
convolutions are unpadded: 32 -> 28 -> pool 14 -> 10 -> pool 5, and 64 × 5 × 5 = 1600
features reach the first fully-connected layer, exactly the tutorial's
``nstates[2] * filtsize * filtsize``. Dropout (p=0.5) before it is kept, as in the tutorial,
and the classifier ends in a softmax (the tutorial's ``LogSoftMax`` in ``3_loss.lua``; the
study's tables count a softmax).
"""

from __future__ import annotations

from torch import nn

from farm.engine.artifact import GraphModule
from farm.zoo.layers import chain, softmax
from farm.zoo.registry import nonlinearity, register


@register(
    "svhn",
    source=(
        "Torch7 supervised learning tutorial (2_model.lua, convnet) on SVHN, "
        "Netzer et al. NIPS workshop 2011"
    ),
    input_shape=(1, 3, 32, 32),
    description="SVHN CNN: conv5x5 64, pool, conv5x5 64, pool, fc 128, fc 10; 313,546 parameters",
)
def build(activation: str = "relu") -> nn.Module:
    layers = [
        ("conv1", nn.Conv2d(3, 64, kernel_size=5)),
        ("act1", nonlinearity(activation)),
        ("pool1", nn.MaxPool2d(kernel_size=2, stride=2)),
        ("conv2", nn.Conv2d(64, 64, kernel_size=5)),
        ("act2", nonlinearity(activation)),
        ("pool2", nn.MaxPool2d(kernel_size=2, stride=2)),
        ("flatten", nn.Flatten()),
        ("drop", nn.Dropout(0.5)),
        ("fc1", nn.Linear(64 * 5 * 5, 128)),
        ("act3", nonlinearity(activation)),
        ("fc2", nn.Linear(128, 10)),
        ("softmax", softmax()),
    ]
    return GraphModule(chain(layers))
