"""Training data that lives on the device: :class:`SemiSupervisedLoader`'s batches without a host in the loop.

For data sets that fit in device memory (the digits, MNIST, Fashion-MNIST, CIFAR-10, SVHN), copying every batch
from the host, one image at a time through a ``Dataset``, costs more than the paper's small networks compute.
:class:`DeviceSemiSupervisedLoader` copies the training set to the device once and draws each iteration's three
batches there with one gather by index. The indices are :class:`~ignite_igan.data.SemiSupervisedLoader`'s: the
same tables of the same seed, the same slice per process, the same ``state_dict`` (a checkpoint of one loader
resumes the other), and the batches hold the same numbers: images stored as integers (what
:mod:`ignite_igan.datasets` loads) are scaled on the device by the very arithmetic the data set uses on the host.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.rand(60, 5), torch.arange(60) % 3)
    >>> loader = DeviceSemiSupervisedLoader(data, labeled_indices=[0, 1, 2], batch_size=10, seed=1, device="cpu")
    >>> batch = next(iter(loader))
    >>> batch.x_labeled.shape, batch.y_labeled.device.type, len(loader)
    (torch.Size([10, 5]), 'cpu', 6)
"""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ignite_igan.data import IndexLike, SemiSupervisedBatch, SemiSupervisedLoader
from ignite_igan.datasets import ScaledImages
from ignite_igan.validation import (
    ArgumentTypeError, check_device, check_indices, check_int, check_methods, check_real, describe,
)

__all__ = ["DeviceSemiSupervisedLoader", "dataset_bytes", "fits_on_device"]

_STACK_BATCH = 1000  # items per host batch when a generic data set is copied to the device


def dataset_bytes(dataset: Dataset) -> int:
    """Bytes that ``dataset`` takes on a device as :class:`DeviceSemiSupervisedLoader` stores it.

    :class:`~ignite_igan.datasets.ScaledImages` keeps its integer pixels (one byte each for the image data sets);
    any other data set is stored as float32 inputs, estimated from its first item.
    """
    if isinstance(dataset, (str, bytes)):
        raise ArgumentTypeError(f"dataset must be a map-style data set (e.g. a TensorDataset), got {describe(dataset)}")
    check_methods("dataset", dataset, ("__len__", "__getitem__"), "a TensorDataset")
    if isinstance(dataset, ScaledImages):
        return dataset.images.numel() * dataset.images.element_size() + dataset.labels.numel() * 8
    x = torch.as_tensor(dataset[0][0])
    return len(dataset) * (x.numel() * 4 + 8)  # type: ignore[arg-type]


def fits_on_device(dataset: Dataset, device: Union[str, torch.device], fraction: float = 0.25) -> bool:
    """Whether ``dataset`` takes at most ``fraction`` of the device's free memory (the host's available memory on
    the CPU), leaving the rest to the models, their activations and other processes."""
    fraction = check_real("fraction", fraction, minimum=0.0, maximum=1.0, low_open=True)
    device = check_device("device", device)
    needed = dataset_bytes(dataset)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        try:
            with open("/proc/meminfo") as info:
                fields = dict(line.split(":", 1) for line in info)
            free = int(fields["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            return needed <= 1 << 30  # unknown: a gigabyte is safe on any machine that trains these models
    return needed <= fraction * free


def _device_tensors(dataset: Dataset, device: torch.device) -> Tuple[Tensor, Tensor]:
    """The inputs and labels of every item, on ``device``: integer pixels for ScaledImages, else float inputs."""
    if isinstance(dataset, ScaledImages):
        return dataset.images.to(device), dataset.labels.to(device)
    inputs, labels = [], []
    # Its own generator: iterating a DataLoader would otherwise draw from the global RNG.
    for x, y, *_ in DataLoader(dataset, batch_size=_STACK_BATCH, generator=torch.Generator()):
        inputs.append(torch.as_tensor(x).to(device))
        labels.append(torch.as_tensor(y).to(device))
    return torch.cat(inputs), torch.cat(labels)


class DeviceSemiSupervisedLoader(SemiSupervisedLoader):
    """:class:`~ignite_igan.data.SemiSupervisedLoader` with the training set on ``device`` and batches drawn there.

    Same arguments as :class:`~ignite_igan.data.SemiSupervisedLoader` except the DataLoader's (there is no
    worker to configure), plus ``device`` and ``num_classes``. Iterating yields the same
    :class:`~ignite_igan.data.SemiSupervisedBatch` es, as tensors on ``device``, for the same indices in the same
    order; resuming, ``set_epoch`` and the distributed slices behave the same, and the two loaders' state dicts
    are interchangeable.

    Each iteration is one gather of the three batches' rows and, for integer images, one scaling; the index
    table of an epoch is copied to the device once at the start of the epoch. Nothing waits for the device.

    The labels of the labeled subset are checked once, here, on the host: they must be integers in
    ``[0, num_classes)`` (``>= 0`` when ``num_classes`` is None). A trainer fed by this loader can then skip its
    per-batch label check (``check_labels=False`` in :mod:`ignite_igan.engines`), which on an accelerator would
    wait for the device at every iteration.

    ``labeled_indices``, ``batch_size``, ``seed``, ``labeled_batch_size``, ``unlabeled_indices``,
    ``generator_batch``, ``world_size`` and ``rank`` are those of :class:`~ignite_igan.data.SemiSupervisedLoader`.

    Args:
        dataset: a map-style dataset of ``(input, label, ...)`` items;
            :class:`~ignite_igan.datasets.ScaledImages` is stored as its integer pixels.
        device: where the data and the batches live.
        num_classes: the number of classes K, to check the labeled subset's labels against.

    Raises:
        ValueError: the loader's own errors, a device this machine does not have, or a labeled example whose label
            is outside ``[0, num_classes)``.
        TypeError: labels that are not integers, ``num_classes`` not an int or ``device`` not a device
            (:class:`~ignite_igan.validation.ArgumentTypeError`, also a ``ValueError``).
    """

    def __init__(
        self,
        dataset: Dataset,
        labeled_indices: IndexLike,
        batch_size: int,
        *,
        seed: int,
        device: Union[str, torch.device],
        labeled_batch_size: Optional[int] = None,
        unlabeled_indices: Optional[IndexLike] = None,
        generator_batch: bool = True,
        world_size: Optional[int] = None,
        rank: Optional[int] = None,
        num_classes: Optional[int] = None,
    ) -> None:
        # Checked before the host loader's work, and before any copy could fail deep inside torch.
        device = check_device("device", device)
        num_classes = check_int("num_classes", num_classes, minimum=1, allow_none=True)
        super().__init__(
            dataset, labeled_indices, batch_size, seed=seed, labeled_batch_size=labeled_batch_size,
            unlabeled_indices=unlabeled_indices, generator_batch=generator_batch, world_size=world_size, rank=rank,
        )
        self.device = device
        self.inputs, self.labels = _device_tensors(dataset, self.device)
        labeled = self.labels.index_select(0, torch.from_numpy(self._sampler.labeled).to(self.device))
        check_indices("the labeled examples' labels", labeled, size=num_classes, hint="num_classes")
        self._scale: Optional[Tensor] = None
        if isinstance(dataset, ScaledImages):
            # The scale as a tensor on the device: CUDA divides by a host scalar as a multiplication by its
            # reciprocal, which rounds differently from the host's division; by a device tensor it divides.
            self._scale = torch.tensor(dataset.scale, dtype=torch.float32, device=self.device)
        self._rows: Optional[Tuple[int, Tensor]] = None  # (epoch, its index table on the device)

    def _epoch_rows(self, epoch: int) -> Tensor:
        if self._rows is None or self._rows[0] != epoch:
            rows = torch.from_numpy(self._sampler.rows(epoch))
            if self.device.type == "cuda":
                rows = rows.pin_memory()  # so that the copy does not wait for the device
            self._rows = (epoch, rows.to(self.device, non_blocking=True))
        return self._rows[1]

    def _batch(self) -> SemiSupervisedBatch:
        """The batch of iteration :attr:`iteration`, as tensors on :attr:`device`: one gather of its rows."""
        row = self._epoch_rows(self.epoch)[self.iteration % self.epoch_length]
        x = self.inputs.index_select(0, row)
        parts = (x if self._scale is None else self.dataset.scaled(x, self._scale)).split(self._sizes)
        labels = self.labels.index_select(0, row[: self._sizes[0]])
        return SemiSupervisedBatch(parts[0], labels, parts[1], parts[2] if self.generator_batch else None)

    def load_state_dict(self, state_dict: Any) -> None:
        """Restores a position saved by this loader or by the host loader (the two states are the same)."""
        super().load_state_dict(state_dict)
        self._rows = None  # the seed or labeled subset may have changed the tables
