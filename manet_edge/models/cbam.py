"""CBAM, the Convolutional Block Attention Module (Woo et al., ECCV 2018): the paper's learned baseline.

Channel attention, then spatial attention, each a sigmoid gate multiplied onto the features:

* channel gate: a shared two-layer MLP (1x1 convs ``C -> C/r -> C``, ReLU between, reduction
  ``r = 16``, no biases) applied to the global average- and max-pooled features; the two outputs
  are summed before the sigmoid.
* spatial gate: a 7x7 conv (padding 3, no bias) over the two channel-pooled maps
  ``[mean over channels, max over channels]``.

No biases and no batch norm in the gates: that is the variant whose parameter and thop counts
reproduce Table 3 of the MANet paper (ResNet34 + CBAM 21.44 M / 18781.39 M, ResNet50 + CBAM
26.03 M / 21099.81 M; MLP biases would give 26.04 M, a BN after the spatial conv +0.15 M ops).

Where it sits (see ``docs/mask_attention.md``): ResNet blocks as in the CBAM paper, on the
residual branch after its last BN, before the add; VGG after every conv's BN, before the ReLU (the
place MA takes); Inception once per module, on the concatenated output. Stems carry no CBAM.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ChannelGate(nn.Module):
    """Channel attention: ``x * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        gate = self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x))
        return x * torch.sigmoid(gate)


class SpatialGate(nn.Module):
    """Spatial attention: ``x * sigmoid(conv7x7([mean_c(x), max_c(x)]))``."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Channel gate followed by spatial gate (the sequential arrangement of the CBAM paper)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(self.channel(x))
