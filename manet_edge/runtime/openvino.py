"""OpenVINO runner (CPU) with an explicit inference precision, ``fp32`` or ``bf16``.

On CPUs with bf16 support (AVX512-BF16, AMX) OpenVINO silently runs fp32 models in bf16 unless
told otherwise. This runner always sets ``INFERENCE_PRECISION_HINT`` (``f32`` by default), reads
back the precision the compiled model actually uses and reports that as :attr:`precision`.
Asking for ``bf16`` on a CPU without it is an error rather than a silent fp32 run.
``InferRequest.infer`` releases the GIL, so the pipeline overlaps it with Python work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from manet_edge.errors import BackendUnavailableError, BadInputError, ModelError
from manet_edge.metadata import read_onnx_card
from manet_edge.runtime.base import Runner

_HINTS = {"fp32": "f32", "bf16": "bf16"}
_FROM_OV = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}


def _import_ov():
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError("openvino", "openvino", str(exc)) from exc
    return ov


def cpu_capabilities() -> list[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of the CPU (e.g. ``['BF16', 'FP32', 'INT8', ...]``)."""
    ov = _import_ov()
    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


class OpenVINORunner(Runner):
    """Run an exported ``.onnx`` (or OpenVINO IR ``.xml``) model with OpenVINO on the CPU."""

    backend = "openvino"

    def __init__(self, path: str | Path, *, precision: str | None = None, name: str | None = None,
                 device: str = "CPU", threads: int | None = None, performance_hint: str = "LATENCY"):
        super().__init__(path, precision=precision, name=name)
        if device.upper() != "CPU":
            raise BadInputError(f"the openvino runner supports device 'CPU' only, got {device!r}")
        if threads is not None and threads < 1:
            raise BadInputError(f"threads must be >= 1, got {threads}")
        self.device = "CPU"
        self.threads = threads
        self.performance_hint = performance_hint
        self._compiled: Any = None
        self._request: Any = None
        self._out_ports: list[Any] = []
        self.capabilities: list[str] = []

    def _activate(self) -> None:
        ov = _import_ov()
        card = read_onnx_card(str(self.path))
        want = self.requested_precision or "fp32"
        core = ov.Core()
        self.capabilities = [str(c) for c in core.get_property(self.device, "OPTIMIZATION_CAPABILITIES")]
        if want == "bf16" and "BF16" not in self.capabilities:
            raise BadInputError(
                f"precision bf16 is not supported by this CPU (OpenVINO capabilities: "
                f"{', '.join(self.capabilities)}); use --precision fp32")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _HINTS[want],
                                  "PERFORMANCE_HINT": self.performance_hint}
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        try:
            model = core.read_model(str(self.path))
            compiled = core.compile_model(model, self.device, config)
        except RuntimeError as exc:
            raise ModelError(f"{self.path}: openvino cannot load this model ({exc})") from exc
        ran = compiled.get_property("INFERENCE_PRECISION_HINT")
        ran_name = _FROM_OV.get(ran.get_type_name(), ran.get_type_name())
        if ran_name != want:
            raise ModelError(f"{self.path}: asked OpenVINO for {want}, but it compiled the model for {ran_name}")
        self._inputs = {}
        for port in compiled.inputs:
            shape = port.get_partial_shape()
            self._inputs[port.get_any_name()] = tuple(
                d.get_length() if d.is_static else None for d in shape)
        self._outputs = {}
        for port in compiled.outputs:
            shape = port.get_partial_shape()
            self._outputs[port.get_any_name()] = tuple(
                d.get_length() if d.is_static else None for d in shape)
        self._out_ports = list(compiled.outputs)
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._card = card
        self._precision = ran_name

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            result = self._request.infer(feed)
        except RuntimeError as exc:
            raise ModelError(f"{self.name}: openvino inference failed ({exc})") from exc
        # The request reuses its output buffers: copy before the next call.
        return {port.get_any_name(): np.array(result[port], dtype=np.float32, copy=True)
                for port in self._out_ports}

    def _deactivate(self) -> None:
        self._request = None
        self._compiled = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(device=self.device, threads=self.threads, cpu_capabilities=self.capabilities)
        return d
