"""The plots logged with every CNN run: a confusion matrix and a grid of misclassified test images.

Figures are drawn with matplotlib's object API (no pyplot), so nothing depends on a display or
on the process-wide backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.figure import Figure

if TYPE_CHECKING:  # the classifier imports this module to draw its per-validation series
    from trainyard_cnn.classifier import ImageClassifier


def write_reports(model: ImageClassifier, directory: Path) -> list[Path]:
    paths = [confusion_matrix_png(model, directory / "confusion_matrix.png")]
    if model.misclassified:
        paths.append(misclassified_png(model, directory / "misclassified.png"))
    return paths


def confusion_matrix_png(model: ImageClassifier, path: Path) -> Path:
    """Rows: true class; columns: predicted class; counts over the whole test set."""
    # Imported here, when the run's reports are drawn: the networks import without scikit-learn.
    from sklearn.metrics import ConfusionMatrixDisplay

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
    figure = misclassified_figure(model.misclassified, model.class_names, "Misclassified test images: predicted (true)")
    figure.savefig(path, dpi=110)
    return path


def misclassified_figure(examples: list[tuple[torch.Tensor, int, int]], class_names: tuple[str, ...],
                         title: str) -> Figure:
    """A grid of (image, predicted, true) examples, five to a row, each titled 'predicted (true)'."""
    count = len(examples)
    cols = min(5, count)
    rows = math.ceil(count / cols)
    figure = Figure(figsize=(2 * cols, 2.2 * rows + 0.4))
    axes = figure.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, predicted, true) in zip(axes.flat, examples):
        ax.imshow(_displayable(image), cmap="gray" if image.shape[0] == 1 else None)
        ax.set_title(f"{class_names[predicted]} ({class_names[true]})", fontsize=9, color="firebrick")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def misclassified_grid(examples: list[tuple[torch.Tensor, int, int]], class_names: tuple[str, ...],
                       cell: int = 96) -> np.ndarray:
    """The (image, predicted, true) examples as one (H, W, 3) uint8 grid, five to a row, each
    captioned 'predicted (true)': the per-validation image series. Drawn with Pillow rather than
    matplotlib because it is drawn at every validation: about a millisecond against 150 ms, which
    on a small model is as long as an epoch."""
    from PIL import Image, ImageDraw

    caption = 14
    cols = min(5, len(examples))
    rows = math.ceil(len(examples) / cols)
    grid = Image.new("RGB", (cols * cell, rows * (cell + caption)), "white")
    draw = ImageDraw.Draw(grid)
    for index, (image, predicted, true) in enumerate(examples):
        pixels = (_displayable(image) * 255).astype(np.uint8)
        tile = Image.fromarray(pixels).convert("RGB").resize((cell - 4, cell - 4), Image.NEAREST)
        x, y = (index % cols) * cell, (index // cols) * (cell + caption)
        grid.paste(tile, (x + 2, y + caption))
        # Pillow's built-in font: about 6 pixels a character, 16 to a cell.
        draw.text((x + 2, y + 1), f"{class_names[predicted][:7]} ({class_names[true][:6]})", fill=(178, 34, 34))
    return np.asarray(grid)


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
