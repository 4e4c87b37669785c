"""ResNet18/34/50 (He et al. 2016, torchvision layout and parameter counts) with optional MA or CBAM.

Mask attention (Eq. (1); choices where the paper is open are marked *choice*):

* stem: ``conv 7x7/2 p3 -> BN -> x P(M;7,2,3) -> ReLU``; max-pool 3x3/2 p1 moves the map by
  ``P(M;3,2,1)`` (its padding counted as outside the lungs).
* basic block, two sites. ``M1 = P(M;3,s,1)``, ``M2 = P(M1;3,1,1)``::

      h   = ReLU(BN1(conv1 x) * M1)
      out = ReLU(BN2(conv2 h) * M2 + shortcut(x))

  MA multiplies the *normalised* features of each conv before the activation (Eq. (1)); the
  identity path is not multiplied again. *choice*: "where the residual and the deep path are
  added, the map follows the deep path's (larger) receptive field" is read as: the map leaving
  the block is ``M2``, and a projection shortcut (1x1 conv + BN, whose BN bias would otherwise
  leak outside the lungs) is multiplied by ``M2`` too: ``shortcut(x) = BN(conv1x1 x) * M2``.
  Every block output is then exactly zero wherever ``M2`` is zero.

  An earlier version multiplied the fused sum ``(BN2 + shortcut) * M2``. That also rescales the
  identity path at every block, so the residual stream is attenuated by a product of maps (about
  0.3-0.5 each in deep layers): at 128 px a resnet18-ma trained like that reached 0.50 training
  accuracy after 12 epochs against 0.81 for the plain model. It is not what Eq. (1) says.
* bottleneck, one site: the paper's "the bottleneck structure only performs MA once because 1x1
  convolution does not change the receptive field". The site is the block's one conv that does,
  the 3x3 (stride ``s``): Eq. (1) applied to it as written, its normalised features times
  ``M' = P(M;3,s,1)`` before its activation::

      h   = ReLU(BN2(conv2(ReLU(BN1(conv1 x)))) * M')
      out = ReLU(BN3(conv3 h) + shortcut(x))

  The 1x1 convs and the shortcut (identity or projection) are not multiplied (*choice*: the
  paper gives no position). Features outside the lungs then carry only bias terms from the 1x1
  convs, no image content. The map leaving the block is ``M'``.

  An earlier version put the site on ``BN3``'s output before the add, with the projection
  shortcut multiplied too. That is four times wider, and exporting it needs a bias-times-map
  tensor of the block's full width; it cost resnet50-ma 7-8 % over plain resnet50 in ONNX
  Runtime against about 3 % here. Checkpoints of that version are refused
  (:data:`BOTTLENECK_MA_SITE`).

CBAM (Woo et al.): on the residual branch after its last BN, before the add; stem without CBAM.
"""

from __future__ import annotations

from typing import Type

import torch
from torch import Tensor, nn

from manet_edge.models.blocks import ConvBlock, ConvUnit, PoolBlock, ZooModel, check_attention, init_weights
from manet_edge.models.cbam import CBAM
from manet_edge.models.mask_attention import MaskChain, MaskedBlock, MaskMul, PoolSpec

BOTTLENECK_MA_SITE = "conv2"
"""Where a bottleneck's MA site is (recorded in classifier checkpoints). Checkpoints of bottleneck
MA models without it predate the move from ``BN3`` to the 3x3 conv and would compute something
else with these weights; :func:`manet_edge.train.checkpoint.build_model_from_checkpoint` refuses
them."""


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


def _masked_add(block: nn.Module, deep: Tensor, x: Tensor, m: Tensor | None) -> Tensor:
    """``deep * m + shortcut(x)``, the shortcut multiplied by ``m`` only when it is a projection."""
    shortcut = x if block.shortcut is None else block.shortcut(x)
    if m is None:
        return deep + shortcut
    if block.ma_shortcut is not None:
        shortcut = block.ma_shortcut(shortcut, m)
    return block.ma(deep, m) + shortcut


class BasicBlock(MaskedBlock):
    """Two 3x3 convs and a shortcut; with MA one site per conv (and the projection shortcut)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, attention: str = "none"):
        super().__init__()
        ma = check_attention(attention) == "ma"
        out_ch = width * self.expansion
        self.unit1 = ConvUnit(in_ch, width, 3, stride, 1, ma=ma, tap=1)
        self.conv2 = nn.Conv2d(width, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.cbam = CBAM(out_ch) if attention == "cbam" else None
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.ma = MaskMul(tap=2) if ma else None
        self.ma_shortcut = MaskMul(tap=2) if ma and self.shortcut is not None else None
        self.relu = nn.ReLU(inplace=True)
        self.mask_chain = MaskChain([PoolSpec.of(self.unit1.conv), PoolSpec.of(self.conv2)]) if ma else None

    def forward(self, x: Tensor, m: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        maps = self.maps(m)
        out = self.unit1(x, None if maps is None else maps[1])
        out = self.bn2(self.conv2(out))
        if self.cbam is not None:
            out = self.cbam(out)
        return self.relu(_masked_add(self, out, x, None if maps is None else maps[2])), self.map_out(maps, m)


class Bottleneck(MaskedBlock):
    """1x1 -> 3x3 (stride) -> 1x1 with expansion 4; with MA one site, on the 3x3 conv."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, attention: str = "none"):
        super().__init__()
        ma = check_attention(attention) == "ma"
        out_ch = width * self.expansion
        self.unit1 = ConvUnit(in_ch, width, 1)
        self.unit2 = ConvUnit(width, width, 3, stride, 1, ma=ma, tap=1)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.cbam = CBAM(out_ch) if attention == "cbam" else None
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.relu = nn.ReLU(inplace=True)
        self.mask_chain = MaskChain([PoolSpec.of(self.unit2.conv)]) if ma else None

    def forward(self, x: Tensor, m: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        maps = self.maps(m)
        out = self.unit2(self.unit1(x), None if maps is None else maps[1])
        out = self.bn3(self.conv3(out))
        if self.cbam is not None:
            out = self.cbam(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + shortcut), self.map_out(maps, m)


class ResNet(ZooModel):
    """ResNet with a ``(image, mask)`` interface; ``forward_features`` returns the last feature map."""

    def __init__(self, block: Type[BasicBlock | Bottleneck], layers: tuple[int, int, int, int], *,
                 in_channels: int = 1, num_classes: int = 5, attention: str = "none"):
        super().__init__(in_channels=in_channels, num_classes=num_classes, attention=attention)
        stem_att = "ma" if attention == "ma" else "none"
        self.stem = ConvBlock(in_channels, 64, 7, 2, 3, attention=stem_att)
        self.maxpool = PoolBlock(3, 2, 1, attention=stem_att)
        in_ch = 64
        for i, (n, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_ch, width, stride, attention))
                in_ch = width * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = in_ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward_features(self, image: Tensor, mask: Tensor | None = None) -> Tensor:
        m = self.check_inputs(image, mask)
        x, m = self.stem(image, m)
        x, m = self.maxpool(x, m)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for blk in layer:
                x, m = blk(x, m)
        return x

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(features), 1))


def resnet18(**kw) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), **kw)


def resnet34(**kw) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), **kw)


def resnet50(**kw) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), **kw)
