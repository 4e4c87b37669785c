"""scikit-image clean-up of the stage-1 lung mask (MANet, Section 3.1).

Predicted masks sometimes leave specks outside the lungs, holes inside them, or extra blobs.
The clean-up, in order: threshold the probability map, remove components smaller than
``min_object_fraction`` of the image, fill holes smaller than ``max_hole_fraction``, and keep at
most the ``keep_largest`` largest components (two lungs; 1 when they are joined).
"""

from __future__ import annotations

import functools

import numpy as np
from skimage import measure, morphology

from manet_edge.config import PostprocessConfig


def clean_mask(prob: np.ndarray, cfg: PostprocessConfig = PostprocessConfig()) -> np.ndarray:
    """Threshold and clean a 2-D probability map; returns a bool mask of the same shape."""
    if prob.ndim != 2:
        raise ValueError(f"clean_mask expects a 2-D map, got shape {prob.shape}")
    mask = np.asarray(prob) > cfg.threshold
    area = mask.size
    min_obj = int(round(cfg.min_object_fraction * area))
    if min_obj > 0 and mask.any():
        mask = morphology.remove_small_objects(mask, max_size=min_obj - 1) if _has_max_size() else \
            morphology.remove_small_objects(mask, min_size=min_obj)
    max_hole = int(round(cfg.max_hole_fraction * area))
    if max_hole > 0 and mask.any():
        mask = morphology.remove_small_holes(mask, max_size=max_hole) if _has_max_size() else \
            morphology.remove_small_holes(mask, area_threshold=max_hole)
    if cfg.keep_largest > 0 and mask.any():
        mask = keep_largest_components(mask, cfg.keep_largest)
    return mask


def upsample_mask(mask: np.ndarray, prob: np.ndarray | None, shape: tuple[int, int],
                  threshold: float = 0.5) -> np.ndarray:
    """The cleaned S x S ``mask`` at ``shape`` (height, width), with its outline refined from ``prob``.

    Away from the outline the mask is resized nearest, so what the clean-up removed or filled
    stays so. In a one-pixel band around the outline (at S x S) the decision is the probability map
    resized bilinearly and thresholded, so the lung border follows the model's own sub-pixel
    estimate instead of S x S staircase steps. Without ``prob`` it is the nearest resize. On the
    validation split this raises the bundled segmenter's IoU at the masks' 512 px by about 0.002.
    """
    from manet_edge.preprocess import resize

    h, w = int(shape[0]), int(shape[1])
    mask = np.asarray(mask, dtype=bool)
    near = resize(mask.astype(np.float32), (h, w), nearest=True) > 0.5
    if prob is None or mask.shape == (h, w):
        return near
    cross = morphology.disk(1)
    band = morphology.dilation(mask, cross) & ~morphology.erosion(mask, cross)
    if not band.any():
        return near
    band_up = resize(band.astype(np.float32), (h, w), nearest=True) > 0.5
    return np.where(band_up, resize(np.asarray(prob, dtype=np.float32), (h, w)) > threshold, near)


def keep_largest_components(mask: np.ndarray, n: int) -> np.ndarray:
    """Keep the ``n`` largest 8-connected components of a bool mask."""
    labels = measure.label(mask, connectivity=2)
    if labels.max() <= n:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = np.argsort(sizes)[::-1][:n]
    return np.isin(labels, keep)


def lung_fraction(mask: np.ndarray) -> float:
    """Fraction of the image covered by the mask."""
    return float(np.count_nonzero(mask)) / float(mask.size)


def plausibility_flags(mask: np.ndarray, cfg: PostprocessConfig = PostprocessConfig()) -> list[str]:
    """Flags for a mask that should not be trusted silently (empty, too small, too large)."""
    frac = lung_fraction(mask)
    if frac == 0.0:
        return ["empty_mask"]
    flags = []
    if frac < cfg.min_lung_fraction:
        flags.append("lung_fraction_low")
    if frac > cfg.max_lung_fraction:
        flags.append("lung_fraction_high")
    return flags


@functools.cache
def _has_max_size() -> bool:
    """scikit-image >= 0.26 renamed ``min_size``/``area_threshold`` to ``max_size`` (inclusive)."""
    import inspect

    return "max_size" in inspect.signature(morphology.remove_small_objects).parameters
