"""The dataset readers, on small files written here in the exact formats (by a writer that
follows the format description, not the reader), and downloads from a local HTTP server."""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import tarfile
import threading

import numpy as np
import pytest

from cnn_files import idx_bytes, write_cifar, write_mnist
from helpers import free_port
from trainyard_cnn import datasets
from trainyard_cnn.datasets import DatasetError


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_unsigned_bytes(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(images, 0x08, ">u1")
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    read = datasets.read_idx(path)
    assert read.dtype == np.uint8 and np.array_equal(read, images)


@pytest.mark.parametrize("type_code,dtype", [(0x0C, ">i4"), (0x0D, ">f4"), (0x0B, ">i2"), (0x0E, ">f8")])
def test_read_idx_multibyte_types_are_big_endian(tmp_path, type_code, dtype):
    values = np.array([[1, -2, 300], [70000, 5, -6]]).astype(dtype)
    (tmp_path / "x.idx").write_bytes(idx_bytes(values, type_code, dtype))
    read = datasets.read_idx(tmp_path / "x.idx")
    assert read.dtype.byteorder in ("=", "|") and np.array_equal(read, values.astype(read.dtype))


@pytest.mark.parametrize("damage,message", [
    (lambda b: b"\x01" + b[1:], "not an IDX file (bad magic number)"),
    (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX element type 0x07"),
    (lambda b: b[:-5], "expected 24 data bytes for shape (2, 3, 4), found 19"),
    (lambda b: b + b"\x00\x00", "expected 24 data bytes for shape (2, 3, 4), found 26"),
])
def test_corrupt_idx_files(tmp_path, damage, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(damage(idx_bytes(np.zeros((2, 3, 4), np.uint8), 0x08, ">u1")))
    with pytest.raises(DatasetError) as error:
        datasets.read_idx(path)
    assert str(error.value) == f"{path}: {message}"


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist(tmp_path, gz):
    arrays = write_mnist(tmp_path / "mnist", gz=gz)
    for split in ("train", "test"):
        images, labels = datasets.load_mnist(tmp_path / "mnist", split)
        assert images.dtype == np.uint8 and labels.dtype == np.int64
        assert np.array_equal(images, arrays[split][0]) and np.array_equal(labels, arrays[split][1])


def test_mnist_problems(tmp_path):
    root = tmp_path / "mnist"
    write_mnist(root)
    (root / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8), 0x08, ">u1"))
    with pytest.raises(DatasetError, match="has 7 images but .* has 3 labels"):
        datasets.load_mnist(root, "test")
    (root / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError) as error:
        datasets.load_mnist(root, "train")
    assert str(error.value) == f"missing {root / 'train-labels-idx1-ubyte'} (or train-labels-idx1-ubyte.gz)"


@pytest.mark.parametrize("nested", [False, True])
def test_load_cifar10(tmp_path, nested):
    write_cifar(tmp_path / "cifar-10-batches-bin" if nested else tmp_path)
    images, labels = datasets.load_cifar10(tmp_path, "train")
    assert images.shape == (15, 3, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]
    for i in range(3):  # records restart their fill value in each batch file
        assert [int(images[i, c, 0, 0]) for c in range(3)] == [10 * i, 10 * i + 1, 10 * i + 2]
        assert (images[i, 2] == 10 * i + 2).all()
    images, labels = datasets.load_cifar10(tmp_path, "test")
    assert labels.tolist() == [9, 8, 7, 6] and images.shape == (4, 3, 32, 32)


def test_cifar10_problems(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3.bin").unlink()
    with pytest.raises(DatasetError, match="missing CIFAR-10 files data_batch_3.bin"):
        datasets.load_cifar10(tmp_path, "train")
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(DatasetError, match="3000 bytes is not a whole number of 3073-byte records"):
        datasets.load_cifar10(tmp_path, "test")


@pytest.fixture
def http_folder(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_mnist(tmp_path, http_folder):
    served, url = http_folder
    arrays = write_mnist(served, gz=True)
    datasets.download_mnist(tmp_path / "data", "fashion_mnist", base_url=url)
    images, labels = datasets.load_mnist(tmp_path / "data", "train")
    assert np.array_equal(images, arrays["train"][0]) and np.array_equal(labels, arrays["train"][1])
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(
        name + ".gz" for names in datasets.MNIST_FILES.values() for name in names)


def test_download_cifar10(tmp_path, http_folder):
    served, url = http_folder
    write_cifar(tmp_path / "src" / "cifar-10-batches-bin")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    (served / "cifar.tar.gz").write_bytes(buffer.getvalue())
    datasets.download_cifar10(tmp_path / "data", url=url + "cifar.tar.gz")
    _, labels = datasets.load_cifar10(tmp_path / "data", "test")
    assert labels.tolist() == [9, 8, 7, 6]
    assert not (tmp_path / "data" / "cifar-10-binary.tar.gz").exists()


def test_failed_download_is_one_line_and_leaves_nothing(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(DatasetError) as error:
        datasets.download_mnist(tmp_path / "data", base_url=url, timeout=5)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"could not download {url}train-images-idx3-ubyte.gz: ")
    assert message.endswith(f"put the files in {tmp_path / 'data'} by hand")
    assert list((tmp_path / "data").iterdir()) == []


def test_volumes_are_seeded_balanced_and_distinguishable():
    volumes, labels = datasets.make_volumes(60, size=16, noise=0.0, seed=1)
    assert volumes.shape == (60, 1, 16, 16, 16) and volumes.dtype == np.float32 and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [20, 20, 20]
    again, _ = datasets.make_volumes(60, size=16, noise=0.0, seed=1)
    other, _ = datasets.make_volumes(60, size=16, noise=0.0, seed=2)
    assert np.array_equal(volumes, again) and not np.array_equal(volumes, other)
    for volume, label in zip(volumes[:, 0], labels):
        filled = np.argwhere(volume > 0.5)
        box = np.prod(filled.max(0) - filled.min(0) + 1)
        # a cube fills its bounding box; a ball or a cylinder cannot
        assert (len(filled) == box) == (datasets.VOLUME_CLASSES[label] == "cube")
    noisy, _ = datasets.make_volumes(60, size=16, noise=0.3, seed=1)
    assert 0.25 < float((noisy - volumes).std()) < 0.35
