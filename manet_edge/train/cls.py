"""Stage 2: the dataset of segmented X-rays and classifier training (``manet-edge train cls``).

As in the paper, the classifier sees stage 1's *predicted*, post-processed masks, not ground
truth. Segmenting every image once per run is cached on disk (keyed by the segmenter's hash,
the classifier size and the image list), so epochs do not re-run the segmenter.
"""

from __future__ import annotations

import os

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from manet_edge import CLASSES, stages
from manet_edge.config import PostprocessConfig, from_dict
from manet_edge.datasets import Item, find_cls_items, get_splits, matches_source, parse_source_spec, select
from manet_edge.io import load_image
from manet_edge.train.augment import cls_augment
from manet_edge.train.checkpoint import build_model_from_checkpoint, file_sha256, load_checkpoint, zoo_record
from manet_edge.train.data import ClsDataset
from manet_edge.train.dist import DistInfo
from manet_edge.train.loop import Task, TrainConfig, fit


def segment_items(root: Path, items: list[Item], segmenter: Path, size: int, *, cache_dir: Path | None = None,
                  batch_size: int = 16, quiet: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images in [0,1] (N,1,size,size) float32, cleaned predicted masks (N,1,size,size) float32)."""
    seg_sha = file_sha256(segmenter)
    key = hashlib.sha256(json.dumps(["float32", seg_sha, size, [it.path for it in items]]).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"cls_{size}px_{key}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return z["images"].astype(np.float32), z["masks"].astype(np.float32)
    predict_logits, seg_card, post = _stage1(segmenter)
    from tqdm import tqdm

    images = np.zeros((len(items), 1, size, size), np.float32)
    masks = np.zeros_like(images)
    for i in tqdm(range(0, len(items), batch_size), desc="segmenting", disable=quiet, leave=False):
        raws = [load_image(root / it.path) for it in items[i:i + batch_size]]
        x = np.stack([stages.seg_feed(r, seg_card) for r in raws])
        for j, (raw, lg) in enumerate(zip(raws, predict_logits(x))):
            lung = stages.mask_from_logits(lg, post)
            images[i + j, 0], masks[i + j, 0] = stages.cls_pair01(raw, lung.mask, size)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")  # several runs may fill the cache at once
        # float32: the cached image is exactly what the runtime computes (float16 moved a test prediction)
        np.savez(tmp, images=images, masks=masks.astype(np.uint8))
        tmp.replace(cache)
    return images, masks


def _stage1(segmenter: Path):
    """``(predict, card, clean-up config)`` for a segmenter file.

    A ``.onnx`` file is an exported segmenter (such as the bundled one) and runs on ONNX Runtime
    with the clean-up settings of its model card, exactly as ``manet-edge infer`` runs it; any
    other file is a ``train seg`` checkpoint run in torch. ``predict`` maps a (N, C, S, S) batch
    (:func:`manet_edge.stages.seg_feed`) to (N, 1, S, S) logits; ``card`` has the segmenter's
    ``input_size`` and ``in_channels``.
    """
    if Path(segmenter).suffix.lower() == ".onnx":
        from manet_edge.runtime.onnxrt import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(segmenter).activate()
        if runner.card.kind != "seg":
            raise ValueError(f"{segmenter}: expected a segmenter, its model card says kind={runner.card.kind}")

        def predict_onnx(x: np.ndarray) -> np.ndarray:
            return runner.infer({"image": x})["logits"]

        return predict_onnx, runner.card, stages.postprocess_config(runner.card)
    ckpt = load_checkpoint(segmenter)
    if ckpt["kind"] != "seg":
        raise ValueError(f"{segmenter}: expected a segmenter checkpoint, got kind={ckpt['kind']}")
    model = build_model_from_checkpoint(ckpt)
    cfg = ckpt["model_config"]

    @torch.no_grad()
    def predict_torch(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x)).numpy()

    card = SimpleNamespace(input_size=int(cfg["image_size"]), in_channels=int(cfg.get("in_channels", 1)))
    return predict_torch, card, from_dict(PostprocessConfig, dict(ckpt.get("postprocess", {})))


def class_weights(labels: np.ndarray, n: int, power: float = 1.0) -> np.ndarray:
    """Inverse-frequency weights ``count ** -power`` (1: full balance, 0.5: the square root, milder),
    normalised to mean 1 over the classes present; 0 for absent classes."""
    counts = np.bincount(labels, minlength=n).astype(float)
    present = counts > 0
    w = np.where(present, np.maximum(counts, 1) ** -power, 0.0)
    return w * present.sum() / w.sum()


@torch.no_grad()
def predict(model: torch.nn.Module, ds: ClsDataset, device: str = "cpu", batch_size: int = 32) -> np.ndarray:
    """Softmax probabilities (N, classes) for a non-augmented dataset."""
    model.eval()
    outs = []
    for i in range(0, len(ds), batch_size):
        batch = [ds[j] for j in range(i, min(i + batch_size, len(ds)))]
        x = torch.stack([b[0] for b in batch]).to(device)
        m = torch.stack([b[1] for b in batch]).to(device)
        outs.append(torch.softmax(model(x, m), 1).cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, len(CLASSES)), np.float32)


def train_classifier(data: Path, segmenter: Path, model_name: str, out: Path, cfg: TrainConfig, info: DistInfo, *,
                     splits_path: Path | None = None, cache_dir: Path | None = None, resume: bool = False,
                     quiet: bool = False) -> dict:
    from manet_edge.config import ClsModelConfig
    from manet_edge.models import create_model

    data, out = Path(data), Path(out)
    items = find_cls_items(data)
    splits = get_splits(items, splits_path or out / "splits_cls.json", root=data, task="cls", seed=0)
    tr_items, va_items = select(items, splits["train"]), select(items, splits["val"])
    # Segment whole splits (one cache entry whatever is left out), then leave sources out.
    tr_x, tr_m = segment_items(data, tr_items, segmenter, cfg.image_size, cache_dir=cache_dir, quiet=quiet or not info.is_main)
    va_x, va_m = segment_items(data, va_items, segmenter, cfg.image_size, cache_dir=cache_dir, quiet=quiet or not info.is_main)
    if cfg.exclude_sources:  # leave-one-source-out: the held-out source is in neither train nor val
        spec = parse_source_spec(cfg.exclude_sources)
        keep_tr = np.array([not matches_source(it, spec) for it in tr_items], bool)
        keep_va = np.array([not matches_source(it, spec) for it in va_items], bool)
        tr_items, tr_x, tr_m = [it for it, k in zip(tr_items, keep_tr) if k], tr_x[keep_tr], tr_m[keep_tr]
        va_items, va_x, va_m = [it for it, k in zip(va_items, keep_va) if k], va_x[keep_va], va_m[keep_va]
    tr_y = np.array([CLASSES.index(it.label) for it in tr_items])
    va_y = np.array([CLASSES.index(it.label) for it in va_items])
    train_ds = ClsDataset(tr_x, tr_m, tr_y, augment=cls_augment(cfg.augment), normalisation=cfg.normalisation)
    val_ds = ClsDataset(va_x, va_m, va_y, normalisation=cfg.normalisation)
    weights = class_weights(tr_y, len(CLASSES), power=0.5 if cfg.balance == "sqrt" else 1.0)
    ce = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32).to(info.device)
                                   if cfg.balance in ("loss", "sqrt") else None, label_smoothing=cfg.label_smoothing)
    sample_w = weights[tr_y] if cfg.balance == "sampler" else None

    def loss_fn(net, batch):
        x, m, y = (t.to(info.device) for t in batch)
        logits = net(x, m)
        return ce(logits, y), {"acc": float((logits.argmax(1) == y).float().mean())}

    def evaluate(model):
        p = predict(model, val_ds, info.device)
        pred = p.argmax(1)
        covid = va_y == CLASSES.index("covid")
        return {"acc": float((pred == va_y).mean()),
                "covid_recall": float((pred[covid] == va_y[covid]).mean()) if covid.any() else float("nan")}

    model_cfg = ClsModelConfig(name=model_name, image_size=cfg.image_size)
    torch.manual_seed(cfg.seed)
    model = create_model(model_name, in_channels=1, num_classes=len(CLASSES))
    extra = {"classes": list(CLASSES), "segmenter": {"path": str(segmenter), "sha256": file_sha256(segmenter)},
             "zoo": zoo_record(), "normalisation": cfg.normalisation}
    task = Task(kind="cls", loss_fn=loss_fn, evaluate=evaluate, score_key="acc", checkpoint_extra=extra)
    best = fit(model, train_ds, task, cfg, model_cfg, out, info, resume=resume, sample_weights=sample_w, quiet=quiet)
    if info.is_main and (out / "best.pt").exists():
        calibrate_checkpoint(out / "best.pt", val_ds, device=info.device, quiet=quiet)
    return best


def predict_logits(model: torch.nn.Module, ds: ClsDataset, device: str = "cpu", batch_size: int = 32) -> np.ndarray:
    """Logits (N, classes) for a non-augmented dataset, fp32."""
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(ds), batch_size):
            batch = [ds[j] for j in range(i, min(i + batch_size, len(ds)))]
            x = torch.stack([b[0] for b in batch]).to(device)
            m = torch.stack([b[1] for b in batch]).to(device)
            outs.append(model(x, m).float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, len(CLASSES)), np.float32)


def calibrate_checkpoint(path: Path, val_ds: ClsDataset, *, device: str = "cpu", quiet: bool = False) -> float:
    """Fit a softmax temperature on the validation split (:func:`manet_edge.calibration.fit_temperature`)
    and store it in the checkpoint (``calibration``); the exporter copies it into the model card."""
    from manet_edge.calibration import expected_calibration_error, fit_temperature, softmax_t
    from manet_edge.train.checkpoint import save_checkpoint

    ckpt = load_checkpoint(path)
    logits = predict_logits(build_model_from_checkpoint(ckpt), val_ds, device)
    y = np.asarray(val_ds.labels)
    t = fit_temperature(logits, y)
    ckpt["calibration"] = {"temperature": t, "fitted_on": "val", "n": int(len(y)),
                           "ece_before": expected_calibration_error(softmax_t(logits, 1.0), y),
                           "ece_after": expected_calibration_error(softmax_t(logits, t), y)}
    save_checkpoint(ckpt, path)
    if not quiet:
        c = ckpt["calibration"]
        print(f"temperature {t:.3f} fitted on {c['n']} validation images: ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}")
    return t
