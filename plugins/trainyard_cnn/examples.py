"""What the conformance kit (`trainyard plugin check cnn`) builds each component with.

The file-based data modules get a few random images written into the kit's temporary folder in
their exact public formats (IDX for MNIST, the binary version for CIFAR-10), so checking them
needs no download.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from trainyard import Example
from trainyard_cnn import datasets

DIGITS = {"name": "cnn.digits", "params": {"batch_size": 8}}
MODEL = Example(data=DIGITS, output_shape=(1, 10))  # one 8x8 digit in, ten class scores out


def image_batch(channels: int, *spatial: int) -> tuple[tuple[str, tuple[int | None, ...]], ...]:
    """A batch of (images, labels): float32 (B, C, *spatial) and int64 (B,)."""
    return (("float32", (None, channels, *spatial)), ("int64", (None,)))


def mnist_files(folder: Path) -> dict:
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("test", 10)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        image_file, label_file = datasets.MNIST_FILES[split]
        # IDX: two zero bytes, type 0x08 (unsigned byte), the number of dimensions, each size.
        (folder / image_file).write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", count, 28, 28) + images.tobytes())
        (folder / label_file).write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", count) + labels.tobytes())
    return {"root": str(folder), "batch_size": 8}


def cifar10_files(folder: Path) -> dict:
    rng = np.random.default_rng(0)
    for name in (*datasets.CIFAR10_FILES["train"], *datasets.CIFAR10_FILES["test"]):
        # Each record: the label byte, then the red, green and blue 32x32 planes.
        records = np.concatenate([rng.integers(0, 10, (8, 1)), rng.integers(0, 256, (8, 3 * 32 * 32))], axis=1)
        (folder / name).write_bytes(records.astype(np.uint8).tobytes())
    return {"root": str(folder), "batch_size": 8}


DIGITS_DATA = Example(params={"batch_size": 8}, batch=image_batch(1, 8, 8))
MNIST_DATA = Example(params=mnist_files, batch=image_batch(1, 28, 28))
CIFAR10_DATA = Example(params=cifar10_files, batch=image_batch(3, 32, 32))
VOLUMES_DATA = Example(params={"num_samples": 60, "size": 12, "batch_size": 8}, batch=image_batch(1, 12, 12, 12))
