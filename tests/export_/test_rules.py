"""Each MA rule on a tiny hand-built graph: op types before/after and numerical equality in ORT."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from manet_edge.export.rules import cse_mask_branch, fold_mask_attention, fuse_mask_mul, hoist_mask_branch
from manet_edge.export.rules import relu_before_mask_mul, separable_mask_pool
from manet_edge.export.rules.base import apply_rules
from manet_edge.errors import ManetEdgeError
from manet_edge.export.rules.functions import MA_DOMAIN, MA_OP, count_ma_nodes, inline_ma


def _ma_block(t, *, relu_after=True, duplicate_pool=False, extra_reader=False):
    """image -> conv(3x3) * P(mask) -> relu -> conv(3x3) * P(P(mask)) -> relu, as a naive export writes it."""
    nodes = [t.conv("image", "c1", "conv1"), t.pool("mask", "m1", name="pool1"),
             helper.make_node("Mul", ["c1", "m1"], ["x1"], name="mul1")]
    nodes.append(helper.make_node("Relu", ["x1"], ["r1"], name="relu1") if relu_after
                 else helper.make_node("Add", ["x1", "x1"], ["r1"], name="add1"))
    nodes += [t.conv("r1", "c2", "conv2"), t.pool("m1", "m2", name="pool2")]
    second_map = "m2"
    if duplicate_pool:  # a second, identical pool of the same map (what CSE removes)
        nodes.append(t.pool("m1", "m2b", name="pool2b"))
        second_map = "m2b"
    nodes += [helper.make_node("Mul", ["c2", second_map], ["x2"], name="mul2"),
              helper.make_node("Relu", ["x2"], ["y"], name="relu2")]
    outputs = ["y", "x1"] if extra_reader else ["y"]
    inits = t.conv_init("conv1", t.C, 1, 3, 0) + t.conv_init("conv2", t.C, t.C, 3, 1)
    return t.make(nodes, inits, outputs=outputs)


def _same(t, before, after):
    for a, b in zip(t.run(before), t.run(after)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_cse_merges_identical_mask_pools(tiny):
    model = _ma_block(tiny, duplicate_pool=True)
    before = copy.deepcopy(model)
    assert tiny.ops(model).count("AveragePool") == 3
    report = apply_rules(model, [cse_mask_branch.RULE])
    assert report.counts["cse_mask_branch"] == 1
    assert tiny.ops(model).count("AveragePool") == 2
    onnx.checker.check_model(model, full_check=True)
    _same(tiny, before, model)


def test_cse_leaves_feature_path_alone(tiny):
    """Two identical convs of the image are not in the mask branch: not merged by this rule."""
    nodes = [tiny.conv("image", "a", "conv1"), helper.make_node("Conv", ["image", "conv1_w", "conv1_b"], ["b"],
                                                                 name="conv1b", kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Add", ["a", "b"], ["y"])]
    model = tiny.make(nodes, tiny.conv_init("conv1", 4, 1, 3, 0))
    assert apply_rules(model, [cse_mask_branch.RULE]).counts["cse_mask_branch"] == 0
    assert tiny.ops(model).count("Conv") == 2


def test_relu_moves_before_mask_multiply(tiny):
    model = _ma_block(tiny)
    before = copy.deepcopy(model)
    assert tiny.ops(model) == ["Conv", "AveragePool", "Mul", "Relu", "Conv", "AveragePool", "Mul", "Relu"]
    report = apply_rules(model, [relu_before_mask_mul.RULE])
    assert report.counts["relu_before_mask_mul"] == 2
    for node in model.graph.node:  # every Relu now reads a Conv, every Mul a Relu
        if node.op_type == "Relu":
            assert node.input[0] in ("c1", "c2")
        if node.op_type == "Mul":
            assert node.input[0].endswith("_relu")
    _same(tiny, before, model)


def test_relu_swap_needs_nonnegative_map(tiny):
    """m = pool(mask) - 0.5 can be negative: relu(x*m) != relu(x)*m, so the rule must not fire."""
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    nodes = [tiny.conv("image", "c1", "conv1"), tiny.pool("mask", "m0", name="pool1"),
             helper.make_node("Sub", ["m0", "half"], ["m1"]), helper.make_node("Mul", ["c1", "m1"], ["x1"]),
             helper.make_node("Relu", ["x1"], ["y"])]
    model = tiny.make(nodes, tiny.conv_init("conv1", tiny.C, 1, 3, 0) + [half])
    assert apply_rules(model, [relu_before_mask_mul.RULE]).counts["relu_before_mask_mul"] == 0


def test_relu_swap_skips_products_read_elsewhere(tiny):
    model = _ma_block(tiny, extra_reader=True)  # x1 (the first product) is also a graph output
    assert apply_rules(model, [relu_before_mask_mul.RULE]).counts["relu_before_mask_mul"] == 1


def test_fuse_makes_one_function_node_per_site(tiny):
    model = _ma_block(tiny)
    before = copy.deepcopy(model)
    report = apply_rules(model, [fuse_mask_mul.RULE])
    assert report.counts["fuse_mask_mul"] == 2
    assert tiny.ops(model).count(MA_OP) == 2 and "Mul" not in tiny.ops(model)
    assert [(f.domain, f.name) for f in model.functions] == [(MA_DOMAIN, MA_OP)]
    assert any(i.domain == MA_DOMAIN for i in model.opset_import)
    for node in model.graph.node:
        if node.op_type == MA_OP:
            assert node.domain == MA_DOMAIN and helper.get_attribute_value(node.attribute[0]) == tiny.C
    onnx.checker.check_model(model, full_check=True)
    _same(tiny, before, model)
    inlined = inline_ma(model)
    assert count_ma_nodes(inlined) == 0 and not inlined.functions
    assert not any(i.domain == MA_DOMAIN for i in inlined.opset_import)
    _same(tiny, before, inlined)


def test_fuse_ignores_feature_products(tiny):
    """CBAM-style x * sigmoid(f(x)) is attention from features, not MA: left as a Mul."""
    nodes = [tiny.conv("image", "c1", "conv1"), helper.make_node("Sigmoid", ["c1"], ["s"]),
             helper.make_node("Mul", ["c1", "s"], ["y"])]
    model = tiny.make(nodes, tiny.conv_init("conv1", tiny.C, 1, 3, 0))
    assert apply_rules(model, [fuse_mask_mul.RULE]).counts["fuse_mask_mul"] == 0
    assert tiny.ops(model)[-1] == "Mul"


def test_hoist_puts_the_mask_pyramid_first(tiny):
    model = _ma_block(tiny)
    before = copy.deepcopy(model)
    assert apply_rules(model, [hoist_mask_branch.RULE]).counts["hoist_mask_branch"] == 1
    assert tiny.ops(model)[:2] == ["AveragePool", "AveragePool"]
    assert apply_rules(model, [hoist_mask_branch.RULE]).counts["hoist_mask_branch"] == 0  # fixed point
    _same(tiny, before, model)


def _map_channels(model):
    return [helper.get_attribute_value(next(a for a in n.attribute if a.name == "map_channels"))
            for n in model.graph.node if n.op_type == MA_OP]


def test_function_bodies_agree(tiny):
    outs = {}
    for body in ("auto", "expand", "broadcast"):
        model = _ma_block(tiny)
        folded, _ = fold_mask_attention(model, body=body)
        onnx.checker.check_model(folded, full_check=True)
        outs[body] = tiny.run(folded)[0]
        outs[body + " inline"] = tiny.run(inline_ma(folded))[0]
    for key, out in outs.items():
        np.testing.assert_allclose(out, outs["broadcast"], atol=1e-6, err_msg=key)


def _bottleneck_site(t):
    """image -> conv(3x3) * P(mask) -> relu -> conv(1x1): the product read only by a pointwise conv."""
    nodes = [t.conv("image", "c1", "conv1"), t.pool("mask", "m1", name="pool1"),
             helper.make_node("Mul", ["c1", "m1"], ["x1"], name="mul1"), helper.make_node("Relu", ["x1"], ["r1"]),
             t.conv("r1", "y", "conv2", k=1, p=0)]
    return t.make(nodes, t.conv_init("conv1", t.C, 1, 3, 0) + t.conv_init("conv2", t.C, t.C, 1, 1))


def test_auto_body_broadcasts_only_sites_read_by_pointwise_convs(tiny, monkeypatch):
    """``auto``: map_channels = 1 where only 1x1 convs read the product (ResNet bottleneck) of a large
    enough map, C elsewhere."""
    model = _bottleneck_site(tiny)
    assert _map_channels(fold_mask_attention(copy.deepcopy(model), body="auto")[0]) == [tiny.C]  # tiny map
    monkeypatch.setattr(fuse_mask_mul, "BROADCAST_MIN_ELEMENTS", 1)
    assert _map_channels(fold_mask_attention(_ma_block(tiny), body="auto")[0]) == [tiny.C, tiny.C]
    assert _map_channels(fold_mask_attention(_ma_block(tiny), body="expand")[0]) == [tiny.C, tiny.C]
    before = copy.deepcopy(model)
    for body, want in (("auto", [1]), ("expand", [tiny.C]), ("broadcast", [1])):
        folded, _ = fold_mask_attention(copy.deepcopy(model), body=body)
        assert _map_channels(folded) == want, body
        onnx.checker.check_model(folded, full_check=True)
        _same(tiny, before, folded)
        _same(tiny, before, inline_ma(folded))
    with pytest.raises(ManetEdgeError):
        fuse_mask_mul.make_rule("pool")


def test_full_pipeline_and_inline(tiny):
    model = _ma_block(tiny, duplicate_pool=True)
    before = copy.deepcopy(model)
    fused, report = fold_mask_attention(copy.deepcopy(model), ma_op="fused")
    assert str(report) == ("cse_mask_branch=1, factor_mask_mul=0, relu_before_mask_mul=2, fuse_mask_mul=2, "
                           "separable_mask_pool=0, hoist_mask_branch=1")
    assert tiny.ops(fused) == ["AveragePool", "AveragePool", "Conv", "Relu", MA_OP, "Conv", "Relu", MA_OP]
    inline, _ = fold_mask_attention(copy.deepcopy(model), ma_op="inline")
    assert count_ma_nodes(inline) == 0 and "Mul" in tiny.ops(inline)
    # the expand body's weight chains are folded into initializers (ORT's NCHWc conv needs static weights)
    assert not {"Constant", "ConstantOfShape", "CastLike", "Cast", "Concat"} & set(tiny.ops(inline))
    for m in (fused, inline):
        onnx.checker.check_model(m, full_check=True)
        _same(tiny, before, m)


def test_op_name_collides_with_no_onnx_op():
    import onnx.defs

    names = {s.name for s in onnx.defs.get_all_schemas_with_history()}
    assert MA_OP not in names and MA_DOMAIN not in ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")


def test_openvino_runs_the_fused_form(tiny):

    pytest.importorskip("openvino")
    from manet_edge.export.verify import run_openvino

    model = _ma_block(tiny)
    expected = tiny.run(model)[0]
    fused, _ = fold_mask_attention(copy.deepcopy(model))
    np.testing.assert_allclose(run_openvino(fused, tiny.feeds()), expected, atol=1e-5)
    inline, _ = fold_mask_attention(copy.deepcopy(model), ma_op="inline")
    np.testing.assert_allclose(run_openvino(inline, tiny.feeds()), expected, atol=1e-5)


def _kernel_counts(opt):
    """(domain, op, activation) of every node of an optimized graph."""
    import collections

    return collections.Counter(
        (n.domain, n.op_type, next((a.s.decode() for a in n.attribute if a.name == "activation"), ""))
        for n in opt.graph.node)


def test_onnxruntime_runs_the_fused_form_as_the_inlined_one(tiny, tmp_path, ort_optimized):
    """After ORT inlines the function, fused and inline are the same graph: same kernels, nothing extra.

    With the NCHWc layout (x86 MLAS), the expand body keeps the multiply in the blocked layout: no
    ReorderInput/ReorderOutput besides the one the plain network needs at its output.
    """
    fused, _ = fold_mask_attention(_ma_block(tiny), ma_op="fused", body="expand")
    inline = inline_ma(fused)
    ops_fused = _kernel_counts(ort_optimized(fused, tmp_path, "fused"))
    assert ops_fused == _kernel_counts(ort_optimized(inline, tmp_path, "inline"))
    assert not any(op == MA_OP for _, op, _ in ops_fused)
    if any(domain == "com.microsoft.nchwc" for domain, _, _ in ops_fused):
        reorders = sum(c for (d, op, _), c in ops_fused.items() if op.startswith("Reorder"))
        assert reorders == 1  # the graph output leaves the blocked layout once
        assert ops_fused[("com.microsoft.nchwc", "Conv", "Relu")] == 2  # Conv+Relu fused before the multiply


def test_onnxruntime_runs_the_auto_body_fused_as_inlined(tiny, tmp_path, ort_optimized, monkeypatch):
    """A site whose map is broadcast (map_channels = 1): fused and inlined optimize alike."""
    monkeypatch.setattr(fuse_mask_mul, "BROADCAST_MIN_ELEMENTS", 1)
    fused, _ = fold_mask_attention(_bottleneck_site(tiny), ma_op="fused")
    assert _map_channels(fused) == [1]
    ops_fused = _kernel_counts(ort_optimized(fused, tmp_path, "fused"))
    assert ops_fused == _kernel_counts(ort_optimized(inline_ma(fused), tmp_path, "inline"))
    assert not any(op == MA_OP for _, op, _ in ops_fused)


def _stem_site(t, *, k=7, s=2, p=3, include_pad=1, on_mask=True):
    """image -> conv(k, s, p) * P(mask; k, s, p) -> relu: a ResNet-stem-like site (or, with
    ``on_mask=False``, the same pool applied to the features instead of the mask)."""
    pool = helper.make_node("AveragePool", ["mask" if on_mask else "c1"], ["m1"], name="pool1", kernel_shape=[k, k],
                            strides=[s, s], pads=[p] * 4, count_include_pad=include_pad)
    nodes = [helper.make_node("Conv", ["image", "conv1_w", "conv1_b"], ["c1"], name="conv1", kernel_shape=[k, k],
                              strides=[s, s], pads=[p] * 4), pool,
             helper.make_node("Mul", ["c1", "m1"], ["x1"], name="mul1"), helper.make_node("Relu", ["x1"], ["y"])]
    return t.make(nodes, t.conv_init("conv1", t.C, 1, k, 0))


def test_separable_mask_pool_splits_the_stem_pool(tiny):
    model = _stem_site(tiny)
    before = copy.deepcopy(model)
    assert apply_rules(model, [separable_mask_pool.RULE]).counts["separable_mask_pool"] == 1
    pools = [n for n in model.graph.node if n.op_type == "AveragePool"]
    got = [(list(helper.get_attribute_value(a) for a in sorted(n.attribute, key=lambda a: a.name)
                 if a.name in ("kernel_shape", "strides", "pads"))) for n in pools]
    assert got == [[[7, 1], [3, 0, 3, 0], [2, 1]], [[1, 7], [0, 3, 0, 3], [1, 2]]]
    assert pools[0].input[0] == "mask" and pools[1].input[0] == pools[0].output[0] and pools[1].output[0] == "m1"
    onnx.checker.check_model(model, full_check=True)
    _same(tiny, before, model)
    feed = tiny.feeds()
    feed["mask"] = (np.random.default_rng(3).random(feed["mask"].shape) < 0.5).astype(np.float32)  # ragged edges
    np.testing.assert_allclose(tiny.run(model, feed)[0], tiny.run(before, feed)[0], rtol=0, atol=1e-5)


def test_separable_mask_pool_guards(tiny):
    for model in (_stem_site(tiny, k=3, s=1, p=1),  # small window: not worth a second node
                  _stem_site(tiny, include_pad=0),  # only the MA pyramid's pools (padding counted) are handled
                  _stem_site(tiny, on_mask=False)):  # a pool of features, not of the mask
        assert apply_rules(model, [separable_mask_pool.RULE]).counts["separable_mask_pool"] == 0
