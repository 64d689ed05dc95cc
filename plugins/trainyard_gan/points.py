"""Generated 2-D distributions whose modes are known: the GAN's mode-collapse test bed.

Each is a mixture of K equally likely isotropic Gaussians with the same standard deviation,
so that every generated point can be judged against the modes (see metrics.py):

    ring    K Gaussians evenly spaced on a circle (Metz et al. 2017, "Unrolled GANs")
    grid    a side x side grid of Gaussians (VEEGAN's 5x5 grid of 25)
    spiral  K Gaussians along an Archimedean spiral, r growing linearly with the angle

A batch is (points float32 (B, 2), modes int64 (B,)): each point with the mode it was drawn
from, which a conditional GAN uses as its class. With `labels: false` batches are the 1-tuple
(points,), as an unlabelled data set would be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from trainyard import Params


@dataclass(frozen=True)
class Mixture:
    """K equally weighted Gaussians N(centre_k, std^2 I) in the plane."""

    name: str
    centres: np.ndarray  # (K, 2) float64
    std: float

    @property
    def modes(self) -> int:
        return len(self.centres)

    def sample(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`count` points, each from a mode drawn uniformly: points (count, 2) float32, modes (count,) int64."""
        modes = rng.integers(0, self.modes, count)
        points = self.centres[modes] + rng.normal(scale=self.std, size=(count, 2))
        return points.astype(np.float32), modes.astype(np.int64)


def ring(modes: int, radius: float, std: float) -> Mixture:
    angles = 2 * math.pi * np.arange(modes) / modes
    return Mixture("ring", radius * np.stack([np.cos(angles), np.sin(angles)], axis=1), std)


def grid(side: int, spacing: float, std: float) -> Mixture:
    axis = spacing * (np.arange(side) - (side - 1) / 2)  # centred on 0: -4, -2, 0, 2, 4 for 5 and 2
    xs, ys = np.meshgrid(axis, axis, indexing="ij")
    return Mixture("grid", np.stack([xs.ravel(), ys.ravel()], axis=1), std)


def spiral(modes: int, turns: float, inner: float, outer: float, std: float) -> Mixture:
    fractions = np.linspace(0, 1, modes)
    angles = 2 * math.pi * turns * fractions
    radii = inner + (outer - inner) * fractions
    return Mixture("spiral", radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1), std)


# --- data modules ----------------------------------------------------------------------------


class PointsParams(Params):
    samples: int = Field(20_000, ge=16, description="Points in the training set; the val and test sets have a "
                                                    "tenth as many each (at least one batch).")
    batch_size: int = Field(256, ge=1, description="Points per batch.")
    labels: bool = Field(True, description="Serve each point's mode as its label; false: batches of points only.")


class RingParams(PointsParams):
    modes: int = Field(8, ge=2, description="Gaussians on the circle.")
    radius: float = Field(2.0, gt=0, description="Radius of the circle of centres.")
    std: float = Field(0.02, gt=0, description="Standard deviation of each Gaussian.")


class GridParams(PointsParams):
    side: int = Field(5, ge=2, description="Gaussians along each side of the square grid (side x side modes).")
    spacing: float = Field(2.0, gt=0, description="Distance between neighbouring centres.")
    std: float = Field(0.05, gt=0, description="Standard deviation of each Gaussian.")


class SpiralParams(PointsParams):
    modes: int = Field(12, ge=2, description="Gaussians along the spiral, at equal steps of angle.")
    turns: float = Field(1.5, gt=0, description="Turns of the spiral from its first mode to its last.")
    inner: float = Field(0.5, ge=0, description="Radius of the first mode.")
    outer: float = Field(3.0, gt=0, description="Radius of the last mode.")
    std: float = Field(0.02, gt=0, description="Standard deviation of each Gaussian.")


def mixture_of(params: PointsParams) -> Mixture:
    if isinstance(params, RingParams):
        return ring(params.modes, params.radius, params.std)
    if isinstance(params, GridParams):
        return grid(params.side, params.spacing, params.std)
    if isinstance(params, SpiralParams):
        return spiral(params.modes, params.turns, params.inner, params.outer, params.std)
    raise TypeError(type(params).__name__)


class Points(LightningDataModule):
    """Train, val and test sets drawn from the mixture with the run's seed.

    A GAN trains on the training set. Its validation and test judge generated points against
    the known modes; the held-out real points only pace them and measure the discriminator.
    """

    input_shape = (2,)

    def __init__(self, params: PointsParams, seed: int):
        super().__init__()
        self.params, self.seed = params, seed
        self.mixture = mixture_of(params)
        # Read by conditional models: one class per mode.
        self.class_names = tuple(f"mode {k}" for k in range(self.mixture.modes)) if params.labels else ()
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        rng = np.random.default_rng(self.seed)
        held_out = max(self.params.batch_size, self.params.samples // 10)
        for split, count in (("train", self.params.samples), ("val", held_out), ("test", held_out)):
            points, modes = self.mixture.sample(count, rng)
            tensors = (torch.from_numpy(points), torch.from_numpy(modes)) if self.params.labels \
                else (torch.from_numpy(points),)
            self.splits[split] = TensorDataset(*tensors)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["train"], batch_size=self.params.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=self.params.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=self.params.batch_size)
