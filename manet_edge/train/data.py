"""Torch datasets over :mod:`manet_edge.datasets` items, using the runtime's own pre-processing.

Images are decoded and resized once and kept in memory (a few MB at CPU sizes), so epochs only
pay for augmentation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from manet_edge import CLASSES
from manet_edge.datasets import Item
from manet_edge.io import load_image
from manet_edge.preprocess import normalise_segmented, resize, seg_input


class SegDataset(Dataset):
    """(image (1,S,S) in [0,1], mask (1,S,S) in {0,1}) pairs at the model size."""

    def __init__(self, root: str | Path, items: list[Item], size: int, augment: Callable | None = None):
        self.items, self.size, self.augment = items, size, augment
        root = Path(root)
        self.images = np.stack([seg_input(load_image(root / it.path), size) for it in items])
        self.masks = np.stack([
            (resize((load_image(root / it.mask) > 127).astype(np.float32), size, nearest=True) > 0.5)[None].astype(np.float32)
            for it in items
        ])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, msk = torch.from_numpy(self.images[i]), torch.from_numpy(self.masks[i])
        if self.augment is not None:
            img, msk = self.augment(img, msk)
        return img, msk


class ClsDataset(Dataset):
    """Stage-2 samples from a cache built by :mod:`manet_edge.train.cls_cache`.

    Each sample is ``(segmented image (1,S,S) in [-1,1], mask (1,S,S) in {0,1}, label)``. The
    cache holds the image in [0,1] and the predicted, post-processed mask; augmentation runs on
    the pair, then :func:`manet_edge.preprocess.normalise_segmented` (the function
    :func:`manet_edge.preprocess.cls_input` calls at run time) turns it into the classifier input.
    """

    def __init__(self, images01: np.ndarray, masks: np.ndarray, labels: np.ndarray, augment: Callable | None = None,
                 normalisation: str = "segmented_minmax_pm1"):
        self.images01, self.masks, self.labels, self.augment = images01, masks, labels, augment
        self.normalisation = normalisation
        normalise_segmented(np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32), normalisation)  # unknown name: fail now

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img, msk = torch.from_numpy(self.images01[i]), torch.from_numpy(self.masks[i])
        if self.augment is not None:
            img, msk = self.augment(img, msk)
        m = (msk[0].numpy() > 0.5).astype(np.float32)
        seg = normalise_segmented(img[0].numpy().astype(np.float32), m, self.normalisation)
        return torch.from_numpy(seg)[None], torch.from_numpy(m)[None], int(self.labels[i])


def label_index(label: str, classes: tuple[str, ...] = CLASSES) -> int:
    return classes.index(label)
