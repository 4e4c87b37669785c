"""Stage 1: the lung segmenter, a segmentation-models-pytorch UNet with a ResNet encoder.

The paper uses a ResUNet (UNet, ResNet34 encoder) at 512x512. The compact default is a ResNet18
encoder cut after its fourth stage (``encoder_depth=4``; the unused ``layer4`` is deleted, which
removes 8.4 M dead parameters) with a slim decoder: 3.1 M parameters, fast enough to train on
two CPU cores. Weights are never downloaded (``encoder_weights=None``).
"""

from __future__ import annotations

import torch
from torch import nn

from manet_edge.config import SegModelConfig
from manet_edge.models.blocks import init_weights

PAPER_SEG = SegModelConfig(encoder="resnet34", encoder_depth=5, decoder_channels=(256, 128, 64, 32, 16), image_size=512)
"""The paper's ResUNet: ResNet34 encoder, smp's default decoder, 512x512."""


def create_segmenter(cfg: SegModelConfig = SegModelConfig()) -> nn.Module:
    """Build the UNet described by ``cfg`` with Kaiming-normal conv init (paper), BN weight 1, bias 0."""
    import segmentation_models_pytorch as smp

    if len(cfg.decoder_channels) != cfg.encoder_depth:
        raise ValueError(
            f"decoder_channels needs one entry per encoder stage: encoder_depth={cfg.encoder_depth}, "
            f"got {len(cfg.decoder_channels)} ({cfg.decoder_channels})"
        )
    model = smp.Unet(
        encoder_name=cfg.encoder,
        encoder_weights=None,
        encoder_depth=cfg.encoder_depth,
        decoder_channels=tuple(cfg.decoder_channels),
        in_channels=cfg.in_channels,
        classes=1,
    )
    # smp keeps the ResNet stages beyond encoder_depth although forward never uses them.
    for stage in range(cfg.encoder_depth, 5):
        name = f"layer{stage}"
        if hasattr(model.encoder, name):
            delattr(model.encoder, name)
    init_weights(model)
    return model


@torch.no_grad()
def predict_prob(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Lung probability (N,1,S,S) for seg inputs (N,1,S,S) in [0,1]."""
    return torch.sigmoid(model(x))
