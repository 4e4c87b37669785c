"""Rule ``fuse_mask_mul``: each MA site becomes one ``manet_edge::MaskAttentionMul`` node.

Pattern: ``Mul(x, m)`` (either operand order) where ``m`` is a mask map and ``x`` is not.
Check: ``m`` has one channel (a per-pixel scalar) and ``x`` a static channel count.
Rewrite: ``MaskAttentionMul(x, m; channels=C)``; the model gets the op's local function
(:mod:`manet_edge.export.rules.functions`) and the ``manet_edge`` domain import.
"""

from __future__ import annotations

from typing import Iterator

from manet_edge.export.rules.base import Match, RewriteContext, Rule, replace_node
from manet_edge.export.rules.functions import ensure_function, make_ma_node


def _pattern(ctx: RewriteContext) -> Iterator[Match]:
    for node in ctx.graph.node:
        if node.op_type != "Mul" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            continue
        a, b = node.input
        if ctx.mask.is_mask_map(b) and not ctx.mask.is_mask_map(a) and a not in ctx.mask.constant:
            yield Match((node,), {"x": a, "m": b})
        elif ctx.mask.is_mask_map(a) and not ctx.mask.is_mask_map(b) and b not in ctx.mask.constant:
            yield Match((node,), {"x": b, "m": a})


def _check(ctx: RewriteContext, match: Match) -> bool:
    m_dims = ctx.shapes.get(match.values["m"])
    x_dims = ctx.shapes.get(match.values["x"])
    if not m_dims or not x_dims or len(m_dims) != 4 or len(x_dims) != 4:
        return False
    return m_dims[1] == 1 and ctx.channels(match.values["x"]) is not None


def make_rule(body: str = "expand") -> Rule:
    """The rule, writing the function with the given body (see ``functions.BODIES``)."""

    def _rewrite(ctx: RewriteContext, match: Match) -> None:
        (mul,) = match.nodes
        x, m = match.values["x"], match.values["m"]
        ensure_function(ctx.model, body)
        name = mul.name or ctx.fresh_name("mask_attention")
        replace_node(ctx.graph, mul, [make_ma_node(x, m, mul.output[0], ctx.channels(x), name=name)])

    return Rule("fuse_mask_mul", __doc__ or "", _pattern, _check, _rewrite)


RULE = make_rule()
