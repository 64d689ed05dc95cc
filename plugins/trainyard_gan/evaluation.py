"""What a GAN's validation and test measure on generated samples, by kind of data.

    PointsEvaluation   2-D mixtures: VEEGAN's modes covered, high-quality share and KL
                       (metrics.py), against the known centres
    ImageEvaluation    images: FID with a trainyard classifier's features, and the classes that
                       classifier sees in the samples (features.py)

Both give, for a conditional GAN, `cond_acc`: the share of samples that are of the class they
were asked for (a high-quality point of the requested mode; an image the classifier assigns to
the requested class). `coverage` names the measure whose drop is mode collapse.
"""

from __future__ import annotations

import numpy as np
import torch

from trainyard_gan import features, metrics, plots
from trainyard_gan.points import Mixture


class PointsEvaluation:
    coverage = "modes_covered"

    def __init__(self, mixture: Mixture):
        self.mixture = mixture
        self.centres = torch.from_numpy(mixture.centres)  # (K, 2)
        self.modes = mixture.modes

    def prepare(self) -> None:
        """Nothing to load: the modes are known."""

    def add_real(self, stage: str, real: torch.Tensor) -> None:
        """Nothing to collect: generated points are judged against the modes themselves."""

    def measure(self, stage: str, samples: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        samples = samples.detach().cpu()  # (N, 2)
        found = metrics.mode_coverage(samples, self.centres, self.mixture.std).as_metrics(self.modes)
        if labels is not None:
            nearest = metrics.nearest_mode(samples, self.centres, self.mixture.std)
            found["cond_acc"] = float((nearest == labels.cpu()).double().mean())
        return found

    def picture(self, samples: torch.Tensor, labels: torch.Tensor | None, step: int) -> np.ndarray:
        return plots.scatter_image(self.mixture, samples.detach().cpu().numpy(), title=f"step {step}")


class ImageEvaluation:
    coverage = "class_coverage"

    def __init__(self, data, class_names: tuple[str, ...], classifier: features.ClassifierFeatures | None):
        self.data, self.class_names = data, class_names
        self.modes = len(class_names)
        self.classifier = classifier  # None: the cached LeNet-5, loaded (or trained) by prepare()
        self.fid: dict = {}  # stage -> FrechetInceptionDistance, its real features kept across validations
        self.real_complete: set[str] = set()

    def prepare(self) -> None:
        if self.classifier is None:
            self.classifier = features.cached(self.data)

    def _fid_of(self, stage: str, device: torch.device):
        from torchmetrics.image.fid import FrechetInceptionDistance

        if stage not in self.fid:
            self.fid[stage] = FrechetInceptionDistance(feature=self.classifier, reset_real_features=False)
        return self.fid[stage].to(device)

    def add_real(self, stage: str, real: torch.Tensor) -> None:
        """Real images (B, C, H, W) in [0, 1] of the stage's split, until the split was seen once."""
        if stage not in self.real_complete:
            self._fid_of(stage, real.device).update(real, real=True)

    def measure(self, stage: str, samples: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        self.real_complete.add(stage)  # the split has been seen in full: its features are kept
        fid = self._fid_of(stage, samples.device)
        fid.reset()  # the generated features only: reset_real_features=False
        fid.update(samples, real=False)
        predicted = self.classifier.to(samples.device).classify(samples).argmax(dim=1)  # (N,)
        found = {"fid": float(fid.compute())} | metrics.class_shares(predicted.cpu(), self.modes)
        if labels is not None:
            found["cond_acc"] = float((predicted == labels).double().mean())
        return found

    def picture(self, samples: torch.Tensor, labels: torch.Tensor | None, step: int) -> np.ndarray:
        return plots.samples_grid(samples, labels, self.modes)
