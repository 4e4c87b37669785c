"""Rule ``mask_mul_before_conv1x1``: ``Conv1x1(h) * m + s`` becomes one ``MaskAttentionConvAdd`` node.

ResNet bottlenecks with MA end in ``Relu(Conv1x1(h) * m + shortcut)``: the multiply sits on the
normalised deep path, before the residual add (docs/mask_attention.md). Left as is, no runtime
fuses the add and the ReLU into the conv, and the multiply, the add and the ReLU are three passes
over the block's widest tensor. A 1x1 convolution mixes channels pixel by pixel, so a per-pixel
scalar ``m`` (a one-channel mask map) commutes with it: ``(W h + b) * m = W (h * m) + b m``.

Rewrite: ``manet_edge::MaskAttentionConvAdd(h, m, s, W, b; in_channels=Cin)``, one node per MA
site, whose function body is that commuted form (:func:`~manet_edge.export.rules.functions.
build_conv_add_function`: the multiply on the conv's narrower input, the bias map added to the
shortcut, the add and a following ReLU fused into the conv by ONNX Runtime); OpenVINO converts the
node to the literal ``Conv * m + s`` it fuses best. Without a bias the rewrite is plain ops:
``Add(Conv1x1(Mul(h, m)), s)`` (``fuse_mask_mul`` then makes the ``Mul`` an MA node).

Pattern: ``Add(Mul(c, m), s)`` (any operand order) with ``c`` the output of a ``Conv`` with a 1x1
kernel, stride 1, no padding, dilation 1, group 1 and initializer weights (and bias, if any).
Check: ``m`` is a one-channel mask map, ``s`` is not mask-only, the conv and the product each
have one reader, and the conv widens (its input has fewer channels than its output; otherwise the
multiply on the input is the bigger one). Exact in real arithmetic.
"""

from __future__ import annotations

from typing import Iterator

from onnx import helper

from manet_edge.export.rules.base import Match, RewriteContext, Rule, attrs, remove_node, replace_node
from manet_edge.export.rules.functions import ensure_conv_add_function, make_conv_add_node


def _is_pointwise_conv(ctx: RewriteContext, conv) -> bool:
    if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or len(conv.input) < 2:
        return False
    a = attrs(conv)
    if a.get("group", 1) != 1 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    if any(v != 1 for v in a.get("strides", [1, 1])) or any(v != 1 for v in a.get("dilations", [1, 1])):
        return False
    if any(v != 0 for v in a.get("pads", [0, 0, 0, 0])):
        return False
    w = ctx.initializers.get(conv.input[1])
    if w is None or len(w.dims) != 4 or list(w.dims[2:]) != [1, 1]:
        return False
    return len(conv.input) < 3 or not conv.input[2] or conv.input[2] in ctx.initializers


def _pattern(ctx: RewriteContext) -> Iterator[Match]:
    for add in ctx.graph.node:
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2:
            continue
        for i in (0, 1):
            mul = ctx.producer.get(add.input[i])
            if mul is None or mul.op_type != "Mul" or mul.domain not in ("", "ai.onnx") or len(mul.input) != 2:
                continue
            for j in (0, 1):
                c, m = mul.input[j], mul.input[1 - j]
                conv = ctx.producer.get(c)
                if conv is not None and ctx.mask.is_mask_map(m) and _is_pointwise_conv(ctx, conv):
                    yield Match((add, mul, conv), {"m": m, "s": add.input[1 - i]})


def _check(ctx: RewriteContext, match: Match) -> bool:
    add, mul, conv = match.nodes
    m, s = match.values["m"], match.values["s"]
    m_dims = ctx.shapes.get(m)
    if not m_dims or len(m_dims) != 4 or m_dims[1] != 1 or ctx.mask.is_mask_map(s) or s in ctx.mask.constant:
        return False
    if ctx.uses(conv.output[0]) != 1 or ctx.uses(mul.output[0]) != 1:
        return False
    cout, cin = ctx.initializers[conv.input[1]].dims[:2]
    return cin < cout


def make_rule(body: str = "expand") -> Rule:
    """The rule; ``body`` is the body of the nested ``MaskAttentionMul`` function."""

    def _rewrite(ctx: RewriteContext, match: Match) -> None:
        add, mul, conv = match.nodes
        m, s = match.values["m"], match.values["s"]
        h, w = conv.input[0], conv.input[1]
        y = add.output[0]
        cin = int(ctx.initializers[w].dims[1])
        bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else ""
        if bias:
            ensure_conv_add_function(ctx.model, body)
            new = [make_conv_add_node(h, m, s, w, bias, y, cin, name=conv.name or ctx.fresh_name("mask_attention_conv"))]
        else:
            hm, u = ctx.fresh_name(f"{h}_masked"), ctx.fresh_name(f"{conv.output[0]}_masked_input")
            if h in ctx.shapes:
                ctx.shapes[hm] = ctx.shapes[h]
            conv_u = helper.make_node("Conv", [hm, w], [u], name=conv.name or ctx.fresh_name("conv"))
            conv_u.attribute.extend(conv.attribute)
            new = [helper.make_node("Mul", [h, m], [hm], name=mul.name or ctx.fresh_name("mask_mul")), conv_u,
                   helper.make_node("Add", [u, s], [y], name=add.name or ctx.fresh_name("add"))]
        replace_node(ctx.graph, add, new)
        remove_node(ctx.graph, mul)
        remove_node(ctx.graph, conv)

    return Rule("mask_mul_before_conv1x1", __doc__ or "", _pattern, _check, _rewrite)


RULE = make_rule()
