"""The LightningModule every model of this family trains in: images in, a code, images back.

A subclass says how to encode (`encode`: the deterministic code a classifier or a probe would
use), how to reconstruct, and what its loss is (`loss_terms`). This module logs the terms, the
reconstruction error, and at the end of testing the baselines of the same run: PCA with the
same code size and linear probes on both codes (baselines.py). It keeps a few fixed validation
images, whose reconstructions are logged at each validation as a step-indexed image series.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_lightning import LightningModule

from trainyard.media import log_image
from trainyard_repr import baselines
from trainyard_repr.plots import image_rows

SHOWN = 8  # validation images whose reconstructions are logged at each validation
BASE_METRICS = ("train/loss", "val/loss", "val/mse", "test/loss", "test/mse", "test/pca_mse",
                "test/probe_acc", "test/pca_probe_acc")


class CodeModel(LightningModule):
    def __init__(self, input_shape: tuple[int, ...], code_size: int, class_names: tuple[str, ...], seed: int,
                 probe_samples: int):
        super().__init__()
        self.input_shape, self.code_size, self.class_names = tuple(input_shape), code_size, tuple(class_names)
        self.seed, self.probe_samples = seed, probe_samples
        # Lightning's sample input (the kit's forward, MLflow's model signature).
        self.example_input_array = torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(0))
        self.shown: torch.Tensor | None = None  # (SHOWN, C, H, W): fixed validation images
        self.test_outputs: dict[str, list[np.ndarray]] = {}
        self.baselines: dict[str, float] = {}

    # --- what a subclass defines ---------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, code): the code a probe or a classifier reads."""
        raise NotImplementedError

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W) pixels in [0, 1]."""
        raise NotImplementedError

    def loss_terms(self, x: torch.Tensor, stage: str) -> dict[str, torch.Tensor]:
        """{'loss': the objective, ...terms to log}, each a scalar averaged over the examples."""
        raise NotImplementedError

    # --- training ------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx):
        terms = self.loss_terms(batch[0], "train")
        self.log_dict({f"train/{name}": value for name, value in terms.items()}, prog_bar=False)
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        x = batch[0]
        if self.shown is None:  # the first validation batch is the same at every validation
            self.shown = x[:SHOWN].detach().clone()
        self._evaluate(x, "val")

    def on_validation_epoch_end(self):
        if self.shown is not None and not self.trainer.sanity_checking:
            with torch.no_grad():
                rows = image_rows([self.shown.cpu(), self.reconstruct(self.shown).cpu()])
            log_image(self, "reconstructions", rows)

    def on_test_epoch_start(self):
        self.test_outputs = {"images": [], "codes": [], "labels": []}

    def test_step(self, batch, batch_idx):
        x, y = batch
        self._evaluate(x, "test")
        self.test_outputs["images"].append(x.cpu().numpy())
        self.test_outputs["codes"].append(self.encode(x).float().cpu().numpy())
        self.test_outputs["labels"].append(y.cpu().numpy())

    def on_test_epoch_end(self):
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not self.test_outputs["images"]:
            return
        images, codes, labels = (np.concatenate(self.test_outputs[key]) for key in ("images", "codes", "labels"))
        train_images, train_codes, train_labels = self._training_codes(datamodule)
        pca_mse, pca = baselines.pca_baseline(train_images, images, self.code_size, self.seed)
        # The probe is fitted on the first training images, those whose codes were kept.
        probe_images = train_images[:len(train_labels)].reshape(len(train_labels), -1)
        self.baselines = {
            "test/pca_mse": pca_mse,
            "test/probe_acc": baselines.probe_accuracy(train_codes, train_labels, codes, labels, self.seed),
            "test/pca_probe_acc": baselines.probe_accuracy(pca.transform(probe_images), train_labels,
                                                           pca.transform(images.reshape(len(images), -1)), labels,
                                                           self.seed),
        }
        # On this process's share of the test set; averaged over the processes of multi-device runs.
        self.log_dict(self.baselines, sync_dist=True)

    @torch.no_grad()
    def _training_codes(self, datamodule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All training images (PCA is fitted on them) and the codes and labels of up to
        `probe_samples` of them (the probe's training set)."""
        images, codes, labels = [], [], []
        for x, y in datamodule.train_dataloader():
            images.append(x.numpy())
            if sum(map(len, labels)) < self.probe_samples:
                codes.append(self.encode(x.to(self.device)).float().cpu().numpy())
                labels.append(y.numpy())
        return np.concatenate(images), np.concatenate(codes)[:self.probe_samples], np.concatenate(labels)[:self.probe_samples]

    def _evaluate(self, x: torch.Tensor, stage: str) -> None:
        terms = self.loss_terms(x, stage)
        if "mse" not in terms:  # a model whose loss is not already the reconstruction error
            terms["mse"] = squared_error(self.reconstruct(x), x)
        self.log_dict({f"{stage}/{name}": value for name, value in terms.items()}, prog_bar=stage == "val",
                      sync_dist=True)


def squared_error(reconstruction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The reconstruction error PCA is compared with: squared error summed over the pixels of
    each image, averaged over images."""
    return ((reconstruction - x) ** 2).flatten(1).sum(1).mean()
