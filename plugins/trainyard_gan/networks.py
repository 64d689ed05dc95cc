"""The generator and discriminator networks: MLPs (for 2-D points, or flattened images) and a
DCGAN-style convolutional pair (Radford et al. 2016) for images of any size the data gives.

Every generator maps noise z (B, noise_dim) to a sample in the model's space: points (B, 2), or
images (B, C, H, W) through tanh in [-1, 1]. Every discriminator maps samples to one score per
sample (B, 1), through `features` (B, F) and a linear `head`.

Class-conditioned versions (`classes` > 0):
- the generator reads z next to the one-hot class (Mirza & Osindero 2014, conditional GANs);
- the discriminator adds the projection <embed(y), features(x)> to its score (Miyato & Koyama
  2018, "cGANs with projection discriminator"), which asks "is this a real x of class y".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class Generator(nn.Module):
    def __init__(self, body: nn.Module, noise_dim: int, classes: int):
        super().__init__()
        self.body, self.noise_dim, self.classes = body, noise_dim, classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.classes:
            z = torch.cat([z, F.one_hot(labels, self.classes).to(z.dtype)], dim=1)  # (B, noise_dim + classes)
        return self.body(z)


class Discriminator(nn.Module):
    def __init__(self, features: nn.Module, width: int, classes: int):
        super().__init__()
        self.features = features  # (B, ...) -> (B, width)
        self.head = nn.Linear(width, 1)
        self.projection = nn.Embedding(classes, width) if classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)  # (B, width)
        score = self.head(h)  # (B, 1)
        if self.projection is not None:
            score = score + (self.projection(labels) * h).sum(dim=1, keepdim=True)
        return score


def with_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every weight of `module`: each layer's
    weight divided by its largest singular value (one power iteration per training forward),
    so that the discriminator is 1-Lipschitz per layer."""
    for layer in list(module.modules()):
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.Embedding)):
            spectral_norm(layer)
    return module


# --- MLPs ------------------------------------------------------------------------------------


def mlp_generator(noise_dim: int, hidden: tuple[int, ...], sample_shape: tuple[int, ...], classes: int) -> Generator:
    """z (B, noise_dim) -> ReLU hidden layers -> (B, *sample_shape); images end in tanh."""
    sizes = (noise_dim + classes, *hidden)
    layers: list[nn.Module] = []
    for inputs, outputs in zip(sizes, sizes[1:]):
        layers += [nn.Linear(inputs, outputs), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], math.prod(sample_shape)))
    if len(sample_shape) > 1:  # images: pixels in [-1, 1], shaped (C, H, W)
        layers += [nn.Tanh(), nn.Unflatten(1, sample_shape)]
    return Generator(nn.Sequential(*layers), noise_dim, classes)


def mlp_discriminator(hidden: tuple[int, ...], sample_shape: tuple[int, ...], classes: int) -> Discriminator:
    """(B, *sample_shape) -> flatten -> LeakyReLU(0.2) hidden layers -> score (B, 1)."""
    sizes = (math.prod(sample_shape), *hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    for inputs, outputs in zip(sizes, sizes[1:]):
        layers += [nn.Linear(inputs, outputs), nn.LeakyReLU(0.2)]
    return Discriminator(nn.Sequential(*layers), sizes[-1], classes)


# --- DCGAN -----------------------------------------------------------------------------------


def dcgan_check(image_shape: tuple[int, ...], stages: int) -> tuple[int, int]:
    """The smallest feature map (H / 2^stages, W / 2^stages): each stage halves the image in the
    discriminator and doubles it back in the generator, so the sizes must divide."""
    _, height, width = image_shape
    scale = 2 ** stages
    if height % scale or width % scale:
        raise ValueError(f"a DCGAN with {stages} stages halves the image {stages} times, and {height}x{width} "
                         f"does not divide by {scale}: use fewer stages")
    return height // scale, width // scale


def dcgan_generator(noise_dim: int, channels: int, stages: int, image_shape: tuple[int, ...],
                    classes: int) -> Generator:
    """z -> linear projection to (channels * 2^(stages-1), h, w) -> `stages` transposed
    convolutions (4x4, stride 2: each doubles the size, halves the channels) -> tanh.
    Batch norm and ReLU after every layer but the last, as in DCGAN."""
    h, w = dcgan_check(image_shape, stages)
    width = channels * 2 ** (stages - 1)
    layers: list[nn.Module] = [nn.Linear(noise_dim + classes, width * h * w, bias=False),
                               nn.Unflatten(1, (width, h, w)), nn.BatchNorm2d(width), nn.ReLU()]  # (B, width, h, w)
    for stage in range(stages):
        last = stage == stages - 1
        out = image_shape[0] if last else width // 2
        layers.append(nn.ConvTranspose2d(width, out, 4, stride=2, padding=1, bias=last))  # (B, out, 2h, 2w)
        layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU()]
        width = out
    return Generator(nn.Sequential(*layers), noise_dim, classes)


def dcgan_discriminator(channels: int, stages: int, image_shape: tuple[int, ...], classes: int) -> Discriminator:
    """(B, C, H, W) -> `stages` 4x4 stride-2 convolutions (each halves the size, doubles the
    channels) with LeakyReLU(0.2) -> flatten -> score. No batch norm: the gradient penalty is
    defined per sample, and spectral normalisation takes its place."""
    h, w = dcgan_check(image_shape, stages)
    layers: list[nn.Module] = []
    inputs, width = image_shape[0], channels
    for _ in range(stages):
        layers += [nn.Conv2d(inputs, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]  # (B, width, H/2, W/2)
        inputs, width = width, width * 2
    layers.append(nn.Flatten())  # (B, inputs * h * w)
    return Discriminator(nn.Sequential(*layers), inputs * h * w, classes)
