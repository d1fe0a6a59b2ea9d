from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ignite_igan.datasets import DatasetNotFoundError, DatasetReadError, load_dataset
from tests.datafiles import write_cifar10, write_fashion_mnist, write_mnist, write_svhn

SHARED_FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


def test_mnist_idx_files_through_torchvision(tmp_path):
    arrays = write_mnist(tmp_path)
    train = load_dataset("mnist", tmp_path, train=True)
    test = load_dataset("mnist", tmp_path, train=False)
    assert len(train) == 300 and len(test) == 100
    images, labels = arrays["train"]
    x, y = train[7]
    assert x.shape == (784,)
    np.testing.assert_allclose(x.numpy(), images[7].reshape(-1) / 255.0, rtol=0, atol=1e-7)
    assert int(y) == int(labels[7])


def test_the_names_of_earlier_versions_still_work(tmp_path):
    """load_mnist & co. and ScaledImages.targets (torchvision's attribute name) are kept for users' code."""
    from ignite_igan import datasets

    arrays = write_mnist(tmp_path)
    test = datasets.load_mnist(tmp_path, train=False)
    np.testing.assert_array_equal(test.targets.numpy(), arrays["t10k"][1])
    assert {datasets.load_fashion_mnist.args, datasets.load_cifar10.args, datasets.load_svhn.args} == {
        ("fashion_mnist",), ("cifar10",), ("svhn",)}

def test_cifar10_pickled_batches_scaled_like_the_reference(tmp_path):
    arrays = write_cifar10(tmp_path)
    train = load_dataset("cifar10", tmp_path, train=True, verify_checksums=False)
    assert len(train) == 5 * 60
    data, labels = arrays["train"][1]
    x, y = train[60 + 3]  # second batch, fourth image
    expected = (data[3].reshape(3, 32, 32).astype(np.float64) - 127.5) / 128.0
    np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-6)
    assert int(y) == labels[3]
    test = load_dataset("cifar10", tmp_path, train=False, verify_checksums=False)
    assert len(test) == 100


def test_cifar10_checksums_are_verified_by_default(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="CIFAR-10.*download"):
        load_dataset("cifar10", tmp_path, train=True)


def test_svhn_mat_files_labels_and_scaling(tmp_path):
    arrays = write_svhn(tmp_path)
    train = load_dataset("svhn", tmp_path, train=True, verify_checksums=False)
    x_mat, digits = arrays["train"]
    x, y = train[5]
    expected = (x_mat[:, :, :, 5].transpose(2, 0, 1).astype(np.float64) - 127.5) / 127.5
    np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-6)
    assert int(y) == int(digits[5])  # the .mat file's label 10 arrives as 0
    assert set(train.labels.tolist()) == set(range(10))
    with pytest.raises(DatasetNotFoundError, match="SVHN"):
        load_dataset("svhn", tmp_path, train=True)


def test_digits_split_is_fixed_stratified_and_disjoint():
    train = load_dataset("digits", train=True)
    test = load_dataset("digits", train=False)
    assert (len(train), len(test)) == (1297, 500)
    # Stratified: each class's share of the test set is its share of the whole set, to within one image.
    whole = torch.bincount(torch.cat([train.labels, test.labels])).double()
    assert (torch.bincount(test.labels) - whole * 500 / 1797).abs().max() <= 1.0
    train_rows = {tuple(row.tolist()) for row in train.images.flatten(1)}
    overlap = sum(tuple(row.tolist()) in train_rows for row in test.images.flatten(1))
    assert overlap < 10  # the digits set has a few exact duplicate images, not a shared split
    again = load_dataset("digits", train=True)
    assert torch.equal(train.images, again.images)


def test_batched_fetch_equals_single_items():
    ds = load_dataset("digits", train=False)
    batch_x, batch_y = next(iter(DataLoader(ds, batch_size=16, shuffle=False)))
    singles = [ds[i] for i in range(16)]
    assert torch.equal(batch_x, torch.stack([s[0] for s in singles]))
    assert torch.equal(batch_y, torch.stack([s[1] for s in singles]))


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="name must be one of .* got 'imagenet'"):
        load_dataset("imagenet", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="MNIST.*download"):
        load_dataset("mnist", tmp_path)


def test_fashion_mnist_idx_files_through_torchvision(tmp_path):
    arrays = write_fashion_mnist(tmp_path)
    train = load_dataset("fashion_mnist", tmp_path, train=True)
    test = load_dataset("fashion_mnist", tmp_path, train=False)
    assert len(train) == 300 and len(test) == 100
    images, labels = arrays["t10k"]
    x, y = test[11]
    np.testing.assert_allclose(x.numpy(), images[11].reshape(-1) / 255.0, rtol=0, atol=1e-7)
    assert int(y) == int(labels[11])


def test_fashion_mnist_missing_or_bad_files_name_the_layout(tmp_path):
    layout = f"{tmp_path}/FashionMNIST/raw/{{train,t10k}}-images-idx3-ubyte"
    with pytest.raises(DatasetNotFoundError, match="FashionMNIST") as missing:
        load_dataset("fashion_mnist", tmp_path)
    assert layout in str(missing.value)
    write_mnist(tmp_path)  # MNIST's folder is not Fashion-MNIST's
    with pytest.raises(DatasetNotFoundError, match="FashionMNIST/raw/train-images-idx3-ubyte"):
        load_dataset("fashion_mnist", tmp_path)
    write_fashion_mnist(tmp_path)
    raw = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:1000])  # truncated
    with pytest.raises(DatasetReadError, match="FashionMNIST.*could not be read.*truncated or corrupt"):
        load_dataset("fashion_mnist", tmp_path, train=True)
    assert len(load_dataset("fashion_mnist", tmp_path, train=False)) == 100  # the test files are intact


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("svhn", "train_32x32.mat")])
def test_missing_data_names_the_expected_layout(tmp_path, name, folder):
    with pytest.raises(DatasetNotFoundError, match=folder):
        load_dataset(name, tmp_path, train=True)


@pytest.mark.skipif(not SHARED_FASHION.is_dir(), reason="the real Fashion-MNIST files are in ../shared/data, absent here")
def test_real_fashion_mnist():
    train = load_dataset("fashion_mnist", SHARED_FASHION, train=True)
    test = load_dataset("fashion_mnist", SHARED_FASHION, train=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    x, _ = train[0]
    assert x.shape == (784,) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
