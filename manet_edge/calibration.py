"""Temperature scaling (Guo et al., ICML 2017) and the expected calibration error; numpy + scipy only.

A classifier's softmax is calibrated by one scalar ``T`` (``softmax(logits / T)``), fitted on the
validation split by minimising the negative log-likelihood. ``T`` leaves every prediction's arg-max
unchanged; it only makes the probabilities mean what they say. The exporter stores ``T`` in the
model card (``temperature``) and every runtime applies it (:func:`manet_edge.stages.probabilities`).
"""

from __future__ import annotations

import numpy as np

T_BOUNDS = (0.05, 20.0)


def softmax_t(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    p = softmax_t(logits, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in :data:`T_BOUNDS` minimising the NLL of ``labels`` (bounded 1-D search in log T)."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, int)
    if len(labels) == 0:
        return 1.0
    res = minimize_scalar(lambda lt: nll(logits, labels, float(np.exp(lt))), bounds=tuple(np.log(T_BOUNDS)),
                          method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Top-label reliability: per equal-width confidence bin, its count, mean confidence and accuracy."""
    probs, labels = np.asarray(probs), np.asarray(labels, int)
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    out = []
    for i in range(n_bins):
        sel = (conf > edges[i]) & (conf <= edges[i + 1]) if i else (conf >= 0) & (conf <= edges[1])
        n = int(sel.sum())
        out.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": n,
                    "confidence": float(conf[sel].mean()) if n else float("nan"),
                    "accuracy": float((pred[sel] == labels[sel]).mean()) if n else float("nan")})
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over :func:`reliability_bins`."""
    bins = reliability_bins(probs, labels, n_bins)
    total = sum(b["n"] for b in bins)
    if total == 0:
        return float("nan")
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"]) / total)
