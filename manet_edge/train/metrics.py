"""Segmentation and classification metrics (numpy; used by training progress and `eval`)."""

from __future__ import annotations

import numpy as np


def iou_dice(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """IoU and Dice of two bool masks; both empty counts as a perfect match."""
    pred, target = pred.astype(bool), target.astype(bool)
    inter = np.logical_and(pred, target).sum()
    union = np.logical_or(pred, target).sum()
    total = pred.sum() + target.sum()
    if union == 0:
        return 1.0, 1.0
    return float(inter / union), float(2 * inter / total)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def classification_report(cm: np.ndarray, classes: tuple[str, ...]) -> dict:
    """Per-class precision / recall / F1 / support and the support-weighted average (paper Table 4)."""
    tp = np.diag(cm).astype(float)
    support = cm.sum(1).astype(float)
    predicted = cm.sum(0).astype(float)
    prec = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    rec = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    per_class = {
        c: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(support[i])}
        for i, c in enumerate(classes)
    }
    w = support / max(support.sum(), 1)
    weighted = {"precision": float((prec * w).sum()), "recall": float((rec * w).sum()), "f1": float((f1 * w).sum()), "support": int(support.sum())}
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "per_class": per_class,
        "weighted": weighted,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


def roc_auc_ovr(labels: np.ndarray, probs: np.ndarray, classes: tuple[str, ...]) -> dict[str, float]:
    """One-vs-rest ROC-AUC per class (scikit-learn); NaN for a class absent from, or alone in, ``labels``."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, int)
    out = {}
    for i, c in enumerate(classes):
        pos = labels == i
        out[c] = float(roc_auc_score(pos, probs[:, i])) if 0 < pos.sum() < len(labels) else float("nan")
    return out


def proportion_ci(hits: np.ndarray, *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(estimate, low, high)``: a proportion and its percentile-bootstrap CI (scipy.stats.bootstrap)."""
    from scipy.stats import bootstrap

    hits = np.asarray(hits, float)
    if len(hits) == 0:
        return float("nan"), float("nan"), float("nan")
    est = float(hits.mean())
    if len(hits) < 2 or hits.min() == hits.max():  # every resample is the same: the interval is the point
        return est, est, est
    res = bootstrap((hits,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    rng=np.random.default_rng(seed))
    return est, float(res.confidence_interval.low), float(res.confidence_interval.high)


def sensitivity_specificity(labels: np.ndarray, pred: np.ndarray, classes: tuple[str, ...]) -> dict[str, dict[str, list[float]]]:
    """Per class, one-vs-rest sensitivity and specificity as ``[estimate, 95 % low, 95 % high]``."""
    labels, pred = np.asarray(labels, int), np.asarray(pred, int)
    out = {}
    for i, c in enumerate(classes):
        pos = labels == i
        out[c] = {"sensitivity": list(proportion_ci(pred[pos] == i)),
                  "specificity": list(proportion_ci(pred[~pos] != i))}
    return out
