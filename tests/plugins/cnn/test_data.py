"""The CNN data modules and augmentation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning import seed_everything
from typer.testing import CliRunner

from cnn_files import write_cifar, write_mnist
from trainyard.cli import app
from trainyard_cnn.augment import AugmentParams, build_augmentation
from trainyard_cnn.data import CIFAR10, MNIST, CIFAR10Params, Digits, DigitsParams, MNISTParams, Volumes, VolumesParams


def tensors(module, split):
    return module.splits[split].tensors


def test_digits_splits():
    data = Digits(DigitsParams())
    data.setup()
    sizes = {split: len(data.splits[split]) for split in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797 and sizes["test"] == 360
    images, labels = tensors(data, "train")
    assert images.shape[1:] == (1, 8, 8) and images.dtype == torch.float32
    assert 0.0 == images.min() and images.max() == 1.0
    # stratified: every digit is about a tenth of each split
    for split in ("train", "val", "test"):
        counts = torch.bincount(tensors(data, split)[1], minlength=10).float()
        assert (counts / counts.sum() - 0.1).abs().max() < 0.02
    # no image is in two splits
    rows = {split: {tuple(img.flatten().tolist()) for img in tensors(data, split)[0]} for split in data.splits}
    assert not rows["train"] & rows["test"] and not rows["val"] & rows["test"]


def test_digits_split_depends_on_split_seed_only():
    def test_labels(split_seed, run_seed):
        seed_everything(run_seed, verbose=False)
        data = Digits(DigitsParams(split_seed=split_seed))
        data.setup()
        return tensors(data, "test")[0]

    assert torch.equal(test_labels(0, 1), test_labels(0, 2))
    assert not torch.equal(test_labels(0, 1), test_labels(1, 1))


def test_digits_class_subset_is_relabelled():
    data = Digits(DigitsParams(classes=(7, 3)))
    data.setup()
    assert data.class_names == ("7", "3")
    labels = torch.cat([tensors(data, split)[1] for split in data.splits])
    from sklearn.datasets import load_digits

    sevens_and_threes = int(((load_digits().target == 7) | (load_digits().target == 3)).sum())
    assert set(labels.tolist()) == {0, 1} and len(labels) == sevens_and_threes


def test_digit_classes_must_be_distinct_digits():
    with pytest.raises(ValueError, match="expected distinct digits 0-9, got \\[3, 3\\]"):
        DigitsParams(classes=(3, 3))


def test_mnist_module_reads_idx_files(tmp_path):
    arrays = write_mnist(tmp_path / "mnist", n_train=40, n_test=10, gz=True)
    data = MNIST(MNISTParams(root=tmp_path / "mnist", val_fraction=0.25, limit=20))
    data.setup()
    assert data.input_shape == (1, 28, 28) and len(data.splits["test"]) == 10
    assert len(data.splits["train"]) + len(data.splits["val"]) == 20  # limit
    test_images, test_labels = tensors(data, "test")
    assert torch.allclose(test_images[:, 0] * 255, torch.from_numpy(arrays["test"][0]).float(), atol=1e-3)
    assert test_labels.tolist() == arrays["test"][1].tolist()
    fashion = MNIST(MNISTParams(root=tmp_path / "mnist", variant="fashion_mnist"))
    assert fashion.class_names[0] == "T-shirt/top"


def test_cifar_module_reads_binary_files(tmp_path):
    write_cifar(tmp_path / "c" / "cifar-10-batches-bin", per_batch=4)
    data = CIFAR10(CIFAR10Params(root=tmp_path / "c", val_fraction=0.2))
    data.setup()
    images, labels = tensors(data, "test")
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == [9, 8, 7, 6]
    assert data.class_names[9] == "truck"


MISSING = {
    "cnn.mnist": "missing {root}/train-images-idx3-ubyte (or train-images-idx3-ubyte.gz) (or set download: true)",
    "cnn.cifar10": "no CIFAR-10 binary files in {root} (expected cifar-10-batches-bin/data_batch_1.bin ... "
                   "test_batch.bin); copy them there or set download: true",
}


@pytest.mark.parametrize("name", list(MISSING))
def test_missing_files_are_bad_input(name, tmp_path):
    root = tmp_path / "nothing"
    (tmp_path / "spec.yaml").write_text(
        f"name: t\nmodel: {{name: cnn.lenet5}}\ndata: {{name: {name}, params: {{root: '{root}'}}}}\n")
    result = CliRunner().invoke(app, ["validate", "spec.yaml"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "spec.yaml: data.params: " + MISSING[name].format(root=root)


def test_volumes_module():
    data = Volumes(VolumesParams(num_samples=90, size=12))
    data.setup()
    images, labels = tensors(data, "train")
    assert images.shape[1:] == (1, 12, 12, 12) and data.class_names == ("sphere", "cube", "cylinder")
    assert sum(len(split) for split in data.splits.values()) == 90


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (1, 12, 12, 12)])
def test_augmentation_keeps_shapes_and_changes_images(shape):
    torch.manual_seed(0)
    x = torch.rand(16, *shape)
    for params in (AugmentParams(shift=0.2, rotate=15), AugmentParams(crop_padding=2), AugmentParams(noise=0.1),
                   AugmentParams(hflip=True, vflip=True)):
        out = build_augmentation(params, shape)(x)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert not torch.allclose(out, x), params
    assert build_augmentation(AugmentParams(), shape) is None


def test_flips_are_exact_mirror_images():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 8, 8)
    out = build_augmentation(AugmentParams(hflip=True), (1, 8, 8))(x)
    flipped = [torch.equal(o, torch.flip(i, dims=[-1])) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54


def test_augmentation_applies_to_training_batches_only():
    data = Digits(DigitsParams(augment=AugmentParams(noise=0.5)))
    batch = (torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    data.trainer = SimpleNamespace(training=False)
    assert torch.equal(data.on_after_batch_transfer(batch, 0)[0], batch[0])
    data.trainer = SimpleNamespace(training=True)
    assert not torch.equal(data.on_after_batch_transfer(batch, 0)[0], batch[0])
    example = torch.zeros(1, 1, 8, 8)  # Lightning's model summary sends a lone example input
    assert data.on_after_batch_transfer(example, 0) is example


def test_seeded_data_pipeline_is_reproducible():
    def first_batch(seed):
        seed_everything(seed, verbose=False)
        data = Digits(DigitsParams(augment=AugmentParams(crop_padding=1)))
        data.setup()
        data.trainer = SimpleNamespace(training=True)
        return data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)[0]

    assert torch.equal(first_batch(3), first_batch(3))
    assert not torch.equal(first_batch(3), first_batch(4))
