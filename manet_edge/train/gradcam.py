"""Grad-CAM at the last block of plain, MA and CBAM classifiers (pytorch-grad-cam), with the
paper's interpretability claim measured: the fraction of heat-map mass inside the lung mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class _FixedMask(nn.Module):
    """Adapter: pytorch-grad-cam calls ``model(x)``; our models take ``(x, mask)``."""

    def __init__(self, model: nn.Module, mask: torch.Tensor):
        super().__init__()
        self.model, self.mask = model, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.mask[: x.shape[0]])


def target_layer(model: nn.Module) -> nn.Module:
    """The last block whose output Grad-CAM explains (paper: the last bottleneck of ResNet50)."""
    if hasattr(model, "gradcam_layer"):
        return model.gradcam_layer()
    for name in ("layer4", "Mixed_7c"):
        if hasattr(model, name):
            mod = getattr(model, name)
            return mod[-1] if isinstance(mod, nn.Sequential) else mod
    if hasattr(model, "features"):
        return model.features[-1]
    raise ValueError(f"no Grad-CAM target layer known for {type(model).__name__}")


def gradcam(model: nn.Module, image: torch.Tensor, mask: torch.Tensor, target_class: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM map (H,W) in [0,1] for one (1,C,H,W) image and its (1,1,H,W) mask; returns (map, class)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = model.eval()
    wrapped = _FixedMask(model, mask)
    with torch.no_grad():
        cls = int(model(image, mask).argmax(1)) if target_class is None else target_class
    with GradCAM(model=wrapped, target_layers=[target_layer(model)]) as cam:
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
