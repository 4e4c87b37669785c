"""Mask attention (MA), Eq. (1) of Xu, Lam & Jia (2021): the lung mask as a fixed spatial attention map.

A block with a conv (or pool) of kernel ``k``, stride ``s`` and padding ``p`` computes::

    M_{i+1} = P(M_i; k, s, p)                              # average pooling, same k, s, p
    I_{i+1} = act( BN(conv(I_i; k, s, p)) * M_{i+1} )      # broadcast over channels

so ``M`` at any layer is the fraction of that feature's receptive-field window that lies inside
the lungs. The map pyramid depends on the input mask alone: MA has no parameters and no state.

Building blocks, each a small module so that an exported graph shows them plainly:

* :class:`PoolSpec` - the ``(kernel, stride, padding)`` of one op that moves the receptive field.
* :class:`MaskPool` - one propagation step: ``AvgPool2d`` with the op's k/s/p, zero padding that
  *counts* in the average (``count_include_pad=True``): padding lies outside the lungs. Max-pools
  move the map the same way (their ``-inf`` padding is still "outside" for the mask).
* :class:`MaskChain` - the propagation steps of one block, in order; ``chain(m)`` returns
  ``[m, P1(m), P2(P1(m)), ...]``.
* :class:`MaskMul` - one MA site, ``x * m``; ``tap`` says which entry of its block's chain output
  it multiplies by.
* :class:`MaskedBlock` - a block that carries the map: ``forward(x, m) -> (x, m_out)`` with
  ``m_out`` the last entry of its chain (``m`` is ``None`` in plain and CBAM models).
* :class:`MaskAttentionMixin` - model-level introspection: :meth:`~MaskAttentionMixin.mask_pyramid`,
  :meth:`~MaskAttentionMixin.block_maps` and :meth:`~MaskAttentionMixin.ma_sites`.

The mask path of every model is one chain of average pools starting at the ``mask`` input
(blocks are visited in registration order, which is also forward order); see
``docs/mask_attention.md`` for the per-architecture rules and the ONNX patterns.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import Tensor, nn


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair, got {v!r}")
    return (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class PoolSpec:
    """Kernel, stride and padding (each ``(h, w)``) of an op that changes the receptive field."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    @classmethod
    def make(cls, kernel, stride=1, padding=0) -> "PoolSpec":
        """Build from ints or pairs; ``stride`` defaults to 1 (unlike ``nn.AvgPool2d``)."""
        return cls(_pair(kernel), _pair(stride), _pair(padding))

    @classmethod
    def of(cls, layer: nn.Module) -> "PoolSpec":
        """The k/s/p of a ``Conv2d``, ``MaxPool2d`` or ``AvgPool2d``, for the matching mask pool."""
        if isinstance(layer, nn.Conv2d):
            if _pair(layer.dilation) != (1, 1) or isinstance(layer.padding, str):
                raise ValueError(f"mask attention needs an undilated conv with numeric padding, got {layer}")
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            if layer.ceil_mode or _pair(getattr(layer, "dilation", 1)) != (1, 1):
                raise ValueError(f"mask attention needs a floor-mode, undilated pool, got {layer}")
        else:
            raise TypeError(f"no receptive field to follow in {type(layer).__name__}")
        stride = layer.stride if layer.stride is not None else layer.kernel_size
        return cls.make(layer.kernel_size, stride, layer.padding)

    @property
    def moves_field(self) -> bool:
        """False for 1x1/stride-1 ops, which leave the map unchanged (no pool is emitted)."""
        return self.kernel != (1, 1) or self.stride != (1, 1)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """Output size of this pool (floor mode) on an ``h x w`` map."""
        return tuple(  # type: ignore[return-value]
            (n + 2 * p - k) // s + 1 for n, k, s, p in zip((h, w), self.kernel, self.stride, self.padding)
        )


class MaskPool(nn.AvgPool2d):
    """One MA propagation step ``P(M; k, s, p)``: average pooling, zero padding counted as outside."""

    def __init__(self, spec: PoolSpec):
        super().__init__(spec.kernel, spec.stride, spec.padding, ceil_mode=False, count_include_pad=True)
        self.spec = spec

    def extra_repr(self) -> str:
        s = self.spec
        return f"kernel={s.kernel}, stride={s.stride}, padding={s.padding}, count_include_pad=True"


class MaskChain(nn.Module):
    """The mask propagation steps of one block; ``forward(m)`` returns every intermediate map."""

    def __init__(self, specs: Iterable[PoolSpec]):
        super().__init__()
        self.pools = nn.ModuleList(MaskPool(s) for s in specs if s.moves_field)

    @property
    def specs(self) -> tuple[PoolSpec, ...]:
        return tuple(p.spec for p in self.pools)

    def forward(self, m: Tensor) -> list[Tensor]:
        maps = [m]
        for pool in self.pools:
            maps.append(pool(maps[-1]))
        return maps


class MaskMul(nn.Module):
    """One MA site: ``features * map``, the map ``(N,1,h,w)`` broadcast over channels.

    ``tap`` indexes the owning block's ``MaskChain`` output (0 = the map entering the block).
    """

    def __init__(self, tap: int):
        super().__init__()
        self.tap = int(tap)

    def forward(self, x: Tensor, m: Tensor) -> Tensor:
        return x * m

    def extra_repr(self) -> str:
        return f"tap={self.tap}"


class MaskedBlock(nn.Module):
    """Base of blocks that carry the MA map: ``forward(x, m) -> (x, m_out)``.

    Subclasses set ``self.mask_chain`` (a :class:`MaskChain`, or ``None`` when MA is off) and
    place :class:`MaskMul` sites whose ``tap`` points into that chain's output.
    """

    mask_chain: MaskChain | None

    def maps(self, m: Tensor | None) -> list[Tensor] | None:
        """All maps of this block (``None`` when MA is off or no mask is carried)."""
        if self.mask_chain is None or m is None:
            return None
        return self.mask_chain(m)

    @staticmethod
    def map_out(maps: list[Tensor] | None, m: Tensor | None) -> Tensor | None:
        return m if maps is None else maps[-1]


@dataclass(frozen=True)
class MASite:
    """An MA site: its module name, the pools from the input mask to its map, and the module."""

    name: str
    chain: tuple[PoolSpec, ...]
    module: MaskMul


class MaskAttentionMixin:
    """Introspection shared by every zoo model (empty results for plain and CBAM variants)."""

    def prepare_mask(self, mask: Tensor) -> Tensor:
        """Hook for input-size adaptation (Inception pads small inputs); identity by default."""
        return mask

    def masked_blocks(self) -> list[tuple[str, MaskedBlock]]:
        """The blocks that carry the map, in forward order (registration order)."""
        return [(n, b) for n, b in self.named_modules() if isinstance(b, MaskedBlock)]  # type: ignore[attr-defined]

    @property
    def has_mask_attention(self) -> bool:
        return any(b.mask_chain is not None for _, b in self.masked_blocks())

    def _walk(self, mask: Tensor) -> Iterator[tuple[str, MaskedBlock, list[Tensor]]]:
        m = self.prepare_mask(mask)
        for name, block in self.masked_blocks():
            maps = block.maps(m)
            if maps is None:
                continue
            yield name, block, maps
            m = maps[-1]

    @torch.no_grad()
    def mask_pyramid(self, mask: Tensor) -> "OrderedDict[str, Tensor]":
        """Map at every MA site, keyed by the site's module name; a function of ``mask`` only."""
        out: OrderedDict[str, Tensor] = OrderedDict()
        for name, block, maps in self._walk(mask):
            for sub, mod in block.named_modules():
                if isinstance(mod, MaskMul):
                    out[f"{name}.{sub}"] = maps[mod.tap]
        return out

    @torch.no_grad()
    def block_maps(self, mask: Tensor) -> "OrderedDict[str, Tensor]":
        """Map leaving every masked block (what the next block receives), keyed by block name."""
        return OrderedDict((name, maps[-1]) for name, _, maps in self._walk(mask))

    def ma_sites(self) -> list[MASite]:
        """Every MA site with the chain of pools (k, s, p) that produces its map from the mask."""
        sites: list[MASite] = []
        prefix: tuple[PoolSpec, ...] = ()
        for name, block in self.masked_blocks():
            if block.mask_chain is None:
                continue
            specs = block.mask_chain.specs
            for sub, mod in block.named_modules():
                if isinstance(mod, MaskMul):
                    sites.append(MASite(f"{name}.{sub}", prefix + specs[: mod.tap], mod))
            prefix = prefix + specs
        return sites
