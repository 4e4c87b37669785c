"""Out-of-distribution score of the classifier's pooled features, fitted on the training split.

Two scores, both "higher = less like the training films":

* ``mahalanobis``: ``min_k (z - mu_k)^T S^-1 (z - mu_k)`` over the class means ``mu_k`` of the
  pooled features ``z`` (what the linear head reads), with one covariance ``S`` shared by the
  classes (Lee et al., NeurIPS 2018). ``S`` is scikit-learn's Ledoit-Wolf estimate of the
  within-class scatter, kept in the card in a probabilistic-PCA form: its top ``rank``
  eigenvectors and eigenvalues and one value for the remaining directions (their mean), so the
  card stays small (512-dimensional features: 64 vectors, about 180 kB of text).
* ``energy``: ``-T log sum_k exp(logit_k / T)`` (Liu et al., NeurIPS 2020), with the card's
  temperature; needs no fitted statistics.

:func:`fit` computes both on the training split, compares their ROC-AUC on the validation split
against generated non-radiographs and transformed films (:mod:`manet_edge.ood_inputs`), keeps the
better one, and sets two thresholds on the validation scores of the in-distribution films:
``threshold`` at the 95th percentile (95 % of them pass: flag ``out_of_distribution``, still
classified) and ``reject`` at twice the distance from the median to the highest in-distribution
training or validation score (flag ``not_chest_xray``, status=error). The card's
``extra.ood`` holds the result (:func:`to_card`); :class:`OodScorer` applies it (numpy only).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

CARD_KEY = "ood"
METHODS = ("mahalanobis", "energy")
TPR = 0.95
RANK = 64


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, np.float32).tobytes()).decode("ascii")


def _unb64(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), np.float32).reshape(shape)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """-T logsumexp(logits / T) per row (higher: further from the training data)."""
    z = np.asarray(logits, np.float64) / float(temperature)
    m = z.max(axis=-1, keepdims=True)
    return -float(temperature) * (m[..., 0] + np.log(np.exp(z - m).sum(axis=-1)))


@dataclass(frozen=True)
class Gaussian:
    """Class means and a shared covariance in PPCA form: ``S = V diag(lam) V^T + rest (I - V V^T)``."""

    means: np.ndarray  # (K, D)
    vectors: np.ndarray  # (D, r)
    values: np.ndarray  # (r,)
    rest: float

    def distance(self, z: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance to the nearest class mean, per row of ``z`` (N, D)."""
        z = np.asarray(z, np.float64)
        best = None
        for mu in self.means.astype(np.float64):
            d = z - mu
            proj = d @ self.vectors
            inside = (proj ** 2 / self.values).sum(axis=1)
            outside = np.maximum((d ** 2).sum(axis=1) - (proj ** 2).sum(axis=1), 0.0) / self.rest
            dist = inside + outside
            best = dist if best is None else np.minimum(best, dist)
        return best

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, rank: int = RANK) -> "Gaussian":
        from sklearn.covariance import LedoitWolf

        features = np.asarray(features, np.float64)
        labels = np.asarray(labels)
        classes = np.unique(labels)
        means = np.stack([features[labels == k].mean(axis=0) for k in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        cov = LedoitWolf(assume_centered=True).fit(centred).covariance_
        vals, vecs = np.linalg.eigh(cov)
        order = np.argsort(vals)[::-1]
        vals, vecs = vals[order], vecs[:, order]
        r = min(rank, len(vals) - 1)
        rest = float(vals[r:].mean())
        return cls(means.astype(np.float32), vecs[:, :r].astype(np.float32), vals[:r].astype(np.float32),
                   max(rest, 1e-12))


@dataclass(frozen=True)
class OodScorer:
    """The card's ``extra.ood``: computes the score of a batch and the flags it raises."""

    method: str
    threshold: float
    reject: float
    temperature: float = 1.0
    gaussian: Gaussian | None = None

    def score(self, logits: np.ndarray, pooled: np.ndarray | None) -> np.ndarray:
        if self.method == "energy":
            return energy(logits, self.temperature)
        if pooled is None:
            raise ValueError("the Mahalanobis score needs the classifier's 'features' output")
        return self.gaussian.distance(pooled)

    def flags(self, score: float) -> list[str]:
        if not np.isfinite(score) or score > self.reject:
            return ["not_chest_xray"]
        return ["out_of_distribution"] if score > self.threshold else []

    @classmethod
    def from_card(cls, entry: dict[str, Any] | None, temperature: float = 1.0) -> "OodScorer | None":
        if not entry or entry.get("method") not in METHODS:
            return None
        g = None
        if entry["method"] == "mahalanobis":
            k, d, r = int(entry["classes"]), int(entry["dim"]), int(entry["rank"])
            g = Gaussian(_unb64(entry["means"], (k, d)), _unb64(entry["vectors"], (d, r)),
                         _unb64(entry["values"], (r,)), float(entry["rest"]))
        return cls(entry["method"], float(entry["threshold"]), float(entry["reject"]),
                   float(entry.get("temperature", temperature)), g)

    @property
    def needs_features(self) -> bool:
        return self.method == "mahalanobis"


def to_card(method: str, threshold: float, reject: float, gaussian: Gaussian | None, temperature: float,
            report: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"method": method, "threshold": float(threshold), "reject": float(reject),
                             "temperature": float(temperature), "tpr": TPR, "fit": report}
    if method == "mahalanobis":
        k, d = gaussian.means.shape
        entry.update(classes=k, dim=d, rank=int(gaussian.values.shape[0]), rest=gaussian.rest,
                     means=_b64(gaussian.means), vectors=_b64(gaussian.vectors), values=_b64(gaussian.values))
    return entry


def roc_auc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(score of an OOD input > score of an in-distribution one), ties counted half (Mann-Whitney)."""
    a = np.asarray(in_scores, np.float64)
    b = np.asarray(out_scores, np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan")
    allv = np.concatenate([a, b])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    rb = ranks[len(a):].sum()
    return float((rb - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))


def thresholds(val_in: np.ndarray, all_in: np.ndarray, tpr: float = TPR) -> tuple[float, float]:
    """(flag threshold: the ``tpr`` quantile of the validation in-distribution scores, reject
    threshold: median + 2 x (max - median) of every in-distribution fitting score)."""
    thr = float(np.quantile(val_in, tpr))
    med = float(np.median(all_in))
    return thr, med + 2.0 * (float(np.max(all_in)) - med)
