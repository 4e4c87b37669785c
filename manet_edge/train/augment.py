"""The paper's on-the-fly augmentation, with torchvision.transforms.v2 on image and mask together.

Each transform is applied with probability 0.5 (MANet, Section 4.2):
- segmentation: shift +-6.25 % (h and v), scale +-20 %, rotation in [-10, 10] degrees;
- classification: the same shift and scale, rotation in [-30, 30] degrees on image and mask
  together, then brightness and contrast +-20 % on the image only.
Masks are resampled with nearest neighbour (tv_tensors.Mask); empty space is filled with 0.

``robust`` (:func:`cls_augment` with ``recipe="robust"``) adds what differs between hospitals and
collections, on the image only, each with probability 0.5 (``p_robust``): gamma in [0.6, 1.6],
stronger contrast (+-40 %), Gaussian blur (sigma 0.1-1.5 px), down-and-up scaling to 35-100 % of
the side (several sources are 224-256 px films upsampled to 512), Gaussian noise (sigma up to
0.03) and JPEG re-encoding (quality 30-95). All are torchvision.transforms.v2 transforms.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from manet_edge.choices import AUGMENTS


def geometric(rotate_deg: float, shift: float = 0.0625, scale: float = 0.2, p: float = 0.5) -> v2.Transform:
    return v2.Compose([
        v2.RandomApply([v2.RandomAffine(degrees=0, translate=(shift, shift))], p=p),
        v2.RandomApply([v2.RandomAffine(degrees=0, scale=(1 - scale, 1 + scale))], p=p),
        v2.RandomApply([v2.RandomAffine(degrees=rotate_deg)], p=p),
    ])


class RandomGamma(v2.Transform):
    """``image ** gamma`` with gamma drawn log-uniformly from ``gamma`` (torchvision's adjust_gamma)."""

    def __init__(self, gamma: tuple[float, float] = (0.6, 1.6)):
        super().__init__()
        self.lo, self.hi = torch.log(torch.tensor(gamma[0])), torch.log(torch.tensor(gamma[1]))

    def make_params(self, flat_inputs):  # torchvision >= 0.21
        return {"gamma": float(torch.exp(self.lo + (self.hi - self.lo) * torch.rand(())))}

    def transform(self, inpt, params):
        return v2.functional.adjust_gamma(inpt, params["gamma"])


class DownUpScale(v2.Transform):
    """Resize to a random fraction of the side and back (bilinear, antialiased): resolution jitter."""

    def __init__(self, scale: tuple[float, float] = (0.35, 1.0)):
        super().__init__()
        self.scale = scale

    def make_params(self, flat_inputs):
        return {"s": float(self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(()))}

    def transform(self, inpt, params):
        h, w = inpt.shape[-2:]
        small = v2.functional.resize(inpt, [max(8, round(h * params["s"])), max(8, round(w * params["s"]))], antialias=True)
        return v2.functional.resize(small, [h, w], antialias=True)


class JpegReencode(v2.Transform):
    """JPEG re-encoding of a float image in [0, 1] (torchvision's JPEG works on uint8)."""

    def __init__(self, quality: tuple[int, int] = (30, 95)):
        super().__init__()
        self.jpeg = v2.JPEG(quality=quality)

    def transform(self, inpt, params):
        u8 = (inpt.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        return self.jpeg(u8).to(torch.float32) / 255.0


def robust_photometric(p: float = 0.5) -> v2.Transform:
    return v2.Compose([
        v2.RandomApply([RandomGamma((0.6, 1.6))], p=p),
        v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.4)], p=p),
        v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=p),
        v2.RandomApply([DownUpScale((0.35, 1.0))], p=p),
        v2.RandomApply([v2.GaussianNoise(mean=0.0, sigma=0.03, clip=True)], p=p),
        v2.RandomApply([JpegReencode((30, 95))], p=p),
    ])


class PairAugment:
    """Augment an (image, mask) pair of (1,H,W) float tensors; photometric changes touch the image only."""

    def __init__(self, rotate_deg: float, photometric: bool, p: float = 0.5, robust: bool = False):
        self.geo = geometric(rotate_deg, p=p)
        self.robust = robust_photometric(p) if robust else None
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
        if self.robust is not None:
            img = self.robust(img.clamp(0, 1)).clamp(0, 1)
        return img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor)


def seg_augment() -> PairAugment:
    return PairAugment(rotate_deg=10.0, photometric=False)


def cls_augment(recipe: str = "paper") -> PairAugment:
    if recipe not in AUGMENTS:
        raise ValueError(f"unknown augmentation recipe {recipe!r}; choose one of {list(AUGMENTS)}")
    return PairAugment(rotate_deg=30.0, photometric=True, robust=recipe == "robust")
