"""The family's pictures: image grids (logged during training and in the run's reports), and the
end-of-run reports: reconstructions beside inputs, the codes on a 2-D map coloured by label,
a VAE's prior samples and latent traversals, a sparse code's mean activation per unit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SCALE = 4  # pixels per image pixel in logged grids: 8x8 digits are too small to see otherwise


def image_grid(images: torch.Tensor, columns: int) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one picture (rows * H, columns * W) grey, or (..., 3) colour,
    1-pixel gaps, each image pixel SCALE x SCALE. Gaps and missing cells are white."""
    images = images.detach().float().clamp(0, 1).cpu().numpy()
    count, channels, height, width = images.shape
    rows = -(-count // columns)
    canvas = np.zeros((channels, rows * (height + 1), columns * (width + 1)), dtype=np.float32)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        canvas[:, row * (height + 1):row * (height + 1) + height, column * (width + 1):column * (width + 1) + width] = image
    canvas = np.kron(canvas, np.ones((1, SCALE, SCALE), dtype=np.float32))
    # Dark strokes on white, as digits are drawn (pixel value 1 is ink).
    return 1.0 - (canvas[0] if channels == 1 else canvas.transpose(1, 2, 0))


def image_rows(rows: list[torch.Tensor]) -> np.ndarray:
    """Several (N, C, H, W) batches of the same N, one per row: inputs above their outputs."""
    return image_grid(torch.cat(rows), columns=len(rows[0]))


def write_reports(model, data, directory: Path) -> list[Path]:
    """The reports of a trained CodeModel on its data's test split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainyard_repr.autoencoder import Autoencoder
    from trainyard_repr.vae import VAE

    data.setup("test")
    images, labels = data.splits["test"].tensors  # (N, C, H, W), (N,)
    model.eval()
    paths = []
    with torch.no_grad():
        shown = images[:16].to(model.device)
        paths.append(_save(plt, directory / "reconstructions.png", image_rows([shown, model.reconstruct(shown)])))
        codes = torch.cat([model.encode(batch.to(model.device)).float().cpu() for batch in images.split(512)]).numpy()
        paths.append(_code_map(plt, codes, labels.numpy(), data, directory / "codes.png"))
        if isinstance(model, VAE):
            samples = model.sample(64, torch.Generator().manual_seed(model.seed))
            paths.append(_save(plt, directory / "prior_samples.png", image_grid(samples, 8)))
            paths.append(_save(plt, directory / "latent_traversals.png", _traversals(model, codes)))
        if isinstance(model, Autoencoder) and model.options.sparsity.penalty != "none":
            paths.append(_activations(plt, codes, model.options, directory / "mean_activations.png"))
    return paths


def _traversals(model, codes: np.ndarray, steps: int = 9, dims: int = 8) -> np.ndarray:
    latent = codes.shape[1]
    values = torch.linspace(-3, 3, steps)
    z = torch.zeros(min(latent, dims), steps, latent)
    for dim in range(len(z)):
        z[dim, :, dim] = values
    return image_grid(model.decode(z.reshape(-1, latent).to(model.device)), columns=steps)


def _code_map(plt, codes: np.ndarray, labels: np.ndarray, data, path: Path) -> Path:
    """The codes themselves when they are 2-D, otherwise their first two principal components."""
    if codes.shape[1] == 2:
        points, axes = codes, ("code 1", "code 2")
    else:
        from sklearn.decomposition import PCA

        points, axes = PCA(n_components=2).fit_transform(codes), ("principal component 1 of the codes", "component 2")
    figure, ax = plt.subplots(figsize=(6, 5))
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=8, vmin=-0.5, vmax=9.5)
    names = getattr(data, "class_names", None)
    colorbar = figure.colorbar(scatter, ax=ax, ticks=range(10))
    if names:
        colorbar.ax.set_yticklabels(list(names)[:10])
    ax.set(xlabel=axes[0], ylabel=axes[1], title=f"test codes ({codes.shape[1]}-D) by label")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _activations(plt, codes: np.ndarray, options, path: Path) -> Path:
    mean = codes.mean(axis=0)  # (code,): each unit's mean activation on the test set
    figure, ax = plt.subplots(figsize=(6, 4))
    ax.hist(mean, bins=30)
    if options.sparsity.penalty == "kl":
        ax.axvline(options.sparsity.target, color="k", linestyle="--", label=f"target rho = {options.sparsity.target}")
        ax.legend()
    ax.set(xlabel="mean activation on the test set", ylabel="code units",
           title=f"{options.sparsity.penalty} sparsity: mean {mean.mean():.3f}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _save(plt, path: Path, picture: np.ndarray) -> Path:
    plt.imsave(path, picture, cmap="gray", vmin=0, vmax=1) if picture.ndim == 2 else plt.imsave(path, picture)
    return path
