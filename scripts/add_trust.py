"""Give an exported classifier the ``features`` output and a fitted out-of-distribution score,
without exporting it again from torch (every weight and node stays; one Identity output is added).

    python scripts/add_trust.py CLASSIFIER.onnx SEGMENTER.onnx --data ../shared/data --splits splits/cls.json

Used for the bundled classifier (docs/trust.md): its logits on the bundled samples are checked to
be bit-identical before and after, and the golden outputs still hold.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import onnx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("classifier", type=Path)
    ap.add_argument("segmenter", type=Path)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--splits", type=Path, default=Path("splits/cls.json"))
    ap.add_argument("--exclude", nargs="*", default=[], help="Source prefixes left out (leave-one-source-out runs).")
    ap.add_argument("--per-kind", type=int, default=40)
    args = ap.parse_args()

    from manet_edge.export.onnx import check_onnx, save_onnx, set_card
    from manet_edge.export.verify import ort_session
    from manet_edge.heatmap import CARD_KEY, add_feature_output
    from manet_edge.metadata import read_onnx_card
    from manet_edge.ood_fit import fit_into_card

    model = onnx.load(str(args.classifier))
    card = read_onnx_card(str(args.classifier))
    rng = np.random.default_rng(0)
    s = card.input_size
    feed = {"image": rng.uniform(-1, 1, (4, card.in_channels, s, s)).astype(np.float32),
            "mask": (rng.uniform(0, 1, (4, 1, s, s)) > 0.4).astype(np.float32)}
    before = ort_session(model).run(["logits"], feed)[0]
    head = add_feature_output(model)
    set_card(model, dataclasses.replace(card, extra={**card.extra, CARD_KEY: head.to_card()}))
    check_onnx(model, str(args.classifier))
    after = ort_session(model).run(["logits"], feed)[0]
    print(f"features output added at {head.features!r}; logits max |diff| {np.abs(after - before).max():.3g}")
    if not np.array_equal(before, after):
        raise SystemExit("the logits moved: not writing")
    save_onnx(model, args.classifier)
    print(fit_into_card(args.classifier, args.segmenter, args.data, args.splits, per_kind=args.per_kind,
                        exclude=args.exclude))


if __name__ == "__main__":
    main()
