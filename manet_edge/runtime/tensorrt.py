"""TensorRT runner: a serialized engine behind the Runner interface, on one CUDA stream.

``activate()`` imports tensorrt and a CUDA library, checks the engine's manifest against this
machine (TensorRT version, GPU architecture, CUDA major, engine and ONNX hashes; a mismatch is an
:class:`~manet_edge.runtime.engine_manifest.EngineMismatchError` that prints the exact
``--rebuild`` command), deserializes the engine, and allocates one device buffer and one pinned
host buffer per I/O tensor at the profile's maximum batch. ``infer()`` uses the TensorRT 10/11
named-tensor API: ``set_input_shape`` when the batch changes, ``set_tensor_address`` once per
buffer, ``execute_async_v3`` on the stream, async copies both ways, one synchronize. With
``cuda_graph=True`` the copy-execute-copy sequence is captured once per batch size (after one
ordinary run, which TensorRT needs after a shape change) and replayed with ``cudaGraphLaunch``.

Batches smaller than the profile minimum are zero-padded and the outputs sliced; batches larger
than the maximum are split. No torch anywhere.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from manet_edge.errors import BadInputError, ModelError
from manet_edge.lazy import optional_import
from manet_edge.metadata import ModelCard
from manet_edge.runtime import cuda as cuda_mod
from manet_edge.runtime.base import Runner
from manet_edge.runtime.engine_manifest import (
    EngineManifest,
    EngineMismatchError,
    check_compatible,
    errors_only,
    mismatch_message,
    probe_environment,
    read_manifest,
    sha256_file,
)

log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    """``import tensorrt`` with an error that names the pip extra."""
    return optional_import("tensorrt", "trt")


def bench_precision_problem(precision: str) -> str | None:
    """Why ``bench`` cannot time a zoo model at ``precision`` (``None``: it can)."""
    if precision == "int8":
        return "int8 engines need a calibrated Q/DQ ONNX (manet-edge export --precision int8); pass it as a model file"
    return None


class TensorRTRunner(Runner):
    """Runs a ``.engine`` built by ``manet-edge engine build`` (manifest beside it)."""

    backend = "tensorrt"

    def __init__(self, path: str | Path, *, precision: str | None = None, name: str | None = None,
                 device: int = 0, cuda_graph: bool = False, cuda_backend: str = "auto",
                 check_onnx: bool = True, **_ignored: Any):
        super().__init__(path, precision=precision, name=name)
        self.device = int(device)
        self.cuda_graph = bool(cuda_graph)
        self.cuda_backend = cuda_backend
        self.check_onnx = bool(check_onnx)
        self.manifest: EngineManifest | None = None
        self.warnings: list[str] = []
        self._reset_state()

    def _reset_state(self) -> None:
        self._trt: Any = None
        self._api: cuda_mod.CudaApi | None = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: cuda_mod.Stream | None = None
        self._device_bufs: dict[str, cuda_mod.DeviceBuffer] = {}
        self._host_bufs: dict[str, cuda_mod.PinnedHostBuffer] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self._input_order: list[str] = []
        self._output_order: list[str] = []
        self._current: dict[str, tuple[int, ...]] = {}
        self._graphs: dict[int, cuda_mod.CudaGraph] = {}
        self._graph_disabled_reason = ""

    # -- activate ----------------------------------------------------------------------------
    def _activate(self) -> None:
        trt = import_tensorrt()
        manifest = read_manifest(self.path)
        if self.requested_precision is not None and self.requested_precision != manifest.precision:
            raise BadInputError(
                f"{self.path}: engine was built in {manifest.precision}, {self.requested_precision} was "
                f"requested; build one with `manet-edge engine build <onnx> --precision {self.requested_precision}`")
        self._check_machine(manifest)
        api = cuda_mod.load_backend(self.cuda_backend, self.device)
        self._trt, self._api, self.manifest = trt, api, manifest
        try:
            self._load_engine(trt, api, manifest)
        except BaseException:
            self._release()
            raise
        self._precision = manifest.precision
        self._card = ModelCard.from_json(json.dumps(manifest.card), source=str(self.path)) if manifest.card else None

    def _check_machine(self, manifest: EngineManifest) -> None:
        engine_sha = sha256_file(self.path)
        if engine_sha != manifest.engine_sha256:
            raise EngineMismatchError(
                f"{self.path}: the engine file does not match its manifest (sha256 {engine_sha[:12]} vs "
                f"{manifest.engine_sha256[:12]}): it was replaced or corrupted. Rebuild it:\n  "
                f"{manifest.rebuild_command(self.path)}")
        onnx_sha = None
        onnx = manifest.onnx_path(self.path)
        if self.check_onnx and onnx.is_file():
            onnx_sha = sha256_file(onnx)
        current = probe_environment(self.device, self.cuda_backend)
        problems = check_compatible(manifest, current, onnx_sha256=onnx_sha)
        self.warnings = [str(p) for p in problems if p.severity != "error"]
        for text in self.warnings:
            log.warning("%s: %s", self.path, text)
        if errors_only(problems):
            raise EngineMismatchError(mismatch_message(self.path, manifest, problems))

    def _load_engine(self, trt: Any, api: cuda_mod.CudaApi, manifest: EngineManifest) -> None:
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ModelError(f"{self.path}: TensorRT could not deserialize the engine (see the TensorRT log above)")
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise ModelError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = cuda_mod.Stream(api)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        for name in names:
            self._dtypes[name] = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._input_order.append(name)
            else:
                self._output_order.append(name)
        # Set every input to its largest shape so output shapes (and buffer sizes) are maximal.
        for name in self._input_order:
            max_shape = tuple(int(d) for d in engine.get_tensor_profile_shape(name, 0)[2])
            self._set_shape(name, max_shape)
        for name in names:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ModelError(f"{self.path}: tensor '{name}' has unresolved shape {shape} at the maximum batch")
            nbytes = int(np.prod(shape, dtype=np.int64)) * self._dtypes[name].itemsize
            self._device_bufs[name] = cuda_mod.DeviceBuffer(api, nbytes)
            self._host_bufs[name] = cuda_mod.PinnedHostBuffer(api, nbytes)
            if not self._context.set_tensor_address(name, self._device_bufs[name].ptr):
                raise ModelError(f"{self.path}: set_tensor_address failed for '{name}'")
        batch_none = (None,)
        self._inputs = {n: batch_none + tuple(int(d) for d in self._current[n][1:]) for n in self._input_order}
        self._outputs = {n: batch_none + tuple(int(d) for d in self._context.get_tensor_shape(n))[1:]
                         for n in self._output_order}
        if self.cuda_graph and not api.supports_graphs:
            self._graph_disabled_reason = f"the {api.name} backend cannot capture CUDA graphs"
            log.warning("%s: CUDA graphs disabled: %s", self.path, self._graph_disabled_reason)

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if self._current.get(name) == shape:
            return
        if not self._context.set_input_shape(name, shape):
            raise BadInputError(f"{self.path}: TensorRT rejected shape {shape} for input '{name}' "
                                f"(engine profile: {self.manifest.profile if self.manifest else '?'})")
        self._current[name] = shape

    # -- infer -------------------------------------------------------------------------------
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batches = {a.shape[0] for a in feed.values()}
        if len(batches) != 1:
            raise BadInputError(f"{self.name}: all inputs need the same batch size, got {sorted(batches)}")
        n = batches.pop()
        if n == 0:
            raise BadInputError(f"{self.name}: empty batch")
        profile = self.manifest.profile
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, n, profile.max):
            chunk = {k: v[start:start + profile.max] for k, v in feed.items()}
            parts.append(self._run_chunk(chunk, profile.min))
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}

    def _run_chunk(self, feed: dict[str, np.ndarray], min_batch: int) -> dict[str, np.ndarray]:
        n = next(iter(feed.values())).shape[0]
        run_n = max(n, min_batch)
        for name in self._input_order:
            arr = feed[name]
            shape = (run_n, *arr.shape[1:])
            host = self._host_bufs[name].view(self._dtypes[name], shape)
            host[:n] = arr  # casts to the engine's input dtype (float32 or float16)
            if run_n > n:
                host[n:] = 0
            self._set_shape(name, shape)
        out_shapes = {name: tuple(int(d) for d in self._context.get_tensor_shape(name)) for name in self._output_order}
        self._execute(run_n, out_shapes)
        result = {}
        for name in self._output_order:
            host = self._host_bufs[name].view(self._dtypes[name], out_shapes[name])
            result[name] = np.array(host[:n], dtype=np.float32, copy=True)
        return result

    def _enqueue(self, out_shapes: dict[str, tuple[int, ...]]) -> None:
        stream = self._stream
        for name in self._input_order:
            nbytes = int(np.prod(self._current[name], dtype=np.int64)) * self._dtypes[name].itemsize
            stream.copy_in(self._device_bufs[name], self._host_bufs[name], nbytes)
        if not self._context.execute_async_v3(stream.handle):
            raise ModelError(f"{self.name}: execute_async_v3 failed (see the TensorRT log above)")
        for name in self._output_order:
            nbytes = int(np.prod(out_shapes[name], dtype=np.int64)) * self._dtypes[name].itemsize
            stream.copy_out(self._host_bufs[name], self._device_bufs[name], nbytes)

    def _execute(self, run_n: int, out_shapes: dict[str, tuple[int, ...]]) -> None:
        use_graph = self.cuda_graph and not self._graph_disabled_reason
        graph = self._graphs.get(run_n) if use_graph else None
        if graph is not None:
            graph.launch()
            self._stream.synchronize()
            return
        self._enqueue(out_shapes)  # an ordinary run first: TensorRT needs one after a shape change
        self._stream.synchronize()
        if use_graph:
            try:
                self._graphs[run_n] = cuda_mod.CudaGraph(self._api, self._stream, lambda: self._enqueue(out_shapes))
            except cuda_mod.CudaError as exc:
                self._graph_disabled_reason = str(exc)
                log.warning("%s: CUDA graph capture failed, running without graphs: %s", self.name, exc)

    # -- deactivate --------------------------------------------------------------------------
    def _deactivate(self) -> None:
        self._release()

    def _release(self) -> None:
        errors: list[str] = []

        def safely(fn: Any) -> None:
            try:
                fn()
            except cuda_mod.CudaError as exc:  # keep freeing the rest, report at the end
                errors.append(str(exc))

        for graph in self._graphs.values():
            safely(graph.destroy)
        if self._stream is not None:
            safely(self._stream.synchronize)
        for buf in [*self._device_bufs.values(), *self._host_bufs.values()]:
            safely(buf.free)
        if self._stream is not None:
            safely(self._stream.destroy)
        self._context = self._engine = None
        self._runtime = None
        self._reset_state()
        if errors:
            raise cuda_mod.CudaError("deactivate", "; ".join(errors))

    # -- reporting ---------------------------------------------------------------------------
    @property
    def graphs_active(self) -> bool:
        return self.cuda_graph and not self._graph_disabled_reason

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.manifest is not None:
            env = self.manifest.env
            info.update({
                "tensorrt_version": env.tensorrt_version, "gpu": env.gpu_name,
                "compute_capability": env.compute_capability, "profile": vars(self.manifest.profile),
                "ma_op": self.manifest.ma_op,
            })
        info.update({"cuda_backend": self._api.name if self._api else None, "cuda_graph": self.graphs_active,
                     "warnings": list(self.warnings)})
        return info
