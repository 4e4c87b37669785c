"""The residual-add MA rule (ResNet basic blocks: the multiply on the deep path and on a projection
shortcut before the add) on tiny graphs: ``factor_mask_mul``; op types before/after, numerics in
ONNX Runtime (fused and inlined) and OpenVINO."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import helper

from manet_edge.export.rules import factor_mask_mul, fold_mask_attention
from manet_edge.export.rules.base import apply_rules
from manet_edge.export.rules.functions import count_ma_nodes, inline_ma

CIN = 4  # the deep path's input width; the block output has tiny.C = 16 channels


def _block(t, *, kernel=3, cin=CIN, projection=False, second_map=False):
    """h = relu(conv3x3(image)) (cin ch); s = relu(conv3x3(image)) (C ch);
    y = relu(conv_k(h) * P(mask) + s), or with ``projection`` relu(conv_k(h) * m + conv3x3(image) * m')."""
    pad = (kernel - 1) // 2
    nodes = [t.pool("mask", "m", name="pool1"), t.conv("image", "h", "convh"), t.conv("image", "s0", "convs"),
             helper.make_node("Relu", ["s0"], ["s"], name="relus"),
             t.conv("h", "c", "conv3", k=kernel, p=pad), helper.make_node("Mul", ["c", "m"], ["p"], name="mul3")]
    inits = t.conv_init("convh", cin, 1, 3, 0) + t.conv_init("convs", t.C, 1, 3, 1) + t.conv_init("conv3", t.C, cin, kernel, 2)
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
    return t.make(nodes, inits)


def _same(t, before, after, atol=1e-5):
    for a, b in zip(t.run(before), t.run(after)):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def test_factor_merges_the_products_of_one_map(tiny):
    model = _block(tiny, projection=True)
    before = copy.deepcopy(model)
    assert tiny.ops(model).count("Mul") == 2
    assert apply_rules(model, [factor_mask_mul.RULE]).counts["factor_mask_mul"] == 1
    ops = tiny.ops(model)
    assert ops.count("Mul") == 1 and ops[-3:] == ["Add", "Mul", "Relu"]
    onnx.checker.check_model(model, full_check=True)
    _same(tiny, before, model)


def test_factor_needs_one_map_and_single_use_products(tiny):
    two_maps = _block(tiny, projection=True, second_map=True)
    assert apply_rules(two_maps, [factor_mask_mul.RULE]).counts["factor_mask_mul"] == 0
    read_twice = _block(tiny, projection=True)
    read_twice.graph.output.append(tiny.vi("p", [None] * 4))
    assert apply_rules(read_twice, [factor_mask_mul.RULE]).counts["factor_mask_mul"] == 0


def test_full_pipeline_on_an_identity_and_a_projection_block(tiny):
    for model, report in ((_block(tiny), "factor_mask_mul=0, relu_before_mask_mul=0, fuse_mask_mul=1"),
                          (_block(tiny, projection=True), "factor_mask_mul=1, relu_before_mask_mul=1, fuse_mask_mul=1")):
        before = copy.deepcopy(model)
        fused, rep = fold_mask_attention(copy.deepcopy(model))
        assert report in str(rep) and count_ma_nodes(fused) == 1
        onnx.checker.check_model(fused, full_check=True)
        _same(tiny, before, fused)
        _same(tiny, before, inline_ma(fused))


def test_openvino_runs_the_folded_blocks(tiny):
    pytest.importorskip("openvino")
    from manet_edge.export.verify import run_openvino

    for model in (_block(tiny), _block(tiny, projection=True)):
        expected = tiny.run(model)[0]
        fused, _ = fold_mask_attention(copy.deepcopy(model))
        assert count_ma_nodes(fused) == 1
        np.testing.assert_allclose(run_openvino(fused, tiny.feeds()), expected, atol=1e-5)
