"""Data for semi-supervised GAN training, as the reference code feeds it (:ref:`ref-training-loop`,
:ref:`ref-labeled-subset`).

- :func:`balanced_labeled_subset` chooses ``per_class`` labeled examples of every class: the whole training set is
  permuted with a seeded ``numpy.random.RandomState`` and the first ``per_class`` examples of each class are taken,
  which is the reference's selection, so the same seed on the same data order picks the same images.
- :class:`SemiSupervisedLoader` yields, per iteration, a labeled batch ``(x, y)``, an unlabeled batch and a second,
  independently shuffled unlabeled batch for the generator's feature-matching step. Every epoch the labeled subset
  is tiled and each copy re-permuted, both unlabeled streams are re-permuted, and an epoch is
  ``unlabeled_count // batch_size`` iterations (the remainder is dropped). The labeled examples stay in the
  unlabeled set, as in the reference; no other example's label ever leaves the loader.
- :func:`epoch_loader` and :func:`attach_epoch_order` are the plain (fully labeled or unlabeled) loader of the
  sample-quality recipes: shuffled per epoch as a function of ``(seed, epoch)``, the global batch shared out over
  the processes.
- :class:`MixtureStream` is the endless, seeded stream of fresh batches of a 2-D Gaussian mixture (the
  mode-coverage experiment), resumable through its ``state_dict``.

The permutations of epoch ``e`` are a function of ``(seed, e)`` only, and the loader counts the batches it has
handed out; that count is in its ``state_dict``, so a run resumed from a checkpoint, even one taken in the middle
of an epoch, receives exactly the batches an uninterrupted run would have. Under :mod:`ignite.distributed` every
process computes the same global batches and takes its own slice of each, so the processes together see what one
process with the full batch would see, and the labeled subset is the same everywhere.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> x, y = torch.randn(60, 5), torch.arange(60) % 3
    >>> labeled = balanced_labeled_subset(y, per_class=2, seed=1)
    >>> loader = SemiSupervisedLoader(TensorDataset(x, y), labeled, batch_size=10, seed=1)
    >>> len(loader)  # iterations per epoch: 60 // 10
    6
    >>> batch = next(iter(loader))
    >>> batch.x_labeled.shape, batch.y_labeled.shape, batch.x_unlabeled.shape, batch.x_unlabeled2.shape
    (torch.Size([10, 5]), torch.Size([10]), torch.Size([10, 5]), torch.Size([10, 5]))
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Union

import ignite.distributed as idist
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from torch.utils.data._utils.collate import default_collate

from ignite_igan.validation import check_bool, check_indices, check_instance, check_int, check_state_keys

__all__ = [
    "balanced_labeled_subset",
    "unlabeled_pool",
    "init_batch",
    "dataset_labels",
    "SemiSupervisedBatch",
    "SemiSupervisedLoader",
    "MixtureStream",
    "epoch_loader",
    "attach_epoch_order",
]

IndexLike = Union[Tensor, np.ndarray, Sequence[int]]


#: The largest seed of a ``numpy.random.RandomState`` (the reference's seeds are its seeds).
_MAX_SEED = 2**32 - 1
#: The seeds ``torch.Generator.manual_seed`` takes (a negative one stands for its 64-bit two's complement).
_TORCH_SEEDS = dict(minimum=-(2**63), maximum=2**64 - 1)


def balanced_labeled_subset(labels: IndexLike, per_class: int, seed: int, num_classes: Optional[int] = None) -> Tensor:
    """Indices of ``per_class`` examples of every class, chosen as the reference does (:ref:`ref-labeled-subset`).

    The whole set is permuted with ``numpy.random.RandomState(seed)`` and, for each class in increasing order,
    the first ``per_class`` examples of that class in permuted order are taken. The result is class-balanced,
    a function of ``(labels, per_class, seed)`` alone, and equal to the reference scripts' choice for the same
    ``seed_data`` and the same order of the training set.

    Args:
        labels: the class of every example of the training set, shape (N,), integers >= 0 (for a torch Dataset,
            see :func:`dataset_labels`).
        per_class: labeled examples per class (the reference's ``--count``: 10 on MNIST, 400 on CIFAR-10, 100 on
            SVHN).
        seed: seed of the permutation (the reference's ``--seed_data``, default 1), in [0, 2**32).
        num_classes: the number of classes K; every class 0..K-1 must then have ``per_class`` examples. By
            default the classes are the distinct values of ``labels``.

    Returns:
        A 1-D int64 tensor of ``per_class · K`` indices into the training set, grouped by class.

    Raises:
        ValueError: if a class has fewer than ``per_class`` examples, or an argument is out of range.

    Example:
        >>> labels = [0, 1, 0, 1, 0, 1, 2, 2]
        >>> idx = balanced_labeled_subset(labels, per_class=2, seed=1)
        >>> sorted(labels[i] for i in idx.tolist())
        [0, 0, 1, 1, 2, 2]
    """
    num_classes = check_int("num_classes", num_classes, minimum=1, allow_none=True)
    labels_np = check_indices("labels", labels, size=num_classes, allow_empty=False, hint="num_classes")
    per_class = check_int("per_class", per_class, minimum=1)
    seed = check_int("seed", seed, minimum=0, maximum=_MAX_SEED)
    classes = np.unique(labels_np) if num_classes is None else np.arange(num_classes)
    permutation = np.random.RandomState(seed).permutation(labels_np.size)
    permuted_labels = labels_np[permutation]
    chosen = []
    for c in classes:
        of_class = permutation[permuted_labels == c][:per_class]
        if of_class.size < per_class:
            raise ValueError(f"per_class={per_class} is more than class {int(c)} has: it has "
                             f"{int((labels_np == c).sum())} examples; expected per_class <= the smallest class's size")
        chosen.append(of_class)
    return torch.from_numpy(np.concatenate(chosen))


def unlabeled_pool(num_examples: int, labeled_indices: IndexLike, size: int, seed: int) -> Tensor:
    """Indices of an unlabeled pool of ``size`` training examples that holds every labeled one.

    For studies of how much unlabeled data the GAN needs: the pool is the labeled subset (as in the reference,
    whose unlabeled set is the whole training set, labeled examples included) plus the first
    ``size - len(labeled_indices)`` of the other examples in the order of ``numpy.random.RandomState(seed)``'s
    permutation. Pools of different sizes from one seed are nested: the smaller is a subset of the larger.

    Args:
        num_examples: the size N of the training set.
        labeled_indices: the labeled subset (indices in [0, N)).
        size: the pool's size, ``len(labeled_indices) <= size <= N``.
        seed: seed of the permutation, in [0, 2**32).

    Returns:
        A sorted 1-D int64 tensor of ``size`` distinct indices.

    Example:
        >>> pool = unlabeled_pool(10, [2, 7], size=5, seed=0)
        >>> len(pool), {2, 7} <= set(pool.tolist())
        (5, True)
    """
    n = check_int("num_examples", num_examples, minimum=1)
    labeled = check_indices("labeled_indices", labeled_indices, size=n, hint="num_examples")
    size = check_int("size", size, minimum=max(len(labeled), 1), maximum=n,
                     hint="from the number of labeled examples to num_examples")
    seed = check_int("seed", seed, minimum=0, maximum=_MAX_SEED)
    order = np.random.RandomState(seed).permutation(n)
    others = order[~np.isin(order, labeled)][: size - len(labeled)]
    return torch.from_numpy(np.sort(np.concatenate([labeled, others])).astype(np.int64))


def init_batch(dataset: Dataset, count: int, seed: int, indices: Optional[IndexLike] = None) -> Tensor:
    """The inputs of a data-dependent init batch: ``count`` examples in a seeded random order (:ref:`ref-data-init`).

    The examples are ``indices`` (default: the whole data set) permuted with
    ``torch.randperm(generator=torch.Generator().manual_seed(seed))``; with fewer than ``count`` of them, as many
    independently permuted copies are concatenated as it takes, as the reference's CIFAR-10 and SVHN scripts
    initialize on the first 500 rows of their tiled, permuted labeled set. The global random state is not used.

    Args:
        dataset: a map-style dataset of ``(input, ...)`` items.
        count: the batch size (500 in the reference).
        seed: seed of the order.
        indices: the examples to draw from (e.g. the labeled subset).

    Returns:
        The stacked inputs, shape ``(count, ...)``.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.arange(10.).unsqueeze(1), torch.zeros(10))
        >>> init_batch(ds, 4, seed=0).shape, init_batch(ds, 25, seed=0, indices=[1, 2]).unique().tolist()
        (torch.Size([4, 1]), [1.0, 2.0])
    """
    count = check_int("count", count, minimum=1)
    seed = check_int("seed", seed, **_TORCH_SEEDS)
    pool = torch.arange(len(dataset)) if indices is None else torch.from_numpy(
        check_indices("indices", indices, size=len(dataset), allow_empty=False, hint="the dataset's size"))
    order = torch.Generator().manual_seed(seed)
    copies = [pool[torch.randperm(len(pool), generator=order)] for _ in range(-(-count // len(pool)))]
    return torch.stack([dataset[i][0] for i in torch.cat(copies)[:count].tolist()])


def dataset_labels(dataset: Dataset) -> Tensor:
    """The label of every example of a map-style dataset, as an int64 tensor of shape (len(dataset),).

    Reads the labels without loading the inputs where the dataset exposes them: torchvision's ``targets``
    (MNIST, CIFAR-10) or ``labels`` (SVHN, with 10 already mapped to 0), the second tensor of a
    :class:`~torch.utils.data.TensorDataset`, and :class:`~torch.utils.data.Subset` of any of these. Otherwise
    every item is loaded and its second element taken.

    Example:
        >>> from torch.utils.data import TensorDataset, Subset
        >>> ds = TensorDataset(torch.zeros(4, 2), torch.tensor([3, 1, 2, 0]))
        >>> dataset_labels(Subset(ds, [2, 0])).tolist()
        [2, 3]
    """
    if isinstance(dataset, torch.utils.data.Subset):
        indices = check_indices("dataset.indices", list(dataset.indices))
        return dataset_labels(dataset.dataset)[torch.from_numpy(indices)]
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1].detach().cpu().long().reshape(-1)
    for attribute in ("targets", "labels"):
        values = getattr(dataset, attribute, None)
        if values is not None:
            return torch.as_tensor(np.asarray(values)).long().reshape(-1)
    labels = [int(_label(dataset[index])) for index in range(len(dataset))]  # type: ignore[arg-type]
    return torch.tensor(labels, dtype=torch.long)


def _label(item: Any) -> Any:
    """The label of a dataset item ``(input, label, ...)``: ``item[1]`` of a bare tensor would be its second row,
    silently, so anything else is refused."""
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError(f"dataset items must be (input, label, ...) tuples, got {type(item).__name__}; wrap the "
                        "dataset so that it returns (input, label)")
    return item[1]


class SemiSupervisedBatch(NamedTuple):
    """One iteration's data: a labeled batch, an unlabeled batch and a second unlabeled batch.

    Attributes:
        x_labeled: inputs of the labeled batch.
        y_labeled: their labels.
        x_unlabeled: inputs of the unlabeled batch (the discriminator step's real data).
        x_unlabeled2: inputs of a second, independently shuffled unlabeled batch (the real side of feature
            matching in the generator step), or None if the loader was made with ``generator_batch=False``.
    """

    x_labeled: Any
    y_labeled: Any
    x_unlabeled: Any
    x_unlabeled2: Any


@dataclasses.dataclass(eq=False)
class _SplitCollate:
    """Collates the flat list of items of one iteration into a :class:`SemiSupervisedBatch`.

    A class rather than a closure so that DataLoader workers can pickle it under any start method.
    """

    sizes: List[int]  # this process's [labeled, unlabeled(, unlabeled2)] batch sizes
    collate_fn: Callable[[List[Any]], Any]

    def __call__(self, items: List[Any]) -> SemiSupervisedBatch:
        labeled, unlabeled = self.sizes[0], self.sizes[0] + self.sizes[1]
        # The labels first: _label refuses the bare items whose item[0] would be their first row, silently.
        y_labeled = self.collate_fn([_label(item) for item in items[:labeled]])
        x_labeled = self.collate_fn([item[0] for item in items[:labeled]])
        # Only the inputs of the unlabeled batches leave the loader: their labels are dropped here.
        x_unlabeled = self.collate_fn([item[0] for item in items[labeled:unlabeled]])
        x_unlabeled2 = self.collate_fn([item[0] for item in items[unlabeled:]]) if len(self.sizes) == 3 else None
        return SemiSupervisedBatch(x_labeled, y_labeled, x_unlabeled, x_unlabeled2)


@dataclasses.dataclass(eq=False)
class _EpochSampler(Sampler):
    """The index tables of every epoch, and this process's flat index list of every iteration.

    The tables are a function of the seed, the index sets and the batch sizes. Iterating yields, from global
    iteration ``start_iteration`` on and without end, ``[labeled slice | unlabeled slice | unlabeled2 slice]`` of
    the global batches of each iteration. The sampler holds no reference to the loader: a reference cycle would
    leave the DataLoader iterator to the garbage collector, which shuts its workers down only after timeouts.
    """

    seed: int
    labeled: np.ndarray
    unlabeled: np.ndarray
    batch_size: int
    labeled_batch_size: int
    rank: int
    sizes: List[int]  # this process's slice of each table: [labeled, unlabeled(, unlabeled2)]
    start_iteration: int = 0

    @property
    def epoch_length(self) -> int:
        return self.unlabeled.size // self.batch_size

    def tables(self, epoch: int) -> Dict[str, np.ndarray]:
        """The global index tables of ``epoch`` (see :meth:`SemiSupervisedLoader.epoch_indices`)."""
        e, b, bl = self.epoch_length, self.batch_size, self.labeled_batch_size
        copies = math.ceil(e * bl / self.labeled.size)
        # Every copy of the labeled subset is permuted on its own, as the reference's tiling loop does.
        tiled = np.random.default_rng([self.seed, epoch, 0]).permuted(np.tile(self.labeled, (copies, 1)), axis=1)
        tables = {"labeled": tiled.reshape(-1)[: e * bl].reshape(e, bl)}
        for stream, key in ((1, "unlabeled"), (2, "unlabeled2")):
            permuted = np.random.default_rng([self.seed, epoch, stream]).permutation(self.unlabeled)
            tables[key] = permuted[: e * b].reshape(e, b)
        return tables

    def rows(self, epoch: int) -> np.ndarray:
        """This process's index lists of every iteration of ``epoch``, one row per iteration (E, L + U [+ U])."""
        tables = self.tables(epoch).values()  # labeled, unlabeled, unlabeled2: zip leaves out the last without sizes[2]
        return np.concatenate([table[:, self.rank * size:(self.rank + 1) * size]
                               for table, size in zip(tables, self.sizes)], axis=1)

    def __iter__(self) -> Iterator[List[int]]:
        epoch, t = divmod(self.start_iteration, self.epoch_length)
        while True:
            for row in self.rows(epoch)[t:]:
                yield row.tolist()
            epoch, t = epoch + 1, 0


class SemiSupervisedLoader:
    """Iterates a map-style dataset the way the reference's semi-supervised scripts do (:ref:`ref-training-loop`).

    Each iteration yields a :class:`SemiSupervisedBatch` ``(x_labeled, y_labeled, x_unlabeled, x_unlabeled2)``.
    At the start of epoch ``e`` (0-based), with ``rng`` seeded by ``(seed, e)``:

    - the labeled subset is tiled as often as one epoch needs and every copy is permuted independently, so each
      labeled example appears equally often (with 100 labels and batches of 100, every labeled batch holds all 100);
    - the unlabeled pool (every example of ``dataset`` unless ``unlabeled_indices`` says otherwise, the labeled ones
      included) is permuted, and permuted again independently for the second unlabeled stream;
    - iteration ``t`` takes rows ``[t·B, (t+1)·B)`` of each, for ``t < len(unlabeled) // B``.

    Only the labeled subset's labels are returned; the labels of the unlabeled batches are dropped in the loader.

    The loading itself is a :class:`torch.utils.data.DataLoader` with a batch sampler, so ``num_workers``,
    ``pin_memory`` and a dataset's ``__getitems__`` work as usual. The DataLoader iterator is kept from one epoch
    to the next, so workers keep prefetching across epoch boundaries.

    **Resuming.** Iterating yields the rest of the current epoch and advances ``iteration``, the number of
    batches handed out. :meth:`state_dict` holds it with the seed and the labeled indices, so
    ``ignite.handlers.Checkpoint`` with the loader in ``to_save`` restores the exact position: with Ignite's
    ``Engine``, which calls ``iter()`` once per epoch, the resumed run sees the batches an uninterrupted run would.
    Use one loader per engine.

    **Distributed.** ``batch_size`` and ``labeled_batch_size`` are global, as with
    :func:`ignite.distributed.auto_dataloader`: every process computes the same global batches and takes its
    ``1/world_size`` slice of each, so every process gets its share of the unlabeled data, all processes use the
    same labeled subset, and an epoch has the same length everywhere.

    Args:
        dataset: a map-style dataset whose items are ``(input, label, ...)`` tuples.
        labeled_indices: indices of the labeled subset, e.g. from :func:`balanced_labeled_subset`.
        batch_size: size B of the unlabeled batches, summed over processes (100 in the reference).
        seed: seed of the per-epoch permutations (the reference's ``--seed``).
        labeled_batch_size: size of the labeled batches, summed over processes; ``batch_size`` by default.
        unlabeled_indices: the unlabeled pool; all of ``dataset`` by default.
        generator_batch: whether to load the second unlabeled batch (feature matching needs it; the minimax
            generator loss does not, and False saves the loading).
        collate_fn: collates a list of inputs (or of labels) into a batch; ``default_collate`` by default.
        world_size, rank: process count and this process's rank; from :mod:`ignite.distributed` by default, so
            create the loader inside the distributed context.
        **dataloader_kwargs: passed to the :class:`~torch.utils.data.DataLoader` (``num_workers``, ``pin_memory``,
            ``persistent_workers``, ``prefetch_factor``, ``worker_init_fn``, ``multiprocessing_context``).

    Raises:
        ValueError: if the unlabeled pool is smaller than one batch, a batch size is not divisible by the number of
            processes, or the labeled indices are empty, repeated or outside the dataset.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.arange(20.).unsqueeze(1), torch.arange(20) % 2)
        >>> loader = SemiSupervisedLoader(ds, [0, 1], batch_size=4, seed=0)
        >>> batches = list(loader)  # one epoch: 20 // 4 iterations
        >>> len(batches), loader.iteration, loader.epoch
        (5, 5, 1)
        >>> sorted(set(torch.cat([b.y_labeled for b in batches]).tolist()))  # only the labels of examples 0 and 1
        [0, 1]
    """

    def __init__(
        self,
        dataset: Dataset,
        labeled_indices: IndexLike,
        batch_size: int,
        *,
        seed: int,
        labeled_batch_size: Optional[int] = None,
        unlabeled_indices: Optional[IndexLike] = None,
        generator_batch: bool = True,
        collate_fn: Optional[Callable[[List[Any]], Any]] = None,
        world_size: Optional[int] = None,
        rank: Optional[int] = None,
        **dataloader_kwargs: Any,
    ) -> None:
        self.dataset = dataset
        self.dataset_size = len(dataset)  # type: ignore[arg-type]
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        labeled_batch_size = self.batch_size if labeled_batch_size is None else labeled_batch_size
        self.labeled_batch_size = check_int("labeled_batch_size", labeled_batch_size, minimum=1)
        seed = check_int("seed", seed, minimum=0)
        self.generator_batch = check_bool("generator_batch", generator_batch)
        world_size = idist.get_world_size() if world_size is None else world_size
        self.world_size = check_int("world_size", world_size, minimum=1)
        self.rank = check_int("rank", idist.get_rank() if rank is None else rank, minimum=0,
                              maximum=self.world_size - 1, hint=f"world_size={self.world_size}")
        for name, size in (("batch_size", self.batch_size), ("labeled_batch_size", self.labeled_batch_size)):
            if size % self.world_size:
                raise ValueError(f"{name}={size} must be divisible by the number of processes ({self.world_size}): it "
                                 "is the global batch size, split evenly between processes")
        # This process's share of the labeled, unlabeled (and second unlabeled) batch of every iteration.
        per_process = self.batch_size // self.world_size
        self._sizes = [self.labeled_batch_size // self.world_size, per_process]
        if self.generator_batch:
            self._sizes.append(per_process)

        indices = dict(size=self.dataset_size, unique=True, allow_empty=False, hint="the dataset's size")
        self.unlabeled_indices = np.arange(self.dataset_size, dtype=np.int64) if unlabeled_indices is None else (
            check_indices("unlabeled_indices", unlabeled_indices, **indices))
        if self.unlabeled_indices.size < self.batch_size:
            raise ValueError(f"batch_size={self.batch_size} is larger than the unlabeled data "
                             f"({self.unlabeled_indices.size} examples): expected at least one full batch of them")
        labeled = check_indices("labeled_indices", labeled_indices, **indices)
        self._sampler = _EpochSampler(seed, labeled, self.unlabeled_indices, self.batch_size, self.labeled_batch_size,
                                      self.rank, self._sizes)
        self.epoch_length = self._sampler.epoch_length
        self.iteration = 0
        collate = _SplitCollate(self._sizes, default_collate if collate_fn is None else collate_fn)
        # The loader's own generator seeds the workers, so that creating an iterator never draws from (and so never
        # shifts) the global torch RNG that the models' noise comes from.
        self._dataloader = DataLoader(dataset, batch_sampler=self._sampler, collate_fn=collate,
                                      generator=torch.Generator().manual_seed(seed), **dataloader_kwargs)
        self._stream: Optional[Iterator[SemiSupervisedBatch]] = None
        self._stream_position = -1

    def __len__(self) -> int:
        """Iterations per epoch: ``unlabeled_count // batch_size``."""
        return self.epoch_length

    @property
    def epoch(self) -> int:
        """The 0-based epoch the next batch belongs to."""
        return self.iteration // self.epoch_length

    def set_epoch(self, epoch: int) -> None:
        """Moves to the start of ``epoch`` (0-based)."""
        self.iteration = check_int("epoch", epoch, minimum=0) * self.epoch_length

    @property
    def seed(self) -> int:
        """Seed of the per-epoch permutations."""
        return self._sampler.seed

    @property
    def labeled_indices(self) -> np.ndarray:
        """Indices of the labeled subset (a copy)."""
        return self._sampler.labeled.copy()

    def epoch_indices(self, epoch: int) -> Dict[str, np.ndarray]:
        """The global index tables of ``epoch``: ``labeled`` (E, labeled_batch_size), ``unlabeled`` and
        ``unlabeled2`` (E, batch_size), E = ``len(self)``; row t holds iteration t's global batch.

        Each table comes from its own generator seeded with ``(seed, epoch, stream)``, so they are independent
        and a function of ``(seed, epoch)`` alone.
        """
        return self._sampler.tables(check_int("epoch", epoch, minimum=0))

    def __iter__(self) -> Iterator[SemiSupervisedBatch]:
        """Yields the batches from ``iteration`` to the end of its epoch."""
        end = (self.epoch + 1) * self.epoch_length
        while self.iteration < end:
            batch = self._batch()
            self.iteration += 1
            yield batch

    def _batch(self) -> SemiSupervisedBatch:
        """The batch of iteration :attr:`iteration`, from the DataLoader's stream (restarted there after a jump)."""
        if self._stream is None or self._stream_position != self.iteration:
            self._stream = None  # shuts down the previous iterator's workers before new ones start
            self._sampler.start_iteration = self.iteration
            self._stream = iter(self._dataloader)
        batch = next(self._stream)  # type: ignore[arg-type]
        self._stream_position = self.iteration + 1
        return batch

    def state_dict(self) -> Dict[str, Any]:
        """The position, the seed and the labeled subset (plain tensors and ints, for ``weights_only`` loading)."""
        return {
            "iteration": self.iteration,
            "seed": self.seed,
            "labeled_indices": torch.from_numpy(self.labeled_indices),
            "batch_size": self.batch_size,
            "labeled_batch_size": self.labeled_batch_size,
            "unlabeled_count": int(self.unlabeled_indices.size),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores the position, the seed and the labeled subset saved by :meth:`state_dict`.

        The batch sizes and the size of the unlabeled pool must be those of the saved run, since they define the
        epochs.
        """
        current = self.state_dict()
        check_state_keys(state_dict, list(current), exact=False, owner=f"{type(self).__name__}.load_state_dict")
        for key in ("batch_size", "labeled_batch_size", "unlabeled_count"):
            if int(state_dict[key]) != current[key]:
                raise ValueError(f"state_dict has {key}={int(state_dict[key])} but this loader has {key}="
                                 f"{current[key]}; resume with the saved run's settings")
        self._sampler.labeled = check_indices("state_dict['labeled_indices']", state_dict["labeled_indices"],
                                             size=self.dataset_size, unique=True, allow_empty=False)
        self._sampler.seed = check_int("state_dict['seed']", int(state_dict["seed"]), minimum=0)
        self.iteration = check_int("state_dict['iteration']", int(state_dict["iteration"]), minimum=0)
        self._stream = None


def _derived_seed(*parts: int) -> int:
    """An independent 63-bit seed for a (seed, stream, rank) triple, so that streams never share random numbers."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class MixtureStream:
    """An endless stream of batches freshly sampled from a 2-D mixture, with its own seeded random generator.

    The generator is seeded from ``(seed, stream, rank)`` through ``numpy.random.SeedSequence``, so the streams of
    one run seed (the training data, an init batch, ...) and of its processes never share random numbers, and no
    stream touches the global random state. The ``state_dict`` holds the generator's state, so a checkpointed run
    resumes with the very batches an uninterrupted run would have drawn; batches are drawn only when asked for, so
    the stream never runs ahead of the trainer's iteration counter.

    Args:
        mixture: a :class:`~ignite_igan.metrics.mode_coverage.GaussianMixture2D` (e.g. ``ring_mixture()``).
        batch_size: points per batch.
        seed: the run's seed.
        rank: the process's rank (each process draws its own data).
        stream: which of the run's independent streams (1: the training data; ``recipes/mixture.py`` draws its
            init batch as the first batch of stream 2).

    Example:
        >>> from ignite_igan.metrics.mode_coverage import ring_mixture
        >>> stream = MixtureStream(ring_mixture(), batch_size=4, seed=0)
        >>> batches = iter(stream)
        >>> next(batches).shape
        torch.Size([4, 2])
        >>> state, expected = stream.state_dict(), next(batches)
        >>> resumed = MixtureStream(ring_mixture(), batch_size=4, seed=0)
        >>> resumed.load_state_dict(state)
        >>> torch.equal(next(iter(resumed)), expected)
        True
    """

    def __init__(self, mixture: Any, batch_size: int, seed: int, rank: int = 0, stream: int = 1) -> None:
        from ignite_igan.metrics.mode_coverage import GaussianMixture2D  # data.py otherwise needs no metric

        self.mixture = check_instance("mixture", mixture, GaussianMixture2D, "a GaussianMixture2D")
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        seed, rank, stream = (check_int(name, value, minimum=0) for name, value in (("seed", seed), ("rank", rank),
                                                                                     ("stream", stream)))
        self.generator = torch.Generator().manual_seed(_derived_seed(seed, stream, rank))

    def __iter__(self) -> Iterator[Tensor]:
        while True:
            yield self.mixture.sample(self.batch_size, generator=self.generator)

    def state_dict(self) -> Dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        check_state_keys(state_dict, ["generator"], owner="MixtureStream.load_state_dict")
        self.generator.set_state(state_dict["generator"])


def epoch_loader(
    dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0, pin_memory: bool = False
) -> DataLoader:
    """A shuffled loader whose every epoch's order is a function of ``(seed, epoch)`` only.

    ``batch_size`` is global: under :mod:`ignite.distributed` each process takes its share (``batch_size`` must be
    divisible by the number of processes) of the examples of a ``DistributedSampler``; the last incomplete batch is
    dropped. Attach it with :func:`attach_epoch_order`, which sets the sampler's epoch, so a resumed run sees the
    same batches as an uninterrupted one.

    Args:
        dataset: the training set.
        batch_size: the global batch size.
        seed: the seed of the order.
        num_workers: the ``DataLoader``'s worker processes.
        pin_memory: the ``DataLoader``'s ``pin_memory`` (for CUDA).

    Raises:
        ValueError: ``batch_size`` not divisible by the number of processes, or fewer examples per process than one
            batch; the messages name ``--batch-size``.
        TypeError: an argument of the wrong kind (a string or a float for ``seed``, a number for ``pin_memory``).

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> loader = epoch_loader(TensorDataset(torch.arange(10)), batch_size=4, seed=1)
        >>> len(loader), [batch[0].tolist() for batch in loader]
        (2, [[5, 6, 1, 2], [0, 8, 9, 3]])
    """
    world, rank = idist.get_world_size(), idist.get_rank()
    batch_size = check_int("batch_size", batch_size, minimum=1)
    seed = check_int("seed", seed, **_TORCH_SEEDS)  # the sampler seeds a torch.Generator with seed + epoch
    num_workers = check_int("num_workers", num_workers, minimum=0)
    pin_memory = check_bool("pin_memory", pin_memory)
    if batch_size % world:
        raise ValueError(f"--batch-size must be divisible by the number of processes ({world}), got {batch_size}")
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=batch_size // world, sampler=sampler, drop_last=True,
                        num_workers=num_workers, pin_memory=pin_memory)
    if len(loader) == 0:
        raise ValueError(f"the training set has {len(sampler)} examples per process, fewer than one batch of "
                         f"--batch-size={batch_size}")
    return loader


def attach_epoch_order(trainer: Any, loader: DataLoader) -> None:
    """At every epoch's start, sets the epoch of ``loader``'s sampler and gives ``trainer`` a fresh iterator over it.

    A fresh iterator also with short epochs (``epoch_length`` below ``len(loader)``): every epoch starts at the
    beginning of its own permutation, as :func:`epoch_loader` promises.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> from torch.utils.data import TensorDataset
        >>> loader = epoch_loader(TensorDataset(torch.arange(10)), batch_size=4, seed=1)
        >>> seen = []
        >>> trainer = Engine(lambda engine, batch: seen.append(batch[0].tolist()))
        >>> attach_epoch_order(trainer, loader)
        >>> _ = trainer.run(loader, max_epochs=2, epoch_length=1)
        >>> seen  # the first batch of epoch 0's order, then of epoch 1's
        [[5, 6, 1, 2], [8, 7, 1, 5]]
    """
    from ignite.engine import Events

    sampler = loader.sampler
    if not callable(getattr(sampler, "set_epoch", None)):
        raise TypeError(f"loader's sampler must have set_epoch(epoch), got {type(sampler).__name__}")

    def new_epoch_order(engine: Any) -> None:
        sampler.set_epoch(engine.state.epoch - 1)
        engine.set_data(loader)

    trainer.add_event_handler(Events.EPOCH_STARTED, new_epoch_order)
