"""ONNX Runtime runner: the default backend (CPU; CUDA when onnxruntime-gpu is installed).

ONNX Runtime runs a model in the precision it was exported in, so the precision reported is the
one in the model card (asking for another one is an error). Thread settings: ``threads`` sets the
intra-op pool (``None``: ONNX Runtime's default, one per physical core); the inter-op pool is not
used (sequential execution). ``spin=False`` stops idle pool threads from busy-waiting, which
leaves the cores to the pipeline's pre/post-processing threads between model calls.
``session.run`` releases the GIL, so the pipeline overlaps it with Python work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from manet_edge.choices import ORT_DEVICES as DEVICES
from manet_edge.errors import BackendUnavailableError, BadInputError, ModelError
from manet_edge.lazy import optional_import
from manet_edge.metadata import CARD_KEY, ModelCard
from manet_edge.runtime.base import Runner, dims

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _import_ort():
    return optional_import("onnxruntime", "onnxruntime-gpu")


OPTIMIZATIONS = ("all", "basic", "none")


def cuda_available() -> bool:
    """ONNX Runtime has its CUDA execution provider here (onnxruntime-gpu and a GPU)."""
    return "CUDAExecutionProvider" in _import_ort().get_available_providers()


def session_options(*, threads: int | None = None, spin: bool = True, optimization: str = "all",
                    profile_prefix: str | None = None, optimized_model_path: str | Path | None = None) -> Any:
    """``onnxruntime.SessionOptions`` as every manet-edge session uses them: ``threads`` intra-op
    threads (``None``: ONNX Runtime's default), no inter-op pool (sequential execution),
    ``optimization`` (:data:`OPTIMIZATIONS`), spinning on or off, warnings silenced; optionally
    ONNX Runtime's profiler (``profile_prefix``) or the optimized graph saved at
    ``optimized_model_path``."""
    ort = _import_ort()
    if optimization not in OPTIMIZATIONS:
        raise BadInputError(f"onnxruntime optimization must be one of {OPTIMIZATIONS}, got {optimization!r}")
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    opts.graph_optimization_level = levels[optimization]
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.log_severity_level = 3
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_prefix)
    if optimized_model_path is not None:
        opts.optimized_model_filepath = str(optimized_model_path)
    return opts


def model_source(model: Any) -> str | bytes:
    """What ``InferenceSession`` / ``read_model`` take for a path, serialized bytes or an
    in-memory ``onnx.ModelProto``."""
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if hasattr(model, "SerializeToString"):  # onnx.ModelProto (onnx is not imported for a path)
        return model.SerializeToString()
    return str(model)


def session_from_onnx(model: Any, *, threads: int | None = None,
                      providers: tuple[str, ...] | list[str] = ("CPUExecutionProvider",), **options: Any) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model`` (a path, serialized bytes or an
    ``onnx.ModelProto``), with :func:`session_options` (``threads`` and ``options``) and
    ``providers`` (CPU only by default). The one place manet-edge builds ONNX Runtime sessions."""
    ort = _import_ort()
    return ort.InferenceSession(model_source(model), sess_options=session_options(threads=threads, **options),
                                providers=list(providers))


def card_from_session(session: Any, source: str) -> ModelCard | None:
    """The model card in a session's metadata (``None`` when it has none)."""
    meta = session.get_modelmeta().custom_metadata_map
    return ModelCard.from_json(meta[CARD_KEY], source=source) if CARD_KEY in meta else None


class OnnxRuntimeRunner(Runner):
    """Run an exported ``.onnx`` model with ONNX Runtime."""

    backend = "onnxruntime"
    concurrent = True  # InferenceSession.run is thread-safe

    def __init__(self, path: Any, *, precision: str | None = None, name: str | None = None,
                 device: str = "auto", threads: int | None = None, spin: bool = True,
                 optimization: str = "all", require_card: bool = True):
        """``path``: an ``.onnx`` file, serialized bytes, an ``onnx.ModelProto`` or a ready
        ``InferenceSession`` (then ``device``/``threads``/``spin``/``optimization`` are the
        session's own). ``require_card=False`` runs a model without a manet-edge model card
        (``card`` then raises; precision is reported as fp32)."""
        super().__init__(path, precision=precision, name=name)
        if device not in DEVICES:
            raise BadInputError(f"onnxruntime device must be one of {DEVICES}, got {device!r}")
        if threads is not None and threads < 1:
            raise BadInputError(f"threads must be >= 1, got {threads}")
        self.device = device
        self.threads = threads
        self.spin = spin
        self.optimization = optimization
        self.require_card = require_card
        self._session: Any = None
        self._in_dtypes: dict[str, Any] = {}
        self.providers: list[str] = []

    def _providers(self, ort) -> list[str]:
        available = ort.get_available_providers()
        if self.device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailableError(
                    "onnxruntime", "onnxruntime-gpu",
                    f"the CUDA execution provider is not available (providers: {', '.join(available)})")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if self.device == "auto" and "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _activate(self) -> None:
        if hasattr(self.source, "get_modelmeta"):  # a ready InferenceSession
            session = self.source
        else:
            ort = _import_ort()
            try:
                session = session_from_onnx(self.source, threads=self.threads, providers=self._providers(ort),
                                            spin=self.spin, optimization=self.optimization)
            except BadInputError:
                raise
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
                raise ModelError(f"{self.path}: onnxruntime cannot load this model ({exc})") from exc
        card = card_from_session(session, str(self.path))
        if card is None and self.require_card:
            raise ModelError(f"{self.path}: no '{CARD_KEY}' model card in the ONNX metadata; "
                             "export it with `manet-edge export`")
        precision = card.precision if card is not None else "fp32"
        if self.requested_precision and self.requested_precision != precision:
            raise BadInputError(
                f"{self.path}: onnxruntime runs a model in its exported precision ({precision}); "
                f"export a {self.requested_precision} model or drop --precision")
        for node in session.get_inputs():
            if node.type not in _ORT_DTYPES:
                raise ModelError(f"{self.path}: input '{node.name}' has type {node.type}; expected float tensors")
            self._in_dtypes[node.name] = _ORT_DTYPES[node.type]
        self._inputs = {n.name: dims(n.shape) for n in session.get_inputs()}
        self._outputs = {n.name: dims(n.shape) for n in session.get_outputs()}
        self._card = card
        self._precision = precision
        self._session = session
        self.providers = list(session.get_providers())

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cast = {k: (v if self._in_dtypes[k] is np.float32 else v.astype(self._in_dtypes[k])) for k, v in feed.items()}
        names = list(self._outputs)
        outs = self._session.run(names, cast)
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(names, outs)}

    def _deactivate(self) -> None:
        self._session = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(providers=self.providers, threads=self.threads)
        return d
