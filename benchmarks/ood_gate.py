"""Measure the input-domain gate (docs/trust.md): ROC-AUC of the out-of-distribution score between
the test split and generated / transformed / held-out-source inputs, what each flag catches, and
accuracy vs coverage on the test split.

    PYTHONPATH=. python benchmarks/ood_gate.py --models DIR [--loso-checkpoint RUN/best.pt --loso-source cls/covid/ieee_]

Writes ``benchmarks/results/ood/ood.json`` and ``README.md`` (with this command and the CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def _acc(ex, labels) -> float:
    return float(np.mean(ex.probabilities.argmax(1) == labels)) if len(labels) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--splits", type=Path, default=Path("splits/cls.json"))
    ap.add_argument("--per-kind", type=int, default=40)
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--loso-checkpoint", type=Path)
    ap.add_argument("--loso-source", default="cls/covid/ieee_")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ood"))
    args = ap.parse_args()

    from manet_edge.checks import NOT_CHEST_XRAY_FLAGS
    from manet_edge.cpu import describe
    from manet_edge.metadata import read_onnx_card
    from manet_edge.ood import CARD_KEY, OodScorer, energy, roc_auc
    from manet_edge.ood_fit import extract, generated_ood, label_of, read_split

    seg, cls = args.models / "segmenter.onnx", args.models / "classifier.onnx"
    card = read_onnx_card(str(cls))
    scorer = OodScorer.from_card(card.extra.get(CARD_KEY), card.temperature)
    if scorer is None:
        raise SystemExit(f"{cls}: no fitted out-of-distribution score in the card")
    test = read_split(args.splits)["test"]
    te = extract(seg, cls, args.data, test, gate=True)
    s_te = scorer.score(te.logits, te.pooled)
    labels = np.array([label_of(r) for r in te.rels])
    with tempfile.TemporaryDirectory() as tmp:
        gen, kinds = generated_ood(seg, cls, args.data, test, per_kind=args.per_kind, seed=args.seed, work=Path(tmp),
                                   gate=True)
    s_gen = scorer.score(gen.logits, gen.pooled)
    per_kind = {}
    gen_kind = np.array([kinds[r] for r in gen.rels])
    n_kind = {k: sum(1 for v in kinds.values() if v == k) for k in sorted(set(kinds.values()))}
    for k in n_kind:
        sel = gen_kind == k
        flags = [gen.flags[i] for i in np.nonzero(sel)[0]]
        no_row = n_kind[k] - int(sel.sum())  # errors before the classifier (empty mask, ...)
        per_kind[k] = {
            "generated": n_kind[k], "classified": int(sel.sum()), "not_classified": no_row,
            "auc_score": round(roc_auc(s_te, s_gen[sel]), 4) if sel.any() else None,
            "auc_energy": round(roc_auc(energy(te.logits, card.temperature), energy(gen.logits[sel], card.temperature)), 4) if sel.any() else None,
            "flagged_any": round((sum(bool(f) for f in flags) + no_row) / n_kind[k], 4),
            "rejected_or_error": round((sum(any(x in NOT_CHEST_XRAY_FLAGS for x in f) for f in flags) + no_row) / n_kind[k], 4),
            "flag_counts": {f: sum(f in fl for fl in flags) for f in sorted({x for fl in flags for x in fl})},
        }
    # accuracy vs coverage on the test split
    flagged = np.array([bool(f) for f in te.flags])
    cov = []
    for q in (1.0, 0.95, 0.9, 0.8, 0.7, 0.5):
        thr = np.quantile(s_te, q)
        keep = s_te <= thr
        cov.append({"coverage": round(float(keep.mean()), 4), "accuracy": round(float(np.mean(te.probabilities[keep].argmax(1) == labels[keep])), 4)})
    report = {
        "cpu": describe(), "command": " ".join(["PYTHONPATH=. python", *sys.argv]),
        "method": scorer.method, "threshold": scorer.threshold, "reject": scorer.reject,
        "fit": card.extra[CARD_KEY].get("fit"),
        "test": {"films": len(test), "classified": len(te.rels), "accuracy": round(_acc(te, labels), 4),
                 "flagged": round(float(flagged.mean()), 4),
                 "accuracy_unflagged": round(float(np.mean(te.probabilities[~flagged].argmax(1) == labels[~flagged])), 4),
                 "score_flagged": round(float(np.mean(s_te > scorer.threshold)), 4),
                 "flag_counts": {f: sum(f in fl for fl in te.flags) for f in sorted({x for fl in te.flags for x in fl})}},
        "generated": per_kind, "coverage": cov,
        "generated_all_auc": round(roc_auc(s_te, s_gen), 4),
    }
    if args.loso_checkpoint:
        report["held_out"] = held_out(args, seg, test)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ood.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


def held_out(args, seg: Path, test: list[str]) -> dict:
    """Energy score (needs no fitted statistics) of a leave-one-source-out checkpoint: its test split
    without the held-out source against every film of that source."""
    from manet_edge.export.onnx import ExportOptions, export_onnx, source_from_checkpoint
    from manet_edge.ood import energy, roc_auc
    from manet_edge.ood_fit import extract

    with tempfile.TemporaryDirectory() as tmp:
        cls = Path(tmp) / "classifier.onnx"
        src = source_from_checkpoint(args.loso_checkpoint)
        export_onnx(src, cls, ExportOptions())
        ins = [r for r in test if not r.startswith(args.loso_source)]
        folder, prefix = args.loso_source.rsplit("/", 1)
        outs = sorted(f"{folder}/{p.name}" for p in (args.data / folder).iterdir() if p.name.startswith(prefix))
        a = extract(seg, cls, args.data, ins)
        b = extract(seg, cls, args.data, outs)
        t = src.temperature
        return {"checkpoint": str(args.loso_checkpoint), "model": src.model_name, "held_out_source": args.loso_source,
                "in_films": len(a.rels), "held_out_films": len(b.rels),
                "auc_energy": round(roc_auc(energy(a.logits, t), energy(b.logits, t)), 4)}


if __name__ == "__main__":
    main()
