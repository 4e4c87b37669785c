"""Synthetic data roots in the ``shared/data`` layout: tiny lung-like X-rays with known masks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from manet_edge import CLASSES


def lung_pair(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A grey chest-like image (dark lungs in a bright body) and its 0/255 lung mask."""
    yy, xx = np.mgrid[:size, :size] / size
    mask = np.zeros((size, size), bool)
    for cx in (0.32, 0.68):
        cx += rng.uniform(-0.03, 0.03)
        mask |= ((xx - cx) / 0.13) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
    img = 170 + 30 * rng.standard_normal((size, size))
    img[mask] -= 110
    return np.clip(img, 0, 255).astype(np.uint8), (mask * 255).astype(np.uint8)


@pytest.fixture()
def seg_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    (root / "seg/images").mkdir(parents=True)
    (root / "seg/masks").mkdir(parents=True)
    rows = []
    for i in range(20):
        img, mask = lung_pair(rng)
        name = f"{'ieee' if i % 2 else 'quex'}_{i:03d}.png"
        Image.fromarray(img).save(root / "seg/images" / name)
        Image.fromarray(mask).save(root / "seg/masks" / name)
        rows.append({"path": f"seg/images/{name}", "task": "seg", "label": "covid" if i % 2 else "normal",
                     "patient_id": f"p{i // 2}"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "task", "label", "patient_id"])
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture()
def cls_root(tmp_path: Path) -> Path:
    """Five class folders; the class is visible as a bright blob at a class-specific place in the lungs."""
    rng = np.random.default_rng(1)
    root = tmp_path / "cdata"
    for k, c in enumerate(CLASSES):
        (root / "cls" / c).mkdir(parents=True)
        for i in range(10):
            img, _ = lung_pair(rng)
            img[20 + 4 * k: 26 + 4 * k, 18:26] = 250
            Image.fromarray(img).save(root / "cls" / c / f"kermany_{c}_{i}.png")
    return root
