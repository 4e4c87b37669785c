"""Compare int8 recipes for the bundled classifier on the validation split (issue 5).

Run from the repository root after scripts/build_defaults.py (needs runs/defaults/ and ../shared/data):

    python scripts/int8_calibration.py

Quantizes runs/defaults/classifier.onnx with the current recipe (stem, head, residual adds and
global pooling in float) and with everything but the MA parts quantized (manet-edge 0.1's recipe),
calibrated with onnxruntime's MinMax and Percentile (64 and 256 training-split images) and
Entropy (64), and reports accuracy, COVID-19 recall, agreement and probability distance from fp32
on the validation split -> benchmarks/results/defaults/int8_calibration.md. The test split is
not used here.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from manet_edge.datasets import find_cls_items, load_splits, select
from manet_edge.export.quantize import compare_precisions, make_reader, quantize_int8
from manet_edge.metadata import read_onnx_card


def main() -> None:
    data, defaults = Path("../shared/data"), Path("runs/defaults")
    seg, fp32 = defaults / "segmenter.onnx", defaults / "classifier.onnx"
    size = read_onnx_card(str(fp32)).input_size
    items = find_cls_items(data)
    splits = load_splits("splits/cls.json")
    train = select(items, splits["train"])
    random.Random(0).shuffle(train)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {}
        for n in (64, 256):  # the first n of the shuffled training split, as build_defaults.py takes 64
            dirs[n] = Path(tmp) / f"calib{n}"
            dirs[n].mkdir()
            for it in train[:n]:
                (dirs[n] / Path(it.path).name).symlink_to((data / it.path).resolve())
        variants = {}
        runs = [(m, n, True) for m, n in (("MinMax", 64), ("MinMax", 256), ("Percentile", 64), ("Percentile", 256),
                                           ("Entropy", 64))] + [("MinMax", 64, False), ("Percentile", 64, False)]
        for method, n, float_sensitive in runs:
            path = Path(tmp) / f"int8_{method}_{n}_{float_sensitive}.onnx"
            quantize_int8(fp32, path, make_reader(dirs[n], seg, size, limit=n), calibrate_method=method,
                          float_sensitive=float_sensitive)
            recipe = "" if float_sensitive else " (0.1 recipe: stem, head, adds, pooling int8 too)"
            variants[f"int8 {method}, {n} images{recipe}"] = str(path)
        val = [(str(data / it.path), it.label) for it in select(items, splits["val"])]
        report = compare_precisions({"fp32": str(fp32), **variants}, seg, val)
        text = ("# int8 recipes and calibration methods, bundled classifier, validation split\n\n"
                "Command: `python scripts/int8_calibration.py`. ONNX Runtime CPU, 1 thread, batch 1; calibration images "
                "from the training split (seeded shuffle, the same first 64 as `scripts/build_defaults.py`).\n\n"
                + report.markdown() + "\n")
    out = Path("benchmarks/results/defaults/int8_calibration.md")
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
