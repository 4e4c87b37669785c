"""Rule ``relu_before_mask_mul``: ``Relu(x * m) -> Relu(x) * m`` for a non-negative mask map ``m``.

ReLU is positively homogeneous: ``relu(a * x) = a * relu(x)`` for ``a >= 0``, and MA maps are
averages of a {0, 1} mask, so the multiply can move after the activation. The runtime then sees
``Conv -> [Add] -> Relu`` exactly as in the plain network and fuses it (ONNX Runtime: FusedConv /
NCHWc conv with Sum and activation; OpenVINO: convolution post-ops), leaving one multiply.

Pattern: ``Relu`` reading a ``Mul`` (or a fused ``MaskAttentionMul``) of a feature and a mask map.
Check: the map is mask-only and provably >= 0, and the product has no other reader.
Rewrite: ``Relu(x) -> r``, then the same multiply of ``r`` by the map, producing the Relu's output.
"""

from __future__ import annotations

from typing import Iterator

from onnx import helper

from manet_edge.rewrite.base import Match, RewriteContext, Rule, remove_node, replace_node
from manet_edge.rewrite.functions import MA_DOMAIN, MA_OP


def _is_mask_mul(node) -> bool:
    return (node.op_type == "Mul" and node.domain in ("", "ai.onnx")) or \
        (node.op_type == MA_OP and node.domain == MA_DOMAIN)


def _pattern(ctx: RewriteContext) -> Iterator[Match]:
    for relu in ctx.graph.node:
        if relu.op_type != "Relu" or relu.domain not in ("", "ai.onnx"):
            continue
        mul = ctx.producer.get(relu.input[0])
        if mul is None or not _is_mask_mul(mul):
            continue
        a, b = mul.input[0], mul.input[1]
        if mul.op_type == MA_OP:
            yield Match((mul, relu), {"x": a, "m": b})
        elif ctx.mask.is_mask_map(b) and not ctx.mask.is_mask_map(a):
            yield Match((mul, relu), {"x": a, "m": b})
        elif ctx.mask.is_mask_map(a) and not ctx.mask.is_mask_map(b):
            yield Match((mul, relu), {"x": b, "m": a})


def _check(ctx: RewriteContext, match: Match) -> str | None:
    mul, relu = match.nodes
    if not ctx.mask.is_nonneg_mask_map(match.values["m"]):
        return f"{match.values['m']} is not known to be a non-negative mask map"
    if ctx.uses(mul.output[0]) != 1:
        return f"the product {mul.output[0]} is read elsewhere too"
    return None


def _rewrite(ctx: RewriteContext, match: Match) -> None:
    mul, relu = match.nodes
    x, m = match.values["x"], match.values["m"]
    r = ctx.fresh_name(f"{x}_relu")
    if x in ctx.shapes:
        ctx.shapes[r] = ctx.shapes[x]
    new_relu = helper.make_node("Relu", [x], [r], name=ctx.fresh_name(f"{relu.name or 'relu'}_pre"))
    new_mul = helper.make_node(mul.op_type, [r, m], [relu.output[0]], name=mul.name, domain=mul.domain)
    new_mul.attribute.extend(mul.attribute)
    replace_node(ctx.graph, relu, [new_relu, new_mul])
    remove_node(ctx.graph, mul)


RULE = Rule("relu_before_mask_mul", __doc__ or "", _pattern, _check, _rewrite)
