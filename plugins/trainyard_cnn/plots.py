"""The plots logged with every CNN run: a confusion matrix and a grid of misclassified test images.

Figures are drawn with matplotlib's object API (no pyplot), so nothing depends on a display or
on the process-wide backend.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from trainyard_cnn.classifier import ImageClassifier


def write_reports(model: ImageClassifier, directory: Path) -> list[Path]:
    paths = [confusion_matrix_png(model, directory / "confusion_matrix.png")]
    if model.misclassified:
        paths.append(misclassified_png(model, directory / "misclassified.png"))
    return paths


def confusion_matrix_png(model: ImageClassifier, path: Path) -> Path:
    """Rows: true class; columns: predicted class; counts over the whole test set."""
    size = max(4.0, 0.45 * len(model.class_names) + 2)
    figure = Figure(figsize=(size, size))
    ax = figure.subplots()
    matrix = model.confusion_matrix.numpy()
    ConfusionMatrixDisplay(matrix, display_labels=list(model.class_names)).plot(ax=ax, colorbar=False)
    ax.set_title(f"Confusion matrix (test accuracy {_accuracy(model):.3f})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def misclassified_png(model: ImageClassifier, path: Path) -> Path:
    """Up to 25 test images the model got wrong, titled 'predicted (true)'."""
    count = len(model.misclassified)
    cols = min(5, count)
    rows = math.ceil(count / cols)
    figure = Figure(figsize=(2 * cols, 2.2 * rows))
    axes = figure.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, predicted, true) in zip(axes.flat, model.misclassified):
        ax.imshow(_displayable(image), cmap="gray" if image.shape[0] == 1 else None)
        ax.set_title(f"{model.class_names[predicted]} ({model.class_names[true]})", fontsize=9, color="firebrick")
    figure.suptitle("Misclassified test images: predicted (true)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def _displayable(image: torch.Tensor):
    """(C, H, W) or (C, D, H, W) -> an (H, W) or (H, W, 3) array in [0, 1]."""
    if image.dim() == 4:
        image = image[:, image.shape[1] // 2]  # the middle slice of a volume
    image = image.float()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def _accuracy(model: ImageClassifier) -> float:
    matrix = model.confusion_matrix
    return float(matrix.diag().sum() / matrix.sum().clamp_min(1))
