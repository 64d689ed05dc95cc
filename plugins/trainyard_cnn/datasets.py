"""Readers for image datasets kept in local files, and a generator of synthetic 3-D volumes.

Only numpy and the standard library: these are file formats, not models.

IDX (MNIST and Fashion-MNIST; LeCun's format): big-endian throughout. Two zero bytes, one byte
for the element type (0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), one byte for the number of dimensions, then one uint32 per dimension, then the
data in row-major order. Images are idx3 (N, 28, 28) unsigned bytes; labels idx1 (N,).
The public copies are gzip-compressed; both forms are read.

CIFAR-10, binary version: data_batch_1.bin ... data_batch_5.bin (10,000 images each) and
test_batch.bin. Each record is 3,073 bytes: a label byte, then 1,024 red, 1,024 green and 1,024
blue pixel bytes, each plane a 32x32 image in row-major order.
"""

from __future__ import annotations

import gzip
import os
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

import numpy as np


class DatasetError(OSError):
    """A dataset file is missing, corrupt, or could not be downloaded. str() is one line that
    names the file or URL. An OSError: it is a problem with files or the network, not code."""


IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
MNIST_URLS = {"mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
              "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
CIFAR10_RECORD = 1 + 3 * 32 * 32

VOLUME_CLASSES = ("sphere", "cube", "cylinder")


# --- IDX / MNIST ----------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (recognised by its magic bytes, not its name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise DatasetError(f"{path}: cannot read: {error}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in IDX_TYPES:
        raise DatasetError(f"{path}: unknown IDX element type 0x{type_code:02X}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_TYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(f"{path}: expected {expected} data bytes for shape {shape}, found {len(raw) - header}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # native byte order, and a writable copy


def find_mnist_file(root: str | Path, name: str) -> Path:
    """root/name or root/name.gz, whichever exists."""
    root = Path(root)
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"missing {root / name} (or {name}.gz)")


def load_mnist(root: str | Path, split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, H, W) (28x28 in the real sets) and labels int64 (N,)."""
    image_file, label_file = (find_mnist_file(root, name) for name in MNIST_FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(f"{image_file}: expected a 3-D unsigned-byte image array, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetError(f"{label_file}: expected a 1-D unsigned-byte label array, got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DatasetError(f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{label_file}: label {labels.max()} is not a class 0-9")
    return images, labels.astype(np.int64)


def download_mnist(root: str | Path, variant: Literal["mnist", "fashion_mnist"] = "mnist",
                   base_url: str | None = None, timeout: float = 30.0) -> None:
    """Fetch whichever of the four files are missing from root, then check each one."""
    root = Path(root)
    base = base_url or MNIST_URLS[variant]
    for names in MNIST_FILES.values():
        for name in names:
            try:
                find_mnist_file(root, name)
                continue
            except DatasetError:
                pass
            target = root / f"{name}.gz"
            _download(base.rstrip("/") + f"/{name}.gz", target, timeout)
            read_idx(target)


# --- CIFAR-10 --------------------------------------------------------------------------------


def _cifar_folder(root: Path) -> Path:
    nested = root / "cifar-10-batches-bin"
    return nested if nested.is_dir() else root


def load_cifar10(root: str | Path, split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 3, 32, 32) and labels int64 (N,) from the binary version's files."""
    folder = _cifar_folder(Path(root))
    paths = [folder / name for name in CIFAR10_FILES[split]]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise DatasetError(f"{folder}: missing CIFAR-10 files {', '.join(missing)}")
    records = []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % CIFAR10_RECORD:
            raise DatasetError(f"{path}: {raw.size} bytes is not a whole number of {CIFAR10_RECORD}-byte records")
        records.append(raw.reshape(-1, CIFAR10_RECORD))
    table = np.concatenate(records)
    labels = table[:, 0].astype(np.int64)
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{folder}: label {labels.max()} is not a class 0-9")
    images = table[:, 1:].reshape(-1, 3, 32, 32)  # (N, 3072) -> (N, C, H, W): planes R, G, B
    return images, labels


def download_cifar10(root: str | Path, url: str | None = None, timeout: float = 60.0) -> None:
    """Fetch and unpack the binary archive into root/cifar-10-batches-bin, unless it is there."""
    root = Path(root)
    if (_cifar_folder(root) / "test_batch.bin").is_file():
        return
    archive = root / "cifar-10-binary.tar.gz"
    _download(url or CIFAR10_URL, archive, timeout)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")  # refuses absolute paths, '..' and links out of root
    except (tarfile.TarError, OSError) as error:
        raise DatasetError(f"{archive}: cannot unpack: {error}") from None
    finally:
        archive.unlink(missing_ok=True)


def _download(url: str, target: Path, timeout: float) -> None:
    """Download to a temporary file next to target, then rename: never a half-written target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        os.replace(partial, target)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise DatasetError(f"could not download {url}: {reason}; put the files in {target.parent} by hand") from None
    finally:
        Path(partial).unlink(missing_ok=True)


# --- synthetic volumes -----------------------------------------------------------------------


def make_volumes(num_samples: int, size: int = 16, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy volumes (N, 1, size, size, size) float32, each holding one solid shape, and labels (N,).

    Classes (VOLUME_CLASSES): a ball, an axis-aligned cube, a cylinder along a random axis.
    Radius or half-side is drawn between size/5 and size/3, and the centre keeps the shape inside.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_samples) % len(VOLUME_CLASSES)).astype(np.int64)
    # At least size/5: a smaller disc, voxelised, can fill a whole square and pass for a cube.
    radius = rng.uniform(size / 5, size / 3, num_samples)
    centre = rng.uniform(radius[:, None], size - 1 - radius[:, None], (num_samples, 3))
    axis = rng.integers(0, 3, num_samples)

    grid = np.indices((size, size, size), dtype=np.float32)  # (3, D, H, W) voxel coordinates
    volumes = np.empty((num_samples, size, size, size), dtype=np.float32)
    for start in range(0, num_samples, 64):  # in chunks: a (chunk, 3, D, H, W) offset array at a time
        part = slice(start, start + 64)
        offset = grid[None] - centre[part, :, None, None, None].astype(np.float32)  # (n, 3, D, H, W)
        r = radius[part, None, None, None].astype(np.float32)
        ball = (offset ** 2).sum(axis=1) <= r ** 2
        cube = np.abs(offset).max(axis=1) <= r
        # A cylinder: a disc across two axes, extended along the third (within the radius).
        along = np.take_along_axis(offset, axis[part, None, None, None, None], axis=1)[:, 0]
        cylinder = ((offset ** 2).sum(axis=1) - along ** 2 <= r ** 2) & (np.abs(along) <= r)
        label = labels[part, None, None, None]
        volumes[part] = np.select([label == 0, label == 1], [ball, cube], cylinder)
    volumes += noise * rng.standard_normal(volumes.shape, dtype=np.float32)
    return volumes[:, None], labels  # (N, D, H, W) -> (N, 1, D, H, W)
