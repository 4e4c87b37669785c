"""Real CUDA / TensorRT checks. Marked ``gpu``; skipped with the reason where CUDA or TensorRT is absent.

None of these has run in the session that wrote them (no GPU there); see docs/tensorrt.md.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from manet_edge.errors import BackendUnavailableError
from manet_edge.runtime.cuda import CudaError, CudaGraph, DeviceBuffer, PinnedHostBuffer, Stream, load_backend

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_api():
    try:
        return load_backend("auto")
    except CudaError as exc:
        if exc.no_gpu:
            pytest.skip("no CUDA GPU/driver found")
        pytest.skip(f"needs CUDA (cuda-python or pycuda) and a GPU: {exc}")
    except BackendUnavailableError as exc:
        pytest.skip(f"needs CUDA (cuda-python or pycuda) and a GPU: {exc}")


@pytest.fixture(scope="module")
def trt():
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("needs TensorRT: pip install 'manet-edge[trt]'")
    import tensorrt

    return tensorrt


def test_device_info(cuda_api):
    info = cuda_api.device_info(0)
    assert info.name and "." in info.compute_capability and info.cuda_runtime_version[0].isdigit()


def test_round_trip_through_device_memory(cuda_api):
    n = 1 << 20
    dev, host, back = DeviceBuffer(cuda_api, n * 4), PinnedHostBuffer(cuda_api, n * 4), PinnedHostBuffer(cuda_api, n * 4)
    stream = Stream(cuda_api)
    try:
        data = np.random.default_rng(0).standard_normal(n).astype(np.float32)
        host.view(np.float32, (n,))[:] = data
        stream.copy_in(dev, host, n * 4)
        stream.copy_out(back, dev, n * 4)
        stream.synchronize()
        np.testing.assert_array_equal(back.view(np.float32, (n,)), data)
    finally:
        for b in (dev, host, back):
            b.free()
        stream.destroy()


def test_graph_of_copies_replays_current_host_data(cuda_api):
    if not cuda_api.supports_graphs:
        pytest.skip(f"the {cuda_api.name} backend has no CUDA-graph capture")
    dev, host, back = DeviceBuffer(cuda_api, 64), PinnedHostBuffer(cuda_api, 64), PinnedHostBuffer(cuda_api, 64)
    stream = Stream(cuda_api)
    graph = CudaGraph(cuda_api, stream, lambda: (stream.copy_in(dev, host, 64), stream.copy_out(back, dev, 64)))
    try:
        for value in (3.0, 5.0):
            host.view(np.float32, (16,))[:] = value
            graph.launch()
            stream.synchronize()
            assert (back.view(np.float32, (16,)) == value).all()
    finally:
        graph.destroy()
        for b in (dev, host, back):
            b.free()
        stream.destroy()


def test_cuda_error_names_the_call(cuda_api):
    with pytest.raises(CudaError, match="cudaMalloc|cuMemAlloc"):
        cuda_api.malloc(1 << 50)  # 1 PiB


def _feed(n=3, size=32):
    rng = np.random.default_rng(0)
    return {"image": rng.uniform(-1, 1, (n, 1, size, size)).astype(np.float32),
            "mask": (rng.uniform(size=(n, 1, size, size)) > 0.5).astype(np.float32)}


def test_fp32_engine_matches_onnxruntime(trt, cuda_api, tmp_path, onnx_factory):
    import onnxruntime as ort

    from manet_edge.export.engine import build_engine, make_profile
    from manet_edge.runtime.tensorrt import TensorRTRunner

    onnx_path = onnx_factory("tiny.onnx", size=32)
    res = build_engine(onnx_path, tmp_path / "tiny.fp32.engine", precision="fp32",
                       profile=make_profile(min_batch=1, opt_batch=2, max_batch=4), workspace_mb=256)
    assert res.report.ok and res.manifest.layer_precisions
    feed = _feed()
    ref = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    for graph in (False, True):
        with TensorRTRunner(res.engine_path, cuda_graph=graph) as runner:
            np.testing.assert_allclose(runner.infer(feed)["logits"], ref, atol=1e-3)
            assert runner.graphs_active == graph


def test_fp16_request_is_verified(trt, cuda_api, tmp_path, onnx_factory):
    """A tiny net may legitimately get fp32 kernels under weak typing: then the build must refuse."""
    from manet_edge.export.engine import EngineBuildError, build_engine

    onnx_path = onnx_factory("tiny.onnx", size=32)
    try:
        res = build_engine(onnx_path, tmp_path / "tiny.fp16.engine", precision="fp16", workspace_mb=256)
    except EngineBuildError as exc:
        assert "precision check FAILED" in str(exc) or "removed the FP16 builder flag" in str(exc)
        assert not (tmp_path / "tiny.fp16.engine").exists()
    else:
        assert res.report.ok and res.manifest.layer_precisions.get("fp16", 0) > 0
