"""Image data modules: bundled digits, MNIST / Fashion-MNIST, CIFAR-10, synthetic 3-D volumes.

Each one turns arrays into tensors scaled to [0, 1], splits off a validation set (stratified,
with its own `split_seed`, so runs with different seeds share the same test set), and serves
batches of (images, labels): images (B, C, H, W), or (B, C, D, H, W) for volumes; labels (B,).
The file formats are read by `trainyard_cnn.datasets`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from pytorch_lightning import LightningDataModule
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from trainyard import Params
from trainyard_cnn import datasets
from trainyard_cnn.augment import AugmentParams, build_augmentation

Arrays = tuple[np.ndarray, np.ndarray]  # images float32 (N, C, ...) in [0, 1], labels int64 (N,)


class ImageDataParams(Params):
    batch_size: int = Field(64, ge=1, description="Images per batch.")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="Part of the training set held out for validation.")
    split_seed: int = Field(0, ge=0, description="Seed of the train/val/test split (independent of the run's seed).")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0: load in the main process).")
    augment: AugmentParams = Field(default_factory=AugmentParams, description="Training-time augmentation.")
    labels_per_class: int | None = Field(
        None, ge=1, description="Keep only this many labelled images per class in training and in validation "
                                "(few-label learning; the test set is unchanged).")


class ImageDataModule(LightningDataModule):
    """In-memory image classification data. Subclasses say how to load the train and test arrays."""

    def __init__(self, params: ImageDataParams, input_shape: tuple[int, ...], class_names: tuple[str, ...]):
        super().__init__()
        self.params = params
        self.input_shape = input_shape
        self.class_names = class_names
        self.augmentation = build_augmentation(params.augment, input_shape)
        self.splits: dict[str, TensorDataset] = {}

    def load(self) -> dict[str, Arrays]:
        """Return {'train': arrays, 'test': arrays}; validation is split off the training arrays."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        arrays = self.load()
        images, labels = arrays["train"]
        train, val = _split(labels, self.params.val_fraction, self.params.split_seed)
        if self.params.labels_per_class:
            train, val = (_per_class(labels, indices, self.params.labels_per_class, self.params.split_seed)
                          for indices in (train, val))
        self.splits = {"train": _tensors(images[train], labels[train]),
                       "val": _tensors(images[val], labels[val]),
                       "test": _tensors(*arrays["test"])}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        workers = self.params.num_workers
        return DataLoader(self.splits[split], batch_size=self.params.batch_size, shuffle=shuffle,
                          num_workers=workers, persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # Augment whole (images, labels) batches on the device, and only while training. (Lightning
        # also sends the model's example input through here, alone, for its model summary.)
        training = self.trainer is not None and self.trainer.training
        if self.augmentation is not None and training and isinstance(batch, (list, tuple)):
            images, labels = batch
            batch = (self.augmentation(images), labels)
        return batch


def _tensors(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
                         torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)))


def _split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a (rest, held-out) split, stratified by class when every class can be
    represented on both sides (small subsets, e.g. with `limit`, may not allow it)."""
    counts = np.bincount(labels)
    held_out = int(np.ceil(fraction * len(labels)))
    classes = int((counts > 0).sum())
    stratify = labels if counts[counts > 0].min() >= 2 and classes <= min(held_out, len(labels) - held_out) else None
    return train_test_split(np.arange(len(labels)), test_size=fraction, stratify=stratify, random_state=seed)


def _per_class(labels: np.ndarray, indices: np.ndarray, count: int, seed: int) -> np.ndarray:
    """The first `count` of `indices` of each class, in an order shuffled by `seed`."""
    shuffled = np.random.default_rng(seed).permutation(indices)
    return np.sort(np.concatenate([shuffled[labels[shuffled] == label][:count] for label in np.unique(labels)]))


def _split_test(images: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> dict[str, Arrays]:
    train, test = _split(labels, fraction, seed)
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


# --- scikit-learn's bundled digits: real data, no download -----------------------------------


class DigitsParams(ImageDataParams):
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Part of the 1,797 images held out for testing.")
    classes: tuple[int, ...] | None = Field(
        None, min_length=2, description="Keep only these digits, relabelled 0..k-1 in this order (default: all ten).")

    @field_validator("classes")
    @classmethod
    def _digits(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (len(set(value)) != len(value) or not all(0 <= d <= 9 for d in value)):
            raise ValueError(f"expected distinct digits 0-9, got {list(value)}")
        return value


class Digits(ImageDataModule):
    """8x8 grey-scale handwritten digits (UCI), 1,797 images, from scikit-learn."""

    def __init__(self, params: DigitsParams):
        classes = params.classes or tuple(range(10))
        super().__init__(params, (1, 8, 8), tuple(str(digit) for digit in classes))
        self.classes = classes

    def load(self) -> dict[str, Arrays]:
        pixels, digits = _digits()  # (N, 64) in 0..16, (N,)
        keep = np.isin(digits, self.classes)
        relabel = {digit: index for index, digit in enumerate(self.classes)}
        labels = np.array([relabel[d] for d in digits[keep]], dtype=np.int64)
        images = (pixels[keep] / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)  # (N, 64) -> (N, 1, 8, 8)
        return _split_test(images, labels, self.params.test_fraction, self.params.split_seed)


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits, read from scikit-learn's file once per process (a sweep's trials share a process)."""
    from sklearn.datasets import load_digits

    pixels, digits = load_digits(return_X_y=True)
    pixels.setflags(write=False)
    digits.setflags(write=False)
    return pixels, digits


# --- MNIST and Fashion-MNIST (IDX files) -----------------------------------------------------


class MNISTParams(ImageDataParams):
    variant: Literal["mnist", "fashion_mnist"] = Field("mnist", description="Which of the two IDX datasets.")
    root: Path | None = Field(None, description="Folder with the four IDX files (default: data/<variant>).")
    download: bool = Field(False, description="Download missing files from the public mirror first.")
    limit: int | None = Field(None, ge=10, description="Use only the first N training images (quick runs).")


class MNIST(ImageDataModule):
    """28x28 grey-scale digits (MNIST) or clothing (Fashion-MNIST): 60,000 training, 10,000 test images."""

    def __init__(self, params: MNISTParams):
        names = datasets.FASHION_MNIST_CLASSES if params.variant == "fashion_mnist" else tuple(map(str, range(10)))
        super().__init__(params, (1, 28, 28), tuple(names))
        self.root = params.root or Path("data") / params.variant
        if not params.download:
            try:
                for split in ("train", "test"):
                    for name in datasets.MNIST_FILES[split]:
                        datasets.find_mnist_file(self.root, name)
            except datasets.DatasetError as error:
                raise ValueError(f"{error} (or set download: true)") from None

    def prepare_data(self) -> None:
        if self.params.download:
            datasets.download_mnist(self.root, self.params.variant)

    def load(self) -> dict[str, Arrays]:
        arrays = {}
        for split in ("train", "test"):
            images, labels = datasets.load_mnist(self.root, split)
            if split == "train" and self.params.limit:
                images, labels = images[: self.params.limit], labels[: self.params.limit]
            arrays[split] = ((images / 255.0).astype(np.float32)[:, None], labels)  # (N, 28, 28) -> (N, 1, 28, 28)
        return arrays


# --- CIFAR-10 (binary version) ---------------------------------------------------------------


class CIFAR10Params(ImageDataParams):
    root: Path = Field(Path("data/cifar10"), description="Folder with cifar-10-batches-bin/ (or the .bin files).")
    download: bool = Field(False, description="Download and unpack the binary archive first.")
    limit: int | None = Field(None, ge=10, description="Use only the first N training images (quick runs).")


class CIFAR10(ImageDataModule):
    """32x32 colour images in 10 classes: 50,000 training, 10,000 test."""

    def __init__(self, params: CIFAR10Params):
        super().__init__(params, (3, 32, 32), datasets.CIFAR10_CLASSES)
        if not params.download and not any(
            (folder / "test_batch.bin").is_file() for folder in (params.root, params.root / "cifar-10-batches-bin")
        ):
            raise ValueError(f"no CIFAR-10 binary files in {params.root} (expected cifar-10-batches-bin/"
                             "data_batch_1.bin ... test_batch.bin); copy them there or set download: true")

    def prepare_data(self) -> None:
        if self.params.download:
            datasets.download_cifar10(self.params.root)

    def load(self) -> dict[str, Arrays]:
        arrays = {}
        for split in ("train", "test"):
            images, labels = datasets.load_cifar10(self.params.root, split)
            if split == "train" and self.params.limit:
                images, labels = images[: self.params.limit], labels[: self.params.limit]
            arrays[split] = ((images / 255.0).astype(np.float32), labels)  # (N, 3, 32, 32)
        return arrays


# --- synthetic volumes for 3-D convolutions --------------------------------------------------


class VolumesParams(ImageDataParams):
    num_samples: int = Field(600, ge=30, description="Volumes to generate (balanced over the classes).")
    size: int = Field(16, ge=12, le=64, description="Edge length of each cubic volume, in voxels.")
    noise: float = Field(0.1, ge=0, description="Standard deviation of the Gaussian noise added to each voxel.")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Part of the volumes held out for testing.")


class Volumes(ImageDataModule):
    """Noisy 3-D volumes holding one solid shape: a sphere, a cube or a cylinder."""

    def __init__(self, params: VolumesParams):
        size = params.size
        super().__init__(params, (1, size, size, size), datasets.VOLUME_CLASSES)

    def load(self) -> dict[str, Arrays]:
        p = self.params
        volumes, labels = datasets.make_volumes(p.num_samples, p.size, p.noise, seed=p.split_seed)
        return _split_test(volumes, labels, p.test_fraction, p.split_seed)  # volumes (N, 1, D, H, W)
