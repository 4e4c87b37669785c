"""The OpenVINO rule ``pool_maps_as_channels`` (manet_edge.rewrite): what it rewrites, the same
numbers after, and the reason it gives for every pool it leaves alone."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from manet_edge.rewrite import RULE_SETS
from manet_edge.rewrite.openvino_pools import pool_maps_as_channels, refusals
from manet_edge.runtime.onnxrt import session_from_onnx


def _pools(size: int, channels: int = 1, **pool_attrs) -> onnx.ModelProto:
    nodes = [helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[5, 5], strides=[2, 2],
                              pads=[2, 2, 2, 2], **{"count_include_pad": 1, **pool_attrs})]
    graph = helper.make_graph(nodes, "pools", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_rewrites_a_large_one_channel_pool_to_the_same_numbers():
    model = _pools(128)
    assert refusals(model) == {"pool": None}
    x = np.random.default_rng(0).random((1, 1, 128, 128), dtype=np.float32)
    want = session_from_onnx(model).run(None, {"x": x})[0]
    assert pool_maps_as_channels(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Reshape", "AveragePool", "Transpose", "AveragePool", "Transpose"]
    np.testing.assert_allclose(session_from_onnx(model).run(None, {"x": x})[0], want, rtol=0, atol=1e-6)
    assert "pool_maps_as_channels" in RULE_SETS["openvino"]


def test_each_refusal_says_why():
    cases = {
        "under 16384 pixels": _pools(64),
        "not a one-channel map": _pools(128, channels=3),
        "count_include_pad=0": _pools(128, count_include_pad=0),
        "ceil_mode": _pools(128, ceil_mode=1),
    }
    for reason, model in cases.items():
        (why,) = refusals(model).values()
        assert why is not None and reason in why, (reason, why)
        assert pool_maps_as_channels(model) == 0
        assert [n.op_type for n in model.graph.node] == ["AveragePool"]
