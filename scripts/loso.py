"""Leave-one-source-out: the project's own measure of generalisation across hospitals and collections.

    python scripts/loso.py --segmenter SEG.onnx [--recipes baseline robust] [--folds ...] \
        [--model resnet18-ma --size 128 --epochs 8] [--data ../shared/data]

For each fold (one source of one class) and each training recipe, ``manet-edge train cls`` runs
with that source left out of training *and* validation (``--exclude-sources``), then ``manet-edge
eval cls --sources`` tests the best checkpoint on every image of the held-out source (all splits:
none of them reached training). A held-out source holds one class, so its accuracy is that
class's recall on it; the table also says what the films were called instead. Runs whose
``best.pt`` exists are evaluated, not retrained (rerun after an interruption to continue).

Results: ``benchmarks/results/loso/README.md`` and ``loso.json`` (every report, with commands).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from manet_edge.cpu import describe

FOLDS = {
    # held-out source      what it tests
    "normal:cxrdb": "adult normal films (every other normal is pediatric)",
    "tb:shenzhen+montgomery": "TB from two hospitals, trained on TBX11K TB only",
    "covid:ieee": "COVID-19 from the ieee8023 collection, trained on the cxrdb COVID-19 films only",
    "covid:cxrdb": "COVID-19 from the COVID-19 Radiography Database copy, trained on ieee8023 COVID-19 only",
}
RECIPES = {
    "baseline": ["--normalisation", "segmented_minmax_pm1", "--augment", "paper"],
    "robust": ["--normalisation", "lung_equalize", "--augment", "robust"],
    "robust-aug": ["--normalisation", "segmented_minmax_pm1", "--augment", "robust"],
    "equalize": ["--normalisation", "lung_equalize", "--augment", "paper"],
}


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--segmenter", type=Path, required=True)
    ap.add_argument("--splits", type=Path, default=Path("splits/cls.json"))
    ap.add_argument("--folds", nargs="+", default=["normal:cxrdb", "tb:shenzhen+montgomery", "covid:ieee"], choices=sorted(FOLDS))
    ap.add_argument("--recipes", nargs="+", default=["baseline", "robust"], choices=sorted(RECIPES))
    ap.add_argument("--model", default="resnet18-ma")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--train-args", default="--optimizer adam --lr 1e-3 --balance loss --batch-size 32",
                    help="Further `train cls` options, shared by every run.")
    ap.add_argument("--runs", type=Path, default=Path("runs/loso"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/loso"))
    args = ap.parse_args()
    cli = [sys.executable, "-m", "cli"]
    rows = []
    for fold in args.folds:
        for recipe in args.recipes:
            tag = f"{fold.replace(':', '-').replace('+', '-')}_{recipe}_{args.model}_{args.size}_s{args.seed}"
            run_dir = args.runs / tag
            train = cli + ["train", "cls", "--data", str(args.data), "--segmenter", str(args.segmenter), "--model", args.model,
                           "--out", str(run_dir), "--splits", str(args.splits), "--size", str(args.size),
                           "--epochs", str(args.epochs), "--seed", str(args.seed), "--workers", str(args.workers),
                           "--exclude-sources", fold, *RECIPES[recipe], *args.train_args.split()]
            if not (run_dir / "best.pt").exists():
                run(train)
            held = run_dir / "heldout.json"
            run(cli + ["eval", "cls", str(run_dir / "best.pt"), "--data", str(args.data), "--splits", str(args.splits),
                       "--sources", fold, "--json", str(held)])
            rep = json.loads(held.read_text())["reports"][0]
            hist = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
            best_epoch = max(hist, key=lambda r: r["val_acc"])
            label = fold.split(":")[0]
            rows.append({"fold": fold, "recipe": recipe, "tag": tag, "n": rep["n"],
                         "heldout_recall": rep["per_class"][label]["recall"],
                         "predicted": {c: v for c, v in rep["per_source"][f"*/{fold.split(':')[1].split('+')[0]}"]["predicted"].items()}
                         if "+" not in fold else _sum_predicted(rep, fold),
                         "val_acc": best_epoch["val_acc"], "val_covid_recall": best_epoch.get("val_covid_recall"),
                         "best_epoch": best_epoch["epoch"] + 1, "seconds_per_epoch": sum(h["seconds"] for h in hist) / len(hist),
                         "train_command": "manet-edge " + " ".join(train[3:]), "report": rep})
    write(rows, args)


def _sum_predicted(rep: dict, fold: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for src in fold.split(":")[1].split("+"):
        for c, v in rep["per_source"].get(f"*/{src}", {}).get("predicted", {}).items():
            out[c] = out.get(c, 0) + v
    return out


def write(rows: list[dict], args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    machine = describe()
    cmd = "python scripts/loso.py " + " ".join(sys.argv[1:])
    lines = ["# Leave-one-source-out", "", f"Command: `{cmd}`", "",
             f"Machine: {machine['cpu']} ({', '.join(machine['isa'])}), 2 cores; bf16 autocast where native. "
             f"Model {args.model} at {args.size} px, {args.epochs} epochs, seed {args.seed}; other `train cls` options: "
             f"`{args.train_args}`.", "",
             "Each run leaves the named source out of training and validation, then tests on every image of it. "
             "Held-out recall = the share of the held-out films called their true class.", "",
             "| held-out source | what it tests | recipe | n | held-out recall | called instead | val accuracy (other sources) | s/epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        label = r["fold"].split(":")[0]
        instead = ", ".join(f"{c} {v}" for c, v in sorted(r["predicted"].items(), key=lambda kv: -kv[1]) if c != label and v)
        lines.append(f"| `{r['fold']}` | {FOLDS[r['fold']]} | {r['recipe']} | {r['n']} | **{r['heldout_recall']:.3f}** | "
                     f"{instead or '-'} | {r['val_acc']:.3f} | {r['seconds_per_epoch']:.0f} |")
    by_recipe: dict[str, list[float]] = {}
    for r in rows:
        by_recipe.setdefault(r["recipe"], []).append(r["heldout_recall"])
    lines += ["", "| recipe | mean held-out recall | worst fold |", "|---|---|---|"]
    for k, v in by_recipe.items():
        lines.append(f"| {k} | {sum(v) / len(v):.3f} | {min(v):.3f} |")
    lines += ["", "Recipes: " + "; ".join(f"**{k}** `{' '.join(RECIPES[k])}`" for k in by_recipe), "",
              "Training commands (one per run) are in `loso.json` (`train_command`)."]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    slim = [{k: v for k, v in r.items() if k != "report"} | {"per_source": r["report"]["per_source"],
                                                            "calibration_ece": r["report"]["calibration"]["ece_calibrated"]}
            for r in rows]
    (args.out / "loso.json").write_text(json.dumps({"command": cmd, "machine": machine, "rows": slim}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
