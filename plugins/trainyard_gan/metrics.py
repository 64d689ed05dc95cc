"""How well generated samples cover the modes: VEEGAN's measures (Srivastava et al. 2017) on 2-D
mixtures, the same idea on images through a classifier, and mode-collapse detection.

On a mixture of K Gaussians with standard deviation sigma, each generated point is assigned to
its nearest centre:

    high quality   the point lies within 3 sigma of that centre
    high_quality   the share of high-quality points among all generated ones
    modes_covered  modes holding at least a quarter of their fair share of the points (1/(4K)
                   of them) as high-quality points; a stray point or two does not cover a mode
    kl_modes       KL(p || uniform) in nats, p the histogram of high-quality points over the
                   modes: 0 when they spread evenly, log K when they all sit on one mode (and
                   log K when there is no high-quality point at all)

On images, the classes a trained classifier predicts for the samples stand for the modes
(`class_shares`): the same coverage rule, the entropy of the histogram, its smallest share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

HIGH_QUALITY_STDS = 3.0
# A mode is covered when it holds this fraction of its fair share 1/K of the samples.
COVERED_FRACTION_OF_FAIR_SHARE = 0.25


def covered(counts: torch.Tensor, total: int) -> int:
    """Modes (or classes) whose count reaches a quarter of the fair share of `total` samples."""
    modes = counts.numel()
    return int((counts >= COVERED_FRACTION_OF_FAIR_SHARE * total / modes).sum()) if total else 0


def kl_from_uniform(counts: torch.Tensor) -> float:
    """KL(p || uniform) in nats for the histogram `counts` (K,); log K for an empty histogram."""
    modes, total = counts.numel(), counts.sum()
    if total == 0:
        return math.log(modes)
    p = counts.double() / total
    p = p[p > 0]
    return float((p * torch.log(p * modes)).sum())


@dataclass(frozen=True)
class ModeCoverage:
    modes_covered: int
    high_quality: float  # share of all samples
    kl_modes: float
    counts: torch.Tensor  # (K,) high-quality samples per mode

    def as_metrics(self, modes: int) -> dict[str, float]:
        return {"modes_covered": float(self.modes_covered), "high_quality": self.high_quality,
                "kl_modes": self.kl_modes,
                # One figure to choose checkpoints and trials by: 1 only with every mode covered
                # and every sample of high quality. A GAN collapsed onto one mode scores <= 1/K.
                "mode_score": self.high_quality * self.modes_covered / modes}


def mode_coverage(samples: torch.Tensor, centres: torch.Tensor, std: float) -> ModeCoverage:
    """VEEGAN's measures of samples (N, 2) against the mixture's centres (K, 2)."""
    distance, nearest = torch.cdist(samples.double(), centres.double()).min(dim=1)  # (N,) each
    good = distance <= HIGH_QUALITY_STDS * std
    counts = torch.bincount(nearest[good], minlength=len(centres))  # (K,)
    return ModeCoverage(covered(counts, len(samples)), float(good.double().mean()), kl_from_uniform(counts), counts)


def nearest_mode(samples: torch.Tensor, centres: torch.Tensor, std: float) -> torch.Tensor:
    """Each sample's mode when it is of high quality, else -1: (N,) int64."""
    distance, nearest = torch.cdist(samples.double(), centres.double()).min(dim=1)
    return torch.where(distance <= HIGH_QUALITY_STDS * std, nearest, torch.full_like(nearest, -1))


def class_shares(predicted: torch.Tensor, classes: int) -> dict[str, float]:
    """Coverage, entropy (nats) and the smallest share of the classes predicted for the samples."""
    counts = torch.bincount(predicted, minlength=classes).double()  # (classes,)
    shares = counts / counts.sum()
    nonzero = shares[shares > 0]
    return {"class_coverage": float(covered(counts, len(predicted))),
            "class_entropy": float(-(nonzero * nonzero.log()).sum()),
            "min_class_share": float(shares.min())}


class CollapseDetector:
    """Mode collapse as a drop in coverage: the modes (or classes) covered fall at least `drop`
    of them below the most covered so far (at least one mode)."""

    def __init__(self, modes: int, drop: float):
        self.threshold = max(1, math.ceil(drop * modes))
        self.best = 0
        self.first: str | None = None  # what was seen when collapse was first detected

    def update(self, coverage: int, step: int) -> bool:
        self.best = max(self.best, coverage)
        collapsed = coverage <= self.best - self.threshold
        if collapsed and self.first is None:
            self.first = f"at step {step}: {coverage} modes covered, down from {self.best}"
        return collapsed

    def state_dict(self) -> dict:
        return {"best": self.best, "first": self.first}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.first = state.get("best", 0), state.get("first")
