"""The model card stored in every exported artifact (ONNX ``metadata_props['manet_edge.card']``).

The runtime needs nothing but the .onnx files: the card says what the model expects (input size,
channels, normalisation), what it returns (classes) and how its output is post-processed.
Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from manet_edge import CLASSES, __version__
from manet_edge.errors import ModelError

CARD_KEY = "manet_edge.card"
KINDS = ("seg", "cls")
NORMALISATIONS = {"seg": "minmax01", "cls": "segmented_minmax_pm1"}
CLS_NORMALISATIONS = ("segmented_minmax_pm1", "lung_equalize")
"""Stage-2 input normalisations a card may name (implemented by ``preprocess.normalise_segmented``)."""


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
        if self.kind not in KINDS:
            raise ModelError(f"model card: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.normalisation:
            object.__setattr__(self, "normalisation", NORMALISATIONS[self.kind])
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not (
                0.0 < float(self.temperature) < 1e3):
            raise ModelError(f"model card: temperature must be a positive number, got {self.temperature!r}")
        if self.kind == "cls" and self.normalisation not in CLS_NORMALISATIONS:
            raise ModelError(f"model card: unknown classifier normalisation {self.normalisation!r}; "
                             f"this version knows {list(CLS_NORMALISATIONS)}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "model") -> "ModelCard":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{source}: model card is not valid JSON ({exc})") from exc
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
        return cls(**data, extra=extra)


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
