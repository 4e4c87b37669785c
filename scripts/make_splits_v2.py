"""Write splits v2 (``splits/cls.json``, ``splits/seg.json``) for the development data, version 2.

    python scripts/make_splits_v2.py [--data ../shared/data] [--seed 0]

One seeded, patient-disjoint 8:1:1 assignment shared by both tasks and stratified by class and
source (:func:`manet_edge.datasets.make_joint_splits`). Refuses to replace existing files unless
``--overwrite``; the version-1 files are in ``splits/v1/``. The bundled sample X-rays
(``manet_edge/assets/samples``) are pinned to the test split.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from manet_edge.datasets import find_cls_items, find_seg_pairs, make_joint_splits, save_splits, select


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("splits"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    cls_items, seg_items = find_cls_items(args.data), find_seg_pairs(args.data)
    samples = Path(__file__).resolve().parents[1] / "manet_edge/assets/samples"
    pinned = tuple(sorted(p.name for p in samples.glob("*.png")))  # the bundled samples stay test images
    cls_splits, seg_splits = make_joint_splits(cls_items, seg_items, seed=args.seed, pin_test=pinned)
    for task, splits, items in (("cls", cls_splits, cls_items), ("seg", seg_splits, seg_items)):
        path = args.out / f"{task}.json"
        if path.exists() and not args.overwrite:
            raise SystemExit(f"{path} exists; pass --overwrite to replace it")
        save_splits(splits, path, root=args.data, task=task, seed=args.seed, version=2)
        for split in ("train", "val", "test"):
            counts = Counter(f"{it.label}/{it.source}" for it in select(items, splits[split]))
            print(f"{task} {split} {len(splits[split])}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
