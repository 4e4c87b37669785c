"""Layers shared by the zoo: a conv unit with an optional MA site, and the plain conv/pool blocks.

* :class:`ConvUnit` - ``conv -> BN -> [x M] -> [CBAM] -> ReLU``: the classic block of Fig. 6; the
  map it multiplies by is handed in by its owner (it has no mask chain of its own).
* :class:`ConvBlock` - a ``ConvUnit`` that owns its one-step chain ``P(M; k, s, p)`` of its conv
  (VGG convs, ResNet and Inception stems). A 1x1/stride-1 conv emits no pool, its site uses the
  incoming map unchanged.
* :class:`PoolBlock` - a max-pool that moves the map by an average pool with the same k/s/p.
* :class:`ZooModel` - the common ``(image, mask)`` interface with ``forward_features`` /
  ``forward_head`` and the MA introspection of :class:`MaskAttentionMixin`.
* :func:`init_weights` - Kaiming-normal convs, BN 1/0, linear N(0, 0.01).
"""

from __future__ import annotations

from torch import Tensor, nn

from manet_edge.errors import BadInputError
from manet_edge.models.cbam import CBAM
from manet_edge.models.mask_attention import MaskAttentionMixin, MaskChain, MaskedBlock, MaskMul, PoolSpec

ATTENTIONS = ("none", "ma", "cbam")
"""Attention variants: plain, mask attention, CBAM (the zoo suffixes '', '-ma', '-cbam')."""


def check_attention(attention: str) -> str:
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    return attention


class ConvUnit(nn.Module):
    """``conv -> BN -> [x M] -> [CBAM] -> ReLU``; ``ma`` adds a :class:`MaskMul` site (tap ``tap``)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel,
        stride=1,
        padding=0,
        *,
        bias: bool = False,
        bn_eps: float = 1e-5,
        ma: bool = False,
        cbam: bool = False,
        tap: int = 0,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=bias)
        self.bn = nn.BatchNorm2d(out_ch, eps=bn_eps)
        self.ma = MaskMul(tap) if ma else None
        self.cbam = CBAM(out_ch) if cbam else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, m: Tensor | None = None) -> Tensor:
        x = self.bn(self.conv(x))
        if self.ma is not None:
            x = self.ma(x, m)
        if self.cbam is not None:
            x = self.cbam(x)
        return self.relu(x)


class ConvBlock(MaskedBlock):
    """A conv unit carrying the map: ``M' = P(M; k, s, p)`` of its conv, ``x' = act(BN(conv x) * M')``."""

    def __init__(self, in_ch: int, out_ch: int, kernel, stride=1, padding=0, *, attention: str = "none",
                 bias: bool = False, bn_eps: float = 1e-5):
        super().__init__()
        check_attention(attention)
        ma = attention == "ma"
        self.unit = ConvUnit(in_ch, out_ch, kernel, stride, padding, bias=bias, bn_eps=bn_eps, ma=ma,
                             cbam=attention == "cbam")
        self.mask_chain = MaskChain([PoolSpec.of(self.unit.conv)]) if ma else None
        if self.unit.ma is not None:
            self.unit.ma.tap = len(self.mask_chain.pools)

    def forward(self, x: Tensor, m: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        maps = self.maps(m)
        x = self.unit(x, None if maps is None else maps[-1])
        return x, self.map_out(maps, m)


class PoolBlock(MaskedBlock):
    """A max-pool; with MA the map moves by ``AvgPool`` with the same k/s/p (padding counted as outside)."""

    def __init__(self, kernel, stride, padding=0, *, attention: str = "none"):
        super().__init__()
        check_attention(attention)
        self.pool = nn.MaxPool2d(kernel, stride, padding)
        self.mask_chain = MaskChain([PoolSpec.of(self.pool)]) if attention == "ma" else None

    def forward(self, x: Tensor, m: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        maps = self.maps(m)
        return self.pool(x), self.map_out(maps, m)


class ZooModel(MaskAttentionMixin, nn.Module):
    """Common interface of the zoo: ``forward(image, mask) = forward_head(forward_features(image, mask))``.

    Plain and CBAM variants accept the mask and ignore it (only its shape is checked), so every
    model has the same call signature and the same export path.
    """

    min_input_size: int = 1

    def __init__(self, *, in_channels: int, num_classes: int, attention: str):
        super().__init__()
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.attention = check_attention(attention)

    def check_inputs(self, image: Tensor, mask: Tensor | None) -> Tensor | None:
        """Validate shapes; return the mask to carry (``None`` unless MA is on)."""
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise BadInputError(
                f"image must be (N, {self.in_channels}, H, W), got {tuple(image.shape)}")
        if mask is None:
            if self.attention == "ma":
                raise BadInputError("a mask-attention model needs the lung mask (N, 1, H, W)")
            return None
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != image.shape[0] \
                or mask.shape[2:] != image.shape[2:]:
            raise BadInputError(
                f"mask must be (N, 1, H, W) matching the image {tuple(image.shape)}, got {tuple(mask.shape)}")
        if self.attention != "ma":
            return None
        return mask if mask.dtype == image.dtype else mask.to(image.dtype)

    def forward_features(self, image: Tensor, mask: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, image: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(image, mask))


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan-out, ReLU), BN weight 1 / bias 0, linear N(0, 0.01) / 0."""
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.BatchNorm2d):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, 0.0, 0.01)
            nn.init.zeros_(mod.bias)
