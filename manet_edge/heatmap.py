"""Class-activation maps (CAM) from a deployed classifier, torch-free (numpy + onnx).

A classifier whose head is ``logits = W @ mean_hw(F) + b`` (global average pool, then one linear
layer: every zoo ResNet/VGG/Inception here) has an exact class-activation map: for class ``k``,
``CAM_k[y, x] = sum_c W[k, c] * F[c, y, x]``, and ``mean_hw(CAM_k) + b_k`` is the logit itself
(Zhou et al., CVPR 2016). For such a head Grad-CAM at the last feature map is
``ReLU(sum_c (W[k, c] / hw) F[c])``, the same map up to scale, so a CAM scaled to [0, 1] equals the
Grad-CAM of ``manet-edge gradcam`` on the same checkpoint (tested).

The exporter (:func:`add_feature_output`, ``manet-edge export --heatmap-output``, on by default)
adds the last feature map ``F`` as a second ONNX output named :data:`FEATURES_OUTPUT` and records
the head in the model card (``extra.heatmap``: the output and the names of the head's weight and
bias initializers). The runtime reads ``W`` and ``b`` from the ONNX file (:func:`head_weights`);
ONNX Runtime and OpenVINO return ``F`` with the logits, so ``infer --save-heatmaps`` costs one
small matrix product per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FEATURES_OUTPUT = "features"
"""Name of the classifier's second output: the last feature map (N, C, h, w), before pooling."""
CARD_KEY = "heatmap"
"""Key of the head description in the model card's ``extra``."""

_PASS_THROUGH = ("Reshape", "Flatten", "Squeeze", "Identity")


@dataclass(frozen=True)
class Head:
    """Where a GAP + linear head sits in an ONNX graph."""

    features: str
    """Name of the tensor that the global average pool reads (the last feature map)."""
    weight: str
    bias: str | None
    """None: the Gemm has no bias (a zero bias the exporter dropped)."""
    trans_b: bool
    """Gemm's ``transB``: the weight is stored (classes, channels) when true."""

    def to_card(self) -> dict[str, Any]:
        return {"output": FEATURES_OUTPUT, "weight": self.weight, "bias": self.bias, "trans_b": int(self.trans_b),
                "method": "cam"}


class NoHeadError(ValueError):
    """The graph has no global-average-pool + linear head feeding ``logits``."""


def _producers(graph) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def _is_gap(node, inits: dict[str, np.ndarray]) -> bool:
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type != "ReduceMean":
        return False
    axes = None
    for a in node.attribute:
        if a.name == "axes":
            axes = list(a.ints)
    if axes is None and len(node.input) > 1:
        axes = inits.get(node.input[1])
        axes = None if axes is None else [int(v) for v in np.asarray(axes).ravel()]
    return axes is not None and sorted(a % 4 for a in axes) == [2, 3]


def find_head(model) -> Head:
    """The GAP + linear head that produces the graph output ``logits`` (:class:`NoHeadError` if none)."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer  # small ones: ReduceMean's axes
             if len(t.dims) == 0 or (len(t.dims) == 1 and t.dims[0] <= 8)}
    names = {t.name for t in graph.initializer}
    prod = _producers(graph)
    gemm = prod.get("logits")
    if gemm is None or gemm.op_type != "Gemm":
        raise NoHeadError(f"'logits' is not produced by a Gemm (got {getattr(gemm, 'op_type', None)})")
    bias = gemm.input[2] if len(gemm.input) > 2 and gemm.input[2] else None
    if gemm.input[1] not in names or (bias is not None and bias not in names):
        raise NoHeadError("the head's Gemm weight/bias are not initializers")
    attrs = {a.name: a for a in gemm.attribute}
    if "transA" in attrs and attrs["transA"].i:
        raise NoHeadError("the head's Gemm has transA=1")
    for key in ("alpha", "beta"):
        if key in attrs and abs(attrs[key].f - 1.0) > 1e-7:
            raise NoHeadError(f"the head's Gemm has {key}={attrs[key].f}")
    node = prod.get(gemm.input[0])
    while node is not None and node.op_type in _PASS_THROUGH:
        node = prod.get(node.input[0])
    if node is None or not _is_gap(node, inits):
        raise NoHeadError("the Gemm does not read a global average pool over the last feature map")
    return Head(features=node.input[0], weight=gemm.input[1], bias=bias,
                trans_b=bool(attrs["transB"].i) if "transB" in attrs else False)


def add_feature_output(model) -> Head:
    """Add the last feature map as the graph output :data:`FEATURES_OUTPUT` (in place); returns the head.

    An ``Identity`` node gives the tensor its output name, so every existing node and the
    ``logits`` output stay as they are. Already present: returns the head unchanged.
    """
    from onnx import TensorProto, helper

    head = find_head(model)
    graph = model.graph
    if FEATURES_OUTPUT in {o.name for o in graph.output}:
        return head
    weight = next(t for t in graph.initializer if t.name == head.weight)
    channels = int(weight.dims[1] if head.trans_b else weight.dims[0])
    batch = graph.output[0].type.tensor_type.shape.dim[0]
    graph.node.append(helper.make_node("Identity", [head.features], [FEATURES_OUTPUT], name="manet_edge_features"))
    vi = helper.make_tensor_value_info(FEATURES_OUTPUT, TensorProto.FLOAT, [None, channels, None, None])
    dim0 = vi.type.tensor_type.shape.dim[0]
    if batch.dim_param:
        dim0.dim_param = batch.dim_param
    elif batch.dim_value:
        dim0.dim_value = batch.dim_value
    graph.output.append(vi)
    return head


def head_weights(path: str | Path, card_extra: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(W (classes, C), b (classes,)) of a classifier's linear head, read from its ONNX file.

    The initializer names come from the card (``extra.heatmap``) or, for a file exported before
    the card held them, from :func:`find_head`.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    info = (card_extra or {}).get(CARD_KEY) or {}
    if info.get("weight"):
        wname, bname, trans_b = info["weight"], info.get("bias"), bool(info.get("trans_b", 1))
    else:
        head = find_head(model)
        wname, bname, trans_b = head.weight, head.bias, head.trans_b
    inits = {t.name: t for t in model.graph.initializer if t.name in (wname, bname)}
    if wname not in inits or (bname is not None and bname not in inits):
        raise NoHeadError(f"{path}: the head's initializers {wname!r}/{bname!r} are missing")
    w = numpy_helper.to_array(inits[wname]).astype(np.float32)
    w = w if trans_b else w.T
    b = numpy_helper.to_array(inits[bname]).astype(np.float32) if bname else np.zeros(w.shape[0], np.float32)
    return w, b


def class_activation_map(features: np.ndarray, weight: np.ndarray, cls: int) -> np.ndarray:
    """Raw CAM (h, w) of class ``cls`` from one image's features (C, h, w): ``sum_c W[cls, c] F[c]``.

    Its mean plus the bias is the class's logit (exact for a GAP + linear head).
    """
    c, h, w = features.shape
    return (weight[cls].astype(np.float32) @ features.reshape(c, h * w).astype(np.float32)).reshape(h, w)


def pooled(features: np.ndarray) -> np.ndarray:
    """Global-average-pooled features (N, C) of a batch (N, C, h, w): what the linear head reads."""
    return features.mean(axis=(2, 3))


def heat_map(cam: np.ndarray, size: tuple[int, int] | int) -> np.ndarray:
    """The CAM as a [0, 1] heat map at ``size``: bilinear up-sampling, ReLU, divided by its maximum
    (Grad-CAM's convention: only evidence *for* the class; all zero when there is none)."""
    from manet_edge.preprocess import resize

    up = np.maximum(resize(cam.astype(np.float32), size), 0.0)
    peak = float(up.max())
    return up / peak if peak > 0 else up


def heat_inside(heat: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of the heat-map mass inside the lung mask (same shape), or ``None`` without heat."""
    total = float(heat.sum())
    if total <= 0:
        return None
    return float(heat[mask > 0.5].sum() / total)


_JET = np.array([[0, 0, 0.5], [0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0], [0.5, 0, 0]], np.float32)


def colourise(heat: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) float RGB in [0, 1] (a jet-like ramp)."""
    x = np.clip(heat, 0, 1) * (len(_JET) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_JET) - 2)
    t = (x - lo)[..., None]
    return _JET[lo] * (1 - t) + _JET[lo + 1] * t


def heatmap_overlay(display: np.ndarray, heat: np.ndarray, mask: np.ndarray | None = None,
                    alpha: float = 0.45) -> np.ndarray:
    """RGB uint8: the 8-bit grey ``display`` image blended with the coloured ``heat`` (same shape),
    weighted by the heat itself (cold regions keep the X-ray visible), the lung outline in white."""
    grey = display.astype(np.float32)[..., None] / 255.0
    a = alpha * np.clip(heat, 0, 1)[..., None]
    rgb = grey * (1 - a) + colourise(heat) * a
    out = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    if mask is not None:
        from skimage.segmentation import find_boundaries

        out[find_boundaries(mask > 0.5, mode="inner")] = 255
    return out
