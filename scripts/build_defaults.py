"""Export the bundled default models and measure their reduced-precision variants (issue 5, item 6).

Run from the repository root with the 'train' extra and ../shared/data:

    python scripts/build_defaults.py SEGMENTER CLS_CHECKPOINT [--data ../shared/data]

SEGMENTER is a segmenter checkpoint (.pt, exported here) or an exported segmenter (.onnx, e.g. the
bundled manet_edge/assets/models/segmenter.onnx, used as it is).

1. Exports the checkpoint(s) (fused MA op, opset 18) with --verify, plus fp16 and an int8 QDQ
   classifier calibrated on 64 training-split X-rays (never test images), into runs/defaults/.
2. Compares fp32 / fp16 / int8 on the saved test split (accuracy, COVID recall, agreement with
   fp32, latency ratio) -> benchmarks/results/defaults/precision.{md,json}.
3. Copies the fp32 segmenter.onnx and classifier.onnx into manet_edge/assets/models/.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("seg")
    ap.add_argument("cls")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="runs/defaults")
    ap.add_argument("--calib", type=int, default=64)
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    from manet_edge.datasets import find_cls_items, load_splits, select

    items = find_cls_items(data)
    splits = load_splits("splits/cls.json")
    calib_dir = out / "calib"
    if calib_dir.exists():
        shutil.rmtree(calib_dir)
    calib_dir.mkdir(parents=True)
    train = select(items, splits["train"])
    random.Random(0).shuffle(train)
    for it in train[: args.calib]:
        (calib_dir / Path(it.path).name).symlink_to((data / it.path).resolve())
    seg_onnx = out / "segmenter.onnx"
    if Path(args.seg).suffix.lower() == ".onnx":  # an exported segmenter: used as it is
        out.mkdir(parents=True, exist_ok=True)
        if Path(args.seg).resolve() != seg_onnx.resolve():
            shutil.copyfile(args.seg, seg_onnx)
        export = [sys.executable, "-m", "cli", "export", "--cls-checkpoint", args.cls, "--calib-seg", str(seg_onnx)]
    else:
        export = [sys.executable, "-m", "cli", "export", "--seg-checkpoint", args.seg, "--cls-checkpoint", args.cls]
    export += ["--out", str(out), "--overwrite", "--verify"]
    subprocess.run(export + ["--precision", "int8", "--calib-dir", str(calib_dir)], check=True)
    subprocess.run(export + ["--precision", "fp16"], check=True)
    from manet_edge.export.quantize import compare_precisions

    test = [(str(data / it.path), it.label) for it in select(items, splits["test"])]
    models = {"fp32": out / "classifier.onnx", "fp16": out / "classifier.fp16.onnx", "int8": out / "classifier.int8.onnx"}
    report = compare_precisions({k: str(v) for k, v in models.items() if v.exists()}, str(seg_onnx), test)
    res = Path("benchmarks/results/defaults")
    res.mkdir(parents=True, exist_ok=True)
    sizes = {p.name: round(p.stat().st_size / 2**20, 2) for p in sorted(out.glob("*.onnx"))}
    cmd = "python scripts/build_defaults.py " + " ".join(sys.argv[1:])
    (res / "precision.md").write_text(
        f"# Default classifier: fp32 vs fp16 vs int8 on the test split\n\nCommand: `{cmd}`\n\n"
        f"Segmenter: `{args.seg}`; classifier: `{args.cls}`. ONNX Runtime CPU, 1 thread, batch 1; "
        "latency is the classifier call alone (median).\n\n" + report.markdown() + "\n\nFile sizes (MiB): "
        + ", ".join(f"{k} {v}" for k, v in sizes.items()) + "\n")
    (res / "precision.json").write_text(json.dumps({"command": cmd, "n": report.n, "sizes_mib": sizes,
                                                    "rows": [r.__dict__ for r in report.rows]}, indent=1) + "\n")
    print(report.markdown())
    assets = Path("manet_edge/assets/models")
    assets.mkdir(parents=True, exist_ok=True)
    for name in ("segmenter.onnx", "classifier.onnx"):
        shutil.copyfile(out / name, assets / name)
    print("bundled:", sorted(p.name for p in assets.glob("*.onnx")))


if __name__ == "__main__":
    main()
