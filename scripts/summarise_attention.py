"""Summarise plain vs MA vs CBAM (issue 15 item 6) from whatever runs exist.

    python scripts/summarise_attention.py [--data ../shared/data] [--size 128]

Evaluates every ``runs/cls_v2/{r18,r18ma,r18cbam}_robust_<size>_s<seed>/best.pt`` on the v2 test
split (accuracy, COVID-19 recall, accuracy per source tag with >= 20 test images) and collects the
held-out recall of each leave-one-source-out fold (``benchmarks/results/loso/loso.json`` for
resnet18-ma, ``benchmarks/results/attention_v2/loso_*/loso.json`` for the others). Writes
``benchmarks/results/attention_v2/README.md`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from manet_edge.cpu import describe

MODELS = {"resnet18": "r18", "resnet18-ma": "r18ma", "resnet18-cbam": "r18cbam"}
FOLDS = ("normal:cxrdb", "tb:shenzhen+montgomery", "covid:ieee")


def spread(values: list[float]) -> str:
    if not values:
        return "not run"
    v = np.array(values)
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f} (1 run)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--splits", type=Path, default=Path("splits/cls.json"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/attention_v2"))
    args = ap.parse_args()
    from manet_edge.train.evaluate import eval_classifier

    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"machine": describe(), "models": {}}
    for model, tag in MODELS.items():
        runs = sorted(Path("runs/cls_v2").glob(f"{tag}_robust_{args.size}_s*/best.pt"))
        reports = [eval_classifier(c, args.data, args.splits, "test") for c in runs]
        per = []
        for r in reports:
            sources = {k: v["accuracy"] for k, v in r["per_source"].items() if k.startswith("*/") is False and v["n"] >= 20}
            per.append({"seed": r["seed"], "accuracy": r["accuracy"], "covid_recall": r["per_class"]["covid"]["recall"],
                        "macro_auc": float(np.mean(list(r["roc_auc"].values()))), "ece": r["calibration"]["ece_calibrated"],
                        "sources": sources, "checkpoint": str(r["checkpoint"])})
        held: dict[str, float] = {}
        files = [Path("benchmarks/results/loso/loso.json")] if model == "resnet18-ma" else \
            sorted(args.out.glob(f"loso_{model}_*/loso.json"))
        for f in files:
            for row in json.loads(f.read_text())["rows"]:
                if row["recipe"] == "robust" and f"_{model}_" in row["tag"]:
                    held[row["fold"]] = row["heldout_recall"]
        summary["models"][model] = {"test": per, "heldout": held}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    m = summary["machine"]
    lines = ["# Plain vs mask attention vs CBAM on generalisation (resnet18, CPU scale)", "",
             "Commands: `bash scripts/compare_attention_v2.sh` (training and the leave-one-source-out folds), then "
             "`python scripts/summarise_attention.py` (this file).", "",
             f"Machine: {m['cpu']} ({', '.join(m['isa'])}), native bf16 {'yes' if m['native_bf16'] else 'no'}. "
             "Recipe: the chosen one (`--normalisation lung_equalize --augment robust`), 128 px, 8 epochs, Adam 1e-3, "
             "batch 32, class-balanced loss; segmenter `runs/defaults_v2/segmenter.onnx`.", "",
             "## v2 test split (176 images), mean ± sample standard deviation over seeds", "",
             "| model | seeds | accuracy | COVID-19 recall | macro ROC-AUC | ECE (calibrated) | worst source (≥ 20 images) |",
             "|---|---|---|---|---|---|---|"]
    for model, v in summary["models"].items():
        t = v["test"]
        worst = [min(r["sources"].items(), key=lambda kv: kv[1]) for r in t if r["sources"]]
        w = f"{worst[0][0]} {np.mean([x[1] for x in worst]):.3f}" if worst else ""
        lines.append(f"| {model} | {len(t)} | {spread([r['accuracy'] for r in t])} | {spread([r['covid_recall'] for r in t])} | "
                     f"{spread([r['macro_auc'] for r in t])} | {spread([r['ece'] for r in t])} | {w} |")
    lines += ["", "Per run: " + "; ".join(f"{model} s{r['seed']} {r['accuracy']:.3f}" for model, v in summary["models"].items()
                                       for r in v["test"]), "",
              "## Held-out sources (seed 0, trained without the source)", "",
              "| model | " + " | ".join(f"`{f}`" for f in FOLDS) + " | mean over the folds run |", "|---|---|---|---|---|"]
    for model, v in summary["models"].items():
        h = v["heldout"]
        cells = [f"{h[f]:.3f}" if f in h else "not run" for f in FOLDS]
        mean = f"{np.mean(list(h.values())):.3f} ({len(h)} folds)" if h else ""
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {mean} |")
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
