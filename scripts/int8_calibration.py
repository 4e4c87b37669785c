"""Compare int8 calibration methods for the bundled classifier on the validation split (issue 5).

Run from the repository root after scripts/build_defaults.py (needs runs/defaults/ and ../shared/data):

    python scripts/int8_calibration.py

Quantizes runs/defaults/classifier.onnx with onnxruntime's MinMax and Percentile (64 and 256
training-split calibration images) and Entropy (64), and reports accuracy, COVID-19 recall and
agreement with fp32 on the validation split -> benchmarks/results/defaults/int8_calibration.md.
The test split is not used here.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from manet_edge.datasets import find_cls_items, load_splits, select
from manet_edge.export.quantize import compare_precisions, make_reader, quantize_int8


def main() -> None:
    data, defaults = Path("../shared/data"), Path("runs/defaults")
    seg, fp32 = defaults / "segmenter.onnx", defaults / "classifier.onnx"
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
        for method, n in (("MinMax", 64), ("MinMax", 256), ("Percentile", 64), ("Percentile", 256), ("Entropy", 64)):
            path = Path(tmp) / f"int8_{method}_{n}.onnx"
            quantize_int8(fp32, path, make_reader(dirs[n], seg, 128, limit=n), calibrate_method=method)
            variants[f"int8 {method}, {n} images"] = str(path)
        val = [(str(data / it.path), it.label) for it in select(items, splits["val"])]
        report = compare_precisions({"fp32": str(fp32), **variants}, seg, val)
        text = ("# int8 calibration methods, bundled classifier, validation split\n\n"
                "Command: `python scripts/int8_calibration.py`. ONNX Runtime CPU, 1 thread, batch 1; calibration images "
                "from the training split (seeded shuffle, the same first 64 as `scripts/build_defaults.py`).\n\n"
                + report.markdown() + "\n")
    out = Path("benchmarks/results/defaults/int8_calibration.md")
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
