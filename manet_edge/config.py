"""Frozen configuration dataclasses shared by training, export and the runtime.

Everything here is standard library only, so the torch-free runtime can read a model card.
Each dataclass round-trips through JSON with :func:`to_dict` / :func:`from_dict`; unknown keys
are an error that names the valid ones.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from manet_edge import CLASSES
from manet_edge.errors import ManetEdgeError

T = TypeVar("T")


@dataclass(frozen=True)
class PostprocessConfig:
    """scikit-image clean-up of the stage-1 mask (paper: fill holes, remove small objects)."""

    threshold: float = 0.5
    """Probability above which a pixel is lung."""
    min_object_fraction: float = 0.002
    """Connected components smaller than this fraction of the image are removed."""
    max_hole_fraction: float = 0.01
    """Holes (background enclosed by lung) smaller than this fraction of the image are filled."""
    keep_largest: int = 2
    """Keep at most this many components (two lungs); 0 keeps all."""
    min_lung_fraction: float = 0.05
    """Below this lung fraction a mask is implausible and the result is flagged."""
    max_lung_fraction: float = 0.75
    """Above this lung fraction a mask is implausible and the result is flagged."""


@dataclass(frozen=True)
class SegModelConfig:
    """Stage 1: a segmentation-models-pytorch UNet with a ResNet encoder."""

    encoder: str = "resnet18"
    encoder_depth: int = 4
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16)
    in_channels: int = 1
    image_size: int = 256


@dataclass(frozen=True)
class ClsModelConfig:
    """Stage 2: a zoo CNN (plain, -ma or -cbam)."""

    name: str = "resnet18-ma"
    in_channels: int = 1
    num_classes: int = len(CLASSES)
    image_size: int = 256
    classes: tuple[str, ...] = CLASSES


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from a dict, converting lists back to tuples and nested dicts to dataclasses."""
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ManetEdgeError(f"{cls.__name__}: unknown keys {unknown}; valid keys are {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        ftype = names[key].type
        default = names[key].default
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = from_dict(type(default), value)
        elif isinstance(value, list):
            value = tuple(value)
        elif isinstance(ftype, str) and ftype.startswith("tuple") and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)  # type: ignore[call-arg]


def save_json(obj: Any, path: str | Path) -> None:
    """Write a config (or dict) as indented JSON, atomically."""
    from manet_edge.fileutil import atomic_write_text

    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    atomic_write_text(Path(path), json.dumps(data, indent=2, sort_keys=True) + "\n")


__all__ = [
    "ClsModelConfig",
    "PostprocessConfig",
    "SegModelConfig",
    "field",
    "from_dict",
    "save_json",
    "to_dict",
]
