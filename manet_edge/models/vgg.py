"""VGG16 with batch norm (Simonyan & Zisserman 2015; torchvision ``vgg16_bn`` layout) with MA or CBAM.

Mask attention (Eq. (1), Fig. 5a): every conv is a block ``conv 3x3 p1 -> BN -> x M -> ReLU`` with
``M = P(M_prev; 3, 1, 1)``; every 2x2/2 max-pool moves the map by ``P(M; 2, 2, 0)``. The convs keep
torchvision's biases (redundant before BN, but part of the 134.29 M parameters and of the thop
count of Table 3).

CBAM (*choice*, the CBAM paper has no VGG recipe): after every conv's BN, before the ReLU, i.e.
where MA sits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from manet_edge.models.blocks import ConvBlock, PoolBlock, ZooModel, init_weights

VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                    512, 512, 512, "M", 512, 512, 512, "M")
"""Configuration "D": conv widths, ``"M"`` for a 2x2/2 max-pool."""


class VGG(ZooModel):
    """VGG-BN; ``forward_features`` returns the map after the last max-pool (512 channels)."""

    def __init__(self, cfg: tuple[int | str, ...] = VGG16_CFG, *, in_channels: int = 1, num_classes: int = 5,
                 attention: str = "none", dropout: float = 0.5):
        super().__init__(in_channels=in_channels, num_classes=num_classes, attention=attention)
        pool_att = "ma" if attention == "ma" else "none"
        layers: list[nn.Module] = []
        ch = in_channels
        for v in cfg:
            if v == "M":
                layers.append(PoolBlock(2, 2, 0, attention=pool_att))
            else:
                layers.append(ConvBlock(ch, int(v), 3, 1, 1, attention=attention, bias=True))
                ch = int(v)
        self.features = nn.Sequential(*layers)
        self.num_features = ch
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(ch * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        init_weights(self)

    def forward_features(self, image: Tensor, mask: Tensor | None = None) -> Tensor:
        m = self.check_inputs(image, mask)
        x = image
        for blk in self.features:
            x, m = blk(x, m)
        return x

    def forward_head(self, features: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(features), 1))


def vgg16(**kw) -> VGG:
    return VGG(VGG16_CFG, **kw)
