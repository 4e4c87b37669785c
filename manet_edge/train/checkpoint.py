"""Checkpoints: a plain dict saved with ``torch.save`` and read back with ``weights_only=True``.

Keys: ``kind`` (seg|cls), ``model_config``, ``train_config``, ``state_dict``, ``epoch``,
``metrics``, and ``classes`` (cls) or ``postprocess`` (seg); training checkpoints add
``optimizer``, ``scheduler`` and ``rng`` so a run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from manet_edge.config import ClsModelConfig, SegModelConfig, from_dict
from manet_edge.errors import ModelError


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """Save atomically (temporary file + rename) so an interrupt never leaves a broken checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable manet-edge checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in ("seg", "cls") or "state_dict" not in ckpt:
        raise ModelError(f"{path}: not a manet-edge checkpoint (needs keys kind=seg|cls and state_dict)")
    ckpt["path"] = str(path)
    return ckpt


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_config_of(ckpt: dict[str, Any]) -> SegModelConfig | ClsModelConfig:
    cls = SegModelConfig if ckpt["kind"] == "seg" else ClsModelConfig
    return from_dict(cls, dict(ckpt["model_config"]))


def zoo_record() -> dict[str, Any]:
    """What a classifier checkpoint records about the zoo definitions its weights belong to."""
    from manet_edge.models.resnet import BOTTLENECK_MA_SITE

    return {"bottleneck_ma_site": BOTTLENECK_MA_SITE}


def _check_bottleneck_site(model: nn.Module, ckpt: dict[str, Any]) -> None:
    from manet_edge.models.resnet import BOTTLENECK_MA_SITE, Bottleneck

    if getattr(model, "attention", None) != "ma" or not any(isinstance(m, Bottleneck) for m in model.modules()):
        return
    site = dict(ckpt.get("zoo") or {}).get("bottleneck_ma_site")
    if site != BOTTLENECK_MA_SITE:
        raise ModelError(
            f"{ckpt.get('path', 'checkpoint')}: this bottleneck MA model was trained with the MA site "
            f"{'on BN3 before the residual add (manet-edge 0.1.0)' if site is None else repr(site)}; this version "
            f"puts it on the 3x3 conv ({BOTTLENECK_MA_SITE!r}, docs/mask_attention.md), so these weights would "
            "compute something else. Retrain the classifier, or export it with the manet-edge version that trained it.")


def build_model_from_checkpoint(ckpt: dict[str, Any] | str | Path) -> nn.Module:
    """The model of a checkpoint (dict or path) with its weights, in eval mode."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = model_config_of(ckpt)
    if isinstance(cfg, SegModelConfig):
        from manet_edge.models.unet import create_segmenter

        model = create_segmenter(cfg)
    else:
        from manet_edge.models import create_model

        model = create_model(cfg.name, in_channels=cfg.in_channels, num_classes=cfg.num_classes)
        _check_bottleneck_site(model, ckpt)
    state = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{ckpt.get('path', 'checkpoint')}: weights do not fit {cfg}: {exc}") from exc
    return model.eval()
