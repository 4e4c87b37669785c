"""The two-stage hand-off, written once: pure functions driven by the models' cards.

Every caller that turns an image into a segmenter feed, a segmenter output into a cleaned lung
mask, an image and mask into a classifier feed, or classifier logits into probabilities uses
these functions: the pipeline (:mod:`manet_edge.pipeline`), int8 calibration
(:mod:`manet_edge.export.quantize`), stage-2 dataset building (:mod:`manet_edge.train.cls`) and
the stage benchmark (:mod:`manet_edge.benchmarks.pipeline_stages`). Numpy, Pillow and
scikit-image only; no model library, no threads, no files.

Per image (docs/CONTRACTS.md):

1. :func:`seg_feed` - the grey image at the segmenter size S, min-max scaled to [0, 1],
   repeated to the segmenter's channels: (C, S, S) float32.
2. the segmenter -> :func:`lung_probability` (sigmoid of the logits at S x S) ->
   :func:`clean_lung_mask` (the card's :func:`postprocess_config`: threshold, specks, holes,
   largest components) -> :class:`LungMask` (mask, lung fraction, plausibility flags).
3. :func:`cls_feed` - image and mask at the classifier size, normalised by the card's
   ``normalisation``, repeated to the classifier's channels: ((C, H, W), (1, H, W)).
4. the classifier -> :func:`probabilities` (softmax of ``logits / temperature``).

:func:`check_models` and :func:`probe_classifier` refuse a segmenter/classifier pair whose files
and cards disagree before any image runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from manet_edge import CLASSES
from manet_edge.config import PostprocessConfig
from manet_edge.errors import ManetEdgeError, ModelError
from manet_edge.metadata import validate_postprocess
from manet_edge.postprocess import clean_mask, lung_fraction, plausibility_flags
from manet_edge.preprocess import cls_input, minmax, resize, seg_input

EMPTY_MASK_ERROR = "no lung found by the segmenter (empty mask); not classified"


# -- numerics ------------------------------------------------------------------------------------

def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function (float32; exp overflow for very negative logits correctly gives 0)."""
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x.astype(np.float32, copy=False)))).astype(np.float32, copy=False)


def softmax(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``x / temperature`` in float64 (returned as float64 so probabilities sum
    to 1 exactly enough); the temperature is the model card's calibration (1 = none)."""
    z = x.astype(np.float64) / float(temperature)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


# -- stage 1 -------------------------------------------------------------------------------------

def postprocess_config(card: Any) -> PostprocessConfig:
    """The segmenter card's :class:`PostprocessConfig` (threshold from ``mask_threshold`` if absent);
    checked by :func:`manet_edge.metadata.validate_postprocess`."""
    try:
        return validate_postprocess(card.postprocess or {}, card.mask_threshold)
    except ModelError as exc:
        raise ModelError(f"segmenter model card: bad 'postprocess' entry ({exc})") from None


def seg_feed(image: np.ndarray, card: Any) -> np.ndarray:
    """The segmenter's input for one 2-D grey image: (C, S, S) float32 in [0, 1] (card
    ``input_size`` and ``in_channels``)."""
    x = seg_input(image, card.input_size)
    return np.repeat(x, card.in_channels, axis=0) if card.in_channels != 1 else x


def lung_probability(logits: np.ndarray) -> np.ndarray:
    """The S x S lung probability map from one image's segmenter logits ((1, S, S) or (S, S))."""
    logits = np.asarray(logits)
    return sigmoid(logits[0] if logits.ndim == 3 else logits)


@dataclass(frozen=True)
class LungMask:
    """A cleaned S x S lung mask with its lung fraction and plausibility flags."""

    mask: np.ndarray
    lung_fraction: float
    flags: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """No lung found: the image is not classified."""
        return "empty_mask" in self.flags


def clean_lung_mask(prob: np.ndarray, post: PostprocessConfig) -> LungMask:
    """Threshold and clean a probability map (:func:`manet_edge.postprocess.clean_mask`), then
    measure it against the card's plausible lung fractions."""
    mask = clean_mask(prob, post)
    return LungMask(mask, lung_fraction(mask), tuple(plausibility_flags(mask, post)))


def mask_from_logits(logits: np.ndarray, post: PostprocessConfig) -> LungMask:
    """:func:`lung_probability` then :func:`clean_lung_mask`."""
    return clean_lung_mask(lung_probability(logits), post)


# -- stage 2 -------------------------------------------------------------------------------------

def cls_image(image: np.ndarray, card: Any) -> np.ndarray:
    """The image brought to the classifier size early (bilinear), so only the small copy is kept
    while the segmenter runs; :func:`cls_feed` of it equals :func:`cls_feed` of the original."""
    return resize(image, card.input_size)


def cls_pair01(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The un-normalised stage-2 pair (training data: augmentation comes before normalisation):
    the image at ``size`` min-max scaled to [0, 1] and the mask at ``size`` (nearest) in {0, 1},
    each (size, size) float32."""
    img = minmax(resize(image, size), 0.0, 1.0)
    m = (resize(np.asarray(mask).astype(np.float32), size, nearest=True) > 0.5).astype(np.float32)
    return img, m


def cls_feed(image: np.ndarray, mask: np.ndarray, card: Any) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's inputs for one image and its cleaned mask (any resolutions): the segmented
    image (C, H, W) normalised by the card's ``normalisation`` and the mask (1, H, W) in {0, 1}."""
    img, m = cls_input(image, mask, card.input_size, card.normalisation)
    if card.in_channels != 1:
        img = np.repeat(img, card.in_channels, axis=0)
    return img, m


def cls_batch(feeds: Sequence[tuple[np.ndarray, np.ndarray]], input_names: Any) -> dict[str, np.ndarray]:
    """The classifier's feed dict for a batch of :func:`cls_feed` pairs (``mask`` only when the model
    takes one: plain classifiers have a single input)."""
    feed = {"image": np.stack([f[0] for f in feeds])}
    if "mask" in input_names:
        feed["mask"] = np.stack([f[1] for f in feeds])
    return feed


def probabilities(logits: np.ndarray, card: Any) -> np.ndarray:
    """Class probabilities from classifier logits (softmax of ``logits / card.temperature``)."""
    return softmax(np.asarray(logits), getattr(card, "temperature", 1.0))


# -- model compatibility -------------------------------------------------------------------------

def _spatial(shape: tuple[int | None, ...], kind: str, name: str, size: int, channels: int, path: Any) -> None:
    want = (None, channels, size, size)
    if len(shape) != 4 or any(s is not None and s != w for s, w in zip(shape[1:], want[1:])):
        got = tuple("N" if d is None else d for d in shape)
        raise ModelError(f"{path}: {kind} input '{name}' has shape {got}, but its model card says "
                         f"(N, {channels}, {size}, {size}); the file and its card disagree")


def check_models(seg: Any, cls: Any) -> None:
    """Raise :class:`ModelError` unless ``seg``/``cls`` (runners: ``card``, ``path``,
    ``input_shapes``, ``output_shapes``) are a compatible segmenter/classifier pair."""
    for runner, want, role in ((seg, "seg", "segmenter"), (cls, "cls", "classifier")):
        kind = runner.card.kind
        if kind != want:
            other = "classifier" if kind == "cls" else "segmenter"
            raise ModelError(f"{runner.path}: given as the {role}, but its model card says it is a {other} "
                             f"(kind '{kind}'); check the order/names of the model files")
    sc, cc = seg.card, cls.card
    if "image" not in seg.input_shapes or len(seg.input_shapes) != 1:
        raise ModelError(f"{seg.path}: the segmenter must have one input 'image', it has {seg.input_names}")
    _spatial(seg.input_shapes["image"], "segmenter", "image", sc.input_size, sc.in_channels, seg.path)
    if "logits" not in seg.output_shapes:
        raise ModelError(f"{seg.path}: the segmenter must have an output 'logits', it has {seg.output_names}")
    out = seg.output_shapes["logits"]
    if len(out) != 4 or (out[1] is not None and out[1] != 1):
        raise ModelError(f"{seg.path}: segmenter output 'logits' must be (N, 1, S, S), it is {out}")
    if "image" not in cls.input_shapes or not set(cls.input_shapes) <= {"image", "mask"}:
        raise ModelError(f"{cls.path}: the classifier must have inputs 'image' and 'mask', it has {cls.input_names}")
    _spatial(cls.input_shapes["image"], "classifier", "image", cc.input_size, cc.in_channels, cls.path)
    if "mask" in cls.input_shapes:
        _spatial(cls.input_shapes["mask"], "classifier", "mask", cc.input_size, 1, cls.path)
    if tuple(cc.classes) != CLASSES:
        raise ModelError(f"{cls.path}: classifier classes {list(cc.classes)} differ from {list(CLASSES)}")
    out = cls.output_shapes.get("logits")
    if out is None or len(out) != 2 or (out[1] is not None and out[1] != len(CLASSES)):
        raise ModelError(f"{cls.path}: classifier output 'logits' must be (N, {len(CLASSES)}), it is {out}")
    postprocess_config(sc)


def error_message(exc: BaseException) -> str:
    """An error message for a result row: the file is in its own column, so drop a leading 'path: '."""
    msg = str(exc)
    path = getattr(exc, "path", None)
    if path and msg.startswith(f"{path}: "):
        msg = msg[len(path) + 2:]
    if isinstance(exc, ManetEdgeError):
        return msg
    return f"unexpected {type(exc).__name__}: {msg}"


def probe_classifier(cls: Any) -> None:
    """Run the classifier once on a blank input when the file leaves its class dimension open.

    A model that returns another number of logits than its card has classes is refused
    (:class:`ModelError`) before any file runs, not after the whole folder.
    """
    out = cls.output_shapes.get("logits")
    if out is None or len(out) != 2 or out[1] is not None:
        return  # fixed in the file: check_models compared it with the card
    card = cls.card
    n = next((d for d in (cls.input_shapes["image"][0],) if isinstance(d, int) and d > 0), 1)
    feed: Mapping[str, np.ndarray] = {
        "image": np.zeros((n, card.in_channels, card.input_size, card.input_size), np.float32)}
    if "mask" in cls.input_shapes:
        feed = {**feed, "mask": np.ones((n, 1, card.input_size, card.input_size), np.float32)}
    try:
        logits = np.asarray(cls.infer(dict(feed))["logits"])
    except Exception as exc:
        raise ModelError(f"{cls.path}: the classifier fails on a probe input ({error_message(exc)})") from exc
    if logits.ndim != 2 or logits.shape[1] != len(card.classes):
        raise ModelError(f"{cls.path}: the classifier returns logits of shape {tuple(logits.shape)}, but its model "
                         f"card names {len(card.classes)} classes {list(card.classes)}; the file and its card "
                         "disagree")
