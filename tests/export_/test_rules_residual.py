"""The residual-add MA rules (ResNet: the multiply on the deep path before the add) on tiny graphs:
``factor_mask_mul`` and ``mask_mul_before_conv1x1``; op types before/after, numerics in ONNX
Runtime (fused and inlined) and OpenVINO, and what ONNX Runtime's optimizer makes of them."""

from __future__ import annotations

import collections
import copy

import numpy as np
import onnx
import pytest
from onnx import helper

from manet_edge.export.rules import factor_mask_mul, fold_mask_attention, mask_mul_before_conv1x1
from manet_edge.export.rules.base import apply_rules
from manet_edge.export.rules.functions import (
    MA_CONV_ADD_OP,
    MA_DOMAIN,
    MA_OP,
    count_ma_nodes,
    inline_conv_add,
    inline_ma,
)

CIN = 4  # the bottleneck's narrow width; the block output has tiny.C = 16 channels


def _bottleneck(t, *, kernel=1, bias=True, cin=CIN, projection=False, second_map=False, extra_reader=False):
    """h = relu(conv3x3(image)) (cin ch); s = relu(conv3x3(image)) (C ch);
    y = relu(conv_k(h) * P(mask) + s), or with ``projection`` relu(conv_k(h) * m + conv3x3(image) * m')."""
    pad = (kernel - 1) // 2
    nodes = [t.pool("mask", "m", name="pool1"), t.conv("image", "h", "convh"), t.conv("image", "s0", "convs"),
             helper.make_node("Relu", ["s0"], ["s"], name="relus"),
             t.conv("h", "c", "conv3", k=kernel, p=pad), helper.make_node("Mul", ["c", "m"], ["p"], name="mul3")]
    inits = t.conv_init("convh", cin, 1, 3, 0) + t.conv_init("convs", t.C, 1, 3, 1) + t.conv_init("conv3", t.C, cin, kernel, 2)
    if not bias:
        nodes[4].input.pop()
        inits = [i for i in inits if i.name != "conv3_b"]
    shortcut = "s"
    if projection:
        m2 = "m"
        if second_map:
            nodes.append(t.pool("m", "m2", name="pool2"))
            m2 = "m2"
        nodes += [t.conv("image", "q0", "convq"), helper.make_node("Mul", ["q0", m2], ["q"], name="mulq")]
        inits += t.conv_init("convq", t.C, 1, 3, 3)
        shortcut = "q"
    nodes += [helper.make_node("Add", ["p", shortcut], ["a"], name="add"), helper.make_node("Relu", ["a"], ["y"])]
    outputs = ["y", "c"] if extra_reader else ["y"]
    return t.make(nodes, inits, outputs=outputs)


def _same(t, before, after, atol=1e-5):
    for a, b in zip(t.run(before), t.run(after)):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def test_factor_merges_the_products_of_one_map(tiny):
    model = _bottleneck(tiny, kernel=3, projection=True)
    before = copy.deepcopy(model)
    assert tiny.ops(model).count("Mul") == 2
    assert apply_rules(model, [factor_mask_mul.RULE]).counts["factor_mask_mul"] == 1
    ops = tiny.ops(model)
    assert ops.count("Mul") == 1 and ops[-3:] == ["Add", "Mul", "Relu"]
    onnx.checker.check_model(model, full_check=True)
    _same(tiny, before, model)


def test_factor_needs_one_map_and_single_use_products(tiny):
    two_maps = _bottleneck(tiny, kernel=3, projection=True, second_map=True)
    assert apply_rules(two_maps, [factor_mask_mul.RULE]).counts["factor_mask_mul"] == 0
    read_twice = _bottleneck(tiny, kernel=3, projection=True)
    read_twice.graph.output.append(tiny.vi("p", [None] * 4))
    assert apply_rules(read_twice, [factor_mask_mul.RULE]).counts["factor_mask_mul"] == 0


def test_conv1x1_site_becomes_one_conv_add_node(tiny):
    model = _bottleneck(tiny)
    before = copy.deepcopy(model)
    assert apply_rules(model, [mask_mul_before_conv1x1.RULE]).counts["mask_mul_before_conv1x1"] == 1
    assert [op for op in tiny.ops(model) if op not in ("AveragePool",)] == ["Conv", "Conv", "Relu", MA_CONV_ADD_OP, "Relu"]
    node = next(n for n in model.graph.node if n.op_type == MA_CONV_ADD_OP)
    assert node.domain == MA_DOMAIN and list(node.input) == ["h", "m", "s", "conv3_w", "conv3_b"]
    assert helper.get_attribute_value(node.attribute[0]) == CIN and count_ma_nodes(model) == 1
    assert {(f.domain, f.name) for f in model.functions} == {(MA_DOMAIN, MA_OP), (MA_DOMAIN, MA_CONV_ADD_OP)}
    onnx.checker.check_model(model, full_check=True)
    _same(tiny, before, model)  # ORT runs the commuted body (with its nested MaskAttentionMul)
    inlined = inline_ma(model)
    assert not inlined.functions and not any(n.domain == MA_DOMAIN for n in inlined.graph.node)
    assert "Reshape" not in tiny.ops(inlined)  # the bias filters are folded into an initializer
    _same(tiny, before, inlined)


def test_conv1x1_rule_guards(tiny):
    for model in (_bottleneck(tiny, kernel=3),  # a 3x3 conv does not commute with a per-pixel scale
                  _bottleneck(tiny, cin=tiny.C),  # not widening: the input multiply would be as big
                  _bottleneck(tiny, extra_reader=True)):  # the conv output is read elsewhere
        assert apply_rules(model, [mask_mul_before_conv1x1.RULE]).counts["mask_mul_before_conv1x1"] == 0


def test_conv1x1_without_bias_is_plain_ops(tiny):
    model = _bottleneck(tiny, bias=False)
    before = copy.deepcopy(model)
    assert apply_rules(model, [mask_mul_before_conv1x1.RULE]).counts["mask_mul_before_conv1x1"] == 1
    ops = tiny.ops(model)
    assert MA_CONV_ADD_OP not in ops and ops.index("Mul") < ops.index("Add")
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[0] != "image")
    assert conv.input[0] == next(n for n in model.graph.node if n.op_type == "Mul").output[0]
    _same(tiny, before, model)


def test_full_pipeline_on_a_bottleneck_and_a_projection_block(tiny):
    for model, report in ((_bottleneck(tiny), "factor_mask_mul=0, mask_mul_before_conv1x1=1, relu_before_mask_mul=0, "
                                              "fuse_mask_mul=0"),
                          (_bottleneck(tiny, projection=True), "factor_mask_mul=1, mask_mul_before_conv1x1=0, "
                                                               "relu_before_mask_mul=1, fuse_mask_mul=1")):
        before = copy.deepcopy(model)
        fused, rep = fold_mask_attention(copy.deepcopy(model))
        assert report in str(rep) and count_ma_nodes(fused) == 1
        onnx.checker.check_model(fused, full_check=True)
        _same(tiny, before, fused)
        _same(tiny, before, inline_ma(fused))


def test_onnxruntime_fuses_the_add_and_relu_into_the_conv(tiny, tmp_path, ort_optimized):
    """The point of the commuted body: ORT's optimized graph has no standalone Add/Relu, and the
    fused and inlined forms optimize to the same graph."""
    fused, _ = fold_mask_attention(_bottleneck(tiny))
    opt = ort_optimized(fused, tmp_path, "fused")

    def kernels(m):
        return collections.Counter((n.domain, n.op_type, len(n.input),
                                    next((a.s.decode() for a in n.attribute if a.name == "activation"), ""))
                                   for n in m.graph.node)

    assert kernels(opt) == kernels(ort_optimized(inline_ma(fused), tmp_path, "inline"))
    if any(n.domain == "com.microsoft.nchwc" for n in opt.graph.node):
        assert not {"Add", "Relu", "Sum"} & {n.op_type for n in opt.graph.node}
        sums = [n for n in opt.graph.node if n.op_type == "Conv" and len(n.input) == 4]
        # the bias-map conv takes the shortcut as its Sum; the main conv takes that and the Relu
        assert sorted(next((a.s.decode() for a in n.attribute if a.name == "activation"), "") for n in sums) \
            == ["", "Relu"]


def test_openvino_converts_the_conv_add_op(tiny):
    pytest.importorskip("openvino")
    from manet_edge.export.verify import run_openvino

    model = _bottleneck(tiny)
    expected = tiny.run(model)[0]
    fused, _ = fold_mask_attention(copy.deepcopy(model))
    assert count_ma_nodes(fused) == 1
    np.testing.assert_allclose(run_openvino(fused, tiny.feeds()), expected, atol=1e-5)


def test_inline_conv_add_keeps_the_ma_multiply_fused(tiny):
    """For int8: the conv-add op is inlined (its conv gets quantized), its MA multiply stays one node."""
    model = _bottleneck(tiny)
    fused, _ = fold_mask_attention(copy.deepcopy(model))
    out = inline_conv_add(fused)
    ops = tiny.ops(out)
    assert MA_CONV_ADD_OP not in ops and ops.count(MA_OP) == 1
    assert [(f.domain, f.name) for f in out.functions] == [(MA_DOMAIN, MA_OP)]
    onnx.checker.check_model(out, full_check=True)
    _same(tiny, model, out)
