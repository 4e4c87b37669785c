"""The model card stored in every exported artifact (ONNX ``metadata_props['manet_edge.card']``).

The runtime needs nothing but the .onnx files: the card says what the model expects (input size,
channels, normalisation), what it returns (classes) and how its output is post-processed.
Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from manet_edge import CLASSES, __version__
from manet_edge.config import PostprocessConfig
from manet_edge.errors import ModelError

CARD_KEY = "manet_edge.card"
KINDS = ("seg", "cls")
NORMALISATIONS = {"seg": "minmax01", "cls": "segmented_minmax_pm1"}
CLS_NORMALISATIONS = ("segmented_minmax_pm1", "lung_equalize")
"""Stage-2 input normalisations a card may name (implemented by ``preprocess.normalise_segmented``)."""
CARD_PRECISIONS = ("fp32", "fp16", "bf16", "int8")
POSTPROCESS_RANGES: dict[str, tuple[float, float, bool]] = {
    "threshold": (0.0, 1.0, False),
    "min_object_fraction": (0.0, 1.0, False),
    "max_hole_fraction": (0.0, 1.0, False),
    "keep_largest": (0, 1000, True),
    "min_lung_fraction": (0.0, 1.0, False),
    "max_lung_fraction": (0.0, 1.0, False),
}
"""``postprocess`` key -> (lowest, highest, must be an integer) (see :class:`PostprocessConfig`)."""


def _check_number(what: str, value: Any, lo: float, hi: float, *, integer: bool = False,
                  open_ends: bool = False) -> None:
    """Raise :class:`ModelError` unless ``value`` is a (finite, non-bool) number within [lo, hi]
    ((lo, hi) with ``open_ends``), and an integer if ``integer``."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise ModelError(f"model card: {what} must be {kind}, got {value!r} ({type(value).__name__})")
    inside = lo < value < hi if open_ends else lo <= value <= hi
    if not inside:
        ends = f"({lo}, {hi})" if open_ends else f"[{lo}, {hi}]"
        raise ModelError(f"model card: {what} must be {kind} in {ends}, got {value!r}")


def validate_postprocess(data: Any, default_threshold: float = 0.5) -> PostprocessConfig:
    """The :class:`PostprocessConfig` of a card's ``postprocess`` entry, or :class:`ModelError`
    naming the bad key (not a mapping, unknown key, wrong type, out of range, min > max)."""
    if not isinstance(data, Mapping):
        raise ModelError(f"model card: 'postprocess' must be an object of {sorted(POSTPROCESS_RANGES)}, "
                         f"got {data!r}")
    unknown = sorted(set(data) - set(POSTPROCESS_RANGES))
    if unknown:
        raise ModelError(f"model card: 'postprocess' has unknown keys {unknown}; valid keys are "
                         f"{sorted(POSTPROCESS_RANGES)}")
    values = {"threshold": default_threshold, **data}
    for key, value in values.items():
        lo, hi, integer = POSTPROCESS_RANGES[key]
        _check_number(f"postprocess.{key}", value, lo, hi, integer=integer, open_ends=key == "threshold")
    cfg = PostprocessConfig(**values)
    if cfg.min_lung_fraction > cfg.max_lung_fraction:
        raise ModelError(f"model card: postprocess.min_lung_fraction ({cfg.min_lung_fraction}) is above "
                         f"max_lung_fraction ({cfg.max_lung_fraction})")
    return cfg


@dataclass(frozen=True)
class ModelCard:
    kind: str
    model_name: str
    input_size: int
    in_channels: int = 1
    classes: tuple[str, ...] = CLASSES
    normalisation: str = ""
    mask_threshold: float = 0.5
    postprocess: dict[str, Any] = field(default_factory=dict)
    mask_attention: bool = False
    precision: str = "fp32"
    ma_op: str = "none"
    opset: int = 17
    exporter_version: str = __version__
    source_checkpoint_sha256: str = ""
    temperature: float = 1.0
    """Classifiers: softmax(logits / temperature); fitted on validation (temperature scaling), 1 = none."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every check of a card, in one place: types, ranges and known values (:class:`ModelError`)."""
        if self.kind not in KINDS:
            raise ModelError(f"model card: kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.model_name, str) or not self.model_name:
            raise ModelError(f"model card: model_name must be a non-empty string, got {self.model_name!r}")
        _check_number("input_size", self.input_size, 8, 16384, integer=True)
        _check_number("in_channels", self.in_channels, 1, 4, integer=True)
        classes = self.classes
        if isinstance(classes, list):
            object.__setattr__(self, "classes", tuple(classes))
            classes = self.classes
        if (not isinstance(classes, tuple) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes)
                or len(set(classes)) != len(classes)):
            raise ModelError(f"model card: classes must be a list of two or more distinct names, got {classes!r}")
        _check_number("mask_threshold", self.mask_threshold, 0.0, 1.0, open_ends=True)
        if self.kind == "seg":
            validate_postprocess(self.postprocess, self.mask_threshold)
        elif not isinstance(self.postprocess, Mapping):
            raise ModelError(f"model card: 'postprocess' must be an object, got {self.postprocess!r}")
        if self.precision not in CARD_PRECISIONS:
            raise ModelError(f"model card: precision must be one of {list(CARD_PRECISIONS)}, got {self.precision!r}")
        _check_number("opset", self.opset, 1, 1000, integer=True)
        if not isinstance(self.mask_attention, bool):
            raise ModelError(f"model card: mask_attention must be true or false, got {self.mask_attention!r}")
        if not self.normalisation:
            object.__setattr__(self, "normalisation", NORMALISATIONS[self.kind])
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not (
                0.0 < float(self.temperature) < 1e3):
            raise ModelError(f"model card: temperature must be a positive number, got {self.temperature!r}")
        if self.kind == "cls" and self.normalisation not in CLS_NORMALISATIONS:
            raise ModelError(f"model card: unknown classifier normalisation {self.normalisation!r}; "
                             f"this version knows {list(CLS_NORMALISATIONS)}")

    def postprocess_config(self) -> PostprocessConfig:
        """A segmenter's mask clean-up (``postprocess``; the threshold from ``mask_threshold`` if absent)."""
        return validate_postprocess(self.postprocess, self.mask_threshold)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "model") -> "ModelCard":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{source}: model card is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ModelError(f"{source}: model card must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        # Newer exporters may add keys: keep them in `extra` rather than failing.
        extra = dict(data.pop("extra", {}) or {})
        for key in unknown:
            extra[key] = data.pop(key)
        if "classes" in data:
            data["classes"] = tuple(data["classes"])
        missing = {"kind", "model_name", "input_size"} - set(data)
        if missing:
            raise ModelError(f"{source}: model card lacks {sorted(missing)}")
        try:
            return cls(**data, extra=extra)
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}; re-export it with `manet-edge export`") from None


def read_onnx_card(path: str) -> ModelCard:
    """Read the card of an .onnx file without loading its weights into memory twice."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({exc})") from exc
    props = {p.key: p.value for p in model.metadata_props}
    if CARD_KEY not in props:
        raise ModelError(
            f"{path}: no '{CARD_KEY}' model card in metadata_props; export it with `manet-edge export`"
        )
    return ModelCard.from_json(props[CARD_KEY], source=str(path))
