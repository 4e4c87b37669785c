"""The paper's on-the-fly augmentation, with torchvision.transforms.v2 on image and mask together.

Each transform is applied with probability 0.5 (MANet, Section 4.2):
- segmentation: shift +-6.25 % (h and v), scale +-20 %, rotation in [-10, 10] degrees;
- classification: the same shift and scale, rotation in [-30, 30] degrees on image and mask
  together, then brightness and contrast +-20 % on the image only.
Masks are resampled with nearest neighbour (tv_tensors.Mask); empty space is filled with 0.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


def geometric(rotate_deg: float, shift: float = 0.0625, scale: float = 0.2, p: float = 0.5) -> v2.Transform:
    return v2.Compose([
        v2.RandomApply([v2.RandomAffine(degrees=0, translate=(shift, shift))], p=p),
        v2.RandomApply([v2.RandomAffine(degrees=0, scale=(1 - scale, 1 + scale))], p=p),
        v2.RandomApply([v2.RandomAffine(degrees=rotate_deg)], p=p),
    ])


class PairAugment:
    """Augment an (image, mask) pair of (1,H,W) float tensors; photometric changes touch the image only."""

    def __init__(self, rotate_deg: float, photometric: bool, p: float = 0.5):
        self.geo = geometric(rotate_deg, p=p)
        self.photo = (
            v2.Compose([
                v2.RandomApply([v2.ColorJitter(brightness=0.2)], p=p),
                v2.RandomApply([v2.ColorJitter(contrast=0.2)], p=p),
            ])
            if photometric
            else None
        )

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img, msk = self.geo(tv_tensors.Image(image), tv_tensors.Mask(mask))
        img = img.as_subclass(torch.Tensor)
        if self.photo is not None:
            img = self.photo(img.clamp(0, 1))
        return img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor)


def seg_augment() -> PairAugment:
    return PairAugment(rotate_deg=10.0, photometric=False)


def cls_augment() -> PairAugment:
    return PairAugment(rotate_deg=30.0, photometric=True)
