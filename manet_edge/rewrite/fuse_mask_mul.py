"""Rule ``fuse_mask_mul``: each MA site becomes one ``manet_edge::MaskAttentionMul`` node.

Pattern: ``Mul(x, m)`` (either operand order) where ``m`` is a mask map and ``x`` is not.
Check: ``m`` has one channel (a per-pixel scalar) and ``x`` a static channel count.
Rewrite: ``MaskAttentionMul(x, m; channels=C, map_channels=K)``; the model gets the op's local
function (:mod:`manet_edge.rewrite.functions`) and the ``manet_edge`` domain import.

``K`` per site, by the exporter's body choice (``ExportOptions.ma_body``, :data:`SITE_BODIES`):

* ``auto`` (default): ``K = 1`` (the map broadcast in the multiply) at a site whose product only
  1x1 convolutions read, as at a ResNet bottleneck's 3x3 conv (its product feeds ``conv3``), and
  whose feature map holds at least :data:`BROADCAST_MIN_ELEMENTS` values per image; ``K = C`` (the
  map expanded by a 1x1 conv) everywhere else: the ResNet stem, basic blocks, VGG, and small maps.
  This is a measured heuristic for ONNX Runtime's CPU provider (``benchmarks/results/``
  ``ma_overhead_cpu.md``, docs/export.md "Where MA's time goes"), MA over plain, same runs:
  resnet50-ma at 512 px 2.3 % with ``auto`` vs 3.5 % with ``K = C`` everywhere (run 7; in
  exploratory runs, hand-built graphs broadcasting at 13-16 bottleneck sites 1.8-3.6 % vs
  2.6-5.2 %, lower in each run); at 224 px (every bottleneck map under 1 MiB, so ``auto`` =
  ``expand``) 1.9 % with ``K = C`` vs 2.7 % with ``K = 1``; resnet18-ma at 192 px (no
  bottlenecks) 5.0 % with ``K = C`` vs 5.9 % broadcast.
* ``expand``: ``K = C`` at every site.
* ``broadcast``: the literal ``Mul(X, M)`` body (``K = 1``).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from manet_edge.choices import MA_BODIES as SITE_BODIES
from manet_edge.errors import ManetEdgeError
from manet_edge.rewrite.base import Match, RewriteContext, Rule, attrs, replace_node
from manet_edge.rewrite.functions import ensure_function, make_ma_node

BROADCAST_MIN_ELEMENTS = 1 << 18
"""``auto`` broadcasts a pointwise-read site's map only from this many feature values per image
(C*h*w, 1 MiB of fp32): resnet50's layer1-3 bottleneck sites at 512 px, none at 224 px."""


def _pattern(ctx: RewriteContext) -> Iterator[Match]:
    for node in ctx.graph.node:
        if node.op_type != "Mul" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            continue
        a, b = node.input
        if ctx.mask.is_mask_map(b) and not ctx.mask.is_mask_map(a) and a not in ctx.mask.constant:
            yield Match((node,), {"x": a, "m": b})
        elif ctx.mask.is_mask_map(a) and not ctx.mask.is_mask_map(b) and b not in ctx.mask.constant:
            yield Match((node,), {"x": b, "m": a})


def _check(ctx: RewriteContext, match: Match) -> str | None:
    m_dims = ctx.shapes.get(match.values["m"])
    x_dims = ctx.shapes.get(match.values["x"])
    if not m_dims or not x_dims or len(m_dims) != 4 or len(x_dims) != 4:
        return f"shapes unknown or not 4-D (map {m_dims}, features {x_dims})"
    if m_dims[1] != 1:
        return f"the map {match.values['m']} has {m_dims[1]} channels, not 1"
    if ctx.channels(match.values["x"]) is None:
        return f"the channel count of {match.values['x']} is not static"
    return None


def _is_pointwise_conv(ctx: RewriteContext, node) -> bool:
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
        return False
    kernel = attrs(node).get("kernel_shape")
    if kernel is None and len(node.input) > 1 and node.input[1] in ctx.initializers:
        kernel = list(ctx.initializers[node.input[1]].dims[2:])
    return kernel is not None and list(kernel) == [1, 1]


def _elements(dims) -> int:
    """C*h*w of a (N, C, h, w) shape; 0 when a dim is unknown."""
    if not dims or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        return 0
    return int(np.prod(dims[1:]))


def map_channels(body: str, ctx: RewriteContext, x: str, y: str, channels: int) -> int:
    """``map_channels`` for the site ``y = x * m`` (``channels`` = C) under ``body``."""
    if body == "broadcast":
        return 1
    if body == "expand" or _elements(ctx.shapes.get(x)) < BROADCAST_MIN_ELEMENTS:
        return channels
    readers = ctx.consumers.get(y, [])
    feeds_pointwise = bool(readers) and y not in ctx.graph_outputs and all(_is_pointwise_conv(ctx, r) for r in readers)
    return 1 if feeds_pointwise else channels


def make_rule(body: str = "auto") -> Rule:
    """The rule for one of :data:`SITE_BODIES`."""
    if body not in SITE_BODIES:
        raise ManetEdgeError(f"MA body must be one of {SITE_BODIES}, got {body!r}")
    function_body = "broadcast" if body == "broadcast" else "expand"

    def _rewrite(ctx: RewriteContext, match: Match) -> None:
        (mul,) = match.nodes
        x, m = match.values["x"], match.values["m"]
        ensure_function(ctx.model, function_body)
        name = mul.name or ctx.fresh_name("mask_attention")
        c = ctx.channels(x)
        k = map_channels(body, ctx, x, mul.output[0], c)
        replace_node(ctx.graph, mul, [make_ma_node(x, m, mul.output[0], c, name=name, map_channels=k)])

    return Rule("fuse_mask_mul", __doc__ or "", _pattern, _check, _rewrite)


RULE = make_rule()
