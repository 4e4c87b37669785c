"""The input-domain gate and the heat maps, as the pipeline applies them (docs/trust.md).

:class:`Gate` is built once per run from the classifier runner; the pipeline calls
:meth:`Gate.input_flags` after decoding (DICOM tags), :meth:`Gate.mask_flags` after the mask
clean-up (polarity, orientation) and :meth:`Gate.finish` once the classifier has run
(out-of-distribution score, class-activation map, heat inside the lungs). A flag in
:data:`manet_edge.checks.NOT_CHEST_XRAY_FLAGS` turns the row into an error; every other flag
leaves the prediction in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from manet_edge import checks
from manet_edge.errors import ModelError
from manet_edge.heatmap import FEATURES_OUTPUT


class Gate:
    def __init__(self, cls_runner: Any, *, heatmaps: bool = False, checks_on: bool = True):
        from manet_edge.ood import CARD_KEY, OodScorer

        card = cls_runner.card
        self.has_features = FEATURES_OUTPUT in cls_runner.output_shapes
        self.heatmaps = heatmaps
        self.checks_on = checks_on
        self.collect = False
        """Keep every row's features until its outputs are written (fitting the score: :mod:`manet_edge.ood_fit`)."""
        self.scorer = OodScorer.from_card(card.extra.get(CARD_KEY), card.temperature)
        if self.scorer is not None and self.scorer.needs_features and not self.has_features:
            self.scorer = None  # a card fitted on features, a file without them (e.g. an engine): no score
        self.weight = None
        if heatmaps:
            if not self.has_features:
                raise ModelError(f"{cls_runner.path}: --save-heatmaps needs a classifier with a '{FEATURES_OUTPUT}' "
                                 "output (re-export it with `manet-edge export ... --heatmap-output`)")
            from manet_edge.heatmap import NoHeadError, head_weights

            try:
                self.weight, _ = head_weights(cls_runner.path, card.extra)
            except (NoHeadError, OSError, ValueError) as exc:
                raise ModelError(f"{cls_runner.path}: cannot read the classifier's head for heat maps ({exc})") from exc

    @property
    def keep_features(self) -> bool:
        return self.has_features and (self.heatmaps or self.collect or (self.scorer is not None and self.scorer.needs_features))

    def input_flags(self, path: Path) -> list[str]:
        from manet_edge.io import is_dicom

        if not self.checks_on or not is_dicom(Path(path)):
            return []
        return checks.dicom_flags(path)

    def mask_flags(self, image: np.ndarray, mask: np.ndarray) -> list[str]:
        return checks.photometric_flags(image, mask) if self.checks_on else []

    def finish(self, item: Any) -> None:
        """Score, heat map and flags of a classified item (``item.logits`` set); sets ``item.error``
        for a flag that means 'not a chest X-ray'."""
        from manet_edge.heatmap import class_activation_map, heat_inside, heat_map, pooled

        if item.logits is None:
            return
        feats = item.features
        if self.scorer is not None:
            pool = None if feats is None else pooled(feats[None])
            score = float(self.scorer.score(item.logits[None], pool)[0])
            item.ood_score = score
            item.flags = checks.merge(item.flags, self.scorer.flags(score))
        if self.heatmaps and feats is not None and self.weight is not None:
            cls = int(np.argmax(item.logits))
            mask = item.cls_feed[1][0] if item.cls_feed is not None else None
            size = mask.shape if mask is not None else (feats.shape[1], feats.shape[2])
            item.heat = heat_map(class_activation_map(feats, self.weight, cls), size)
            item.heat_in_lung = heat_inside(item.heat, mask) if mask is not None else None
        bad = [f for f in item.flags if f in checks.NOT_CHEST_XRAY_FLAGS]
        if bad and not item.error:
            item.error = f"not a chest X-ray ({', '.join(bad)}); not classified"
            item.probabilities = None
