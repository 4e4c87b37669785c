"""Tiny graphs for the rule tests, built with onnx.helper (no torch)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

S = 16  # spatial size of the tiny graphs
C = 16  # feature channels


def vi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def make(nodes, inits=(), outputs=("y",), out_shapes=None, extra_inputs=()) -> onnx.ModelProto:
    """Model with inputs image (N,1,S,S) and mask (N,1,S,S), opset 18."""
    inputs = [vi("image", ["N", 1, S, S]), vi("mask", ["N", 1, S, S]), *extra_inputs]
    outs = [vi(o, [None] * 4) for o in outputs] if out_shapes is None else [vi(o, s) for o, s in zip(outputs, out_shapes)]
    graph = helper.make_graph(nodes, "tiny", inputs, outs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def conv_init(name: str, cout: int, cin: int, k: int, seed: int) -> list[onnx.TensorProto]:
    rng = np.random.default_rng(seed)
    return [numpy_helper.from_array(rng.normal(0, 0.5, (cout, cin, k, k)).astype(np.float32), f"{name}_w"),
            numpy_helper.from_array(rng.normal(0, 0.2, (cout,)).astype(np.float32), f"{name}_b")]


def pool(inp: str, out: str, k: int = 3, s: int = 1, p: int = 1, name: str = "") -> onnx.NodeProto:
    return helper.make_node("AveragePool", [inp], [out], name=name or out, kernel_shape=[k, k], strides=[s, s],
                            pads=[p] * 4, count_include_pad=1)


def conv(inp: str, out: str, name: str, k: int = 3, s: int = 1, p: int = 1) -> onnx.NodeProto:
    return helper.make_node("Conv", [inp, f"{name}_w", f"{name}_b"], [out], name=name, kernel_shape=[k, k],
                            strides=[s, s], pads=[p] * 4)


def feeds(batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.zeros((batch, 1, S, S), np.float32)
    mask[:, :, 3:13, 2:8] = 1
    mask[:, :, 4:12, 9:14] = 1
    return {"image": rng.normal(0, 1, (batch, 1, S, S)).astype(np.float32), "mask": mask}


def run(model: onnx.ModelProto, feed=None) -> list[np.ndarray]:
    from manet_edge.runtime.onnxrt import session_from_onnx

    sess = session_from_onnx(model, threads=1)
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in (feed or feeds()).items() if k in names})


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.fixture
def tiny():
    """Helpers for building and running tiny graphs (``--import-mode=importlib`` cannot import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(S=S, C=C, make=make, conv_init=conv_init, pool=pool, conv=conv, feeds=feeds, run=run,
                           ops=ops, vi=vi)


def ort_optimized_model(model: onnx.ModelProto, path) -> onnx.ModelProto:
    """ONNX Runtime's optimized graph (ORT_ENABLE_ALL, 1 thread) of ``model``, saved at ``path``."""
    from manet_edge.runtime.onnxrt import session_from_onnx

    session_from_onnx(model, threads=1, optimized_model_path=path)
    return onnx.load(str(path))


@pytest.fixture
def ort_optimized():
    """``ort_optimized(model, tmp_path, name)``: ONNX Runtime's optimized graph of ``model``."""
    return lambda model, tmp_path, name: ort_optimized_model(model, tmp_path / f"{name}.opt.onnx")
