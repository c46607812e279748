"""Two users' models for benchmarks/harness.py, given to farm as ``module:`` models.

A module of their own, as a user's would be: farm zips it, ships it beside the artifact
and the engine calls these factories, so the harness times the user's eager code.
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """A small residual CNN: functional ReLUs and a skip addition."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))


def transformer() -> nn.Module:
    """A two-layer ``nn.TransformerEncoder`` (d_model 64, 4 heads)."""
    layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2)
