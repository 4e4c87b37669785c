"""Fixtures for the TensorRT-engine tests: tiny ONNX models, a fake ``tensorrt`` and a fake CUDA.

Everything here runs on a CPU-only machine. The fakes record what our code asks of TensorRT and
CUDA; the tests assert our behaviour (flags chosen, shapes set, files written, bytes copied), not
the fakes'.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _ensure_export_package() -> None:
    """Make ``manet_edge.export`` importable even before ``export/__init__.py`` exists.

    pyproject maps ``export/`` to ``manet_edge.export``; an editable install without the package's
    ``__init__.py`` cannot resolve it, so register it as a namespace package pointing at ``export/``.
    Does nothing once the real package imports.
    """
    try:
        importlib.import_module("manet_edge.export")
        return
    except ModuleNotFoundError:
        pass
    import manet_edge

    spec = importlib.machinery.ModuleSpec("manet_edge.export", None, is_package=True)
    spec.submodule_search_locations = [str(REPO / "export")]
    module = importlib.util.module_from_spec(spec)
    sys.modules["manet_edge.export"] = module
    manet_edge.export = module  # type: ignore[attr-defined]


_ensure_export_package()


def _load_fakes():
    spec = importlib.util.spec_from_file_location("manet_edge_engine_test_fakes", Path(__file__).with_name("_fakes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fakes = _load_fakes()
FakeCudaApi, make_fake_trt = _fakes.FakeCudaApi, _fakes.make_fake_trt


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make ``import tensorrt`` fail even on a machine that has it."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


# ---------------------------------------------------------------------------------------------
# Tiny ONNX models (built in memory, never committed)
# ---------------------------------------------------------------------------------------------

def make_classifier_onnx(path: Path, *, batch="N", size: int = 8, fp16: bool = False, qdq: bool = False,
                         local_function: str | None = None, function_domain: str = "manet_edge",
                         card: dict | None = None) -> Path:
    """image (B,1,S,S) + mask (B,1,S,S) -> logits (B,5); optionally fp16 casts, Q/DQ or an MA function."""
    import json

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 1, size, size])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, 1, size, size])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])
    nodes, inits, functions = [], [], []
    src = "image"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["image", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        src = "dq"
    if local_function:
        fn = helper.make_function(function_domain, local_function, ["x", "m"], ["y"],
                                  [helper.make_node("Mul", ["x", "m"], ["y"])],
                                  [helper.make_opsetid("", 17)])
        functions.append(fn)
        nodes.append(helper.make_node(local_function, [src, "mask"], ["att"], domain=function_domain))
    else:
        nodes.append(helper.make_node("Mul", [src, "mask"], ["att"]))
    feat = "att"
    if fp16:
        nodes += [helper.make_node("Cast", ["att"], ["att16"], to=TensorProto.FLOAT16),
                  helper.make_node("Cast", ["att16"], ["att32"], to=TensorProto.FLOAT)]
        feat = "att32"
    inits.append(numpy_helper.from_array(np.ones((size * size, 5), np.float32), "w"))
    inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "flat"))
    nodes += [helper.make_node("Reshape", [feat, "flat"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["logits"])]
    opsets = [helper.make_opsetid("", 17)]
    if local_function:
        opsets.append(helper.make_opsetid(function_domain, 1))
    graph = helper.make_graph(nodes, "tiny", [image, mask], [logits], inits)
    model = helper.make_model(graph, opset_imports=opsets, functions=functions)
    card = card if card is not None else {"kind": "cls", "model_name": "tiny-ma", "input_size": size,
                                          "mask_attention": True}
    helper.set_model_props(model, {"manet_edge.card": json.dumps(card)})
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_onnx(tmp_path):
    return make_classifier_onnx(tmp_path / "classifier.onnx")


@pytest.fixture
def onnx_factory(tmp_path):
    def make(name="classifier.onnx", **kw):
        return make_classifier_onnx(tmp_path / name, **kw)
    return make


@pytest.fixture
def fake_cuda(monkeypatch):
    api = FakeCudaApi()
    import manet_edge.runtime.cuda as cuda_mod

    monkeypatch.setattr(cuda_mod, "load_backend", lambda kind="auto", device=0: api)
    return api


@pytest.fixture
def fake_env():
    from manet_edge.runtime.engine_manifest import BuildEnv

    return BuildEnv(tensorrt_version="10.3.0", cuda_runtime_version="12.6", cuda_driver_version="12.8",
                    gpu_name="Fake RTX 4090", compute_capability="8.9", platform="x86_64")


@pytest.fixture
def fake_trt(monkeypatch, fake_cuda):
    """Install a fake ``tensorrt`` (10.3.0 unless re-made with ``install(version)``)."""
    def install(version="10.3.0"):
        module = make_fake_trt(version, fake_cuda)
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        return module
    install.cuda = fake_cuda
    return install
