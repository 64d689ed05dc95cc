"""Small dataset files in the exact public formats, written from the format descriptions (not
with the readers under test): IDX for MNIST and Fashion-MNIST, the CIFAR-10 binary version."""

from __future__ import annotations

import gzip
import struct

import numpy as np

from trainyard_cnn import datasets


def idx_bytes(array: np.ndarray, type_code: int, big_endian_dtype: str) -> bytes:
    """IDX: 0x00 0x00, type, ndim, one big-endian uint32 per dimension, big-endian data."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(big_endian_dtype).tobytes()


def write_mnist(root, n_train=20, n_test=7, size=28, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        arrays[split] = (images, labels)
        for name, array in zip(datasets.MNIST_FILES[split], (images, labels)):
            data = idx_bytes(array, 0x08, ">u1")
            (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


def cifar_records(labels):
    """Binary CIFAR records: label byte, then R, G and B planes; plane c of image i is filled
    with a known value so the channel layout can be checked."""
    out = bytearray()
    for i, label in enumerate(labels):
        out.append(label)
        for channel in range(3):
            out += bytes([(10 * i + channel) % 256]) * 1024
    return bytes(out)


def write_cifar(folder, per_batch=3, test=4):
    folder.mkdir(parents=True, exist_ok=True)
    for batch in range(1, 6):
        (folder / f"data_batch_{batch}.bin").write_bytes(cifar_records([batch] * per_batch))
    (folder / "test_batch.bin").write_bytes(cifar_records([9, 8, 7, 6][:test]))
