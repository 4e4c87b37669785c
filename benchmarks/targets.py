"""What ``manet-edge bench`` times: model specs, (model, backend, precision) targets, why a target is
skipped on this machine, and how each backend's target is prepared into a timed step.

* A **model spec** is a zoo name (``resnet50-ma``; built with random weights at every ``--sizes``),
  a zoo name pinned to a size (``resnet18-ma@128``), an exported ``.onnx`` file (its card gives
  the size), or ``defaults`` (the bundled ``segmenter.onnx`` + ``classifier.onnx``).
* A **target** is one spec on one backend at one precision and batch size. Backends that are not
  installed, and precisions a backend or this CPU/GPU cannot run, become *skips* with a reason.
* :func:`prepare` turns a target into a :class:`Prepared` step: torch eager runs the zoo model
  (seeded weights, the same the exporter uses) on inputs already on the device, timed with CUDA
  events on a GPU; the other backends run the exported ONNX (or an engine built from it) through
  :func:`manet_edge.runtime.create_runner`, timed with ``perf_counter`` around ``infer`` (the
  runners are synchronous), and report the precision the runner says actually ran.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from manet_edge.errors import BadInputError, ManetEdgeError
from manet_edge.benchmarks.timing import Clock, PerfCounterClock, Step
from manet_edge.runtime.backends import (
    BACKENDS,
    backend_info,
    bench_order,
    cuda_gpu_present,
    has_module,
    runner_kwargs,
    unavailable_reason,
)

DEFAULTS_TOKEN = "defaults"
DEFAULT_FALLBACK: tuple[str, ...] = ("resnet18@192", "resnet18-ma@192")
"""Timed instead of ``defaults`` while the bundled ONNX models do not exist: the bundled classifier's
config (resnet18-ma at 192 px) and its plain twin."""


@dataclass(frozen=True)
class ModelSpec:
    """One model to time: a zoo name at ``size``, or an ONNX file (``path``; size from its card)."""

    name: str
    size: int
    path: Path | None = None
    kind: str = "cls"

    @property
    def arch(self) -> str:
        """Group key: models of one group are timed interleaved (MA and plain of one architecture)."""
        if self.path is not None:
            return f"file:{self.path.parent.name or '.'}"
        from manet_edge.models.zoo import parse_name

        return parse_name(self.name)[0]

    @property
    def variant(self) -> str:
        if self.path is not None:
            return self.kind
        from manet_edge.models.zoo import parse_name

        return {"none": "plain"}.get(parse_name(self.name)[1], parse_name(self.name)[1])

    @property
    def label(self) -> str:
        return f"{self.name}@{self.size}"


def _card_of(path: Path):
    from manet_edge.metadata import read_onnx_card

    return read_onnx_card(str(path))


def parse_models(items: list[str], sizes: list[int], notes: list[str]) -> list[ModelSpec]:
    """Expand ``--models`` items into specs (zoo names x sizes, ``name@size``, files, ``defaults``)."""
    from manet_edge.models import list_models

    specs: list[ModelSpec] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        if item == DEFAULTS_TOKEN:
            from manet_edge.assets import default_models_dir

            folder = default_models_dir()
            files = [folder / "segmenter.onnx", folder / "classifier.onnx"]
            if all(f.is_file() for f in files):
                specs.extend(parse_models([str(f) for f in files], sizes, notes))
            else:
                notes.append(f"the bundled default models are not in {folder}: timed the default classifier "
                             f"config ({', '.join(DEFAULT_FALLBACK)}) with random weights instead; no segmenter is "
                             "timed here (--pipeline times one when it is given models)")
                specs.extend(parse_models(list(DEFAULT_FALLBACK), sizes, notes))
            continue
        if item.endswith(".onnx") or Path(item).suffix == ".onnx":
            path = Path(item)
            if not path.is_file():
                raise BadInputError(f"model file {path} does not exist")
            card = _card_of(path)
            specs.append(ModelSpec(card.model_name if card.kind == "cls" else f"{card.model_name} (seg)",
                                   card.input_size, path, card.kind))
            continue
        name, _, at = item.partition("@")
        if name not in list_models():
            raise BadInputError(f"unknown model {name!r}; valid: {', '.join(list_models())}, "
                                f"'{DEFAULTS_TOKEN}', NAME@SIZE or a path to an .onnx file")
        if at:
            try:
                size = int(at)
            except ValueError:
                raise BadInputError(f"{item!r}: the size after '@' must be an integer") from None
            specs.append(ModelSpec(name, size))
        else:
            specs.extend(ModelSpec(name, s) for s in sizes)
    seen: set[ModelSpec] = set()
    return [s for s in specs if not (s in seen or seen.add(s))]


@dataclass(frozen=True)
class Target:
    model: ModelSpec
    backend: str
    precision: str
    batch: int

    @property
    def label(self) -> str:
        return f"{self.model.label}/{self.backend}/{self.precision}/b{self.batch}"


@dataclass(frozen=True)
class Skip:
    """A target (or a whole backend/precision) not run on this machine, and why."""

    what: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"what": self.what, "reason": self.reason}


# -- availability ----------------------------------------------------------------------------
def _has_module(name: str) -> bool:
    return has_module(name)


def _cuda_gpu_present() -> bool:
    return cuda_gpu_present()


def backend_unavailable(backend: str) -> str | None:
    """Why ``backend`` cannot run here (``None``: it can); from its row of the backend table."""
    if backend not in BACKENDS:
        raise BadInputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return unavailable_reason(backend, module_present=_has_module, gpu_present=_cuda_gpu_present)


ZOO_NEEDS_TORCH = ("zoo models are built (and exported) with torch, which is not installed "
                   "(pip install 'manet-edge[train]'); without it, time .onnx files or --models defaults")


def model_unavailable(model: ModelSpec) -> str | None:
    """Why ``model`` cannot be made here on any backend (``None``: it can): a zoo model needs torch."""
    if model.path is None and not _has_module("torch"):
        return ZOO_NEEDS_TORCH
    return None


def torch_device(requested: str) -> str:
    """``cpu`` or ``cuda`` for the torch backend (``auto``: cuda where torch sees a GPU)."""
    if requested in ("cpu", "cuda"):
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def precision_unavailable(backend: str, precision: str, model: ModelSpec | None = None) -> str | None:
    """Why ``backend`` cannot run ``precision`` here (for ``model`` when given); ``None``: it can.

    Zoo models are exported in fp32, so onnxruntime times them in fp32 only; an ``.onnx`` file runs
    in the precision it was exported in.
    """
    info = backend_info(backend)
    if precision not in info.precisions:
        return f"{backend} supports {', '.join(info.precisions)}"
    if info.needs_torch and model is not None and model.path is not None:
        return f"the {backend} backend runs zoo models and checkpoints, not ONNX files"
    if info.precision_from_artifact and model is not None:
        exported = _card_of(model.path).precision if model.path is not None else "fp32"
        if precision != exported:
            return (f"{backend} runs a model in its exported precision ({exported}); pass a "
                    f"{precision} .onnx exported with `manet-edge export` to time it")
    # What only the backend knows (this CPU's bf16, calibrated int8 engines): its runner module's hook.
    hook = getattr(importlib.import_module(info.module), "bench_precision_problem", None)
    return hook(precision) if hook is not None else None


# -- preparation -----------------------------------------------------------------------------
@dataclass
class Prepared:
    """A target ready to time: ``step()`` runs one batch; ``close()`` releases it."""

    target: Target
    step: Step
    clock: Clock
    precision: str
    device: str
    info: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None

    @property
    def clock_name(self) -> str:
        return str(getattr(self.clock, "name", type(self.clock).__name__))


def example_feed(kind: str, batch: int, size: int, channels: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs as the pipeline would give them: image in [-1, 1] (cls) or [0, 1] (seg), a lung-box mask."""
    rng = np.random.default_rng(seed)
    if kind == "seg":
        return {"image": rng.random((batch, channels, size, size), dtype=np.float32)}
    mask = np.zeros((batch, 1, size, size), np.float32)
    mask[:, :, size // 6: 5 * size // 6, size // 8: 7 * size // 8] = 1.0
    image = rng.uniform(-1, 1, (batch, channels, size, size)).astype(np.float32) * mask
    return {"image": image, "mask": mask}


ExportFn = Callable[[ModelSpec, Path, str], Path]


def export_zoo_onnx(spec: ModelSpec, work_dir: Path, ma_op: str) -> Path:
    """Export zoo model ``spec`` (seed-0 random weights) to ``work_dir``; reuses a matching file."""
    from manet_edge.export.onnx import ExportOptions, export_onnx, source_from_name

    op = ma_op if spec.variant == "ma" else "none"
    out = Path(work_dir) / f"{spec.name}_{spec.size}_{op}.onnx"
    if out.is_file():
        card = _card_of(out)
        if card.model_name == spec.name and card.input_size == spec.size:
            return out
    src = source_from_name("cls", spec.name, size=spec.size, seed=0)
    export_onnx(src, out, ExportOptions(ma_op=ma_op))
    return out


def _prepare_torch(target: Target, device: str, threads: int | None) -> Prepared:
    import torch

    from manet_edge.benchmarks.timing import CudaEventClock
    from manet_edge.models import create_model

    if threads is not None:
        torch.set_num_threads(int(threads))
    spec = target.model
    torch.manual_seed(0)  # the same weights as export.onnx.source_from_name(..., seed=0)
    model = create_model(spec.name).eval().to(device)
    feed = example_feed("cls", target.batch, spec.size)
    image = torch.from_numpy(feed["image"]).to(device)
    mask = torch.from_numpy(feed["mask"]).to(device)

    def step() -> Any:
        with torch.inference_mode():
            return model(image, mask)

    info: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "device": device}
    if device == "cuda":
        # "fp32" must mean fp32: torch lets cuDNN convolutions use TF32 on Ampere+ unless told not to
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        info.update(gpu=torch.cuda.get_device_name(0), tf32=False, cudnn_benchmark=torch.backends.cudnn.benchmark)
    clock: Clock = CudaEventClock() if device == "cuda" else PerfCounterClock()
    return Prepared(target, step, clock, "fp32", device, info)


def _prepare_runner(target: Target, model_path: Path, threads: int | None, work_dir: Path) -> Prepared:
    from manet_edge.runtime import create_runner

    info = backend_info(target.backend)
    # threads where the runner takes them; idle ORT threads must not spin into the next interleaved target
    kw: dict[str, Any] = {"name": target.label,
                          **{k: v for k, v in runner_kwargs(target.backend, threads=threads, spin=False).items()
                             if k != "streams"}}
    path = model_path
    # precision_from_artifact: runs the exported precision (checked in precision_unavailable)
    precision: str | None = None if info.precision_from_artifact else target.precision
    if info.artifact_suffix == ".engine":  # built from the ONNX for this batch and precision
        from manet_edge.export.engine import build_engine, make_profile

        engine = work_dir / f"{model_path.stem}.{target.precision}.b{target.batch}.engine"
        path = build_engine(model_path, engine, precision=target.precision,
                            profile=make_profile(target.batch), echo=lambda _m: None).engine_path
    runner = create_runner(path, target.backend, precision, **kw)
    runner.activate()
    try:
        card = runner.card
        feed = example_feed(card.kind, target.batch, card.input_size, card.in_channels)
        feed = {k: v for k, v in feed.items() if k in runner.input_names}
        runner.infer(feed)  # fail here, at preparation, rather than in the timed rounds
        info = runner.describe()
        info["card"] = {"model_name": card.model_name, "precision": card.precision, "ma_op": card.ma_op,
                        "exporter_version": card.exporter_version, "opset": card.opset,
                        **{k: card.extra[k] for k in ("ma_body", "rules") if k in card.extra}}
    except BaseException:
        runner.deactivate()
        raise
    on_gpu = backend_info(target.backend).devices == ("cuda",) or "CUDAExecutionProvider" in info.get("providers", [])
    device = "cuda" if on_gpu else "cpu"
    return Prepared(target, lambda: runner.infer(feed), PerfCounterClock(), runner.precision, device, info,
                    runner.deactivate)


def resolve_ma_op(ma_op: str, backend: str) -> str:
    """The MA op form to export for ``backend``: ``auto`` is ``fused`` everywhere (the OpenVINO runner
    registers a conversion extension for the model-local MA functions, and the fused form is the
    faster one there)."""
    from manet_edge.choices import MA_OP_CHOICES

    if ma_op not in MA_OP_CHOICES:
        raise BadInputError(f"ma_op must be one of {', '.join(MA_OP_CHOICES)}, got {ma_op!r}")
    if ma_op != "auto":
        return ma_op
    return "fused"


def prepare(target: Target, *, work_dir: Path, threads: int | None = None, device: str = "auto",
            ma_op: str = "auto", export: ExportFn = export_zoo_onnx) -> Prepared:
    """Build ``target``'s step. Raises :class:`ManetEdgeError` (or a backend error) when it cannot."""
    if backend_info(target.backend).needs_torch:  # torch eager runs the zoo model itself
        if target.model.path is not None:
            raise ManetEdgeError("the torch backend cannot run an ONNX file")
        return _prepare_torch(target, torch_device(device), threads)
    if target.model.path is not None:
        return _prepare_runner(target, target.model.path, threads, work_dir)
    op = resolve_ma_op(ma_op, target.backend)
    prepared = _prepare_runner(target, Path(export(target.model, work_dir, op)), threads, work_dir)
    if target.model.variant == "ma":
        prepared.info["ma_op"] = op
    return prepared
