"""``manet-edge eval seg|cls``: test-split metrics in the layout of the paper's tables."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from manet_edge import CLASSES
from manet_edge.config import PostprocessConfig, from_dict
from manet_edge.datasets import find_cls_items, find_seg_pairs, load_splits, select
from manet_edge.io import load_image
from manet_edge.postprocess import clean_mask, upsample_mask
from manet_edge.preprocess import resize, seg_input
from manet_edge.train.checkpoint import build_model_from_checkpoint, load_checkpoint
from manet_edge.train.metrics import classification_report, confusion_matrix, iou_dice

PAPER_SEG_IOU = {"normal": 93.49, "tb": 93.14, "covid": 89.07, "overall": 92.50}


def eval_segmenter(checkpoint: Path, data: Path, splits: Path, split: str = "test", batch_size: int = 8) -> dict:
    """Mean per-image IoU and Dice, before and after post-processing, at the masks' own resolution.

    "raw": the probability map resized bilinearly and thresholded; "post": the clean-up, then
    :func:`manet_edge.postprocess.upsample_mask`, exactly what ``infer --save-masks`` writes.
    """
    if Path(checkpoint).suffix.lower() == ".onnx":  # an exported segmenter, e.g. the bundled one
        from manet_edge.train.from_onnx import segmenter_from_onnx

        model, model_cfg, post = segmenter_from_onnx(checkpoint)
        size = model_cfg.image_size
    else:
        ckpt = load_checkpoint(checkpoint)
        if ckpt["kind"] != "seg":
            raise ValueError(f"{checkpoint}: expected a segmenter checkpoint, got kind={ckpt['kind']}")
        post = from_dict(PostprocessConfig, dict(ckpt.get("postprocess", {})))
        size = int(ckpt["model_config"]["image_size"])
        model = build_model_from_checkpoint(ckpt)
    model.eval()
    items = select(find_seg_pairs(data), load_splits(splits)[split])
    rows = []
    with torch.no_grad():
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            raws = [load_image(data / it.path) for it in chunk]
            prob = torch.sigmoid(model(torch.from_numpy(np.stack([seg_input(r, size) for r in raws]))))[:, 0].numpy()
            for it, p in zip(chunk, prob):
                gt = load_image(data / it.mask) > 127
                raw = resize(p, gt.shape) > post.threshold
                clean = upsample_mask(clean_mask(p, post), p, gt.shape, post.threshold)
                (iou_r, dice_r), (iou_c, dice_c) = iou_dice(raw, gt), iou_dice(clean, gt)
                rows.append({"path": it.path, "label": it.label, "source": it.source,
                             "iou_raw": iou_r, "dice_raw": dice_r, "iou": iou_c, "dice": dice_c})
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[f"class:{r['label']}"].append(r)
        groups[f"source:{r['source']}"].append(r)
        groups["overall"].append(r)
    summary = {
        g: {"n": len(rs), **{k: float(np.mean([r[k] for r in rs])) for k in ("iou_raw", "dice_raw", "iou", "dice")}}
        for g, rs in sorted(groups.items())
    }
    return {"checkpoint": str(checkpoint), "split": split, "image_size": size, "summary": summary,
            "paper_iou_percent": PAPER_SEG_IOU, "per_image": rows}


def seg_table(result: dict) -> str:
    lines = ["| group | n | IoU raw | Dice raw | IoU post | Dice post |", "|---|---|---|---|---|---|"]
    for g, s in result["summary"].items():
        lines.append(f"| {g} | {s['n']} | {s['iou_raw']:.4f} | {s['dice_raw']:.4f} | {s['iou']:.4f} | {s['dice']:.4f} |")
    return "\n".join(lines)


def eval_classifier(checkpoint: Path, data: Path, splits: Path, split: str = "test", cache_dir: Path | None = None,
                    segmenter: Path | None = None, sources: str = "") -> dict:
    """Accuracy, per-class P/R/F1 + weighted average (Table 4), the confusion matrix (Table 5), and
    for clinical reading: one-vs-rest ROC-AUC, sensitivity/specificity with bootstrap 95 % CIs,
    calibration (ECE with and without the checkpoint's temperature, reliability bins) and every
    metric per source tag.

    ``sources`` (``CLASS:SOURCE[,...]``, see :func:`manet_edge.datasets.parse_source_spec`)
    evaluates on *every* image of those sources, whatever its split: the test of a
    leave-one-source-out run, whose held-out source never reached training.
    """
    from manet_edge.calibration import expected_calibration_error, reliability_bins, softmax_t
    from manet_edge.datasets import matches_source, parse_source_spec
    from manet_edge.train.cls import predict_logits, segment_items
    from manet_edge.train.data import ClsDataset
    from manet_edge.train.metrics import roc_auc_ovr, sensitivity_specificity

    ckpt = load_checkpoint(checkpoint)
    if ckpt["kind"] != "cls":
        raise ValueError(f"{checkpoint}: expected a classifier checkpoint, got kind={ckpt['kind']}")
    seg_path = Path(segmenter or ckpt["segmenter"]["path"])
    size = int(ckpt["model_config"]["image_size"])
    classes = tuple(ckpt.get("classes", CLASSES))
    normalisation = ckpt.get("normalisation", "segmented_minmax_pm1")
    all_items = find_cls_items(data, classes)
    if sources:
        spec = parse_source_spec(sources)
        items = [it for it in all_items if matches_source(it, spec)]
        where = f"sources {sources} (all splits)"
    else:
        items = select(all_items, load_splits(splits)[split])
        where = f"split {split}"
    if not items:
        raise ValueError(f"{splits}: no images for {where}")
    x, m = segment_items(data, items, seg_path, size, cache_dir=cache_dir, quiet=True)
    y = np.array([classes.index(it.label) for it in items])
    logits = predict_logits(build_model_from_checkpoint(ckpt), ClsDataset(x, m, y, normalisation=normalisation))
    temperature = float(ckpt.get("calibration", {}).get("temperature", 1.0))
    probs = softmax_t(logits, temperature)
    pred = probs.argmax(1)
    report = classification_report(confusion_matrix(y, pred, len(classes)), classes)
    recipe = {k: v for k, v in {**_recipe_defaults(), **dict(ckpt.get("train_config", {}))}.items() if k not in _NOT_RECIPE}
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        by_source[f"{it.label}/{it.source}"].append(i)
        by_source[f"*/{it.source}"].append(i)
    per_source = {}
    for key, idx in sorted(by_source.items()):
        idx = np.array(idx)
        per_source[key] = {"n": int(len(idx)), "accuracy": float((pred[idx] == y[idx]).mean()),
                           "predicted": {c: int((pred[idx] == k).sum()) for k, c in enumerate(classes)}}
    report.update({
        "checkpoint": str(checkpoint), "model": ckpt["model_config"]["name"],
        "seed": ckpt.get("train_config", {}).get("seed"), "recipe": recipe, "split": split if not sources else None,
        "sources": sources or None, "n": len(items), "normalisation": normalisation,
        "per_source": per_source,
        "roc_auc": roc_auc_ovr(y, probs, classes),
        "sens_spec": sensitivity_specificity(y, pred, classes),
        "calibration": {"temperature": temperature, "fitted_on": ckpt.get("calibration", {}).get("fitted_on"),
                        "ece_uncalibrated": expected_calibration_error(softmax_t(logits, 1.0), y),
                        "ece_calibrated": expected_calibration_error(probs, y),
                        "bins_uncalibrated": reliability_bins(softmax_t(logits, 1.0), y),
                        "bins_calibrated": reliability_bins(probs, y)},
        "per_image": [{"path": it.path, "label": it.label, "source": it.source, "pred": classes[int(k)],
                       "probabilities": [round(float(v), 6) for v in pr]} for it, k, pr in zip(items, pred, probs)],
    })
    return report


def reliability_png(report: dict, path: Path) -> None:
    """Reliability diagram (top-label confidence vs accuracy, before and after temperature scaling)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = report["calibration"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
    for key, label in (("bins_uncalibrated", f"T = 1 (ECE {cal['ece_uncalibrated']:.3f})"),
                       ("bins_calibrated", f"T = {cal['temperature']:.2f} (ECE {cal['ece_calibrated']:.3f})")):
        pts = [(b["confidence"], b["accuracy"]) for b in cal[key] if b["n"]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{report['model']} seed {report['seed']}, n={report['n']}", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def cls_tables(report: dict) -> str:
    classes = report["classes"]
    lines = [f"accuracy {report['accuracy']:.4f} (n={report['n']})", "",
             "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c in classes:
        r = report["per_class"][c]
        lines.append(f"| {c} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} | {r['support']} |")
    w = report["weighted"]
    lines += [f"| weighted | {w['precision']:.2f} | {w['recall']:.2f} | {w['f1']:.2f} | {w['support']} |", "",
              "confusion matrix (rows actual, columns predicted)", "",
              "| actual \\ predicted | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    for c, row in zip(classes, report["confusion_matrix"]):
        lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    if "sens_spec" in report:
        lines += ["", "| class | ROC-AUC (one vs rest) | sensitivity [95 % CI] | specificity [95 % CI] |", "|---|---|---|---|"]
        for c in classes:
            se, sp = report["sens_spec"][c]["sensitivity"], report["sens_spec"][c]["specificity"]
            lines.append(f"| {c} | {report['roc_auc'][c]:.3f} | {se[0]:.3f} [{se[1]:.3f}, {se[2]:.3f}] | "
                         f"{sp[0]:.3f} [{sp[1]:.3f}, {sp[2]:.3f}] |")
        cal = report["calibration"]
        lines += ["", f"calibration: temperature {cal['temperature']:.3f} (fitted on {cal['fitted_on'] or 'nothing: T = 1'}); "
                  f"ECE {cal['ece_uncalibrated']:.4f} at T = 1, {cal['ece_calibrated']:.4f} calibrated", "",
                  "| source | n | accuracy | predicted as |", "|---|---|---|---|"]
        for key, v in report["per_source"].items():
            shown = ", ".join(f"{c} {k}" for c, k in v["predicted"].items() if k)
            lines.append(f"| {key} | {v['n']} | {v['accuracy']:.3f} | {shown} |")
    return "\n".join(lines)


_NOT_RECIPE = ("seed", "workers", "max_steps_per_epoch")
"""Training-config keys that do not make a different recipe (runs that differ only here are seeds)."""


def _recipe_defaults() -> dict:
    """``TrainConfig``'s field defaults: a checkpoint older than a field ran with its default."""
    import dataclasses

    from manet_edge.train.loop import TrainConfig

    return {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def run_group(report: dict, reports: list[dict]) -> str:
    """The Table 2 row of a report: its model, plus the recipe settings in which runs of the same
    model among ``reports`` differ (``resnet18-ma`` or, say, ``resnet18-ma (image_size=192)``)."""
    same = [r.get("recipe", {}) for r in reports if r["model"] == report["model"]]
    keys = sorted({k for rec in same for k in rec if any(o.get(k) != rec.get(k) for o in same)})
    mine = report.get("recipe", {})
    return report["model"] + (" (" + ", ".join(f"{k}={mine.get(k)}" for k in keys) + ")" if keys else "")


def aggregate_runs(reports: list[dict]) -> dict:
    """Table 2: each run's accuracy, then the mean (and spread) per model and training recipe
    (runs of one model with different recipes are separate rows, see :func:`run_group`)."""
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in reports:
        by_model[run_group(r, reports)].append(r)
    out = {}
    for model, rs in by_model.items():
        accs = [r["accuracy"] for r in rs]
        covid = [r["per_class"]["covid"]["recall"] for r in rs if "covid" in r["per_class"]]
        out[model] = {"runs": [{"seed": r["seed"], "accuracy": r["accuracy"]} for r in rs],
                      "mean": float(np.mean(accs)), "std": float(np.std(accs)), "min": float(np.min(accs)),
                      "max": float(np.max(accs)), "covid_recall_mean": float(np.mean(covid)) if covid else float("nan")}
    return out


def runs_table(agg: dict) -> str:
    width = max(len(v["runs"]) for v in agg.values())
    head = "| model | " + " | ".join(f"run {i + 1}" for i in range(width)) + " | mean | spread (max-min) | COVID recall (mean) |"
    lines = [head, "|---" * (width + 4) + "|"]
    for model, v in agg.items():
        runs = [f"{100 * r['accuracy']:.2f}" for r in v["runs"]] + [""] * (width - len(v["runs"]))
        lines.append(f"| {model} | " + " | ".join(runs) +
                     f" | {100 * v['mean']:.2f} | {100 * (v['max'] - v['min']):.2f} | {100 * v['covid_recall_mean']:.1f} |")
    return "\n".join(lines)
