"""Writes small data sets in the exact on-disk formats that torchvision reads.

No data set can be downloaded on the test machines, so the tests write a few hundred images in each real format
(MNIST's idx files, CIFAR-10's pickled batches, SVHN's .mat files) and load them through torchvision's own data
set classes.
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np


def _write_idx(path: Path, array: np.ndarray) -> None:
    # idx: two zero bytes, the type code (0x08 = unsigned byte), the number of dimensions, then each
    # dimension as a big-endian int32, then the data in C order.
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0, folder: str = "MNIST") -> dict:
    """MNIST's idx files; ``folder="FashionMNIST"`` writes Fashion-MNIST's, which have the same format."""
    rng = np.random.RandomState(seed)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = (images, labels)
    return arrays


def write_fashion_mnist(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> dict:
    return write_mnist(root, n_train, n_test, seed, folder="FashionMNIST")


def write_cifar10(root: Path, per_batch: int = 60, n_test: int = 100, seed: int = 0) -> dict:
    rng = np.random.RandomState(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train": [], "test": None}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        data = rng.randint(0, 256, size=(n, 3 * 32 * 32)).astype(np.uint8)
        labels = [int(v) for v in rng.permutation(np.arange(n) % 10)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, f)
        if name == "test_batch":
            arrays["test"] = (data, labels)
        else:
            arrays["train"].append((data, labels))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return arrays


def write_svhn(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> dict:
    from scipy.io import savemat

    rng = np.random.RandomState(seed)
    Path(root).mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.randint(0, 256, size=(32, 32, 3, n)).astype(np.uint8)  # the .mat layout: H, W, C, N
        digits = rng.permutation(np.arange(n) % 10)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)  # SVHN labels the digit 0 as 10
        savemat(str(Path(root) / f"{split}_32x32.mat"), {"X": x, "y": y})
        arrays[split] = (x, digits)
    return arrays
