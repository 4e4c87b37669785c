"""The backend table: everything manet-edge knows about an inference backend, in one row.

A row (:class:`BackendInfo`) says where the runner lives, which model files it loads, which
precisions and devices it supports, which library makes it available (and which pip extra installs
it), which distributions' versions a run records, and which runner options (``threads``,
``spin``, ``streams``) the CLI passes to it. The command line's ``--backend`` choices, the
``bench`` target list, the availability checks with their reasons, ``infer``'s runner options and
stream plan, and the library versions written into ``predictions.json`` are all derived from
:data:`BACKENDS`. Adding a backend is its runner module plus one row (:func:`register_backend`).

Standard library only: nothing here imports a backend's library (availability is probed with
``importlib.util.find_spec``).
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from manet_edge.errors import BadInputError

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
"""Canonical precision names (the model card's spelling)."""
PRECISION_ALIASES: dict[str, str] = {"f32": "fp32", "float32": "fp32", "f16": "fp16", "float16": "fp16",
                                     "bfloat16": "bf16", "i8": "int8"}
RUNNER_OPTIONS: tuple[str, ...] = ("threads", "spin", "streams")
"""Runner keyword options the command line may pass (a row lists those its runner takes)."""


@dataclass(frozen=True)
class BackendInfo:
    """What one backend can do, and where its runner lives (imported only when used)."""

    name: str
    module: str
    class_name: str
    artifact_suffix: str
    """Suffix of the model files this backend loads from a models folder (``segmenter<suffix>``)."""
    precisions: tuple[str, ...]
    default_precision: str | None
    """``None``: the precision the artifact was exported in (read from its card)."""
    devices: tuple[str, ...]
    extra: str
    """The pip extra that installs the backend's library."""
    needs_torch: bool = False
    library: str = ""
    """The import name whose presence makes the backend available ("": always available)."""
    distributions: tuple[str, ...] = ()
    """pip distributions whose versions a run records (``predictions.json`` ``libraries``)."""
    needs_gpu: bool = False
    """Runs only where an NVIDIA GPU is present."""
    runner_options: tuple[str, ...] = ()
    """Which of :data:`RUNNER_OPTIONS` the runner's constructor takes."""
    precision_from_artifact: bool = False
    """The runner runs the precision the model file was exported in (never converts it)."""
    cpu_streams: bool = False
    """On a CPU, ``infer`` runs several model streams (its runner takes calls from several threads)."""
    bench_order: int = 100
    """Position in ``bench``'s target list (lower first)."""


BACKENDS: dict[str, BackendInfo] = {
    "onnxruntime": BackendInfo(
        name="onnxruntime", module="manet_edge.runtime.onnxrt", class_name="OnnxRuntimeRunner",
        artifact_suffix=".onnx", precisions=("fp32", "fp16", "int8"), default_precision=None,
        devices=("cpu", "cuda"), extra="onnxruntime-gpu", needs_torch=False, library="onnxruntime",
        distributions=("onnxruntime", "onnxruntime-gpu"), runner_options=("threads", "spin"),
        precision_from_artifact=True, cpu_streams=True, bench_order=1),
    "openvino": BackendInfo(
        name="openvino", module="manet_edge.runtime.openvino", class_name="OpenVINORunner",
        artifact_suffix=".onnx", precisions=("fp32", "bf16"), default_precision="fp32",
        devices=("cpu",), extra="openvino", needs_torch=False, library="openvino", distributions=("openvino",),
        runner_options=("threads", "streams"), cpu_streams=True, bench_order=2),
    "torch": BackendInfo(
        name="torch", module="manet_edge.runtime.torch", class_name="TorchRunner",
        artifact_suffix=".pt", precisions=("fp32",), default_precision="fp32",
        devices=("cpu", "cuda"), extra="train", needs_torch=True, library="torch",
        distributions=("torch", "torchvision", "segmentation-models-pytorch"), runner_options=("threads",),
        bench_order=0),
    "tensorrt": BackendInfo(
        name="tensorrt", module="manet_edge.runtime.tensorrt", class_name="TensorRTRunner",
        artifact_suffix=".engine", precisions=("fp32", "fp16", "int8"), default_precision=None,
        devices=("cuda",), extra="trt", needs_torch=False, library="tensorrt",
        distributions=("tensorrt", "cuda-python", "pycuda"), needs_gpu=True, bench_order=3),
}
"""Every backend ``create_runner`` knows, keyed by the name used on the command line."""


def register_backend(info: BackendInfo) -> BackendInfo:
    """Add (or replace) a row of :data:`BACKENDS`; the CLI choices and ``bench`` pick it up."""
    unknown = [o for o in info.runner_options if o not in RUNNER_OPTIONS]
    if unknown:
        raise BadInputError(f"backend {info.name!r}: unknown runner options {unknown}; known: {RUNNER_OPTIONS}")
    BACKENDS[info.name] = info
    return info


def backend_info(backend: str) -> BackendInfo:
    """The :class:`BackendInfo` of ``backend``; a clear error listing the valid names otherwise."""
    try:
        return BACKENDS[backend]
    except KeyError:
        raise BadInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}") from None


def backend_names() -> tuple[str, ...]:
    """The backend names in table order (the CLI's ``--backend`` choices)."""
    return tuple(BACKENDS)


def bench_order() -> tuple[str, ...]:
    """The backend names in ``bench``'s order (torch eager first, as the reference)."""
    return tuple(sorted(BACKENDS, key=lambda b: (BACKENDS[b].bench_order, list(BACKENDS).index(b))))


def has_module(name: str) -> bool:
    """True when ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def cuda_gpu_present() -> bool:
    """An NVIDIA GPU (or a Jetson) is visible on this machine."""
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists() or Path(
        "/etc/nv_tegra_release").exists()


def unavailable_reason(backend: str, *, module_present: Callable[[str], bool] = has_module,
                       gpu_present: Callable[[], bool] = cuda_gpu_present) -> str | None:
    """Why ``backend`` cannot run here (``None``: it can): its library is missing (naming the pip
    extra) or it needs a GPU and none was found."""
    info = backend_info(backend)
    if info.library and not module_present(info.library):
        return f"{info.library} is not installed (pip install 'manet-edge[{info.extra}]')"
    if info.needs_gpu and not gpu_present():
        return f"{info.name} needs an NVIDIA GPU and none was found" if info.name != "tensorrt" else \
            "TensorRT needs an NVIDIA GPU and none was found"
    return None


def runner_kwargs(backend: str, *, threads: int | None = None, streams: int = 1, spin: bool = False) -> dict[str, Any]:
    """The runner options ``infer`` passes to ``backend``'s runner (only those the row lists)."""
    opts = backend_info(backend).runner_options
    values = {"threads": threads, "spin": spin, "streams": streams}
    return {k: values[k] for k in RUNNER_OPTIONS if k in opts}


def runs_on_cpu(backend: str) -> bool:
    """True when ``backend`` runs its models on this machine's CPU with several streams: a
    ``cpu_streams`` row that is CPU only, or whose runner module's ``cuda_available()`` says no."""
    info = backend_info(backend)
    if not info.cpu_streams:
        return False
    if "cuda" not in info.devices:
        return True
    probe = getattr(importlib.import_module(info.module), "cuda_available", None)
    return not (probe() if probe is not None else False)


def library_distributions(backend: str | None = None) -> tuple[str, ...]:
    """The distributions whose versions a run records: ``backend``'s, or every row's."""
    rows = [BACKENDS[backend]] if backend in BACKENDS else list(BACKENDS.values())
    return tuple(d for r in rows for d in r.distributions)
