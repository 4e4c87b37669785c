"""The training loop shared by both stages: presets, DDP, progress, checkpoints, resume.

A run directory holds ``config.json``, ``last.pt`` (written every epoch, with optimizer,
scheduler and RNG state, so ``--resume`` continues where a run stopped), ``best.pt`` (best
validation score) and ``history.jsonl`` (one line per epoch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, WeightedRandomSampler

from manet_edge.config import to_dict
from manet_edge.cpu import describe as describe_cpu
from manet_edge.errors import ManetEdgeError
from manet_edge.train.amp import autocast, prepare_model, resolve_amp
from manet_edge.train.checkpoint import load_checkpoint, save_checkpoint
from manet_edge.train.dist import DistInfo, all_reduce_sum, barrier, unwrap, wrap_model


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the presets below hold the paper's and the CPU-scale values."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str  # adam | adamw | sgd
    scheduler: str  # constant | cosine
    loss: str  # dice | dice_bce | ce
    image_size: int
    momentum: float = 0.9
    seed: int = 0
    workers: int = 0
    balance: str = "none"  # none | sampler | loss | sqrt (class balancing for the scarce TB class)
    label_smoothing: float = 0.0  # classifiers: cross-entropy against (1 - e) one-hot + e uniform
    max_steps_per_epoch: int = 0  # 0 = full epoch; tests use small numbers
    amp: str = "off"  # auto | bf16 | off: bf16 autocast + channels_last (auto: only where the CPU has AMX / AVX-512 BF16)
    normalisation: str = "segmented_minmax_pm1"  # classifiers: preprocess.CLS_NORMALISATIONS (recorded in the model card)
    augment: str = "paper"  # classifiers: paper | robust (train.augment)
    exclude_sources: str = ""  # classifiers: CLASS:SOURCE[,...] left out of train and val (leave-one-source-out)
    freeze_bn: bool = False  # keep BatchNorm statistics fixed (fine-tuning from an exported model whose BN was folded)


PRESETS: dict[str, TrainConfig] = {
    # MANet paper, Section 4.2: ResUNet with Adam 2e-4, wd 1e-5, batch 64, 50 epochs, Dice, 512 px.
    "seg-paper": TrainConfig(epochs=50, batch_size=64, lr=2e-4, weight_decay=1e-5, optimizer="adam",
                             scheduler="constant", loss="dice", image_size=512),
    # Two CPU cores: the compact UNet at 192 px, a larger lr with cosine decay, Dice + BCE to
    # converge in fewer steps from random init (about 15 min on 2 cores).
    "seg-cpu": TrainConfig(epochs=40, batch_size=8, lr=1e-3, weight_decay=1e-5, optimizer="adam",
                           scheduler="cosine", loss="dice_bce", image_size=192),
    # Paper classifiers: SGD 0.01 cosine-annealed to 0, momentum 0.9, CE, batch 64, 200 epochs, 512 px.
    "cls-paper": TrainConfig(epochs=200, batch_size=64, lr=0.01, weight_decay=1e-4, optimizer="sgd",
                             scheduler="cosine", loss="ce", image_size=512),
    "cls-cpu": TrainConfig(epochs=16, batch_size=16, lr=0.01, weight_decay=1e-4, optimizer="sgd",
                           scheduler="cosine", loss="ce", image_size=128, balance="sampler"),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise ManetEdgeError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(PRESETS[name], **overrides)


def _json_safe(record: dict[str, Any]) -> dict[str, Any]:
    """NaN / inf (e.g. a recall with no positives) become null: ``history.jsonl`` stays strict JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":  # decoupled weight decay (Loshchilov & Hutter)
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ManetEdgeError(f"unknown optimizer {cfg.optimizer!r}; choose adam, adamw or sgd")


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.scheduler == "cosine":  # annealed to 0 over the whole run, stepped per batch
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    if cfg.scheduler == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    raise ManetEdgeError(f"unknown scheduler {cfg.scheduler!r}; choose cosine or constant")


def make_loader(ds: Dataset, cfg: TrainConfig, info: DistInfo, *, train: bool, weights: np.ndarray | None = None) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(cfg.seed)
    sampler = None
    if train and info.enabled:
        sampler = DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed)
    elif train and weights is not None:
        sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(ds), replacement=True, generator=g)
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=cfg.workers, generator=g, drop_last=train and len(ds) > cfg.batch_size,
                      persistent_workers=cfg.workers > 0)


@dataclass
class Task:
    """What differs between stages: how a batch becomes a loss, and how the model is scored."""

    kind: str  # seg | cls
    loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
    evaluate: Callable[[torch.nn.Module], dict[str, float]]
    score_key: str
    checkpoint_extra: dict[str, Any]


def fit(model: torch.nn.Module, train_ds: Dataset, task: Task, cfg: TrainConfig, model_config: Any, out: Path,
        info: DistInfo, *, resume: bool = False, sample_weights: np.ndarray | None = None, quiet: bool = False) -> dict:
    """Train ``model``; returns the best checkpoint's metrics. Rank 0 writes everything under ``out``."""
    from tqdm import tqdm

    out = Path(out)
    seed_everything(cfg.seed)
    amp = resolve_amp(cfg.amp, info.device)
    model = prepare_model(model, amp)
    loader = make_loader(train_ds, cfg, info, train=True, weights=sample_weights)
    steps = len(loader) if cfg.max_steps_per_epoch <= 0 else min(len(loader), cfg.max_steps_per_epoch)
    net = wrap_model(model, info)
    opt = make_optimizer(net, cfg)
    sched = make_scheduler(opt, cfg, steps)
    start_epoch, best = 0, {"score": -1.0}
    if resume and (out / "last.pt").exists():
        ck = load_checkpoint(out / "last.pt")
        unwrap(net).load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, best = ck["epoch"] + 1, ck.get("best", best)
        torch.set_rng_state(ck["rng"]["torch"])
        if not quiet and info.is_main:
            print(f"resumed from {out / 'last.pt'} at epoch {start_epoch}")
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"train": to_dict(cfg), "model": to_dict(model_config), "amp_resolved": amp,
                                                     "cpu": describe_cpu()}, indent=2))
    for epoch in range(start_epoch, cfg.epochs):
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        net.train()
        if cfg.freeze_bn:
            for mod in net.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    mod.eval()
        t0, sums, n = time.time(), {}, 0
        bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=quiet or not info.is_main,
                   leave=False, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 60.0)
        for i, batch in enumerate(bar):
            if i >= steps:
                break
            with autocast(amp, info.device):
                loss, logs = task.loss_fn(net, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            n += 1
            for k, v in {"loss": float(loss.detach()), **logs}.items():
                sums[k] = sums.get(k, 0.0) + v
            # refresh=False: tqdm redraws on its own interval, with the step count it keeps in sync
            # (a redraw here showed a stale count, and wrote one line per step into log files).
            bar.set_postfix({k: f"{v / n:.4f}" for k, v in sums.items()}, refresh=False)
        keys = sorted(sums)
        totals = all_reduce_sum([sums[k] for k in keys] + [n], info)
        train_logs = {f"train_{k}": totals[j] / max(totals[-1], 1) for j, k in enumerate(keys)}
        record: dict[str, Any] = {"epoch": epoch, "lr": sched.get_last_lr()[0], "seconds": round(time.time() - t0, 1),
                                  "amp": amp, **train_logs}
        if info.is_main:
            val = task.evaluate(unwrap(net))
            record.update({f"val_{k}": v for k, v in val.items()})
            state = {k: v.detach().cpu() for k, v in unwrap(net).state_dict().items()}
            common = {"kind": task.kind, "model_config": to_dict(model_config), "train_config": to_dict(cfg),
                      "state_dict": state, "epoch": epoch, "metrics": record, **task.checkpoint_extra}
            if val[task.score_key] > best["score"]:
                best = {"score": val[task.score_key], "epoch": epoch, "metrics": record}
                save_checkpoint(common, out / "best.pt")
            save_checkpoint({**common, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                             "rng": {"torch": torch.get_rng_state()}, "best": best}, out / "last.pt")
            with open(out / "history.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(_json_safe(record), allow_nan=False) + "\n")
            if not quiet:
                shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
                print(json.dumps(shown), flush=True)
        barrier(info)
    return best
