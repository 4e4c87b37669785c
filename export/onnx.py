"""Torch checkpoints (or zoo names with random weights) -> ONNX files the runtime can use alone.

Every file is opset >= 17 with a dynamic batch ``N`` and fixed H x W, passes
``onnx.checker.check_model(full_check=True)``, and carries its model card
(:class:`manet_edge.metadata.ModelCard`) in ``metadata_props``: classes, input size and channels,
normalisation, mask threshold and post-processing (segmenter), model name, MA on/off and the MA
op form, precision, exporter version and the sha256 of the source checkpoint.

Classifiers with mask attention go through the MA rules (:mod:`manet_edge.rewrite`): the mask
pyramid is shared and hoisted, each MA site becomes one ``manet_edge::MaskAttentionMul`` node
(``ma_op='fused'``, a model-local function) or the same graph inlined (``ma_op='inline'``).
Plain and CBAM classifiers keep the ``mask`` input (unused) so every classifier has one signature.

Torch is imported inside the functions; importing this module is light.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from manet_edge import CLASSES, __version__
from manet_edge.config import PostprocessConfig, SegModelConfig, to_dict
from manet_edge.errors import BadInputError, ManetEdgeError, ModelError
from manet_edge.fileutil import atomic_write_bytes
from manet_edge.metadata import CARD_KEY, ModelCard

DEFAULT_OPSET = 18
MIN_OPSET = 17
BATCH_DIM = "N"
SEG_MODELS = ("default", "paper")
"""Segmenter names without a checkpoint: the compact default or the paper's ResUNet (plus any
encoder name smp knows, e.g. ``resnet34``)."""


class ExportError(ManetEdgeError):
    """The model cannot be exported as asked; the message says why."""


@dataclass
class Source:
    """A torch model ready to export, with what the model card needs to know about it."""

    kind: str  # seg | cls
    model: Any  # torch.nn.Module in eval mode
    model_name: str
    input_size: int
    in_channels: int = 1
    classes: tuple[str, ...] = CLASSES
    postprocess: dict[str, Any] = field(default_factory=dict)
    mask_threshold: float = 0.5
    checkpoint_sha256: str = ""
    checkpoint_path: str = ""
    normalisation: str = ""  # "" = the kind's default (metadata.NORMALISATIONS)
    temperature: float = 1.0  # softmax temperature fitted on validation (classifiers)
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def mask_attention(self) -> bool:
        return self.kind == "cls" and self.model_name.endswith("-ma")


@dataclass(frozen=True)
class ExportOptions:
    """How to write the ONNX: opset, MA op form, and the body of the MA function."""

    opset: int = DEFAULT_OPSET
    ma_op: str = "fused"  # fused | inline (ignored without MA)
    ma_body: str = "auto"  # auto | expand | broadcast: how MA sites broadcast their maps (rules.MA_BODIES)
    dynamic_batch: bool = True
    heatmap_output: bool = True
    """Classifiers: add the last feature map as a second output ``features`` (class-activation
    maps and the out-of-distribution score at run time, :mod:`manet_edge.heatmap`), where the
    head is a global average pool + linear layer."""

    def __post_init__(self) -> None:
        from manet_edge.rewrite import MA_BODIES, MA_OPS

        if self.opset < MIN_OPSET:
            raise BadInputError(f"opset must be >= {MIN_OPSET}, got {self.opset}")
        if self.ma_op not in MA_OPS:
            raise BadInputError(f"--ma-op must be one of {MA_OPS}, got {self.ma_op!r}")
        if self.ma_body not in MA_BODIES:
            raise BadInputError(f"--ma-body must be one of {MA_BODIES}, got {self.ma_body!r}")


@dataclass
class ExportResult:
    path: Path
    card: ModelCard
    rules: str = ""
    nodes: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------

def source_from_checkpoint(path: str | Path, *, size: int | None = None) -> Source:
    """Load a training checkpoint (``manet_edge.train.checkpoint`` contract) as an export source."""
    from manet_edge.train.checkpoint import build_model_from_checkpoint, file_sha256, load_checkpoint, model_config_of

    ckpt = load_checkpoint(path)
    model = build_model_from_checkpoint(ckpt)
    cfg = model_config_of(ckpt)
    sha = file_sha256(path)
    if isinstance(cfg, SegModelConfig):
        post = dict(ckpt.get("postprocess") or to_dict(PostprocessConfig()))
        return Source("seg", model, f"unet-{cfg.encoder}", size or cfg.image_size, cfg.in_channels,
                      postprocess=post, mask_threshold=float(post.get("threshold", 0.5)),
                      checkpoint_sha256=sha, checkpoint_path=str(path))
    classes = tuple(ckpt.get("classes") or cfg.classes)
    cal = dict(ckpt.get("calibration") or {})
    return Source("cls", model, cfg.name, size or cfg.image_size, cfg.in_channels, classes=classes,
                  checkpoint_sha256=sha, checkpoint_path=str(path),
                  normalisation=str(ckpt.get("normalisation") or ""), temperature=float(cal.get("temperature", 1.0)),
                  calibration=cal)


def source_from_name(kind: str, name: str, *, size: int, in_channels: int = 1, seed: int = 0) -> Source:
    """A zoo classifier or a segmenter configuration with random weights (benchmarks, tests)."""
    import torch

    torch.manual_seed(seed)
    if kind == "cls":
        from manet_edge.models import create_model

        model = create_model(name, in_channels=in_channels, num_classes=len(CLASSES)).eval()
        return Source("cls", model, name, size, in_channels)
    if kind != "seg":
        raise BadInputError(f"kind must be 'seg' or 'cls', got {kind!r}")
    from manet_edge.models.unet import PAPER_SEG, create_segmenter

    if name == "default":
        cfg = SegModelConfig(image_size=size, in_channels=in_channels)
    elif name == "paper":
        cfg = dataclasses.replace(PAPER_SEG, image_size=size, in_channels=in_channels)
    else:
        cfg = SegModelConfig(encoder=name, image_size=size, in_channels=in_channels)
    try:
        model = create_segmenter(cfg).eval()
    except (KeyError, ValueError) as exc:
        raise BadInputError(f"unknown segmenter {name!r}: use one of {SEG_MODELS} or an smp encoder name "
                            f"such as resnet18/resnet34 ({exc})") from exc
    post = to_dict(PostprocessConfig())
    return Source("seg", model, f"unet-{cfg.encoder}", size, in_channels, postprocess=post,
                  mask_threshold=float(post["threshold"]))


# ----------------------------------------------------------------------------------------------
# Torch -> ONNX
# ----------------------------------------------------------------------------------------------

def _example_inputs(src: Source, batch: int = 2):
    import torch

    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch, src.in_channels, src.input_size, src.input_size, generator=g)
    if src.kind == "seg":
        return (image,), ["image"], {"image": {0: None}}
    mask = (torch.rand(batch, 1, src.input_size, src.input_size, generator=g) > 0.5).float()
    return (image * 2 - 1, mask), ["image", "mask"], {"image": {0: None}, "mask": {0: None}}


def torch_to_onnx(src: Source, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True) -> onnx.ModelProto:
    """Export ``src.model`` with torch's ONNX exporter (dynamo); batch dim named ``N``."""
    import torch

    args, names, dyn = _example_inputs(src)
    dynamic_shapes = None
    if dynamic_batch:
        n = torch.export.Dim(BATCH_DIM, min=1, max=4096)
        dynamic_shapes = {k: {0: n} for k in dyn}
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad(), _silence_stdout():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                src.model, args, None, input_names=names, output_names=["logits"], opset_version=opset,
                dynamo=True, external_data=False, dynamic_shapes=_named(dynamic_shapes, src), optimize=True)
    except Exception as exc:  # torch raises many exception types from deep inside the exporter
        raise ExportError(f"torch could not export {src.model_name}: {type(exc).__name__}: {exc}") from exc
    finally:
        quiet.setLevel(level)
    model = program.model_proto
    _fix_signature(model, src, dynamic_batch)
    return model


def _named(dynamic_shapes, src: Source):
    """Map dynamic shapes onto the forward's parameter names (``image``/``mask`` or ``x``)."""
    if dynamic_shapes is None:
        return None
    import inspect

    params = [p for p in inspect.signature(src.model.forward).parameters if p != "self"]
    keys = list(dynamic_shapes)
    return {params[i]: dynamic_shapes[k] for i, k in enumerate(keys)}


class _silence_stdout:
    """The torch exporter prints progress lines; keep them out of the CLI's output."""

    def __enter__(self):
        import contextlib

        self._ctx = contextlib.redirect_stdout(io.StringIO())
        self._ctx.__enter__()

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def _fix_signature(model: onnx.ModelProto, src: Source, dynamic_batch: bool) -> None:
    """Contract I/O: inputs image (+ mask for classifiers), output logits, batch dim ``N``."""
    graph = model.graph
    want = ["image"] if src.kind == "seg" else ["image", "mask"]
    have = [vi.name for vi in graph.input]
    s = src.input_size
    shapes = {"image": [BATCH_DIM, src.in_channels, s, s], "mask": [BATCH_DIM, 1, s, s]}
    if not dynamic_batch:
        shapes = {k: [2, *v[1:]] for k, v in shapes.items()}
    for name in want:
        if name not in have:  # plain/CBAM classifiers ignore the mask; keep it in the signature
            graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shapes[name]))
    order = {n: i for i, n in enumerate(want)}
    inputs = sorted(graph.input, key=lambda vi: order.get(vi.name, len(order)))
    del graph.input[:]
    graph.input.extend(inputs)
    extra = [vi.name for vi in graph.input if vi.name not in want]
    if extra or [vi.name for vi in graph.output] != ["logits"]:
        raise ExportError(f"exported graph has inputs {[vi.name for vi in graph.input]} and outputs "
                          f"{[vi.name for vi in graph.output]}; expected {want} -> ['logits']")
    for vi in [*graph.input, *graph.output]:
        if dynamic_batch:
            dim = vi.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_param = BATCH_DIM


# ----------------------------------------------------------------------------------------------
# Card, checks, writing
# ----------------------------------------------------------------------------------------------

def make_card(src: Source, *, precision: str, ma_op: str, opset: int, extra: dict[str, Any] | None = None) -> ModelCard:
    return ModelCard(
        kind=src.kind, model_name=src.model_name, input_size=src.input_size, in_channels=src.in_channels,
        classes=src.classes, mask_threshold=src.mask_threshold, postprocess=dict(src.postprocess),
        mask_attention=src.mask_attention, precision=precision, ma_op=ma_op if src.mask_attention else "none",
        opset=opset, exporter_version=__version__, source_checkpoint_sha256=src.checkpoint_sha256,
        normalisation=src.normalisation, temperature=src.temperature,
        extra={**({"calibration": src.calibration} if src.calibration else {}), **dict(extra or {})})


def set_card(model: onnx.ModelProto, card: ModelCard) -> None:
    props = {p.key: p.value for p in model.metadata_props}
    props[CARD_KEY] = card.to_json()
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    model.producer_name = "manet-edge"
    model.producer_version = __version__


def check_onnx(model: onnx.ModelProto, what: str = "model") -> None:
    """``onnx.checker`` with full shape/type checking; raises :class:`ModelError` on failure."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"{what}: exported ONNX fails onnx.checker: {exc}") from exc


def opset_of(model: onnx.ModelProto) -> int:
    from manet_edge.rewrite.functions import model_opset

    return model_opset(model)


def build_onnx(src: Source, options: ExportOptions = ExportOptions()) -> tuple[onnx.ModelProto, ExportResult]:
    """Export ``src`` to an in-memory, checked ONNX model with its card (fp32)."""
    from manet_edge.rewrite import count_ma_nodes, fold_mask_attention

    model = torch_to_onnx(src, options.opset, options.dynamic_batch)
    rules = ""
    ma_op = "none"
    if src.mask_attention:
        model, report = fold_mask_attention(model, ma_op=options.ma_op, body=options.ma_body)
        rules = str(report)
        ma_op = options.ma_op
        if options.ma_op == "fused" and count_ma_nodes(model) == 0:
            raise ExportError(f"{src.model_name}: no MA site was found in the exported graph (rules: {rules}); "
                              "see docs/mask_attention.md for the patterns the rules expect")
    del model.graph.value_info[:]
    extra = {"ma_body": options.ma_body, "rules": rules} if src.mask_attention else {}
    if src.kind == "cls" and options.heatmap_output:
        from manet_edge.heatmap import CARD_KEY as HEATMAP_KEY, NoHeadError, add_feature_output

        try:
            extra[HEATMAP_KEY] = add_feature_output(model).to_card()
        except NoHeadError as exc:  # not a GAP + linear head: no CAM, the logits alone
            extra[HEATMAP_KEY] = {"output": None, "reason": str(exc)}
    card = make_card(src, precision="fp32", ma_op=ma_op, opset=opset_of(model), extra=extra)
    set_card(model, card)
    check_onnx(model, src.model_name)
    nodes: dict[str, int] = {}
    for n in model.graph.node:
        nodes[n.op_type] = nodes.get(n.op_type, 0) + 1
    return model, ExportResult(Path(), card, rules, nodes)


def save_onnx(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` atomically as one self-contained file (weights inside, no external data)."""
    path = Path(path)
    data = model.SerializeToString()
    if len(data) >= 2**31:
        raise ExportError(f"{path}: model is {len(data) / 2**30:.1f} GiB, over protobuf's 2 GiB single-file limit")
    atomic_write_bytes(path, data)
    return path


def export_onnx(src: Source, out: str | Path, options: ExportOptions = ExportOptions()) -> ExportResult:
    """Export ``src`` to ``out`` (fp32) and return what was written."""
    model, result = build_onnx(src, options)
    result.path = save_onnx(model, out)
    return result
