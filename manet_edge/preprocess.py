"""Numpy-only pre-processing, the same functions for training, export checks and the runtime.

Stage 1 (segmenter) input: the grey image resized to ``size`` x ``size`` (bilinear), min-max
scaled to [0, 1], shape (1, size, size).

Stage 2 (classifier) input: the image and its post-processed lung mask are resized to the
classifier size (image bilinear, mask nearest), then normalised by the classifier's model-card
``normalisation`` (:data:`CLS_NORMALISATIONS`, one function, :func:`normalise_segmented`, for
training and every runtime):

- ``segmented_minmax_pm1`` (the paper's, the version-1 default): the image outside the mask is
  blanked and the segmented image is min-max scaled to [-1, 1];
- ``lung_equalize``: histogram equalisation computed from the lung pixels only
  (``skimage.exposure.equalize_hist`` with ``mask``), scaled to [-1, 1] inside the lungs, -1
  outside. A rank transform: any monotone change of the film's grey levels (gamma, contrast,
  window, a scanner's look-up table) gives the same input, which is what a classifier that
  must work on other hospitals' films needs.

The mask is passed as a second input with values in {0, 1}, shape (1, size, size).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from manet_edge.metadata import CLS_NORMALISATIONS  # the names a model card may give

_EPS = 1e-8


def resize(image: np.ndarray, size: int | tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """Resize a 2-D float array to ``size`` (int: square; tuple: (height, width)).

    Uses Pillow's float ('F') mode: bilinear for images (antialiased when shrinking), nearest for
    masks. Returns float32.
    """
    if image.ndim != 2:
        raise ValueError(f"resize expects a 2-D array, got shape {image.shape}")
    h, w = (size, size) if isinstance(size, int) else size
    if image.shape == (h, w):
        return image.astype(np.float32, copy=False)
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F")
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(pil.resize((w, h), resample=resample), dtype=np.float32)


def minmax(x: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Min-max scale ``x`` to [lo, hi]; a constant array maps to ``lo``."""
    x = x.astype(np.float32, copy=False)
    mn, mx = float(x.min()), float(x.max())
    scale = (hi - lo) / (mx - mn) if mx - mn > _EPS else 0.0
    return ((x - mn) * scale + lo).astype(np.float32)


def seg_input(image: np.ndarray, size: int) -> np.ndarray:
    """Stage-1 input (1, size, size) float32 in [0, 1] from a 2-D grey image of any range."""
    return minmax(resize(image, size), 0.0, 1.0)[None]



_EQ_BINS = 256


def cls_input(image: np.ndarray, mask: np.ndarray, size: int,
              normalisation: str = "segmented_minmax_pm1") -> tuple[np.ndarray, np.ndarray]:
    """Stage-2 inputs from a 2-D grey image and a 2-D lung mask (any resolutions).

    Returns ``(segmented, mask)``, each (1, size, size) float32: the segmented image normalised
    by ``normalisation`` into [-1, 1] and the binary mask in {0, 1}.
    """
    img = minmax(resize(image, size), 0.0, 1.0)
    m = (resize(mask.astype(np.float32), size, nearest=True) > 0.5).astype(np.float32)
    return normalise_segmented(img, m, normalisation)[None], m[None]


def normalise_segmented(image01: np.ndarray, mask01: np.ndarray, normalisation: str = "segmented_minmax_pm1") -> np.ndarray:
    """The classifier's input from a 2-D image in [0, 1] and its 2-D {0, 1} lung mask (same shape)."""
    if normalisation == "segmented_minmax_pm1":
        return segmented_scaled(image01, mask01)
    if normalisation == "lung_equalize":
        return lung_equalized(image01, mask01)
    raise ValueError(f"unknown classifier normalisation {normalisation!r}; known: {list(CLS_NORMALISATIONS)}")


def segmented_scaled(image01: np.ndarray, mask01: np.ndarray) -> np.ndarray:
    """Blank ``image01`` outside ``mask01`` and min-max scale the result to [-1, 1]."""
    return minmax(image01 * mask01, -1.0, 1.0)


def lung_equalized(image01: np.ndarray, mask01: np.ndarray) -> np.ndarray:
    """Histogram equalisation from the lung pixels (256 bins over [0, 1]) to [-1, 1]; -1 outside.

    An image whose lung pixels are all equal (or an empty mask) gives -1 everywhere.
    """
    from skimage.exposure import equalize_hist

    inside = mask01 > 0.5
    img = np.clip(image01.astype(np.float32, copy=False), 0.0, 1.0)
    if not inside.any() or float(img[inside].max() - img[inside].min()) <= _EPS:
        return np.full(img.shape, -1.0, np.float32)
    eq = equalize_hist(img, nbins=_EQ_BINS, mask=inside)
    return np.where(inside, eq * 2.0 - 1.0, -1.0).astype(np.float32)
