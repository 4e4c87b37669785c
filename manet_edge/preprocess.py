"""Numpy-only pre-processing, the same functions for training, export checks and the runtime.

Stage 1 (segmenter) input: the grey image resized to ``size`` x ``size`` (bilinear), min-max
scaled to [0, 1], shape (1, size, size).

Stage 2 (classifier) input, as in the paper: the image and its post-processed lung mask are
resized to the classifier size (image bilinear, mask nearest), the image outside the mask is
blanked, and the segmented image is min-max scaled to [-1, 1]. The mask is passed as a second
input with values in {0, 1}, shape (1, size, size).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

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


def cls_input(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage-2 inputs from a 2-D grey image and a 2-D lung mask (any resolutions).

    Returns ``(segmented, mask)``, each (1, size, size) float32: the segmented image min-max
    scaled to [-1, 1] (outside the lungs is the minimum, -1, unless the image is dark inside
    the lungs too) and the binary mask in {0, 1}.
    """
    img = minmax(resize(image, size), 0.0, 1.0)
    m = (resize(mask.astype(np.float32), size, nearest=True) > 0.5).astype(np.float32)
    return segmented_scaled(img, m)[None], m[None]


def segmented_scaled(image01: np.ndarray, mask01: np.ndarray) -> np.ndarray:
    """Blank ``image01`` outside ``mask01`` and min-max scale the result to [-1, 1]."""
    return minmax(image01 * mask01, -1.0, 1.0)
