"""Data augmentation on the GPU-friendly side of the data loader, with kornia.

Augmentation makes the training set look bigger by showing each image slightly changed every
epoch: shifted, cropped, flipped, rotated a little, or with noise. Changes must keep the label
true: a flipped '2' is not a '2', so flips are off by default.

The transforms run on whole batches after they reach the device (Lightning's
`on_after_batch_transfer`), only while training. 2-D batches are (B, C, H, W), 3-D batches
(B, C, D, H, W); kornia has matching transforms for both.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from pydantic import Field
from torch import nn

from trainyard import Params


class AugmentParams(Params):
    shift: float = Field(0.0, ge=0, le=0.5, description="Largest random translation, as a fraction of the size.")
    rotate: float = Field(0.0, ge=0, le=180, description="Largest random rotation, in degrees.")
    crop_padding: int = Field(0, ge=0, description="Pad by this many pixels, then crop back at a random place.")
    hflip: bool = Field(False, description="Flip left-right with probability 1/2.")
    vflip: bool = Field(False, description="Flip upside-down with probability 1/2.")
    noise: float = Field(0.0, ge=0, description="Standard deviation of added Gaussian noise.")

    @property
    def enabled(self) -> bool:
        return any((self.shift, self.rotate, self.crop_padding, self.hflip, self.vflip, self.noise))


class GaussianNoise(nn.Module):
    """Additive noise for any dimensionality (kornia's RandomGaussianNoise is 2-D only)."""

    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.std * torch.randn_like(x)


# kornia's transforms for 2-D images and for 3-D volumes: (affine, crop, left-right, upside-down)
TRANSFORMS = {
    2: (K.RandomAffine, K.RandomCrop, K.RandomHorizontalFlip, K.RandomVerticalFlip),
    3: (K.RandomAffine3D, K.RandomCrop3D, K.RandomHorizontalFlip3D, K.RandomVerticalFlip3D),
}


def build_augmentation(params: AugmentParams, input_shape: tuple[int, ...]) -> nn.Module | None:
    """The transform pipeline for images of `input_shape` (C, H, W) or (C, D, H, W), or None."""
    if not params.enabled:
        return None
    spatial = tuple(input_shape[1:])
    affine, crop, hflip, vflip = TRANSFORMS[len(spatial)]
    steps: list[nn.Module] = []
    if params.shift or params.rotate:
        steps.append(affine(degrees=params.rotate, translate=(params.shift,) * len(spatial), p=1.0))
    if params.crop_padding:
        steps.append(crop(spatial, padding=params.crop_padding, p=1.0))
    if params.hflip:
        steps.append(hflip())
    if params.vflip:
        steps.append(vflip())
    if params.noise:
        steps.append(GaussianNoise(params.noise))
    return nn.Sequential(*steps)
