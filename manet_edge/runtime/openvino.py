"""OpenVINO runner (CPU) with an explicit inference precision, ``fp32`` or ``bf16``.

On CPUs with bf16 support (AVX512-BF16, AMX) OpenVINO silently runs fp32 models in bf16 unless
told otherwise. This runner always sets ``INFERENCE_PRECISION_HINT`` (``f32`` by default), reads
back the precision the compiled model actually uses and reports that as :attr:`precision`.
Asking for ``bf16`` on a CPU without it is an error rather than a silent fp32 run.
``InferRequest.infer`` releases the GIL, so the pipeline overlaps it with Python work.

Exported classifiers with mask attention hold one ``manet_edge::MaskAttentionMul`` node per MA
site, defined by an ONNX model-local function (docs/export.md). OpenVINO's ONNX frontend cannot convert those
bodies, so the runner registers :func:`conversion_extensions` before reading a model, writing each
op's literal definition, which is also OpenVINO's fast form: ``MaskAttentionMul`` becomes one
broadcast ``Multiply(X, M)`` (the CPU plugin broadcasts the one-channel map inside the multiply;
the 1x1 "expand" conv of the ONNX body, there for ONNX Runtime's NCHWc layout, would only add a
pass). Only the compiled
model's inputs are fed: OpenVINO may drop an input no node reads (the ``mask`` of plain and CBAM
classifiers).

One-channel average pools of at least :data:`POOL_AS_CHANNELS_MIN` pixels (the large levels of an
MA classifier's mask pyramid) are rewritten before OpenVINO reads an ONNX file
(:func:`pool_maps_as_channels`): OpenVINO's CPU plugin pads a single channel to its 16-wide
blocks, so a pool over a (N,1,H,W) map does 16 times the work. The rewrite pools the rows with
the H rows as channels and then the columns with the W' columns as channels (a reshape and two
transposes), the same sums in another order: the resnet50-ma stem's 7x7 pool took 0.32 ms
that way against 0.48 ms as a 7x1 + 1x7 pair and 0.83 ms as one 7x7 pool.

``streams=N`` (the pipeline's model streams) compiles the model with ``NUM_STREAMS=N`` and gives
each calling thread its own infer request, so N threads run the model at once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from manet_edge.errors import BadInputError, ModelError
from manet_edge.lazy import optional_import
from manet_edge.metadata import read_onnx_card
from manet_edge.rewrite.functions import MA_DOMAIN, MA_OP  # the fused MA op (torch-free rewrite package)
from manet_edge.rewrite.openvino_pools import (  # noqa: F401  (its home before manet_edge.rewrite)
    POOL_AS_CHANNELS_MIN,
    pool_maps_as_channels,
)
from manet_edge.runtime.base import Runner

_HINTS = {"fp32": "f32", "bf16": "bf16"}
_FROM_OV = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}



def _import_ov():
    return optional_import("openvino", "openvino")


def bench_precision_problem(precision: str) -> str | None:
    """Why ``bench`` cannot time ``precision`` on this CPU (``None``: it can)."""
    if precision == "bf16":
        caps = cpu_capabilities()
        if "BF16" not in caps:
            return f"this CPU has no bf16 support (OpenVINO capabilities: {', '.join(caps)})"
    return None


def cpu_capabilities() -> list[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of the CPU (e.g. ``['BF16', 'FP32', 'INT8', ...]``)."""
    ov = _import_ov()
    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def _mask_attention_mul(node: Any) -> list[Any]:
    """``Y = X * M``: M (N,1,h,w) broadcast over the channels of X (numpy broadcasting)."""
    import openvino.opset13 as ops

    if node.get_input_size() != 2:
        raise ModelError(f"{MA_DOMAIN}::{MA_OP} takes 2 inputs (X, M), got {node.get_input_size()}")
    return [ops.multiply(node.get_input(0), node.get_input(1), auto_broadcast="numpy").output(0)]


def conversion_extensions() -> list[Any]:
    """OpenVINO ONNX-frontend conversion for the manet_edge op; pass each to ``core.add_extension``.

    Empty when this OpenVINO has no Python ONNX frontend extension API (models without the
    fused op still load; a fused one then fails in ``read_model`` with a :class:`ModelError`).
    """
    try:
        from openvino.frontend.onnx import ConversionExtension
    except ImportError:
        return []
    return [ConversionExtension(MA_OP, MA_DOMAIN, _mask_attention_mul)]


def read_onnx(core: Any, model: Any) -> Any:
    """``core.read_model`` for an ONNX file or ``ModelProto``, with :func:`pool_maps_as_channels`
    applied first (to a copy: the caller's model is not changed)."""
    import onnx

    in_memory = isinstance(model, onnx.ModelProto)
    if in_memory:
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    else:
        proto = onnx.load(str(model))
    if pool_maps_as_channels(proto) == 0 and not in_memory:
        return core.read_model(str(model))  # unchanged: let OpenVINO read the file itself
    return core.read_model(proto.SerializeToString(), b"")


def register_extensions(core: Any) -> Any:
    """Add :func:`conversion_extensions` to an ``openvino.Core``; returns the core."""
    for ext in conversion_extensions():
        core.add_extension(ext)
    return core


def compile_config(precision: str = "fp32", *, hint: str = "LATENCY", threads: int | None = None,
                   streams: int = 1, perf_count: bool = False) -> dict[str, Any]:
    """The CPU compile configuration: ``INFERENCE_PRECISION_HINT`` always set (never a silent bf16),
    ``streams > 1`` as a THROUGHPUT hint with that many streams, ``threads`` per stream."""
    if precision not in _HINTS:
        raise BadInputError(f"openvino precision must be one of {tuple(_HINTS)}, got {precision!r}")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "PERFORMANCE_HINT": hint}
    if streams > 1:
        config["PERFORMANCE_HINT"] = "THROUGHPUT"
        config["NUM_STREAMS"] = int(streams)
    if threads is not None:  # threads per call; OpenVINO's setting is the total
        config["INFERENCE_NUM_THREADS"] = int(threads) * streams
    if perf_count:
        config["PERF_COUNT"] = True
    return config


def read_model(core: Any, model: Any) -> Any:
    """``core.read_model`` for an ``.onnx`` file, an ``onnx.ModelProto``, serialized ONNX bytes
    (all through :func:`read_onnx`) or an OpenVINO IR ``.xml`` file."""
    if isinstance(model, (bytes, bytearray)):
        import onnx

        model = onnx.load_from_string(bytes(model))
    if isinstance(model, (str, Path)) and Path(model).suffix != ".onnx":
        return core.read_model(str(model))
    return read_onnx(core, model)


def compile_model(model: Any, config: dict[str, Any] | None = None, *, core: Any = None, device: str = "CPU") -> Any:
    """An OpenVINO ``CompiledModel`` for ``model`` (a path, bytes or ``onnx.ModelProto``;
    :func:`read_model`) with the manet_edge op conversions registered and ``config``
    (:func:`compile_config`, fp32 by default). The one place manet-edge compiles OpenVINO models."""
    ov = _import_ov()
    core = register_extensions(core if core is not None else ov.Core())
    return core.compile_model(read_model(core, model), device, config or compile_config())


def _card_of(model: Any, source: str) -> Any:
    """The model card of a path (:func:`read_onnx_card`) or of an in-memory ``ModelProto``."""
    if isinstance(model, (str, Path)):
        return read_onnx_card(str(model))
    import onnx

    from manet_edge.metadata import CARD_KEY, ModelCard

    proto = onnx.load_from_string(bytes(model)) if isinstance(model, (bytes, bytearray)) else model
    props = {p.key: p.value for p in proto.metadata_props}
    if CARD_KEY not in props:
        raise ModelError(f"{source}: no '{CARD_KEY}' model card in metadata_props; export it with `manet-edge export`")
    return ModelCard.from_json(props[CARD_KEY], source=source)


class OpenVINORunner(Runner):
    """Run an exported ``.onnx`` (or OpenVINO IR ``.xml``) model with OpenVINO on the CPU."""

    backend = "openvino"
    concurrent = True  # one infer request per calling thread

    def __init__(self, path: Any, *, precision: str | None = None, name: str | None = None,
                 device: str = "CPU", threads: int | None = None, performance_hint: str = "LATENCY",
                 streams: int = 1):
        super().__init__(path, precision=precision, name=name)
        if device.upper() != "CPU":
            raise BadInputError(f"the openvino runner supports device 'CPU' only, got {device!r}")
        if threads is not None and threads < 1:
            raise BadInputError(f"threads must be >= 1, got {threads}")
        if streams < 1:
            raise BadInputError(f"streams must be >= 1, got {streams}")
        self.device = "CPU"
        self.threads = threads
        self.streams = streams
        self.performance_hint = performance_hint
        self._compiled: Any = None
        self._local = threading.local()
        self._out_ports: list[Any] = []
        self._fed: tuple[str, ...] = ()
        self.capabilities: list[str] = []

    def _activate(self) -> None:
        ov = _import_ov()
        card = _card_of(self.source, str(self.path))
        want = self.requested_precision or "fp32"
        core = ov.Core()
        self.capabilities = [str(c) for c in core.get_property(self.device, "OPTIMIZATION_CAPABILITIES")]
        if want == "bf16" and "BF16" not in self.capabilities:
            raise BadInputError(
                f"precision bf16 is not supported by this CPU (OpenVINO capabilities: "
                f"{', '.join(self.capabilities)}); use --precision fp32")
        config = compile_config(want, hint=self.performance_hint, threads=self.threads, streams=self.streams)
        register_extensions(core)
        try:
            model = read_model(core, self.source)
            declared = {p.get_any_name(): _shape(p) for p in model.inputs}
            compiled = core.compile_model(model, self.device, config)
        except RuntimeError as exc:
            raise ModelError(f"{self.path}: openvino cannot load this model ({exc})") from exc
        ran = compiled.get_property("INFERENCE_PRECISION_HINT")
        ran_name = _FROM_OV.get(ran.get_type_name(), ran.get_type_name())
        if ran_name != want:
            raise ModelError(f"{self.path}: asked OpenVINO for {want}, but it compiled the model for {ran_name}")
        # The model's declared signature (the contract's inputs), fed with what the compiled model kept.
        self._fed = tuple(p.get_any_name() for p in compiled.inputs)
        self._inputs = {**declared, **{p.get_any_name(): _shape(p) for p in compiled.inputs}}
        self._outputs = {p.get_any_name(): _shape(p) for p in compiled.outputs}
        self._out_ports = list(compiled.outputs)
        self._compiled = compiled
        self._local = threading.local()
        self._card = card
        self._precision = ran_name

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            request = getattr(self._local, "request", None)
            if request is None:
                request = self._local.request = self._compiled.create_infer_request()
            result = request.infer({k: v for k, v in feed.items() if k in self._fed})
        except RuntimeError as exc:
            raise ModelError(f"{self.name}: openvino inference failed ({exc})") from exc
        # The request reuses its output buffers: copy before the next call.
        return {port.get_any_name(): np.array(result[port], dtype=np.float32, copy=True)
                for port in self._out_ports}

    def _deactivate(self) -> None:
        self._local = threading.local()
        self._compiled = None
        self._fed = ()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(device=self.device, threads=self.threads, streams=self.streams, cpu_capabilities=self.capabilities)
        return d


def _shape(port: Any) -> tuple[int | None, ...]:
    return tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
