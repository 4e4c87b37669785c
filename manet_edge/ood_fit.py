"""Fit the out-of-distribution score of an exported classifier and store it in its model card.

Features come from the deployed files themselves (the exported segmenter and the classifier's
``features`` output, through ONNX Runtime and the runtime's own pre-processing), so what is fitted
is what ``infer`` computes. Needs scikit-learn (``manet-edge[train]``) for the covariance.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from manet_edge import CLASSES
from manet_edge.errors import BadInputError, ModelError


@dataclass
class Extracted:
    rels: list[str]
    logits: np.ndarray  # (N, K)
    pooled: np.ndarray  # (N, C)
    flags: list[tuple[str, ...]]
    probabilities: np.ndarray  # (N, K), the card's temperature applied (also for rows the gate rejected)
    missing: list[str]  # files that produced no classification (errors)


def extract(seg_path: Path, cls_path: Path, folder: Path, rels: Sequence[str] | None = None, *,
            gate: bool = False, streams: int = 2, batch: int = 8) -> Extracted:
    """Run the deployed pipeline (ONNX Runtime) over ``rels`` under ``folder`` (all files if ``None``)
    and return the logits and pooled features of every classified file."""
    from manet_edge.heatmap import FEATURES_OUTPUT, pooled
    from manet_edge.pipeline import InputFile, Pipeline, PipelineConfig, softmax, walk_folder
    from manet_edge.runtime import create_runner

    files = walk_folder(folder) if rels is None else [InputFile(Path(folder) / r, r) for r in rels]
    seg = create_runner(seg_path, "onnxruntime", name="segmenter", threads=1, spin=False)
    cls = create_runner(cls_path, "onnxruntime", name="classifier", threads=1, spin=False)
    got: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def collect(item, post) -> None:
        if item.logits is not None and item.features is not None:
            got[item.src.rel] = (item.logits.copy(), pooled(item.features[None])[0])

    pipe = Pipeline(seg, cls, PipelineConfig(batch=batch, streams=streams, heatmaps=False, checks=gate))
    with pipe:
        if FEATURES_OUTPUT not in cls.output_shapes:
            raise ModelError(f"{cls_path}: no '{FEATURES_OUTPUT}' output; export it with --heatmap-output")
        pipe.gate.collect = True
        temperature = cls.card.temperature
        results = pipe.run(files, artifacts=collect)
    order = [r.file for r in results if r.file in got]
    if not order:
        raise BadInputError(f"no file under {folder} was classified")
    by = {r.file: r for r in results}
    return Extracted(order, np.stack([got[r][0] for r in order]), np.stack([got[r][1] for r in order]),
                     [by[r].flags for r in order], softmax(np.stack([got[r][0] for r in order]), temperature),
                     [r.file for r in results if r.file not in got])


def read_split(path: Path) -> dict[str, list[str]]:
    data = json.loads(Path(path).read_text())
    for key in ("train", "val"):
        if not isinstance(data.get(key), list):
            raise BadInputError(f"split file has no '{key}' list", path)
    return data


def label_of(rel: str) -> int:
    parts = Path(rel).parts
    for p in parts:
        if p in CLASSES:
            return CLASSES.index(p)
    raise BadInputError(f"cannot tell the class of {rel} (expected cls/<class>/...)")


def generated_ood(seg_path: Path, cls_path: Path, films_root: Path, film_rels: Sequence[str], *, per_kind: int,
                  seed: int, work: Path, gate: bool = False) -> tuple[Extracted, dict[str, str]]:
    """Generated non-radiographs and transformed films (from ``film_rels``), through the pipeline."""
    from manet_edge.io import load_image
    from manet_edge.ood_inputs import write_set

    films = []
    for rel in film_rels[: max(per_kind, 1)]:
        img = load_image(Path(films_root) / rel)
        films.append(np.clip((img - img.min()) / (np.ptp(img) or 1) * 255, 0, 255).astype(np.uint8))
    kinds = write_set(work, films, per_kind=per_kind, seed=seed)
    return extract(seg_path, cls_path, work, gate=gate), kinds


def fit_into_card(cls_path: Path, seg_path: Path, data_root: Path, splits: Path, *, per_kind: int = 40,
                  seed: int = 1000, echo: Callable[[str], None] = print, exclude: Sequence[str] = ()) -> str:
    """Fit both scores on the training split, choose on validation, write ``extra.ood`` into the card
    of ``cls_path`` (atomically). ``exclude``: source prefixes (e.g. ``cls/covid/ieee_``) left out,
    as a leave-one-source-out run was trained. Returns a one-line report."""
    import dataclasses

    import onnx

    from manet_edge.export.onnx import save_onnx, set_card
    from manet_edge.metadata import read_onnx_card
    from manet_edge.ood import CARD_KEY, Gaussian, energy, roc_auc, thresholds, to_card

    split = read_split(splits)
    keep = [r for r in split["train"] if not any(r.startswith(e) for e in exclude)]
    val = [r for r in split["val"] if not any(r.startswith(e) for e in exclude)]
    card = read_onnx_card(str(cls_path))
    echo(f"  features of {len(keep)} training and {len(val)} validation films ...")
    tr = extract(seg_path, cls_path, data_root, keep)
    va = extract(seg_path, cls_path, data_root, val)
    with tempfile.TemporaryDirectory(prefix="manet-ood-") as tmp:
        echo(f"  {per_kind} generated inputs of each kind (from validation films) ...")
        gen, _ = generated_ood(seg_path, cls_path, data_root, val, per_kind=per_kind, seed=seed, work=Path(tmp))
    labels = np.array([label_of(r) for r in tr.rels])
    gauss = Gaussian.fit(tr.pooled, labels)
    t = card.temperature
    scores = {"mahalanobis": (gauss.distance(tr.pooled), gauss.distance(va.pooled), gauss.distance(gen.pooled)),
              "energy": (energy(tr.logits, t), energy(va.logits, t), energy(gen.logits, t))}
    aucs = {m: roc_auc(v[1], v[2]) for m, v in scores.items()}
    method = max(aucs, key=lambda m: aucs[m])
    s_tr, s_va, s_gen = scores[method]
    thr, reject = thresholds(s_va, np.concatenate([s_tr, s_va]))
    report = {"train_films": len(tr.rels), "val_films": len(va.rels), "generated": len(gen.rels),
              "per_kind": per_kind, "seed": seed, "val_auc": {m: round(a, 4) for m, a in aucs.items()},
              "val_tpr": float(np.mean(s_va <= thr)), "generated_flagged": float(np.mean(s_gen > thr)),
              "generated_rejected": float(np.mean(s_gen > reject)), "excluded_sources": list(exclude),
              "splits": str(splits)}
    entry = to_card(method, thr, reject, gauss if method == "mahalanobis" else None, t, report)
    model = onnx.load(str(cls_path))
    new = dataclasses.replace(card, extra={**card.extra, CARD_KEY: entry})
    set_card(model, new)
    save_onnx(model, cls_path)
    return (f"out-of-distribution score: {method} (validation ROC-AUC mahalanobis {aucs['mahalanobis']:.3f}, "
            f"energy {aucs['energy']:.3f}); threshold {thr:.4g} (in-distribution validation pass "
            f"{report['val_tpr']:.3f}), reject above {reject:.4g}; written to {cls_path}")
