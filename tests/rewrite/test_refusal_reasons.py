"""A rule's check says why it refused a match, and the report keeps the reasons."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from manet_edge.rewrite import separable_mask_pool
from manet_edge.rewrite.base import apply_rules


def _mask_pool(kernel: int) -> onnx.ModelProto:
    nodes = [helper.make_node("AveragePool", ["mask"], ["m"], name="pool", kernel_shape=[kernel, kernel],
                              strides=[1, 1], pads=[kernel // 2] * 4, count_include_pad=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 32, 32])],
                              [helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 1, 32, 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_a_small_kernel_is_refused_with_its_reason():
    report = apply_rules(_mask_pool(3), [separable_mask_pool.RULE])
    assert report.counts == {"separable_mask_pool": 0}
    (why,) = report.why_not("separable_mask_pool")
    assert "kernel [3, 3]" in why and "at least" in why


def test_a_large_kernel_fires_then_leaves_its_own_row_and_column_pools():
    model = _mask_pool(7)
    report = apply_rules(model, [separable_mask_pool.RULE])
    assert report.counts == {"separable_mask_pool": 1}
    assert report.why_not("separable_mask_pool") == ["kernel [1, 7] is not square and at least 5x5",
                                                     "kernel [7, 1] is not square and at least 5x5"]
    assert [n.op_type for n in model.graph.node] == ["AveragePool", "AveragePool"]
