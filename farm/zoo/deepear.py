"""DeepEar: coupled DNNs that read one audio frame (Lane et al. Table 1 and Table 6).

The emotion DNN is exactly Table 6: 224 -> 512 -> 512 -> 512 -> 14. The paper gives the
speaker-identification and ambient-sound DNNs only through the whole model's size (2.3M
parameters), so their shapes here are an assumption, chosen to land within 1% of it and
left configurable: speaker 224 -> 640 ×3 -> 23 speakers, ambient 224 -> 512 ×3 -> 19 scenes
(2,277,176 parameters in all with the defaults).

``part`` picks what to build: ``whole`` (the three heads on a shared input, output a
tuple ``(emotion, speaker, ambient)``) or one sub-network alone (Table 6 profiles the
emotion DNN by itself). Layer names carry the head: ``emotion_fc1``, ``speaker_act2``...
Each hidden activation is followed by a Dropout row (DeepEar was trained with dropout;
the layer is an identity at inference, as in the study) and each head ends in a softmax.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from farm.engine.artifact import GraphModule
from farm.errors import UserError
from farm.zoo.layers import chain, dense_stack
from farm.zoo.registry import register

FEATURES = 224
EMOTION_HIDDEN = (512, 512, 512)
EMOTION_CLASSES = 14
PARTS = ("whole", "emotion", "speaker", "ambient")
DROPOUT = 0.5  # DeepEar trains with dropout on the hidden layers; identities at inference


@register(
    "deepear",
    source=(
        "Lane, Georgiev, Qendro. DeepEar: Robust Smartphone Audio Sensing in Unconstrained "
        "Acoustic Environments using Deep Learning. UbiComp 2015"
    ),
    input_shape=(1, FEATURES),
    description="DeepEar: emotion, speaker and ambient DNNs on one 224-feature audio frame",
)
def build(
    activation: str = "relu",
    part: str = "whole",
    speaker_hidden: Sequence[int] = (640, 640, 640),
    speaker_classes: int = 23,
    ambient_hidden: Sequence[int] = (512, 512, 512),
    ambient_classes: int = 19,
) -> nn.Module:
    heads = {
        "emotion": [FEATURES, *EMOTION_HIDDEN, EMOTION_CLASSES],
        "speaker": [FEATURES, *speaker_hidden, speaker_classes],
        "ambient": [FEATURES, *ambient_hidden, ambient_classes],
    }
    if part not in PARTS:
        raise UserError(f"deepear: part {part!r} is not one of {', '.join(PARTS)}")
    chosen = list(heads) if part == "whole" else [part]
    nodes = []
    outputs = []
    for head in chosen:
        sizes = heads[head]
        if not all(isinstance(n, int) and n > 0 for n in sizes):
            raise UserError(f"deepear: {head} layer sizes {sizes} must be positive integers")
        head_nodes = chain(dense_stack(sizes, activation, prefix=f"{head}_", dropout=DROPOUT))
        nodes.extend(head_nodes)
        outputs.append(head_nodes[-1][0])
    return GraphModule(nodes, outputs=outputs)
