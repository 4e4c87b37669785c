"""Rule ``factor_mask_mul``: ``a * m + b * m -> (a + b) * m`` for one mask map ``m``.

ResNet MA multiplies both the deep path and a projection shortcut by the block's map before the
residual add (docs/mask_attention.md). Factored, the runtime sees ``Conv + Add`` as in the plain
network (ONNX Runtime: NCHWc conv with a fused ``Sum``), and ``relu_before_mask_mul`` then moves
the one remaining multiply after the ``Relu``: one multiply per block instead of two multiplies
and an unfused add.

Pattern: ``Add(p, q)`` where ``p = Mul(a, m)`` and ``q = Mul(b, m)`` multiply by the *same* mask
map ``m`` (either operand order). Check: ``a`` and ``b`` are feature tensors (not mask-only) and
each product is read only by this ``Add``. Rewrite: ``Add(a, b) -> s``, ``Mul(s, m)`` producing
the ``Add``'s output. Exact in real arithmetic (distributivity; broadcasting as in numpy).
"""

from __future__ import annotations

from typing import Iterator

from onnx import helper

from manet_edge.rewrite.base import Match, RewriteContext, Rule, remove_node, replace_node


def _split_mask_mul(ctx: RewriteContext, name: str) -> tuple[object, str, str] | None:
    """(Mul node, feature operand, map operand) when ``name`` is a feature times a mask map."""
    node = ctx.producer.get(name)
    if node is None or node.op_type != "Mul" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
        return None
    a, b = node.input
    if ctx.mask.is_mask_map(b) and not ctx.mask.is_mask_map(a) and a not in ctx.mask.constant:
        return node, a, b
    if ctx.mask.is_mask_map(a) and not ctx.mask.is_mask_map(b) and b not in ctx.mask.constant:
        return node, b, a
    return None


def _pattern(ctx: RewriteContext) -> Iterator[Match]:
    for add in ctx.graph.node:
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2:
            continue
        left, right = _split_mask_mul(ctx, add.input[0]), _split_mask_mul(ctx, add.input[1])
        if left is None or right is None or left[2] != right[2] or left[0] is right[0]:
            continue
        yield Match((add, left[0], right[0]), {"a": left[1], "b": right[1], "m": left[2]})


def _check(ctx: RewriteContext, match: Match) -> str | None:
    _, p, q = match.nodes
    for product in (p, q):
        if ctx.uses(product.output[0]) != 1:
            return f"the product {product.output[0]} is read elsewhere too"
    return None


def _rewrite(ctx: RewriteContext, match: Match) -> None:
    add, p, q = match.nodes
    a, b, m = match.values["a"], match.values["b"], match.values["m"]
    s = ctx.fresh_name(f"{add.output[0]}_sum")
    if add.output[0] in ctx.shapes:
        ctx.shapes[s] = ctx.shapes[add.output[0]]
    new_add = helper.make_node("Add", [a, b], [s], name=add.name or ctx.fresh_name("add"))
    new_mul = helper.make_node("Mul", [s, m], [add.output[0]], name=ctx.fresh_name(f"{p.name or 'mul'}_factored"))
    replace_node(ctx.graph, add, [new_add, new_mul])
    remove_node(ctx.graph, p)
    remove_node(ctx.graph, q)


RULE = Rule("factor_mask_mul", __doc__ or "", _pattern, _check, _rewrite)
