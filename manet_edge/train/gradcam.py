"""Grad-CAM at the last block of plain, MA and CBAM classifiers (pytorch-grad-cam), with the
paper's interpretability claim measured: the fraction of heat-map mass inside the lung mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class _CamModel(nn.Module):
    """Adapter for pytorch-grad-cam, which calls ``model(x)`` and hooks a module's tensor output.

    Our models take ``(x, mask)`` and their blocks return ``(features, map)`` tuples, so the
    adapter holds the mask fixed and routes ``forward_features`` (the output of the last block)
    through an ``nn.Identity`` that serves as the Grad-CAM target layer.
    """

    def __init__(self, model: nn.Module, mask: torch.Tensor):
        super().__init__()
        self.model, self.mask = model, mask
        self.last_block = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.last_block(self.model.forward_features(x, self.mask[: x.shape[0]]))
        return self.model.forward_head(feats)


def gradcam(model: nn.Module, image: torch.Tensor, mask: torch.Tensor, target_class: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM map (H,W) in [0,1] at the last block, for one (1,C,H,W) image and its (1,1,H,W) mask.

    Returns ``(map, class)``; the class is the predicted one unless ``target_class`` is given.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = model.eval()
    wrapped = _CamModel(model, mask)
    with torch.no_grad():
        cls = int(model(image, mask).argmax(1)) if target_class is None else target_class
    with GradCAM(model=wrapped, target_layers=[wrapped.last_block]) as cam:
        heat = cam(input_tensor=image, targets=[ClassifierOutputTarget(cls)])[0]
    return heat.astype(np.float32), cls


def inside_fraction(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heat-map mass that lies inside the lung mask (1.0 = all inside)."""
    total = float(heat.sum())
    return float((heat * (mask > 0.5)).sum() / total) if total > 0 else float("nan")


def overlay_png(image01: np.ndarray, heat: np.ndarray, mask: np.ndarray, path: Path, title: str) -> None:
    """Save the X-ray with the heat map (jet) and the lung outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.imshow(image01, cmap="gray")
    ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=1)
    ax.contour(mask > 0.5, levels=[0.5], colors="white", linewidths=0.8)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
