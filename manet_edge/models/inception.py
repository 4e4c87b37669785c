"""Inception-v3 (Szegedy et al. 2016; torchvision layout, no auxiliary head) with optional MA or CBAM.

No auxiliary classifier: that is the model whose parameters (21.80 M) and operations match
Table 3 (with the aux head it would have 25 M). BN eps is 1e-3 as in torchvision.

Mask attention (Eq. (1); "the map uses the largest receptive field of features in all channels"):

* stem: each conv is a block with its own pool, ``P(M;3,2,0)``, ``P(M;3,1,0)``, ``P(M;3,1,1)``; the
  1x1 conv ``Conv2d_3b`` is an MA site with the map unchanged; the 3x3/2 max-pools move the map by
  ``P(M;3,2,0)``.
* every Inception module has ONE map, obtained by applying Eq. (1) along the branch with the
  largest receptive field, one pool per receptive-field-changing conv of that branch with that
  conv's exact k/s/p (the non-square 1x7/7x1 kernels give non-square pools; a 7x1 pool then a
  1x7 pool is exactly the 7x7 window average). That map multiplies the BN output of the *last*
  conv of every branch, before its ReLU (one site per branch; the branches' inner convs and the
  max-pool branch of the reduction modules are not multiplied - *choice*). Its window covers the
  receptive field of every branch, so the concatenated module output is exactly zero wherever the
  map is zero (the max-pool branch inherits zeros from the previous, already masked, module).

  =========  ==================================  =============================================
  module     chain of pools (k, s, p)            from branch
  =========  ==================================  =============================================
  A (5b-d)   (5,1,2)                             branch5x5 (*choice*: ties the 3x3dbl branch,
                                                 RF 5; the single 5x5 window is the exact
                                                 "fraction of the RF inside the mask")
  B (6a)     (3,1,1) (3,2,0)                     branch3x3dbl (stride-2 reduction: RF 5, /2)
  C (6b-e)   (7x1,1,(3,0)) (1x7,1,(0,3)) x 2     branch7x7dbl (RF 13x13)
  D (7a)     (1x7,1,(0,3)) (7x1,1,(3,0)) (3,2,0) branch7x7x3 (stride-2 reduction: RF 9, /2)
  E (7b-c)   (3,1,1) (3,1,1)                     branch3x3dbl; *choice*: its final 1x3 / 3x1
                                                 split is represented by the 3x3 window that
                                                 covers both
  =========  ==================================  =============================================

  With these chains the thop count of the mask pools is 0.261 M at 512x512, the +0.26 M of
  Table 3 (17537.14 -> 17537.40).

Small inputs: torchvision's Inception-v3 needs at least 75x75 (the stride-2 3x3 of module 7a
runs out of pixels below that). Inputs smaller than :data:`MIN_INPUT_SIZE` are zero-padded,
image and mask alike, symmetrically to 75 px before the stem (the mask's padding is "outside the
lungs"). At the deployed 512x512 nothing is padded and the exported graph has no Pad.

CBAM (*choice*; the CBAM paper has no Inception recipe): once per module, on its concatenated
output.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manet_edge.models.blocks import ConvBlock, ConvUnit, PoolBlock, ZooModel, check_attention, init_weights
from manet_edge.models.cbam import CBAM
from manet_edge.models.mask_attention import MaskChain, MaskedBlock, MaskMul, PoolSpec

MIN_INPUT_SIZE = 75
"""Smallest input torchvision's Inception-v3 layout accepts; smaller inputs are zero-padded to it."""

_BN_EPS = 1e-3


class _InceptionModule(MaskedBlock):
    """Shared wiring: one map per module, used by every branch's last conv (all taps at chain end)."""

    def __init__(self, out_channels: int, attention: str):
        super().__init__()
        self.attention = check_attention(attention)
        self.ma_on = attention == "ma"
        self.out_channels = out_channels
        self.unit = partial(ConvUnit, bn_eps=_BN_EPS)

    def site(self, in_ch, out_ch, kernel, stride=1, padding=0) -> ConvUnit:
        """A branch's last conv: carries an MA site when MA is on."""
        return self.unit(in_ch, out_ch, kernel, stride, padding, ma=self.ma_on)

    def finish(self, chain: list[PoolSpec]) -> None:
        """Install the module's chain and point every site at its end; add CBAM if asked."""
        self.cbam = CBAM(self.out_channels) if self.attention == "cbam" else None
        self.mask_chain = MaskChain(chain) if self.ma_on else None
        if self.mask_chain is not None:
            for mod in self.modules():
                if isinstance(mod, MaskMul):
                    mod.tap = len(self.mask_chain.pools)

    def combine(self, branches: list[Tensor], maps: list[Tensor] | None, m: Tensor | None):
        out = torch.cat(branches, 1)
        if self.cbam is not None:
            out = self.cbam(out)
        return out, self.map_out(maps, m)


class InceptionA(_InceptionModule):
    def __init__(self, in_ch: int, pool_features: int, attention: str = "none"):
        super().__init__(224 + pool_features, attention)
        u = self.unit
        self.branch1x1 = self.site(in_ch, 64, 1)
        self.branch5x5_1 = u(in_ch, 48, 1)
        self.branch5x5_2 = self.site(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = u(in_ch, 64, 1)
        self.branch3x3dbl_2 = u(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = self.site(96, 96, 3, padding=1)
        self.branch_pool = self.site(in_ch, pool_features, 1)
        self.finish([PoolSpec.of(self.branch5x5_2.conv)])

    def forward(self, x: Tensor, m: Tensor | None = None):
        maps = self.maps(m)
        mm = None if maps is None else maps[-1]
        return self.combine([
            self.branch1x1(x, mm),
            self.branch5x5_2(self.branch5x5_1(x), mm),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)), mm),
            self.branch_pool(F.avg_pool2d(x, 3, 1, 1), mm),
        ], maps, m)


class InceptionB(_InceptionModule):
    """Grid reduction 35 -> 17 (at 299 px)."""

    def __init__(self, in_ch: int, attention: str = "none"):
        super().__init__(480 + in_ch, attention)
        u = self.unit
        self.branch3x3 = self.site(in_ch, 384, 3, stride=2)
        self.branch3x3dbl_1 = u(in_ch, 64, 1)
        self.branch3x3dbl_2 = u(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = self.site(96, 96, 3, stride=2)
        self.finish([PoolSpec.of(self.branch3x3dbl_2.conv), PoolSpec.of(self.branch3x3dbl_3.conv)])

    def forward(self, x: Tensor, m: Tensor | None = None):
        maps = self.maps(m)
        mm = None if maps is None else maps[-1]
        return self.combine([
            self.branch3x3(x, mm),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)), mm),
            F.max_pool2d(x, 3, 2),
        ], maps, m)


class InceptionC(_InceptionModule):
    """Factorised 7x7 convolutions (1x7 and 7x1)."""

    def __init__(self, in_ch: int, c7: int, attention: str = "none"):
        super().__init__(768, attention)
        u = self.unit
        self.branch1x1 = self.site(in_ch, 192, 1)
        self.branch7x7_1 = u(in_ch, c7, 1)
        self.branch7x7_2 = u(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = self.site(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = u(in_ch, c7, 1)
        self.branch7x7dbl_2 = u(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = u(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = u(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = self.site(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = self.site(in_ch, 192, 1)
        self.finish([PoolSpec.of(getattr(self, f"branch7x7dbl_{i}").conv) for i in (2, 3, 4, 5)])

    def forward(self, x: Tensor, m: Tensor | None = None):
        maps = self.maps(m)
        mm = None if maps is None else maps[-1]
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)), mm)
        bd = self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x))))
        return self.combine([
            self.branch1x1(x, mm),
            b7,
            self.branch7x7dbl_5(bd, mm),
            self.branch_pool(F.avg_pool2d(x, 3, 1, 1), mm),
        ], maps, m)


class InceptionD(_InceptionModule):
    """Grid reduction 17 -> 8 (at 299 px)."""

    def __init__(self, in_ch: int, attention: str = "none"):
        super().__init__(512 + in_ch, attention)
        u = self.unit
        self.branch3x3_1 = u(in_ch, 192, 1)
        self.branch3x3_2 = self.site(192, 320, 3, stride=2)
        self.branch7x7x3_1 = u(in_ch, 192, 1)
        self.branch7x7x3_2 = u(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = u(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = self.site(192, 192, 3, stride=2)
        self.finish([PoolSpec.of(getattr(self, f"branch7x7x3_{i}").conv) for i in (2, 3, 4)])

    def forward(self, x: Tensor, m: Tensor | None = None):
        maps = self.maps(m)
        mm = None if maps is None else maps[-1]
        b7 = self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))
        return self.combine([
            self.branch3x3_2(self.branch3x3_1(x), mm),
            self.branch7x7x3_4(b7, mm),
            F.max_pool2d(x, 3, 2),
        ], maps, m)


class InceptionE(_InceptionModule):
    """Expanded filter bank with split 1x3 / 3x1 outputs."""

    def __init__(self, in_ch: int, attention: str = "none"):
        super().__init__(2048, attention)
        u = self.unit
        self.branch1x1 = self.site(in_ch, 320, 1)
        self.branch3x3_1 = u(in_ch, 384, 1)
        self.branch3x3_2a = self.site(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = self.site(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = u(in_ch, 448, 1)
        self.branch3x3dbl_2 = u(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = self.site(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = self.site(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = self.site(in_ch, 192, 1)
        self.finish([PoolSpec.of(self.branch3x3dbl_2.conv), PoolSpec.make(3, 1, 1)])

    def forward(self, x: Tensor, m: Tensor | None = None):
        maps = self.maps(m)
        mm = None if maps is None else maps[-1]
        b3 = self.branch3x3_1(x)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return self.combine([
            self.branch1x1(x, mm),
            self.branch3x3_2a(b3, mm), self.branch3x3_2b(b3, mm),
            self.branch3x3dbl_3a(bd, mm), self.branch3x3dbl_3b(bd, mm),
            self.branch_pool(F.avg_pool2d(x, 3, 1, 1), mm),
        ], maps, m)


class Inception3(ZooModel):
    """Inception-v3 with a ``(image, mask)`` interface; ``forward_features`` returns 2048 channels."""

    min_input_size = MIN_INPUT_SIZE

    def __init__(self, *, in_channels: int = 1, num_classes: int = 5, attention: str = "none",
                 dropout: float = 0.5):
        super().__init__(in_channels=in_channels, num_classes=num_classes, attention=attention)
        stem = "ma" if attention == "ma" else "none"
        conv = partial(ConvBlock, attention=stem, bn_eps=_BN_EPS)
        self.Conv2d_1a_3x3 = conv(in_channels, 32, 3, 2)
        self.Conv2d_2a_3x3 = conv(32, 32, 3)
        self.Conv2d_2b_3x3 = conv(32, 64, 3, 1, 1)
        self.maxpool1 = PoolBlock(3, 2, attention=stem)
        self.Conv2d_3b_1x1 = conv(64, 80, 1)
        self.Conv2d_4a_3x3 = conv(80, 192, 3)
        self.maxpool2 = PoolBlock(3, 2, attention=stem)
        self.Mixed_5b = InceptionA(192, 32, attention)
        self.Mixed_5c = InceptionA(256, 64, attention)
        self.Mixed_5d = InceptionA(288, 64, attention)
        self.Mixed_6a = InceptionB(288, attention)
        self.Mixed_6b = InceptionC(768, 128, attention)
        self.Mixed_6c = InceptionC(768, 160, attention)
        self.Mixed_6d = InceptionC(768, 160, attention)
        self.Mixed_6e = InceptionC(768, 192, attention)
        self.Mixed_7a = InceptionD(768, attention)
        self.Mixed_7b = InceptionE(1280, attention)
        self.Mixed_7c = InceptionE(2048, attention)
        self.num_features = 2048
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2048, num_classes)
        init_weights(self)

    def _pad(self, t: Tensor) -> Tensor:
        h, w = t.shape[-2:]
        dh, dw = max(0, MIN_INPUT_SIZE - h), max(0, MIN_INPUT_SIZE - w)
        if dh == 0 and dw == 0:
            return t
        return F.pad(t, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))

    def prepare_mask(self, mask: Tensor) -> Tensor:
        return self._pad(mask)

    def forward_features(self, image: Tensor, mask: Tensor | None = None) -> Tensor:
        m = self.check_inputs(image, mask)
        x = self._pad(image)
        if m is not None:
            m = self._pad(m)
        for name, blk in self.named_children():
            if isinstance(blk, MaskedBlock):
                x, m = blk(x, m)
        return x

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.dropout(self.avgpool(features)), 1))


def inception_v3(**kw) -> Inception3:
    return Inception3(**kw)
