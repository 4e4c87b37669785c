"""CUDA memory, streams and graphs for the TensorRT runner, behind one call checker.

Every CUDA call goes through :func:`check` (cuda-python returns ``(err, *values)`` tuples) or
:func:`call` (pycuda raises its own exceptions); both raise :class:`CudaError` naming the call
and the CUDA error string. Two backends implement the same small :class:`CudaApi`:

* ``cuda-python`` (NVIDIA's current samples): ``from cuda.bindings import runtime`` on
  cuda-python >= 12.6/13, ``from cuda import cudart`` on older releases;
* ``pycuda``, accepted where it is what the platform has (some JetPack images). It has no
  CUDA-graph capture here, so :attr:`CudaApi.supports_graphs` is False.

Nothing is imported at module import time: :func:`load_backend` imports the library and raises
:class:`~manet_edge.errors.BackendUnavailableError` naming the ``trt`` extra when neither exists.
The wrappers (:class:`DeviceBuffer`, :class:`PinnedHostBuffer`, :class:`Stream`,
:class:`CudaGraph`) only talk to a ``CudaApi``, so tests can drive them with a fake one.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from manet_edge.errors import BackendUnavailableError, ManetEdgeError

BACKENDS = ("auto", "cuda-python", "pycuda")


NO_GPU_ERRORS = ("cudaErrorInsufficientDriver", "cudaErrorNoDevice", "CUDA_ERROR_NO_DEVICE",
                 "CUDA_ERROR_NOT_INITIALIZED", "cudaErrorInitializationError")
"""CUDA errors that mean this machine has no usable NVIDIA GPU or driver (CUDA reports a missing
driver as an "insufficient" one)."""


class CudaError(ManetEdgeError, RuntimeError):
    """A CUDA call failed; the message names the call and CUDA's error string.

    Where the error means that there is no GPU or driver at all, the message says so first
    (``no_gpu`` is true): "cudaErrorInsufficientDriver" alone reads like an outdated driver.
    """

    def __init__(self, call_name: str, error: str):
        self.call_name = call_name
        self.error = error
        self.no_gpu = any(code in str(error) for code in NO_GPU_ERRORS)
        prefix = "no CUDA GPU/driver found: " if self.no_gpu else ""
        super().__init__(f"{prefix}CUDA call {call_name} failed: {error}")


def _is_success(err: Any) -> bool:
    """True for cudaSuccess / CUDA_SUCCESS (enum members are int-like; 0 means success)."""
    value = getattr(err, "value", err)
    try:
        return int(value) == 0
    except (TypeError, ValueError):
        return str(err).rsplit(".", 1)[-1].lower() in ("cudasuccess", "cuda_success")


def _describe_default(err: Any) -> str:
    return str(getattr(err, "name", None) or err)


def check(result: Any, name: str, describe: Callable[[Any], str] | None = None) -> Any:
    """Check a cuda-python result and return its values.

    ``result`` is either a bare error code or a tuple ``(err, *values)``. Returns ``None`` when
    there are no values, the value itself when there is one, else the tuple of values. On
    failure raises :class:`CudaError` with ``name`` and the error string from ``describe``.
    """
    if isinstance(result, tuple):
        if not result:
            raise CudaError(name, "empty result tuple (not a cuda-python return value)")
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if not _is_success(err):
        text = _describe_default(err)
        if describe is not None:
            try:
                text = f"{text} ({describe(err)})"
            except Exception:  # the describer must never hide the original failure
                pass
        raise CudaError(name, text)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def call(name: str, fn: Callable[..., Any], *args: Any, errors: tuple[type, ...] = (Exception,)) -> Any:
    """Run an exception-raising CUDA call (pycuda) and report failures like :func:`check`."""
    try:
        return fn(*args)
    except errors as exc:
        raise CudaError(name, f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class DeviceInfo:
    """What the manifest records about the GPU and the CUDA stack."""

    name: str
    compute_capability: str  # "8.7"
    cuda_runtime_version: str  # "12.6"
    cuda_driver_version: str  # "12.6" (the newest CUDA the driver supports)
    total_memory_mb: int = 0


def _version_from_int(v: int) -> str:
    """CUDA encodes versions as 1000*major + 10*minor (12040 -> "12.4")."""
    v = int(v)
    return f"{v // 1000}.{(v % 1000) // 10}"


class CudaApi:
    """The handful of CUDA operations the runner needs. Pointers and handles are ints/objects."""

    name = "abstract"
    supports_graphs = False

    def malloc(self, nbytes: int) -> int: raise NotImplementedError
    def free(self, ptr: int) -> None: raise NotImplementedError
    def malloc_host(self, nbytes: int) -> tuple[int, np.ndarray]: raise NotImplementedError
    def free_host(self, ptr: int) -> None: raise NotImplementedError
    def stream_create(self) -> Any: raise NotImplementedError
    def stream_handle(self, stream: Any) -> int: raise NotImplementedError
    def stream_synchronize(self, stream: Any) -> None: raise NotImplementedError
    def stream_destroy(self, stream: Any) -> None: raise NotImplementedError
    def memcpy_htod_async(self, dst: int, src_host: int, nbytes: int, stream: Any) -> None: raise NotImplementedError
    def memcpy_dtoh_async(self, dst_host: int, src: int, nbytes: int, stream: Any) -> None: raise NotImplementedError
    def begin_capture(self, stream: Any) -> None: raise NotImplementedError
    def end_capture(self, stream: Any) -> Any: raise NotImplementedError
    def graph_instantiate(self, graph: Any) -> Any: raise NotImplementedError
    def graph_launch(self, graph_exec: Any, stream: Any) -> None: raise NotImplementedError
    def graph_destroy(self, graph: Any, graph_exec: Any) -> None: raise NotImplementedError
    def device_info(self, device: int = 0) -> DeviceInfo: raise NotImplementedError


def _host_view(ptr: int, nbytes: int) -> np.ndarray:
    """A writable uint8 numpy view of ``nbytes`` of host memory at ``ptr``."""
    if nbytes == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), (nbytes,))


class CudaPythonApi(CudaApi):
    """cuda-python runtime bindings (the API NVIDIA's TensorRT samples use)."""

    name = "cuda-python"
    supports_graphs = True

    def __init__(self, cudart: Any):
        self.rt = cudart

    def _check(self, result: Any, name: str) -> Any:
        return check(result, name, describe=self._error_string)

    def _error_string(self, err: Any) -> str:
        res = self.rt.cudaGetErrorString(err)
        text = res[1] if isinstance(res, tuple) and len(res) > 1 else res
        return text.decode() if isinstance(text, bytes) else str(text)

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._check(self.rt.cudaFree(ptr), "cudaFree")

    def malloc_host(self, nbytes: int) -> tuple[int, np.ndarray]:
        ptr = int(self._check(self.rt.cudaMallocHost(max(int(nbytes), 1)), "cudaMallocHost"))
        return ptr, _host_view(ptr, int(nbytes))

    def free_host(self, ptr: int) -> None:
        self._check(self.rt.cudaFreeHost(ptr), "cudaFreeHost")

    def stream_create(self) -> Any:
        return self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_synchronize(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def stream_destroy(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def memcpy_htod_async(self, dst: int, src_host: int, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(dst, src_host, nbytes, kind, stream), "cudaMemcpyAsync(HtoD)")

    def memcpy_dtoh_async(self, dst_host: int, src: int, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(dst_host, src, nbytes, kind, stream), "cudaMemcpyAsync(DtoH)")

    def begin_capture(self, stream: Any) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._check(self.rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")

    def end_capture(self, stream: Any) -> Any:
        return self._check(self.rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")

    def graph_instantiate(self, graph: Any) -> Any:
        return self._check(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")

    def graph_launch(self, graph_exec: Any, stream: Any) -> None:
        self._check(self.rt.cudaGraphLaunch(graph_exec, stream), "cudaGraphLaunch")

    def graph_destroy(self, graph: Any, graph_exec: Any) -> None:
        if graph_exec is not None:
            self._check(self.rt.cudaGraphExecDestroy(graph_exec), "cudaGraphExecDestroy")
        if graph is not None:
            self._check(self.rt.cudaGraphDestroy(graph), "cudaGraphDestroy")

    def device_info(self, device: int = 0) -> DeviceInfo:
        self._check(self.rt.cudaSetDevice(device), "cudaSetDevice")
        prop = self._check(self.rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        raw = prop.name
        name = raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        rt_ver = self._check(self.rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
        drv_ver = self._check(self.rt.cudaDriverGetVersion(), "cudaDriverGetVersion")
        return DeviceInfo(
            name=name.strip(),
            compute_capability=f"{prop.major}.{prop.minor}",
            cuda_runtime_version=_version_from_int(rt_ver),
            cuda_driver_version=_version_from_int(drv_ver),
            total_memory_mb=int(getattr(prop, "totalGlobalMem", 0)) // (1024 * 1024),
        )


class PyCudaApi(CudaApi):
    """pycuda driver API. Allocation objects are kept alive here, keyed by their address."""

    name = "pycuda"
    supports_graphs = False

    def __init__(self, driver: Any, device: int = 0):
        self.drv = driver
        self._errors = (getattr(driver, "Error", Exception),)
        call("cuInit", driver.init, errors=self._errors)
        dev = call("cuDeviceGet", driver.Device, device, errors=self._errors)
        self._ctx = call("cuDevicePrimaryCtxRetain", dev.retain_primary_context, errors=self._errors)
        call("cuCtxPushCurrent", self._ctx.push, errors=self._errors)
        self._device = dev
        self._keep: dict[int, Any] = {}

    def _call(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        return call(name, fn, *args, errors=self._errors)

    def malloc(self, nbytes: int) -> int:
        alloc = self._call("cuMemAlloc", self.drv.mem_alloc, max(int(nbytes), 1))
        self._keep[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._keep.pop(int(ptr), None)
        if alloc is not None:
            self._call("cuMemFree", alloc.free)

    def malloc_host(self, nbytes: int) -> tuple[int, np.ndarray]:
        arr = self._call("cuMemHostAlloc", self.drv.pagelocked_empty, (max(int(nbytes), 1),), np.uint8)
        ptr = int(arr.ctypes.data)
        self._keep[ptr] = arr
        return ptr, arr[: int(nbytes)]

    def free_host(self, ptr: int) -> None:
        arr = self._keep.pop(int(ptr), None)
        base = getattr(arr, "base", None)
        if base is not None and hasattr(base, "free"):
            self._call("cuMemFreeHost", base.free)

    def stream_create(self) -> Any:
        return self._call("cuStreamCreate", self.drv.Stream)

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_synchronize(self, stream: Any) -> None:
        self._call("cuStreamSynchronize", stream.synchronize)

    def stream_destroy(self, stream: Any) -> None:
        return None  # pycuda frees the stream with the Python object

    def memcpy_htod_async(self, dst: int, src_host: int, nbytes: int, stream: Any) -> None:
        src = self._keep_view(src_host, nbytes)
        self._call("cuMemcpyHtoDAsync", self.drv.memcpy_htod_async, dst, src, stream)

    def memcpy_dtoh_async(self, dst_host: int, src: int, nbytes: int, stream: Any) -> None:
        dst = self._keep_view(dst_host, nbytes)
        self._call("cuMemcpyDtoHAsync", self.drv.memcpy_dtoh_async, dst, src, stream)

    def _keep_view(self, ptr: int, nbytes: int) -> np.ndarray:
        for base_ptr, arr in self._keep.items():
            if isinstance(arr, np.ndarray) and base_ptr <= ptr and ptr + nbytes <= base_ptr + arr.nbytes:
                off = ptr - base_ptr
                return arr.reshape(-1).view(np.uint8)[off : off + nbytes]
        raise CudaError("memcpy", f"host address {ptr:#x} is not pinned memory allocated by this backend")

    def device_info(self, device: int = 0) -> DeviceInfo:
        dev = self._call("cuDeviceGet", self.drv.Device, device)
        major, minor = self._call("cuDeviceComputeCapability", dev.compute_capability)
        drv = self._call("cuDriverGetVersion", self.drv.get_driver_version)
        rt = self._call("cuda version", self.drv.get_version)
        return DeviceInfo(
            name=str(self._call("cuDeviceGetName", dev.name)),
            compute_capability=f"{major}.{minor}",
            cuda_runtime_version=".".join(str(x) for x in rt[:2]),
            cuda_driver_version=_version_from_int(drv),
            total_memory_mb=int(self._call("cuDeviceTotalMem", dev.total_memory)) // (1024 * 1024),
        )


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 / 13

        return cudart
    except ImportError:
        pass
    from cuda import cudart  # older cuda-python

    return cudart


def load_backend(kind: str = "auto", device: int = 0) -> CudaApi:
    """Import a CUDA Python library (cuda-python first, then pycuda) and wrap it."""
    if kind not in BACKENDS:
        raise ValueError(f"unknown CUDA backend {kind!r}; choose one of {BACKENDS}")
    problems = []
    if kind in ("auto", "cuda-python"):
        try:
            api = CudaPythonApi(_import_cudart())
            check(api.rt.cudaSetDevice(device), "cudaSetDevice", describe=api._error_string)
            return api
        except ImportError as exc:
            problems.append(f"cuda-python: {exc}")
    if kind in ("auto", "pycuda"):
        try:
            import pycuda.driver as drv
        except ImportError as exc:
            problems.append(f"pycuda: {exc}")
        else:
            return PyCudaApi(drv, device)
    raise BackendUnavailableError("tensorrt", "trt", "no CUDA Python library: " + "; ".join(problems))


class DeviceBuffer:
    """``nbytes`` of device memory; ``ptr`` is what ``set_tensor_address`` takes."""

    def __init__(self, api: CudaApi, nbytes: int):
        self.api, self.nbytes = api, int(nbytes)
        self.ptr: int | None = api.malloc(self.nbytes)

    def free(self) -> None:
        if self.ptr is not None:
            ptr, self.ptr = self.ptr, None
            self.api.free(ptr)


class PinnedHostBuffer:
    """Page-locked host memory, exposed as typed numpy views for async copies."""

    def __init__(self, api: CudaApi, nbytes: int):
        self.api, self.nbytes = api, int(nbytes)
        self.ptr, self._bytes = api.malloc_host(self.nbytes)

    def view(self, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if n > self.nbytes:
            raise ValueError(f"a {dtype} array of shape {shape} needs {n} bytes; buffer holds {self.nbytes}")
        return self._bytes[:n].view(dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr is not None:
            ptr, self.ptr = self.ptr, None
            self._bytes = np.zeros(0, dtype=np.uint8)
            self.api.free_host(ptr)


class Stream:
    """One CUDA stream; ``handle`` is the int ``execute_async_v3`` takes."""

    def __init__(self, api: CudaApi):
        self.api = api
        self.raw: Any = api.stream_create()
        self.handle = api.stream_handle(self.raw)

    def copy_in(self, dst: DeviceBuffer, src: PinnedHostBuffer, nbytes: int) -> None:
        self.api.memcpy_htod_async(dst.ptr, src.ptr, int(nbytes), self.raw)

    def copy_out(self, dst: PinnedHostBuffer, src: DeviceBuffer, nbytes: int) -> None:
        self.api.memcpy_dtoh_async(dst.ptr, src.ptr, int(nbytes), self.raw)

    def synchronize(self) -> None:
        self.api.stream_synchronize(self.raw)

    def destroy(self) -> None:
        if self.raw is not None:
            raw, self.raw = self.raw, None
            self.api.stream_destroy(raw)


class CudaGraph:
    """Capture the work ``enqueue()`` puts on ``stream`` once; replay it with :meth:`launch`."""

    def __init__(self, api: CudaApi, stream: Stream, enqueue: Callable[[], None]):
        if not api.supports_graphs:
            raise CudaError("cudaStreamBeginCapture", f"CUDA graphs are not supported by the {api.name} backend")
        self.api, self.stream = api, stream
        api.begin_capture(stream.raw)
        try:
            enqueue()
        finally:
            graph = api.end_capture(stream.raw)  # always end the capture, even if enqueue failed
        self._graph = graph
        self._exec = api.graph_instantiate(graph)

    def launch(self) -> None:
        self.api.graph_launch(self._exec, self.stream.raw)

    def destroy(self) -> None:
        if self._graph is not None or self._exec is not None:
            graph, gexec = self._graph, self._exec
            self._graph = self._exec = None
            self.api.graph_destroy(graph, gexec)
