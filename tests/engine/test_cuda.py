"""The CUDA-call checker and the buffer/stream/graph wrappers (fake CUDA; no GPU needed)."""

from __future__ import annotations

import enum
import sys

import numpy as np
import pytest

from manet_edge.errors import BackendUnavailableError
from manet_edge.runtime import cuda as cuda_mod
from manet_edge.runtime.cuda import CudaError, CudaGraph, DeviceBuffer, PinnedHostBuffer, Stream, check


class cudaError_t(enum.IntEnum):  # the shape of cuda-python's enum
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2


def test_check_returns_values():
    assert check(cudaError_t.cudaSuccess, "cudaFree") is None
    assert check((cudaError_t.cudaSuccess,), "cudaStreamSynchronize") is None
    assert check((cudaError_t.cudaSuccess, 1234), "cudaMalloc") == 1234
    assert check((cudaError_t.cudaSuccess, 1, 2), "x") == (1, 2)


def test_check_raises_with_call_name_and_error_string():
    with pytest.raises(CudaError) as exc:
        check((cudaError_t.cudaErrorMemoryAllocation, 0), "cudaMalloc", describe=lambda e: "out of memory")
    assert exc.value.call_name == "cudaMalloc"
    assert str(exc.value) == "CUDA call cudaMalloc failed: cudaErrorMemoryAllocation (out of memory)"
    assert not exc.value.no_gpu


def test_a_missing_driver_is_called_so():
    exc = cuda_mod.CudaError("cudaSetDevice", "cudaErrorInsufficientDriver (CUDA driver version is insufficient "
                                              "for CUDA runtime version)")
    assert exc.no_gpu and str(exc).startswith("no CUDA GPU/driver found: CUDA call cudaSetDevice failed")


def test_check_survives_a_broken_describer():
    def boom(err):
        raise RuntimeError("no context")
    with pytest.raises(CudaError, match="cudaErrorMemoryAllocation"):
        check(cudaError_t.cudaErrorMemoryAllocation, "cudaMalloc", describe=boom)


def test_call_wraps_exceptions():
    def fail():
        raise OSError("driver gone")
    with pytest.raises(CudaError, match=r"cuMemAlloc failed: OSError: driver gone"):
        cuda_mod.call("cuMemAlloc", fail)


def test_version_ints():
    assert cuda_mod._version_from_int(12040) == "12.4"
    assert cuda_mod._version_from_int(13000) == "13.0"


def test_no_cuda_library_names_the_extra(monkeypatch):
    for mod in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(BackendUnavailableError) as exc:
        cuda_mod.load_backend()
    assert "pip install 'manet-edge[trt]'" in str(exc.value)
    with pytest.raises(ValueError, match="unknown CUDA backend"):
        cuda_mod.load_backend("opencl")


def test_buffers_stream_and_copies(fake_cuda):
    dev = DeviceBuffer(fake_cuda, 64)
    host = PinnedHostBuffer(fake_cuda, 64)
    stream = Stream(fake_cuda)
    assert stream.handle == 42
    view = host.view(np.float32, (2, 8))
    view[:] = np.arange(16, dtype=np.float32).reshape(2, 8)
    stream.copy_in(dev, host, 64)
    view[:] = 0
    stream.copy_out(host, dev, 64)
    stream.synchronize()
    np.testing.assert_array_equal(host.view(np.float32, (16,)), np.arange(16, dtype=np.float32))
    with pytest.raises(ValueError, match="needs 128 bytes"):
        host.view(np.float32, (32,))
    dev.free(), dev.free()  # idempotent
    host.free()
    assert dev.ptr is None and host.ptr is None and len(fake_cuda.freed) == 2


def test_graph_captures_then_replays(fake_cuda):
    dev, host, stream = DeviceBuffer(fake_cuda, 8), PinnedHostBuffer(fake_cuda, 8), Stream(fake_cuda)
    out = PinnedHostBuffer(fake_cuda, 8)
    graph = CudaGraph(fake_cuda, stream, lambda: (stream.copy_in(dev, host, 8), stream.copy_out(out, dev, 8)))
    assert fake_cuda.graphs_instantiated == 1 and fake_cuda.capturing is None
    host.view(np.int64, (1,))[0] = 7
    graph.launch()
    assert out.view(np.int64, (1,))[0] == 7
    host.view(np.int64, (1,))[0] = 9  # replays read the pinned buffer's current contents
    graph.launch()
    assert out.view(np.int64, (1,))[0] == 9
    graph.destroy(), graph.destroy()
    assert fake_cuda.log.count(("graph_destroy",)) == 1


def test_capture_is_ended_even_when_enqueue_fails(fake_cuda):
    stream = Stream(fake_cuda)

    def bad():
        raise CudaError("execute_async_v3", "boom")
    with pytest.raises(CudaError, match="boom"):
        CudaGraph(fake_cuda, stream, bad)
    assert fake_cuda.capturing is None


def test_graphs_refused_without_support(fake_cuda):
    fake_cuda.supports_graphs = False
    with pytest.raises(CudaError, match="not supported by the fake-cuda backend"):
        CudaGraph(fake_cuda, Stream(fake_cuda), lambda: None)


# --- against the real cuda-python bindings, where installed (no GPU needed) ------------------

def _real_cudart():
    try:
        return cuda_mod._import_cudart()
    except ImportError as exc:
        pytest.skip(f"cuda-python not installed: {exc}")


CUDART_CALLS = ("cudaMalloc", "cudaFree", "cudaMallocHost", "cudaFreeHost", "cudaStreamCreate",
                "cudaStreamSynchronize", "cudaStreamDestroy", "cudaMemcpyAsync", "cudaStreamBeginCapture",
                "cudaStreamEndCapture", "cudaGraphInstantiate", "cudaGraphLaunch", "cudaGraphExecDestroy",
                "cudaGraphDestroy", "cudaSetDevice", "cudaGetDeviceProperties", "cudaRuntimeGetVersion",
                "cudaDriverGetVersion", "cudaGetErrorString")


def test_every_runtime_call_we_use_exists_in_cuda_python():
    rt = _real_cudart()
    missing = [name for name in CUDART_CALLS if not callable(getattr(rt, name, None))]
    assert missing == []
    assert rt.cudaMemcpyKind.cudaMemcpyHostToDevice and rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    assert rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal is not None
    prop = rt.cudaDeviceProp()
    assert all(hasattr(prop, a) for a in ("name", "major", "minor", "totalGlobalMem"))
    assert "flags" in (rt.cudaGraphInstantiate.__doc__ or "flags")  # (graph, flags) signature on 12.x/13.x


def test_real_cuda_python_error_goes_through_the_checker():
    rt = _real_cudart()
    api = cuda_mod.CudaPythonApi(rt)
    # Device 10000 never exists; on a machine without a driver the call fails earlier. Either way:
    with pytest.raises(CudaError) as exc:
        api._check(rt.cudaSetDevice(10000), "cudaSetDevice")
    assert exc.value.call_name == "cudaSetDevice"
    assert exc.value.error.startswith("cudaError")  # enum name, then CUDA's own description
    assert "(" in exc.value.error
