"""Reduced-precision classifiers: an fp16 cast pass and int8 QDQ calibrated on real segmented X-rays.

fp16 (:func:`to_fp16`) is our own cast pass (no extra dependency): float32 initializers and
constants become float16, the graph keeps float32 inputs and outputs (a ``Cast`` after each input
and before each output), and inputs that ONNX requires in float32 (``Resize`` scales) stay so.
The MA function is type-generic (``CastLike``), so the fused op runs in fp16 unchanged.

int8 (:func:`quantize_int8`) is onnxruntime's ``quantize_static`` in QDQ format (per-channel int8
weights, int8 activations) calibrated by :class:`XrayCalibrationReader`: real X-rays from a
folder, segmented by the stage-1 ONNX with the product's own pre/post-processing
(``manet_edge.preprocess``, ``manet_edge.postprocess``). The MA ops and the whole mask branch stay
float: the mask is a fraction in [0, 1], not an activation to quantize.

:func:`compare_precisions` reports accuracy, COVID recall and agreement with fp32 on labelled
images, plus the latency ratio, for the lead's evaluation on the test split.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from manet_edge import CLASSES, stages
from manet_edge.errors import BadInputError, ManetEdgeError
from manet_edge.metadata import CARD_KEY, ModelCard

# (op_type, input index) that ONNX types as float32 whatever the data type of the model.
_KEEP_FLOAT32_INPUTS = {("Resize", 2), ("Upsample", 1)}
PRECISIONS = ("fp32", "fp16", "int8")


class QuantizationError(ManetEdgeError):
    """Reduced-precision conversion or calibration failed; the message says why."""


# ----------------------------------------------------------------------------------------------
# fp16
# ----------------------------------------------------------------------------------------------

def _float_uses(model: onnx.ModelProto) -> dict[str, bool]:
    """Tensor name -> True if every reader takes it as model-typed data (safe to cast to fp16)."""
    safe: dict[str, bool] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name:
                ok = (node.op_type, i) not in _KEEP_FLOAT32_INPUTS
                safe[name] = safe.get(name, True) and ok
    return safe


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of a float32 model with float32 inputs and outputs."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    safe = _float_uses(out)
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and safe.get(init.name, True):
            arr = numpy_helper.to_array(init).astype(np.float16)
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    for node in graph.node:
        if node.op_type == "Constant" and safe.get(node.output[0], True):
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
                elif a.name in ("value_float", "value_floats"):
                    raise QuantizationError(f"Constant {node.name}: {a.name} cannot be made fp16; export with "
                                            "tensor constants")
        if node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
        if node.op_type == "ConstantOfShape":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
    # float32 at the boundary: Cast after each float input, before each float output.
    casts_in, renames = [], {}
    for vi in graph.input:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            name16 = f"{vi.name}_fp16"
            renames[vi.name] = name16
            casts_in.append(helper.make_node("Cast", [vi.name], [name16], name=f"cast_{vi.name}_fp16",
                                             to=TensorProto.FLOAT16))
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    casts_out = []
    for vi in graph.output:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            name16 = f"{vi.name}_fp16"
            for node in graph.node:
                for i, o in enumerate(node.output):
                    if o == vi.name:
                        node.output[i] = name16
                for i, name in enumerate(node.input):
                    if name == vi.name:
                        node.input[i] = name16
            casts_out.append(helper.make_node("Cast", [name16], [vi.name], name=f"cast_{vi.name}_fp32",
                                              to=TensorProto.FLOAT))
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    _set_card_precision(out, "fp16")
    return out


def _set_card_precision(model: onnx.ModelProto, precision: str, **extra: Any) -> None:
    props = {p.key: p.value for p in model.metadata_props}
    if CARD_KEY not in props:
        return
    card = ModelCard.from_json(props[CARD_KEY])
    merged = dict(card.extra)
    merged.update(extra)
    import dataclasses

    card = dataclasses.replace(card, precision=precision, extra=merged)
    props[CARD_KEY] = card.to_json()
    del model.metadata_props[:]
    helper.set_model_props(model, props)


# ----------------------------------------------------------------------------------------------
# int8 calibration data
# ----------------------------------------------------------------------------------------------

def list_images(folder: str | Path, limit: int | None = None, seed: int = 0) -> list[Path]:
    """Images under ``folder`` (recursively), a seeded sample of at most ``limit`` spread over sub-folders."""
    from manet_edge.io import SUPPORTED_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError("calibration folder does not exist or is not a folder", folder)
    by_dir: dict[Path, list[Path]] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES:
            by_dir.setdefault(p.parent, []).append(p)
    if not by_dir:
        raise BadInputError(f"no images ({', '.join(SUPPORTED_SUFFIXES)}) found for calibration", folder)
    rng = random.Random(seed)
    for files in by_dir.values():
        rng.shuffle(files)
    # Round-robin over sub-folders (classes) so a small sample still covers each of them.
    picked: list[Path] = []
    queues = [list(v) for _, v in sorted(by_dir.items())]
    while any(queues) and (limit is None or len(picked) < limit):
        for q in queues:
            if q and (limit is None or len(picked) < limit):
                picked.append(q.pop())
    return picked


class Segmenter:
    """Stage 1 with ONNX Runtime and the product's stage functions (:mod:`manet_edge.stages`; no torch)."""

    def __init__(self, seg_onnx: str | Path, threads: int = 1):
        from manet_edge.export.verify import ort_session
        from manet_edge.metadata import read_onnx_card

        self.card = read_onnx_card(str(seg_onnx))
        if self.card.kind != "seg":
            raise BadInputError(f"expected a segmenter ONNX, got a model card of kind {self.card.kind!r}", seg_onnx)
        self.post = stages.postprocess_config(self.card)
        self.session = ort_session(seg_onnx, threads)

    def mask(self, image: np.ndarray) -> np.ndarray:
        """The cleaned S x S lung mask of one 2-D image."""
        logits = self.session.run(None, {"image": stages.seg_feed(image, self.card)[None]})[0][0]
        return stages.mask_from_logits(logits, self.post).mask

    def cls_inputs(self, image: np.ndarray, cls_size: int,
                   normalisation: str = "segmented_minmax_pm1") -> tuple[np.ndarray, np.ndarray]:
        """(segmented (1,S,S) in [-1,1], mask (1,S,S) in {0,1}) for one 2-D image."""
        card = SimpleNamespace(input_size=cls_size, in_channels=1, normalisation=normalisation)
        return stages.cls_feed(image, self.mask(image), card)


def segmented_inputs(images: Iterable[Path], seg_onnx: str | Path, cls_size: int,
                     channels: int = 1, normalisation: str = "segmented_minmax_pm1") -> Iterator[dict[str, np.ndarray]]:
    """Feeds ``{"image": (1,C,S,S), "mask": (1,1,S,S)}`` for each image, segmented by ``seg_onnx``."""
    from manet_edge.io import load_image

    seg = Segmenter(seg_onnx)
    card = SimpleNamespace(input_size=cls_size, in_channels=channels, normalisation=normalisation)
    for path in images:
        image = load_image(path)
        feed = stages.cls_feed(image, seg.mask(image), card)
        yield {k: v.astype(np.float32) for k, v in stages.cls_batch([feed], ("image", "mask")).items()}


class XrayCalibrationReader:
    """onnxruntime ``CalibrationDataReader`` over real X-rays segmented by the stage-1 ONNX."""

    def __init__(self, calib_dir: str | Path, seg_onnx: str | Path, cls_size: int, *, channels: int = 1,
                 limit: int = 64, seed: int = 0, normalisation: str = "segmented_minmax_pm1"):
        self.images = list_images(calib_dir, limit, seed)
        self._feeds = list(segmented_inputs(self.images, seg_onnx, cls_size, channels, normalisation))
        self._it = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def _reader_class():
    """Make :class:`XrayCalibrationReader` a real ``CalibrationDataReader`` subclass lazily."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(XrayCalibrationReader, CalibrationDataReader):
        pass

    return _Reader


# ----------------------------------------------------------------------------------------------
# int8 QDQ
# ----------------------------------------------------------------------------------------------

def float_only_nodes(model: onnx.ModelProto, mask_input: str = "mask") -> list[str]:
    """Names of the nodes that must stay float: the mask branch and every MA multiply."""
    from manet_edge.rewrite.base import RewriteContext
    from manet_edge.rewrite.functions import MA_DOMAIN, MA_SITE_OPS

    ctx = RewriteContext(model, mask_input=mask_input)
    names = []
    for node in model.graph.node:
        is_ma = node.domain == MA_DOMAIN and node.op_type in MA_SITE_OPS
        reads_map = any(ctx.mask.is_mask_map(i) for i in node.input if i)
        if is_ma or ctx.mask.in_branch(node) or reads_map:
            if not node.name:
                raise QuantizationError(f"unnamed {node.op_type} node in the mask branch; re-export the model")
            names.append(node.name)
    return names


def sensitive_nodes(model: onnx.ModelProto, image_input: str = "image") -> list[str]:
    """Names of the nodes int8 hurts most for what it saves: the stem (every conv reading the image)
    and the head (every Gemm/MatMul). They hold a small share of the FLOPs; the stem sees the raw
    [-1, 1] image, the head sets the class probabilities directly."""
    return [n.name for n in model.graph.node
            if (n.op_type == "Conv" and image_input in n.input) or n.op_type in ("Gemm", "MatMul")]


INT8_OPS = ("Conv", "Relu", "MaxPool", "Concat", "Reshape", "Flatten")
"""Op types :func:`quantize_int8` quantizes. Residual ``Add``s and the global pooling stay float, and
so do the stem and the head (:func:`sensitive_nodes`): on the bundled classifier's validation split
that cut the int8 model's probability distance from fp32 from 0.0115 to 0.0047 (MinMax, 64
images; benchmarks/results/defaults/int8_calibration.md) at about the same speed."""


def quantize_int8(fp32_path: str | Path, out_path: str | Path, reader: Any, *, per_channel: bool = True,
                  calibrate_method: str = "MinMax", float_sensitive: bool = True) -> Path:
    """Static int8 QDQ quantization of a classifier: per-channel int8 weights, calibrated activations.

    Stays float: the mask branch and every MA multiply (:func:`float_only_nodes`: the mask is a
    fraction, not an activation), the stem and the head (:func:`sensitive_nodes`), and the op types
    not in :data:`INT8_OPS` (residual adds, global pooling). ``float_sensitive=False`` quantizes
    those too (manet-edge 0.1's recipe; kept for comparison). ``calibrate_method`` is onnxruntime's
    ``CalibrationMethod`` name (benchmarks/results/defaults/int8_calibration.md compares them).
    """
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(fp32_path))
    for i, node in enumerate(model.graph.node):  # node names are how nodes_to_exclude finds them
        if not node.name:
            node.name = f"{node.op_type.lower()}_{i}"
    exclude = float_only_nodes(model) + (sensitive_nodes(model) if float_sensitive else [])
    ops = list(INT8_OPS) + ([] if float_sensitive else ["Gemm", "MatMul", "Add", "GlobalAveragePool", "ReduceMean"])
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "fp32.onnx"
        onnx.save(model, str(src))
        out_tmp = Path(tmp) / "int8.onnx"
        try:
            quantize_static(str(src), str(out_tmp), reader, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=ops, per_channel=per_channel, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                            calibrate_method=getattr(CalibrationMethod, calibrate_method),
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        except Exception as exc:  # onnxruntime raises plain Exceptions from calibration
            raise QuantizationError(f"int8 quantization of {fp32_path} failed: {exc}") from exc
        q = onnx.load(str(out_tmp))
    images = getattr(reader, "images", [])
    _set_card_precision(q, "int8", calibration_images=len(images), calibration_method=calibrate_method,
                        float_nodes=len(exclude), float_sensitive=float_sensitive,
                        calibration_sha256=_images_sha(images))
    from manet_edge.export.onnx import check_onnx, save_onnx

    check_onnx(q, str(out_path))
    return save_onnx(q, out_path)


def _images_sha(paths: list[Path]) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(Path(p).read_bytes())
    return h.hexdigest() if paths else ""


def make_reader(calib_dir: str | Path, seg_onnx: str | Path, cls_size: int, *, channels: int = 1,
                limit: int = 64, seed: int = 0, normalisation: str = "segmented_minmax_pm1"):
    """The calibration reader (a ``CalibrationDataReader``) for :func:`quantize_int8`."""
    return _reader_class()(calib_dir, seg_onnx, cls_size, channels=channels, limit=limit, seed=seed,
                           normalisation=normalisation)


# ----------------------------------------------------------------------------------------------
# Accuracy of reduced-precision models
# ----------------------------------------------------------------------------------------------

@dataclass
class PrecisionRow:
    precision: str
    accuracy: float
    covid_recall: float
    agreement: float  # fraction of predictions equal to the fp32 model's
    median_ms: float
    speed_ratio: float  # median latency / fp32 median latency
    prob_distance: float = 0.0  # mean total-variation distance of the class probabilities from fp32's


@dataclass
class PrecisionReport:
    n: int
    rows: list[PrecisionRow] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"{self.n} images", "", "| precision | accuracy | COVID recall | agreement vs fp32 | "
                 "probability distance vs fp32 | median ms | speed ratio |", "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r.precision} | {r.accuracy:.4f} | {r.covid_recall:.4f} | {r.agreement:.4f} | "
                         f"{r.prob_distance:.4f} | {r.median_ms:.1f} | {r.speed_ratio:.3f} |")
        lines += ["", "Probability distance: the mean over images of the total-variation distance between the "
                      "class probabilities and fp32's (0 = identical, 1 = disjoint); finer than agreement."]
        return "\n".join(lines)


def compare_precisions(models: dict[str, str | Path], seg_onnx: str | Path, items: list[tuple[str | Path, str]],
                       *, classes: tuple[str, ...] = CLASSES, threads: int = 1) -> PrecisionReport:
    """Accuracy, COVID recall, agreement with ``models['fp32']`` and the mean distance of the class
    probabilities from its, on labelled images (path, class)."""
    from manet_edge.export.verify import ort_session
    from manet_edge.metadata import read_onnx_card

    if "fp32" not in models:
        raise BadInputError("compare_precisions needs the fp32 model as the reference (key 'fp32')")
    card = read_onnx_card(str(models["fp32"]))
    labels = np.array([classes.index(lbl) for _, lbl in items])
    feeds = list(segmented_inputs([Path(p) for p, _ in items], seg_onnx, card.input_size, card.in_channels,
                                  card.normalisation))
    probs: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}
    for name, path in models.items():
        sess = ort_session(path, threads)
        out, ts = [], []
        for feed in feeds:
            t0 = time.perf_counter()
            logits = sess.run(["logits"], feed)[0]
            ts.append(time.perf_counter() - t0)
            out.append(stages.softmax(logits[0]))  # temperature 1: the raw models compared
        probs[name] = np.array(out).reshape(len(feeds), len(classes))
        times[name] = float(np.median(ts)) * 1e3
    preds = {name: p.argmax(1) for name, p in probs.items()}
    covid = classes.index("covid")
    report = PrecisionReport(len(items))
    for name in models:
        p = preds[name]
        is_covid = labels == covid
        report.rows.append(PrecisionRow(
            name, float(np.mean(p == labels)) if len(p) else 0.0,
            float(np.mean(p[is_covid] == covid)) if is_covid.any() else float("nan"),
            float(np.mean(p == preds["fp32"])) if len(p) else 0.0, times[name], times[name] / times["fp32"],
            float(np.mean(0.5 * np.abs(probs[name] - probs["fp32"]).sum(1))) if len(p) else 0.0))
    return report
