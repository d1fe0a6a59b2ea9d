"""The data sets of the paper's experiments, loaded through torchvision and scaled as the reference code scales them.

=================  ============================================  ==========================  ===========================
data set           source                                        scaling                     shape of one example
=================  ============================================  ==========================  ===========================
``mnist``          ``torchvision.datasets.MNIST`` (60k / 10k)    pixels / 255, in [0, 1]     (784,) (permutation-
                                                                                             invariant)
``fashion_mnist``  ``torchvision.datasets.FashionMNIST``          pixels / 255, in [0, 1]     (784,) (as MNIST)
                   (60k / 10k)
``cifar10``        ``torchvision.datasets.CIFAR10`` (50k / 10k)  (x − 127.5) / 128           (3, 32, 32)
``svhn``           ``torchvision.datasets.SVHN`` (73,257 train,  (x − 127.5) / 127.5         (3, 32, 32)
                   26,032 test; no "extra" split)
``digits``         scikit-learn's bundled 8×8 digits (1,797),    pixels / 16, in [0, 1]      (64,)
                   a fixed stratified 1,297 / 500 split
=================  ============================================  ==========================  ===========================

The scaling is the reference code's (:ref:`ref-data-scaling`).

Images are kept as uint8 and scaled when they are read, so a data set costs its size on disk in memory, and
every process of a distributed run can hold it. :class:`ScaledImages` implements ``__getitems__``, so a
``DataLoader`` fetches a whole batch with one indexing operation.

Example:
    >>> ds = load_dataset("digits", train=True)
    >>> x, y = ds[0]
    >>> tuple(x.shape), float(x.min()) >= 0.0, float(x.max()) <= 1.0, len(ds)
    ((64,), True, True, 1297)
"""
from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ignite_igan.validation import check_bool, check_real

__all__ = [
    "DATASETS",
    "ScaledImages",
    "load_dataset",
    "load_dataset_rank_zero_first",
    "load_digits",
    "DatasetNotFoundError",
    "DatasetReadError",
    "EXPECTED_LAYOUTS",
]

PathLike = Union[str, "os.PathLike[str]"]


class DatasetNotFoundError(FileNotFoundError):
    """The data set's files are not in the data directory and downloading was not asked for."""


class DatasetReadError(ValueError):
    """The data set's files are where they belong but cannot be read (truncated, corrupt, or another format)."""


#: Where each data set's files must be, relative to the data directory (what torchvision reads or downloads).
EXPECTED_LAYOUTS: Dict[str, str] = {
    "mnist": "<dir>/MNIST/raw/{train,t10k}-images-idx3-ubyte and {train,t10k}-labels-idx1-ubyte",
    "fashion_mnist": "<dir>/FashionMNIST/raw/{train,t10k}-images-idx3-ubyte and {train,t10k}-labels-idx1-ubyte",
    "cifar10": "<dir>/cifar-10-batches-py/data_batch_1 ... data_batch_5 and test_batch",
    "svhn": "<dir>/train_32x32.mat and <dir>/test_32x32.mat",
}
_DISPLAY = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR-10", "svhn": "SVHN"}


class ScaledImages(Dataset):
    """Images stored as uint8 (or any integer type), returned as floats ``(x - offset) / scale``.

    Args:
        images: (N, ...) integer tensor of pixel values.
        labels: (N,) int64 labels.
        offset: subtracted from the pixel value.
        scale: the pixel value minus ``offset`` is divided by it.
        flatten: return each image as a vector (the permutation-invariant MNIST setting).
    """

    def __init__(self, images: Tensor, labels: Tensor, offset: float, scale: float, flatten: bool = False) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"labels must have one entry per image ({images.shape[0]}), got {labels.shape[0]}")
        self.images = images
        self.labels = labels.long()
        self.offset = check_real("offset", offset)
        self.scale = check_real("scale", scale, minimum=0.0, low_open=True)
        self.flatten = check_bool("flatten", flatten)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor]:
        return self.scaled(self.images[index][None])[0], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> List[Tuple[Tensor, Tensor]]:
        # One gather for the whole batch; default_collate stacks the pairs back.
        index = torch.as_tensor(indices, dtype=torch.long)
        return list(zip(self.scaled(self.images[index]).unbind(0), self.labels[index].unbind(0)))

    def scaled(self, images: Tensor, scale: Union[float, Tensor, None] = None) -> Tensor:
        """A batch of these integer ``images`` (N, ...) as floats ``(x - offset) / scale``, flattened to (N, D) with
        ``flatten``; ``scale`` replaces the data set's own ``scale`` (the device loader passes it as a device
        tensor)."""
        x = (images.float() - self.offset) / (self.scale if scale is None else scale)
        return x.flatten(start_dim=1) if self.flatten else x

    @property
    def targets(self) -> Tensor:
        """The labels, under the attribute name torchvision's data sets use."""
        return self.labels


def _missing(key: str, root: PathLike, detail: str) -> DatasetNotFoundError:
    layout = EXPECTED_LAYOUTS[key].replace("<dir>", str(root))
    return DatasetNotFoundError(
        f"{_DISPLAY[key]} was not found in data directory {str(root)!r} ({detail}); expected the files {layout}. "
        f"Pass download=True (--download in the recipes) to fetch it with torchvision, or point the data directory "
        f"at a copy."
    )


def _unreadable(key: str, root: PathLike, error: Exception) -> DatasetReadError:
    return DatasetReadError(
        f"{_DISPLAY[key]}'s files in data directory {str(root)!r} could not be read ({type(error).__name__}: "
        f"{error}); they may be truncated or corrupt. Delete them and download again (--download), or replace them "
        f"with a good copy laid out as {EXPECTED_LAYOUTS[key]}."
    )


@functools.lru_cache(maxsize=None)
def _unchecked(name: str) -> type:
    """torchvision's CIFAR10 or SVHN class without the MD5 check: the files are read as they are, and a missing one
    raises ``FileNotFoundError`` when torchvision opens it.

    Everything else, the reading of the pickled batches or of the ``.mat`` file included, is torchvision's own.
    """
    import torchvision.datasets as tvd

    class Unchecked(getattr(tvd, name)):  # type: ignore[misc]
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:  # class names are not needed, and a cut-down copy may lack the meta file
            self.classes, self.class_to_idx = [], {}

    Unchecked.__name__ = f"Unchecked{name}"
    return Unchecked


#: torchvision's class of each data set and the reference's scaling ``(x - offset) / scale`` (:ref:`ref-data-scaling`):
#: MNIST's 60,000 training images are the reference's 50k training + 10k validation images; Fashion-MNIST runs the MNIST
#: setting unchanged; SVHN's ``train`` and ``test`` splits, never "extra", with torchvision mapping label 10 to 0.
_TORCHVISION: Dict[str, Tuple[str, float, float]] = {
    "mnist": ("MNIST", 0.0, 255.0),
    "fashion_mnist": ("FashionMNIST", 0.0, 255.0),
    "cifar10": ("CIFAR10", 127.5, 128.0),
    "svhn": ("SVHN", 127.5, 127.5),
}


def _load_torchvision(
    key: str, root: PathLike, train: bool = True, download: bool = False, verify_checksums: bool = True
) -> ScaledImages:
    """One of :data:`_TORCHVISION` through torchvision's reader, with errors that tell a missing file from an
    unreadable one; ``verify_checksums`` as in :func:`load_dataset`."""
    import torchvision.datasets as tvd

    name, offset, scale = _TORCHVISION[key]
    idx = key in ("mnist", "fashion_mnist")
    prefix, raw = "train" if train else "t10k", Path(root) / name / "raw"
    files = [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"] if idx else []
    checked = getattr(tvd, name)
    split = {"split": "train" if train else "test"} if key == "svhn" else {"train": train}
    if download and not verify_checksums:  # the checked class fetches the files; the unchecked one only reads them
        checked(str(root), download=True, **split)
    opener = checked if verify_checksums or idx else _unchecked(name)  # IDX files are read without a checksum
    try:
        ds = opener(str(root), download=download and verify_checksums, **split)
    except (RuntimeError, FileNotFoundError) as error:  # torchvision's "Dataset not found (or corrupted)", a file
        # the unchecked class could not open; for IDX files also "unreadable"
        absent = [str(path) for path in files if not path.is_file()]
        if files and not absent:
            raise _unreadable(key, root, error) from error
        raise _missing(key, root, f"missing {', '.join(absent)}" if absent else str(error)) from error
    except (OSError, ValueError, EOFError, KeyError, pickle.UnpicklingError) as error:
        raise _unreadable(key, root, error) from error
    images = torch.as_tensor(np.ascontiguousarray(ds.data))
    if key == "cifar10":
        images = images.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW (SVHN's are NCHW already)
    labels = torch.as_tensor(ds.labels if key == "svhn" else ds.targets)
    return ScaledImages(images, labels, offset=offset, scale=scale, flatten=idx)


def load_digits(root: PathLike = None, train: bool = True, download: bool = False) -> ScaledImages:
    """scikit-learn's bundled handwritten digits: 1,797 real 8×8 images, no download needed.

    A fixed stratified split (``train_test_split(test_size=500, stratify=y, random_state=0)``) gives 1,297
    training and 500 test images, the same on every machine. Pixels (0..16) are scaled to [0, 1] and flattened
    to 64, the MNIST setting scaled down. ``root`` and ``download`` are accepted for a uniform interface and
    ignored.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            "the digits data set ships with scikit-learn, which is not installed: pip install scikit-learn "
            "(or pip install 'ignite-igan[digits]')"
        ) from error
    bunch = sklearn_digits()
    images = bunch.images.astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    train_index, test_index = train_test_split(
        np.arange(len(labels)), test_size=500, stratify=labels, random_state=0
    )
    chosen = np.sort(train_index if train else test_index)
    return ScaledImages(
        torch.from_numpy(images[chosen]), torch.from_numpy(labels[chosen]), offset=0.0, scale=16.0, flatten=True
    )


#: The loader of each data set by name (what :func:`load_dataset` dispatches on).
DATASETS: Dict[str, Callable[..., ScaledImages]] = {
    **{key: functools.partial(_load_torchvision, key) for key in _TORCHVISION},
    "digits": load_digits,
}

# The per-data-set names of earlier versions, kept working: load_mnist(root, train=True, download=False, ...).
load_mnist, load_fashion_mnist, load_cifar10, load_svhn = (DATASETS[key] for key in _TORCHVISION)


def load_dataset(
    name: str, root: PathLike = "data", train: bool = True, download: bool = False, **kwargs: Any
) -> ScaledImages:
    """Loads one of :data:`DATASETS` by name, scaled as the reference scales it (the table above).

    Args:
        name: ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"svhn"`` or ``"digits"``.
        root: the data directory, laid out as torchvision reads it (:data:`EXPECTED_LAYOUTS`; unused for digits).
        train: the training split, or the test split.
        download: fetch the files with torchvision if they are missing (not for digits, which ships with
            scikit-learn).
        **kwargs: ``verify_checksums`` (CIFAR-10 and SVHN, True by default): check every file against
            torchvision's MD5 sums. With False the files are read by torchvision's own reader without that check,
            for copies that were re-packed or cut down (the test suite writes small files in the real format).

    Raises:
        ValueError: for an unknown name.
        DatasetNotFoundError: when the files are missing and ``download`` is False; the message names the
            files expected (:data:`EXPECTED_LAYOUTS`).
        DatasetReadError: when the files are there but cannot be read (truncated or corrupt).
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}")
    if name != "digits" and not download and not Path(root).is_dir():
        raise _missing(name, root, "the directory does not exist")
    return DATASETS[name](root, train=train, download=download, **kwargs)


def load_dataset_rank_zero_first(
    name: str, root: PathLike = "data", train: bool = True, download: bool = False, **kwargs
) -> ScaledImages:
    """:func:`load_dataset` under ``ignite.distributed``: rank 0 loads (and downloads) first, the others wait.

    Without a process group it is :func:`load_dataset`. With one, every process must call it: rank 0 reads or
    downloads the files while the others wait at a barrier, then the others read them, so no two processes
    download into the same folder at once.
    """
    import ignite.distributed as idist

    if idist.get_rank() > 0:
        idist.barrier()
    try:
        return load_dataset(name, root, train=train, download=download, **kwargs)
    finally:
        if idist.get_rank() == 0:
            idist.barrier()
