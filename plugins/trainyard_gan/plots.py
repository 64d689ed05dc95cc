"""The family's pictures: generated points against the modes, the discriminator over the plane,
an animation of training, and grids of generated images.

Figures are drawn with matplotlib's object API (no pyplot), so nothing depends on a display;
the GIF is written by matplotlib's PillowWriter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from trainyard_gan.metrics import HIGH_QUALITY_STDS
from trainyard_gan.points import Mixture
from trainyard_repr.plots import image_grid

SHOWN_POINTS = 1000  # generated points drawn per picture


def bounds(mixture: Mixture) -> float:
    return float(np.abs(mixture.centres).max()) + 1.0


def _draw_points(ax, mixture: Mixture, generated: np.ndarray, real: np.ndarray | None = None) -> None:
    if real is not None:
        ax.scatter(real[:, 0], real[:, 1], s=3, color="0.6", alpha=0.5, label="real", rasterized=True)
    ax.scatter(generated[:, 0], generated[:, 1], s=3, color="tab:blue", alpha=0.5, label="generated",
               rasterized=True)
    for centre in mixture.centres:  # each mode's high-quality disc: 3 standard deviations
        ax.add_patch(Circle(centre, HIGH_QUALITY_STDS * mixture.std, fill=False, color="tab:red", linewidth=1))
    limit = bounds(mixture)
    ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal")


def scatter_figure(mixture: Mixture, generated: np.ndarray, real: np.ndarray | None = None,
                   title: str = "", size: float = 3.0) -> Figure:
    figure = Figure(figsize=(size, size), dpi=80)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0.02, 0.02, 0.96, 0.9 if title else 0.96))
    _draw_points(ax, mixture, generated[:SHOWN_POINTS], None if real is None else real[:SHOWN_POINTS])
    ax.set(xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize=9)
    return figure


def scatter_image(mixture: Mixture, generated: np.ndarray, title: str = "") -> np.ndarray:
    """Generated points (N, 2) and the modes' 3-sigma circles: (240, 240, 3) uint8."""
    figure = scatter_figure(mixture, generated, title=title)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def samples_grid(images: torch.Tensor, labels: torch.Tensor | None, classes: int, per_row: int = 10) -> np.ndarray:
    """Generated images (N, C, H, W) in [0, 1]: the first 100 in rows of 10, or for a conditional
    GAN one row per class (`per_row` samples of it)."""
    images = images.detach().cpu()
    if labels is None:
        return image_grid(images[:100], columns=per_row)
    labels = labels.detach().cpu()
    rows = [images[labels == label][:per_row] for label in range(classes)]
    return image_grid(torch.cat(rows), columns=per_row)


def write_reports(model, data, directory: Path) -> list[Path]:
    """The reports of a trained GAN: for 2-D mixtures, the final samples against real test points,
    the discriminator's output over the plane and an animation of training; for images, a grid."""
    from trainyard_gan.evaluation import PointsEvaluation

    model.eval()
    samples, labels = model.generate("test")
    if not isinstance(model.evaluation, PointsEvaluation):
        path = directory / "samples.png"
        import matplotlib.image

        grid = samples_grid(samples, labels, model.evaluation.modes)
        matplotlib.image.imsave(path, grid, cmap="gray", vmin=0, vmax=1)
        return [path]
    mixture = model.evaluation.mixture
    data.setup("test")
    real = data.splits["test"].tensors[0].numpy()
    generated = samples.cpu().numpy()
    paths = [directory / "samples.png", directory / "discriminator.png"]
    scatter_figure(mixture, generated, real, title="real (grey) and generated (blue) test points",
                   size=5).savefig(paths[0])
    discriminator_figure(model, mixture, generated).savefig(paths[1])
    if model.history:
        paths.append(training_gif(mixture, model.history, directory / "training.gif"))
    return paths


@torch.no_grad()
def discriminator_figure(model, mixture: Mixture, generated: np.ndarray, resolution: int = 200) -> Figure:
    """The discriminator's score over the plane: the probability it gives 'real' (a critic's raw
    value for wgan_gp), with the modes and the generated points on top. For a conditional
    discriminator, each point is scored against its nearest mode's class."""
    limit = bounds(mixture)
    axis = torch.linspace(-limit, limit, resolution)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    plane = torch.stack([xs.ravel(), ys.ravel()], dim=1).to(model.device)  # (R*R, 2)
    labels = None
    if model.classes:
        centres = torch.from_numpy(mixture.centres).float().to(model.device)
        labels = torch.cdist(plane, centres).argmin(dim=1)
    # With packing, the discriminator judges m copies of each point side by side.
    scores = model.discriminator(plane.repeat(1, model.params.pack), labels).float().cpu()
    scores = scores.reshape(resolution, resolution)
    probability = model.params.loss != "wgan_gp"
    figure = Figure(figsize=(6, 5))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    shown = torch.sigmoid(scores) if probability else scores
    image = ax.imshow(shown.numpy(), origin="lower", extent=(-limit, limit, -limit, limit), cmap="viridis",
                      vmin=0 if probability else None, vmax=1 if probability else None)
    figure.colorbar(image, ax=ax, label="D(x): probability of 'real'" if probability else "critic value")
    _draw_points(ax, mixture, generated[:SHOWN_POINTS])
    ax.set_title(f"discriminator ({model.params.loss}) and generated points")
    figure.tight_layout()
    return figure


def training_gif(mixture: Mixture, history: list[tuple[int, np.ndarray]], path: Path) -> Path:
    """One frame per validation: the generated points (from the same noise) at that step."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    figure = Figure(figsize=(3.5, 3.5), dpi=72)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0.02, 0.02, 0.96, 0.9))

    def frame(index: int) -> None:
        step, points = history[index]
        ax.clear()
        _draw_points(ax, mixture, points)
        ax.set(xticks=[], yticks=[])
        ax.set_title(f"step {step}", fontsize=9)

    FuncAnimation(figure, frame, frames=len(history)).save(path, writer=PillowWriter(fps=4))
    return path
