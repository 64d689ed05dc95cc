"""The LightningModule every CNN of this plugin trains in: images in, class scores out.

The network (LeNet-5, AlexNet, VGG, ResNet: plain nn.Modules in this package) maps a batch of
images (B, C, H, W) or volumes (B, C, D, H, W) to logits (B, num_classes). This module adds
what training needs: cross-entropy loss, accuracy, and, on the test set, a confusion matrix
and a few misclassified examples for the run's plots. At each validation it also logs the first
misclassified validation images as a step-indexed image series (`trainyard.media`), so the MLflow
UI's step slider shows which images the model still gets wrong as it trains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from trainyard import BuildContext
from trainyard.media import log_image
from trainyard_cnn.plots import misclassified_grid

METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc")
MAX_MISCLASSIFIED = 25
MAX_MISCLASSIFIED_PER_VALIDATION = 10


class ImageClassifier(LightningModule):
    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], class_names: tuple[str, ...]):
        super().__init__()
        self.net = net
        self.class_names = tuple(class_names)
        num_classes = len(class_names)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        # Lightning's hook for a sample input; trainyard also uses it for the MLflow model signature.
        self.example_input_array = torch.zeros(1, *input_shape)
        self.misclassified: list[tuple[torch.Tensor, int, int]] = []  # (image, predicted, true)
        self.val_misclassified: list[tuple[torch.Tensor, int, int]] = []  # the same, this validation
        self.confusion_matrix: torch.Tensor | None = None  # (true, predicted) counts on the test set

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, *spatial) -> (B, num_classes)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def on_validation_epoch_start(self):
        self.val_misclassified = []

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), prog_bar=True, sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True)
        _keep_misclassified(self.val_misclassified, x, logits.argmax(dim=1), y, MAX_MISCLASSIFIED_PER_VALIDATION)

    def on_validation_epoch_end(self):
        if self.val_misclassified and not self.trainer.sanity_checking:
            log_image(self, "misclassified", misclassified_grid(self.val_misclassified, self.class_names))

    def on_test_epoch_start(self):
        self.test_confusion.reset()
        self.misclassified = []

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        predicted = logits.argmax(dim=1)
        self.test_acc(logits, y)
        self.test_confusion.update(predicted, y)
        self.log("test/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("test/acc", self.test_acc)
        _keep_misclassified(self.misclassified, x, predicted, y, MAX_MISCLASSIFIED)

    def on_test_epoch_end(self):
        # Computed here, where every process of multi-device training takes part in the sync.
        # (The misclassified examples are those this process saw.)
        self.confusion_matrix = self.test_confusion.compute().cpu()


def _keep_misclassified(kept: list, x: torch.Tensor, predicted: torch.Tensor, y: torch.Tensor, limit: int) -> None:
    """Append (image, predicted, true) for this batch's mistakes to `kept`, up to `limit` in all."""
    wrong = (predicted != y).nonzero().flatten()
    for i in wrong[: limit - len(kept)].tolist():
        kept.append((x[i].detach().cpu(), int(predicted[i]), int(y[i])))


def image_classifier(net_class, params, ctx: BuildContext) -> ImageClassifier:
    """Build `net_class(params, input_shape, num_classes)` for the spec's image data."""
    data = ctx.data
    input_shape = getattr(data, "input_shape", None)
    class_names = getattr(data, "class_names", None)
    if not isinstance(input_shape, tuple) or not class_names:
        raise ValueError(f"a CNN needs image data with input_shape and class_names; "
                         f"{type(data).__name__} has none (use a cnn data module)")
    return ImageClassifier(net_class(params, input_shape, len(class_names)), input_shape, class_names)
