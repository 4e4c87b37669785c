"""The model registry: ``create_model(name, *, in_channels=1, num_classes=5)`` for every zoo model.

Names are ``<architecture><variant>`` with architectures ``resnet18``, ``resnet34``, ``resnet50``,
``vgg16`` (VGG16 with batch norm) and ``inception_v3``, and variants ``''`` (plain), ``-ma`` (mask
attention, Eq. (1) of the MANet paper) and ``-cbam`` (CBAM). This module imports no torch at import
time: :func:`list_models` works with the base install; the architectures are imported on demand.
"""

from __future__ import annotations

import importlib
from typing import Any

from manet_edge.errors import ManetEdgeError

ARCHITECTURES: dict[str, tuple[str, str]] = {
    "resnet18": ("manet_edge.models.resnet", "resnet18"),
    "resnet34": ("manet_edge.models.resnet", "resnet34"),
    "resnet50": ("manet_edge.models.resnet", "resnet50"),
    "vgg16": ("manet_edge.models.vgg", "vgg16"),
    "inception_v3": ("manet_edge.models.inception", "inception_v3"),
}
"""Architecture name -> (module, builder function)."""

VARIANTS: dict[str, str] = {"": "none", "-ma": "ma", "-cbam": "cbam"}
"""Name suffix -> ``attention`` argument of the builders."""


class UnknownModelError(ManetEdgeError, ValueError):
    """A model name that is not in the zoo; the message lists the valid names."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"unknown model {name!r}; valid names: {', '.join(list_models())}")


def list_models() -> list[str]:
    """Every zoo name, architecture-major: ``resnet18, resnet18-ma, resnet18-cbam, resnet34, ...``."""
    return [arch + suffix for arch in ARCHITECTURES for suffix in VARIANTS]


def parse_name(name: str) -> tuple[str, str]:
    """Split a zoo name into ``(architecture, attention)``; raises :class:`UnknownModelError`."""
    for suffix in ("-ma", "-cbam"):
        if name.endswith(suffix) and name[: -len(suffix)] in ARCHITECTURES:
            return name[: -len(suffix)], VARIANTS[suffix]
    if name in ARCHITECTURES:
        return name, "none"
    raise UnknownModelError(name)


def create_model(name: str, *, in_channels: int = 1, num_classes: int = 5, **kw: Any):
    """Build a zoo model (random init, never downloads weights).

    Every model is called as ``model(image (N,C,H,W), mask (N,1,H,W)) -> logits (N, num_classes)``
    and has ``forward_features(image, mask)`` / ``forward_head(features)``. Extra keyword arguments
    go to the architecture (e.g. ``dropout`` for vgg16 and inception_v3).
    """
    arch, attention = parse_name(name)
    if in_channels < 1 or num_classes < 1:
        raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
    module, builder = ARCHITECTURES[arch]
    build = getattr(importlib.import_module(module), builder)
    model = build(in_channels=in_channels, num_classes=num_classes, attention=attention, **kw)
    model.model_name = name
    return model
