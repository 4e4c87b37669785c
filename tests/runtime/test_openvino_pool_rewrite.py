"""``pool_maps_as_channels``: the OpenVINO runner's rewrite of one-channel mask pools is exact and
leaves every other pool alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from manet_edge.runtime.openvino import pool_maps_as_channels

S = 24


def _pools(*, channels=1, include_pad=1, ceil=0):
    """mask (N,C,S,S) -> P(7x7, s2, p3) -> P(3x3, s1, p1): an MA-pyramid-like chain."""
    nodes = [helper.make_node("AveragePool", ["mask"], ["m1"], kernel_shape=[7, 7], strides=[2, 2], pads=[3] * 4,
                              count_include_pad=include_pad, ceil_mode=ceil),
             helper.make_node("AveragePool", ["m1"], ["m2"], kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4,
                              count_include_pad=include_pad, ceil_mode=ceil)]
    graph = helper.make_graph(nodes, "pools", [helper.make_tensor_value_info("mask", TensorProto.FLOAT,
                                                                              ["N", channels, S, S])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", channels, None, None])
                               for o in ("m1", "m2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def _ort(model, feed):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def test_one_channel_pools_become_row_and_column_pools_with_the_same_values():
    model = _pools()
    before = onnx.ModelProto()
    before.CopyFrom(model)
    assert pool_maps_as_channels(model, min_pixels=1) == 2
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Reshape", "AveragePool", "Transpose", "AveragePool", "Transpose"] * 2
    feed = {"mask": (np.random.default_rng(0).random((2, 1, S, S)) < 0.5).astype(np.float32)}
    for got, want in zip(_ort(model, feed), _ort(before, feed)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    pytest.importorskip("openvino")
    import openvino as ov

    compiled = ov.Core().compile_model(ov.Core().read_model(model.SerializeToString(), b""), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled.create_infer_request().infer(feed)
    np.testing.assert_allclose(result[compiled.outputs[1]], _ort(before, feed)[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs, min_pixels", [
    ({"channels": 3}, 1),  # feature pools (C > 1) are left to OpenVINO
    ({"include_pad": 0}, 1),  # the mean over the valid pixels is not separable this way
    ({"ceil": 1}, 1),
    ({}, S * S + 1),  # small maps: the extra nodes would cost more than they save
])
def test_other_pools_are_left_alone(kwargs, min_pixels):
    model = _pools(**kwargs)
    ops = [n.op_type for n in model.graph.node]
    # (the last case: the first pool reads S*S pixels, the second (S/2)^2, neither reaches S*S + 1)
    assert pool_maps_as_channels(model, min_pixels=min_pixels) == 0
    assert [n.op_type for n in model.graph.node] == ops
