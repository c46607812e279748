"""AlexNet as Krizhevsky et al. built it: two-group convolutions, LRN, 227×227 input.

The grouped conv2/4/5 are the original's split across two GPUs; they are what makes the
per-layer parameters match Lane et al. Table 5 (conv2 307,456 rather than 614,656).
Layer order follows the reference Caffe model (bvlc_alexnet): ReLU, then LRN, then pool;
dropout after fc6 and fc7. Dropout layers are kept (identity in eval mode) so the graph
is the published one; fc8's logits go through the softmax (Caffe's ``prob`` layer).
"""

from __future__ import annotations

from torch import nn

from farm.engine.artifact import GraphModule
from farm.zoo.layers import chain, softmax
from farm.zoo.registry import nonlinearity, register


def _lrn() -> nn.Module:
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


@register(
    "alexnet",
    source=(
        "Krizhevsky, Sutskever, Hinton. ImageNet Classification with Deep Convolutional "
        "Neural Networks. NIPS 2012 (layout of Caffe's bvlc_alexnet)"
    ),
    input_shape=(1, 3, 227, 227),
    description="AlexNet, 1000 ImageNet classes, grouped conv2/4/5, 60,965,224 parameters",
)
def build(activation: str = "relu") -> nn.Module:
    layers = [
        ("conv1", nn.Conv2d(3, 96, kernel_size=11, stride=4)),
        ("act1", nonlinearity(activation)),
        ("norm1", _lrn()),
        ("pool1", nn.MaxPool2d(kernel_size=3, stride=2)),
        ("conv2", nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2)),
        ("act2", nonlinearity(activation)),
        ("norm2", _lrn()),
        ("pool2", nn.MaxPool2d(kernel_size=3, stride=2)),
        ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),
        ("act3", nonlinearity(activation)),
        ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2)),
        ("act4", nonlinearity(activation)),
        ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2)),
        ("act5", nonlinearity(activation)),
        ("pool5", nn.MaxPool2d(kernel_size=3, stride=2)),
        ("flatten", nn.Flatten()),
        ("fc6", nn.Linear(256 * 6 * 6, 4096)),
        ("act6", nonlinearity(activation)),
        ("drop6", nn.Dropout(0.5)),
        ("fc7", nn.Linear(4096, 4096)),
        ("act7", nonlinearity(activation)),
        ("drop7", nn.Dropout(0.5)),
        ("fc8", nn.Linear(4096, 1000)),
        ("softmax", softmax()),
    ]
    return GraphModule(chain(layers))
