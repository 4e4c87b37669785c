"""Stage 1 training: the UNet lung segmenter on image/mask pairs (``manet-edge train seg``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from manet_edge.config import PostprocessConfig, SegModelConfig, to_dict
from manet_edge.datasets import find_seg_pairs, get_splits, select
from manet_edge.train.augment import seg_augment
from manet_edge.train.data import SegDataset
from manet_edge.train.dist import DistInfo
from manet_edge.train.loop import Task, TrainConfig, fit


def make_seg_loss(kind: str):
    import segmentation_models_pytorch as smp

    dice = smp.losses.DiceLoss(mode="binary", from_logits=True)
    bce = torch.nn.BCEWithLogitsLoss()
    if kind == "dice":
        return dice
    if kind == "dice_bce":
        return lambda logits, target: dice(logits, target) + bce(logits, target)
    raise ValueError(f"unknown segmentation loss {kind!r}; choose dice or dice_bce")


def batch_iou(logits: torch.Tensor, target: torch.Tensor) -> float:
    pred = logits > 0
    tgt = target > 0.5
    inter = (pred & tgt).flatten(1).sum(1).float()
    union = (pred | tgt).flatten(1).sum(1).float()
    return float(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).mean())


@torch.no_grad()
def evaluate_iou(model: torch.nn.Module, ds: SegDataset, device: str, batch_size: int = 16) -> float:
    model.eval()
    ious = []
    for i in range(0, len(ds), batch_size):
        x = torch.from_numpy(ds.images[i:i + batch_size]).to(device)
        y = torch.from_numpy(ds.masks[i:i + batch_size]).to(device)
        ious.append(batch_iou(model(x), y) * len(x))
    return float(np.sum(ious) / max(len(ds), 1))


def train_segmenter(data: Path, out: Path, cfg: TrainConfig, model_cfg: SegModelConfig, info: DistInfo, *,
                    splits_path: Path | None = None, resume: bool = False, quiet: bool = False,
                    postprocess: PostprocessConfig = PostprocessConfig(), model: torch.nn.Module | None = None) -> dict:
    """Train the segmenter; ``model`` (optional) is trained in place instead of a fresh one."""
    from manet_edge.models.unet import create_segmenter

    model_cfg = dataclasses.replace(model_cfg, image_size=cfg.image_size)
    items = find_seg_pairs(data)
    splits = get_splits(items, splits_path or Path(out) / "splits_seg.json", root=data, task="seg", seed=0)
    train_ds = SegDataset(data, select(items, splits["train"]), cfg.image_size, augment=seg_augment())
    val_ds = SegDataset(data, select(items, splits["val"]), cfg.image_size)
    loss = make_seg_loss(cfg.loss)

    def loss_fn(net, batch):
        x, y = (t.to(info.device) for t in batch)
        logits = net(x)
        return loss(logits, y), {"iou": batch_iou(logits.detach(), y)}

    task = Task(kind="seg", loss_fn=loss_fn, evaluate=lambda m: {"iou": evaluate_iou(m, val_ds, info.device)},
                score_key="iou", checkpoint_extra={"postprocess": to_dict(postprocess)})
    torch.manual_seed(cfg.seed)
    model = model if model is not None else create_segmenter(model_cfg)
    return fit(model, train_ds, task, cfg, model_cfg, Path(out), info, resume=resume, quiet=quiet)
