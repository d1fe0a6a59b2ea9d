"""FID of generated images against real data (or precomputed statistics), as an Ignite metric.

The real side of FID is a :class:`FeatureStatistics` (the float64 mean and covariance of features), made by one of
its constructors:

- ``FeatureStatistics.from_images(RealImages(train_set, name="cifar10", split="train"), extractor)``: the mean
  and covariance of the extractor's features of the real images, accumulated in float64. With a ``name`` they are
  saved to a cache file whose name and contents carry a key of everything that determines them (data set name and
  split, number of images, network and the SHA-256 of its weights, resize, input range, rounding, dtype, TF32,
  batch sizes, transform, features function). A later run with the same key loads the file; any difference in the
  key computes the statistics again (a stale cache is never used).
- ``FeatureStatistics.from_file("stats.npz")`` or ``FeatureStatistics.from_arrays(mu, sigma)``: precomputed
  statistics, e.g. the ``.npz`` files with ``mu``/``sigma`` that pytorch-fid and others publish (they must come
  from the same network and preprocessing).
- ``FeatureStatistics.from_features(features)``: of a feature matrix.

:class:`FID` takes them as ``real=``, or a :class:`RealImages`, whose statistics it computes when it is attached
and again whenever their key changes (a classifier being trained). The forms ``real=`` took before these
constructors still work: a ``Dataset``, ``DataLoader`` or tensor of images is read as ``RealImages(real)``, an
``.npz`` path as ``from_file``, ``(mu, sigma)`` or a mapping with ``mu`` and ``sigma`` as ``from_arrays``. Without
``real``, ``update((real, fake))`` takes pairs of batches, as Ignite's ``FID`` does.

The Fréchet distance is :func:`ignite_igan.functional.frechet_distance`'s exact float64 computation (a factor of
the real covariance, computed once, and one symmetric eigenvalue problem per evaluation), never an approximation.
Means and covariances are accumulated in float64, batch by batch with centred scatter matrices (no cancellation of
``Σffᵀ − nμμᵀ``); under ``ignite.distributed`` they are all-reduced, so the result equals one process's up to the
order of the additions.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, RandomSampler, Subset

import ignite.distributed as idist
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics.metric import EpochWise, MetricUsage, reinit__is_reduced

from ignite_igan.functional import _covariance_factor, _frechet_from_factor
from ignite_igan.metrics.extractors import (
    FeaturesFn,
    ImageExtractor,
    SharedPass,
    _ExtractorMetric,
    _missing_features_message,
    _normalize_range,
    callable_fingerprint,
    sha256_of_file,
)
from ignite_igan.metrics.protocol import ROUNDING, Protocol, publish_protocol
from ignite_igan.validation import check_bool, check_device, check_int, check_statistics, check_string

__all__ = ["FID", "FeatureStatistics", "RealImages", "default_statistics_dir"]

#: Version of the cache key's layout; bumped whenever the way statistics are computed changes.
CACHE_FORMAT = 1

RealSource = Union["FeatureStatistics", "RealImages", DataLoader, Dataset, Tensor, str, os.PathLike, Tuple[Any, Any],
                   Mapping[str, Any]]


def default_statistics_dir() -> Path:
    """Where real statistics are cached by default: ``<torch hub dir>/../ignite_igan/fid_statistics``
    (``~/.cache/torch/ignite_igan/fid_statistics`` unless ``TORCH_HOME`` says otherwise)."""
    return Path(torch.hub.get_dir()).parent / "ignite_igan" / "fid_statistics"


def _key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


class FeatureStatistics:
    """The mean and covariance of a set of features, in float64: the real side of FID.

    Args:
        mu: ``(D,)`` mean.
        sigma: ``(D, D)`` covariance.
        count: number of images they were computed from (``None`` if unknown, e.g. for published ``.npz``).
        key: what determines them (the cache key), or ``None``.
        source: a short description for the protocol card.

    Example:
        >>> import torch
        >>> stats = FeatureStatistics.from_features(torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]]))
        >>> stats.mu.tolist(), stats.count
        ([2.0, 4.0], 3)
        >>> stats.sigma.tolist()
        [[4.0, 7.0], [7.0, 13.0]]
    """

    def __init__(
        self,
        mu: Union[Tensor, np.ndarray],
        sigma: Union[Tensor, np.ndarray],
        count: Optional[int] = None,
        key: Optional[Mapping[str, Any]] = None,
        source: str = "given statistics",
    ) -> None:
        mu, sigma = check_statistics("mu", mu, "sigma", sigma)
        self.mu = mu.detach().to(torch.float64)
        self.sigma = sigma.detach().to(torch.float64)
        self.count = check_int("count", count, minimum=1, allow_none=True)
        self.key = dict(key) if key is not None else None
        self.source = source
        self._factor: Optional[Tensor] = None

    @property
    def num_features(self) -> int:
        """D."""
        return int(self.mu.shape[0])

    @property
    def key_digest(self) -> Optional[str]:
        """The first 12 hex digits of the key's SHA-256 (``None`` without a key)."""
        return _key_digest(self.key)[:12] if self.key is not None else None

    @classmethod
    def from_features(cls, features: Tensor, **kwargs: Any) -> "FeatureStatistics":
        """Statistics of an ``(N, D)`` feature matrix, N >= 2 (covariance with ``N - 1``, as ``np.cov``)."""
        if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] < 2:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"features must be a tensor (N, D) with N >= 2, got {shape}")
        f = features.detach().to(torch.float64)
        mu = f.mean(dim=0)  # NaN or inf features make it so, which the constructor reports
        centered = f - mu
        sigma = centered.T @ centered / (f.shape[0] - 1)
        kwargs.setdefault("count", int(f.shape[0]))
        return cls(mu, sigma, **kwargs)

    @classmethod
    def from_arrays(cls, mu: Any, sigma: Any) -> "FeatureStatistics":
        """Given ``mu`` ``(D,)`` and ``sigma`` ``(D, D)`` (tensors or NumPy arrays), keyed by the SHA-256 of their
        float64 values, so that equal statistics carry equal keys on the protocol card."""
        mu, sigma = (torch.as_tensor(value).detach().to("cpu", torch.float64) for value in (mu, sigma))
        digest = hashlib.sha256(b"".join(value.contiguous().numpy().tobytes() for value in (mu, sigma))).hexdigest()
        return cls(mu, sigma, None, {"source": "tensors", "sha256": digest}, "given mu/sigma")

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike]) -> "FeatureStatistics":
        """A published ``.npz`` of ``mu`` and ``sigma`` (pytorch-fid's layout, or :meth:`save`'s), keyed by the
        file's name and SHA-256."""
        path = Path(path).expanduser()
        if path.suffix != ".npz":
            raise ValueError(f"real must be a .npz file of statistics (mu, sigma) when it is a path, got {str(path)!r}")
        loaded = cls.load(path)
        key = {"source": "npz", "file": path.name, "sha256": sha256_of_file(path)}
        return cls(loaded.mu, loaded.sigma, loaded.count, key, f"file {path.name}")

    @classmethod
    def from_images(
        cls,
        images: Union["RealImages", DataLoader, Dataset, Tensor],
        extractor: Union[str, ImageExtractor, SharedPass] = "inception-v3-compat",
        *,
        input_range: str = "[-1,1]",
        device: Union[str, torch.device] = "cpu",
        allow_tf32: bool = False,
        extractor_batch_size: Optional[int] = None,
    ) -> "FeatureStatistics":
        """The statistics of the extractor's features of real images, loaded from the cache or computed now.

        Args:
            images: a :class:`RealImages` (name, split, number of images, transform, cache), or the data alone.
            extractor: the network, as :class:`~ignite_igan.metrics.SharedPass` takes it.
            input_range: the images' range, unless ``images`` names its own.
            device: where the network runs and the statistics are kept.
            allow_tf32: allow TF32 in the network's pass.
            extractor_batch_size: run the network on at most this many images at once.

        Example:
            >>> import torch
            >>> from ignite_igan.metrics import ClassifierExtractor
            >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
            >>> extractor = ClassifierExtractor(net, features_fn=lambda net, x: net[0](x))
            >>> stats = FeatureStatistics.from_images(torch.rand(64, 3, 4, 4), extractor, input_range="[0,1]")
            >>> stats.count, stats.num_features
            (64, 48)
        """
        device = check_device("device", device)
        real = images if isinstance(images, RealImages) else RealImages(images)
        shared = extractor if isinstance(extractor, SharedPass) else SharedPass(extractor, device)
        shared.extractor.to(device)
        options = dict(
            input_range=real.input_range or _normalize_range(input_range),
            device=device,
            allow_tf32=check_bool("allow_tf32", allow_tf32),
            batch_size=check_int("extractor_batch_size", extractor_batch_size, minimum=1, allow_none=True),
        )
        return real.statistics(shared, options)

    def to(self, device: Union[str, torch.device]) -> "FeatureStatistics":
        """The same statistics on ``device``."""
        return FeatureStatistics(self.mu.to(device), self.sigma.to(device), self.count, self.key, self.source)

    def factor(self) -> Tensor:
        """``F`` with ``F Fᵀ = sigma`` (computed once, then reused by every FID against these statistics)."""
        if self._factor is None or self._factor.device != self.sigma.device:
            sigma = 0.5 * (self.sigma + self.sigma.T)
            self._factor = _covariance_factor("the real covariance", sigma)
        return self._factor

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Writes an ``.npz`` with ``mu`` and ``sigma`` (the pytorch-fid layout) plus ``count`` and ``key``.

        The file is written under a temporary name and moved into place, so a reader never sees half a file.
        """
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: Dict[str, np.ndarray] = {
            "mu": self.mu.cpu().numpy(),
            "sigma": self.sigma.cpu().numpy(),
            "count": np.asarray(-1 if self.count is None else self.count, dtype=np.int64),
            "key": np.asarray(json.dumps(self.key, sort_keys=True) if self.key is not None else ""),
            "source": np.asarray(self.source),
        }
        handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
        try:
            with os.fdopen(handle, "wb") as f:
                np.savez(f, **arrays)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "FeatureStatistics":
        """Reads an ``.npz`` with ``mu`` and ``sigma`` (ours, pytorch-fid's, torch-fidelity's); no pickles."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"real statistics file {str(path)!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: np.array(data[name]) for name in data.files}
        except (OSError, EOFError) as error:  # not a zip file, truncated
            raise ValueError(f"real statistics file {str(path)!r} is not a readable .npz: {error}") from error
        if not {"mu", "sigma"} <= set(arrays):
            raise ValueError(f"real statistics file {str(path)!r} must hold arrays 'mu' and 'sigma', got "
                             f"{sorted(arrays)}")
        count, key = int(arrays.get("count", -1)), str(arrays.get("key", ""))
        return cls(torch.from_numpy(arrays["mu"]), torch.from_numpy(arrays["sigma"]), count if count > 0 else None,
                   json.loads(key) if key else None, str(arrays.get("source", f"file {path.name}")))

    def __repr__(self) -> str:
        return f"FeatureStatistics(D={self.num_features}, count={self.count}, source={self.source!r})"


class _Moments:
    """Float64 count, mean and centred scatter matrix of features, merged batch by batch and across processes.

    Each batch is centred on its own mean before its scatter matrix is formed, and batches are merged with Chan et
    al.'s update (``M += C_b + δδᵀ·n_a·n_b/n``), so the covariance does not lose its digits to the cancellation of
    ``Σffᵀ − n·μμᵀ`` when the features' variance is small next to their mean. Across processes the global mean is
    all-reduced first, then every process adds ``n_r·(m_r − μ)(m_r − μ)ᵀ`` to its scatter matrix and those are
    summed (the parallel-axis theorem), which is exact and as stable.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.count = 0
        # Zeros until the first batch, which the merge then takes as it is (n_a = 0: its mean, its scatter matrix).
        self.mean: Union[Tensor, float] = 0.0
        self.scatter: Union[Tensor, float] = 0.0

    def add(self, features: Tensor) -> None:
        f = features.detach().to(device=self.device, dtype=torch.float64)
        n_a, n_b = self.count, int(f.shape[0])
        batch_mean = f.mean(dim=0)
        centred = f - batch_mean
        n = n_a + n_b
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.scatter = self.scatter + centred.T @ centred + torch.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def reduced(self) -> Tuple[Optional[Tensor], Optional[Tensor], int]:
        """``(mean, scatter, count)`` over all processes (collective: every process must call it)."""
        if idist.get_world_size() == 1:
            return (self.mean, self.scatter, self.count) if self.count else (None, None, 0)
        local_d = int(self.mean.shape[0]) if self.count else 0
        d = int(idist.all_reduce(local_d, op="MAX"))
        count = int(idist.all_reduce(self.count))
        if d == 0 or count == 0:
            return None, None, count
        if local_d not in (0, d):
            raise ValueError(f"processes disagree on the number of features: {local_d} here, {d} elsewhere")
        # A process that saw no batch takes part with zeros (and a count of 0, so it adds nothing).
        zeros = torch.zeros(d, dtype=torch.float64, device=self.device)
        local_mean = self.mean if self.count else zeros
        local_scatter = self.scatter if self.count else torch.outer(zeros, zeros)
        mean = idist.all_reduce(local_mean * self.count).to(self.device) / count
        offset = local_mean - mean
        scatter = idist.all_reduce(local_scatter + torch.outer(offset, offset) * self.count).to(self.device)
        return mean, scatter, count

    def statistics(self, what: str = "features", **kwargs: Any) -> FeatureStatistics:
        mean, scatter, count = self.reduced()
        if mean is None:
            raise NotComputableError(f"FID must have at least one {what} image before it can be computed")
        if count < 2:
            raise ValueError(f"FID needs at least 2 {what} images for a covariance, got {count}")
        # A NaN or inf feature of any batch carries into the mean or the scatter matrix: one check for all of them.
        if not (torch.isfinite(mean).all() and torch.isfinite(scatter).all()):
            raise ValueError(f"the extractor returned NaN or inf features for the {what} images")
        sigma = scatter / (count - 1)
        sigma = 0.5 * (sigma + sigma.T)
        kwargs.setdefault("count", count)
        return FeatureStatistics(mean, sigma, **kwargs)


def _default_images(batch: Any) -> Tensor:
    """The images of a batch: the batch, or the first element of ``(images, labels)``; anything else reaches
    :func:`~ignite_igan.metrics.to_uint8`, whose error names the real images and what they were."""
    return batch[0] if isinstance(batch, (tuple, list)) and batch else batch


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "data"


class RealImages:
    """The real images of FID and how to read them: the data, its name for the cache, how many, in which range.

    Their statistics are :meth:`FeatureStatistics.from_images`; :class:`FID` computes them when it is attached, and
    again whenever their key (:meth:`key`) changes. Under ``ignite.distributed`` every process reads its own share
    of the images and the moments are all-reduced; the cache is read and written by rank 0.

    Args:
        data: a map-style ``Dataset`` (items: images, or ``(image, label)`` as torchvision's), a tensor
            ``(N, C, H, W)`` of images, or a ``DataLoader`` (its own batch size and order; not one with a
            ``DistributedSampler``, nor one that shuffles a subset or drops a different remainder on every pass).
        name: the data set's name (e.g. ``"cifar10"``); required to cache their statistics.
        split: its split (e.g. ``"train"``), part of the cache key.
        samples: use the first this many images (default: all). Needs an unshuffled order.
        input_range: range of the images (default: the metric's ``input_range``).
        transform: ``transform(batch) -> images`` for the data's batches (default: the batch itself, or its first
            element for ``(images, labels)``).
        batch_size: batch size of the pass over a ``Dataset`` or tensor (a ``DataLoader`` keeps its own).
        cache_dir: where the statistics are cached (default :func:`default_statistics_dir`); only with ``name``.

    Example:
        >>> import torch
        >>> real = RealImages(torch.rand(8, 3, 4, 4), input_range="[0,1]", samples=6)
        >>> real.count(), real.cache_path({"any": "key"}) is None  # no name, no cache
        (6, True)
    """

    def __init__(
        self,
        data: Union[DataLoader, Dataset, Tensor],
        *,
        name: Optional[str] = None,
        split: Optional[str] = None,
        samples: Optional[int] = None,
        input_range: Optional[str] = None,
        transform: Optional[Callable[[Any], Tensor]] = None,
        batch_size: int = 100,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
    ) -> None:
        self.name = check_string("name", name, allow_none=True)
        self.split = check_string("split", split, allow_none=True)
        if name is None and (split is not None or cache_dir is not None):
            raise ValueError("split and cache_dir need name: the name of the real data set is part of the cache key")
        self.samples = check_int("samples", samples, minimum=1, allow_none=True)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        if isinstance(data, DataLoader):
            # Refused: a loader whose images are not the same on every pass, or one sharded already.
            if isinstance(data.sampler, DistributedSampler) or isinstance(data.batch_sampler, DistributedSampler):
                raise ValueError("real must not be a DataLoader with a DistributedSampler: FID shards the real data "
                                 "across processes itself (pass the Dataset, or a DataLoader without one)")
            size, step = _length(data.dataset), data.batch_size
            subset = self.samples is not None and (size is None or self.samples < size)
            dropped = data.drop_last and step and (size is None or size % step)
            if isinstance(data.sampler, RandomSampler) and (subset or dropped):
                what = (f"samples={samples} takes a subset" if subset
                        else "drop_last=True, which leaves out other images on every pass")
                raise ValueError(f"real is a shuffling DataLoader and {what}: the real statistics would differ from "
                                 "run to run. Pass the Dataset, or shuffle=False")
        elif not (isinstance(data, (Tensor, Dataset)) or hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise TypeError("real must be a DataLoader, a Dataset or a tensor of images, FeatureStatistics, an .npz "
                            f"path, (mu, sigma) or a mapping with 'mu' and 'sigma', got {type(data).__name__}")
        if name is not None and self.samples is None and _length(data) is None:
            raise ValueError("the real data has no length; pass samples=N so that the cache key can name the number")
        self.data, self.transform = data, transform
        self.input_range = _normalize_range(input_range, "input_range") if input_range is not None else None
        self.cache_dir = None if name is None else Path(cache_dir or default_statistics_dir()).expanduser()

    def count(self) -> Optional[int]:
        """The number of images used (``None`` if the data has no length and ``samples`` is not given)."""
        length = _length(self.data)
        if length is not None and self.samples is not None and self.samples > length:
            raise ValueError(f"samples={self.samples}, but the real data has only {length} images")
        return self.samples if self.samples is not None else length

    def key(self, extractor: ImageExtractor, options: Mapping[str, Any]) -> Dict[str, Any]:
        """Everything that determines the statistics, with ``options`` those of the network's pass (``input_range``,
        ``allow_tf32``, ``batch_size``): the cache key."""
        return {
            "format": CACHE_FORMAT,
            "real_name": self.name,
            "real_split": self.split,
            "n_images": self.count(),
            **extractor.describe(),  # network, weights_sha256, features, resize, dtype
            "input_range": options["input_range"],
            "rounding": ROUNDING,
            "allow_tf32": options["allow_tf32"],
            "real_batch_size": self.data.batch_size if isinstance(self.data, DataLoader) else self.batch_size,
            "extractor_batch_size": options["batch_size"],
            "real_transform": callable_fingerprint(self.transform) if self.transform else None,
        }

    def cache_path(self, key: Mapping[str, Any]) -> Optional[Path]:
        """The cache file of the statistics of ``key`` (``None`` without ``name``)."""
        if self.cache_dir is None:
            return None
        name = _slug(self.name) + (f"_{_slug(self.split)}" if self.split else "")
        return self.cache_dir / f"fid_{name}_{_key_digest(key)[:16]}.npz"

    def description(self, key: Mapping[str, Any]) -> str:
        """``"<name>/<split>, <n> images, key <digest>"``, for the protocol card."""
        name = (self.name or "unnamed real data") + (f"/{self.split}" if self.split else "")
        count = key["n_images"]
        return f"{name}, {count if count is not None else '?'} images, key {_key_digest(key)[:12]}"

    def statistics(
        self, shared: SharedPass, options: Mapping[str, Any], cached: Optional[FeatureStatistics] = None
    ) -> FeatureStatistics:
        """``cached`` if its key is still the images' key, else the statistics loaded from the cache file or computed
        now (collective under ``ignite.distributed``); ``options`` are :class:`SharedPass`'s keyword arguments."""
        key = self.key(shared.extractor, options)
        if cached is not None and cached.key == key:
            return cached
        path = self.cache_path(key)
        loaded = _try_load(path, key) if path is not None and idist.get_rank() == 0 else None
        # Rank 0 alone reads the cache (the others may not see its folder) and sends them what it found; a hit's
        # count is the key's (a file whose key matches holds exactly the images the key names).
        if idist.get_world_size() > 1 and path is not None and idist.broadcast(int(loaded is not None), src=0):
            send = ("mu", "sigma")
            mu, sigma = (idist.broadcast(getattr(loaded, part, None), src=0, safe_mode=True) for part in send)
            loaded = FeatureStatistics(mu.cpu(), sigma.cpu(), key["n_images"])
        if loaded is not None:
            loaded = FeatureStatistics(loaded.mu, loaded.sigma, loaded.count, key, self.description(key))
            return loaded.to(options["device"])
        stats = self._compute(key, shared, options)
        if path is not None and idist.get_rank() == 0:
            stats.save(path)
        return stats

    def _compute(self, key: Dict[str, Any], shared: SharedPass, options: Mapping[str, Any]) -> FeatureStatistics:
        moments = _Moments(options["device"])
        try:
            for images in self.batches():
                moments.add(shared(images, "features", argument="real images", **options))
        finally:
            shared.forget()
        stats = moments.statistics("real", key=key, source=self.description(key))
        expected = key["n_images"]
        if expected is not None and stats.count != expected:
            raise ValueError(f"the real pass saw {stats.count} images, expected {expected}")
        if expected is None:  # no length known and no cache: record the count that was seen
            stats.key = dict(key, n_images=stats.count)
            stats.source = self.description(stats.key)
        return stats

    def batches(self) -> Iterator[Tensor]:
        """This process's share of the first ``count()`` images, batch by batch, through ``transform``: a contiguous
        block of a ``Dataset`` or tensor (a tensor is a map-style data set too), or the whole batches of a
        ``DataLoader`` (or of data without a length) dealt to the processes in turn."""
        select = self.transform or _default_images
        n, data = self.count(), self.data
        world_size, rank = idist.get_world_size(), idist.get_rank()
        # A generator of its own: iterating a DataLoader otherwise draws from the global RNG (and so would
        # shift a training run that computes the real statistics in the middle of it).
        if not isinstance(data, DataLoader) and n is not None:
            shard = Subset(data, range(rank * n // world_size, (rank + 1) * n // world_size))
            for batch in DataLoader(shard, batch_size=self.batch_size, generator=torch.Generator()):
                yield select(batch)
            return
        loader = data if isinstance(data, DataLoader) else DataLoader(
            data, batch_size=self.batch_size, generator=torch.Generator())
        offset = 0
        for index, batch in enumerate(loader):
            if n is not None and offset >= n:
                break
            images = select(batch)
            take = images.shape[0] if n is None else min(images.shape[0], n - offset)
            if index % world_size == rank:
                yield images[:take]
            offset += take
        if n is not None and offset < n:
            expected = f"samples={n}" if self.samples is not None else f"its length, {n}"
            raise ValueError(f"the real data gave {offset} images, fewer than {expected}")


def _try_load(path: Path, key: Dict[str, Any]) -> Optional[FeatureStatistics]:
    """The cached statistics of ``key`` at ``path``, or ``None`` (no file, another key, an unreadable file)."""
    if not path.is_file():
        return None
    try:
        stats = FeatureStatistics.load(path)
    except (ValueError, OSError) as error:
        warnings.warn(f"FID: ignoring the unreadable cache file {str(path)!r} ({error}); recomputing", RuntimeWarning)
        return None
    return stats if stats.key == key else None  # another key under the same name: never use it


class FID(_ExtractorMetric):
    """Fréchet Inception Distance of generated images against real data, by the paper network's pool features.

    With ``real=`` (a :class:`RealImages`, or :class:`FeatureStatistics` from one of its constructors), ``update``
    takes a batch of generated images, so the metric goes into a :class:`~ignite_igan.metrics.GeneratorEvaluator`
    next to the Inception Score and is scored at every evaluation::

        fid = FID(real=RealImages(train_set, name="cifar10", split="train"), input_range="[-1,1]")
        scorer = GeneratorEvaluator(generator, {"is": InceptionScore(), "fid": fid}, n_samples=50_000)

    The statistics of :class:`RealImages` are computed (or loaded from the cache) when the metric is attached to an
    engine, i.e. before training starts, or else at the first ``compute``, and again whenever their key changes;
    see the module docstring for the cache and for the other forms ``real`` takes. Without ``real``,
    ``update((real, fake))`` takes pairs of batches (any sizes, both in ``input_range``), as Ignite's ``FID`` does.

    Images are rounded to uint8 (:func:`~ignite_igan.metrics.to_uint8`) and passed through the extractor's features
    (2048 ``pool_3`` features of the paper's Inception by default). The float64 means and scatter matrices are
    all-reduced across processes. An :class:`~ignite_igan.metrics.InceptionScore` and this metric given the same
    :class:`~ignite_igan.metrics.SharedPass` run the network once per batch. The result,
    :func:`~ignite_igan.functional.frechet_distance` of the two Gaussians, goes to ``engine.state.metrics[name]``
    as a float, and the protocol card (:class:`~ignite_igan.metrics.Protocol`, with the real statistics' key) to
    ``engine.state.protocols[name]``; it is also ``metric.protocol``.

    Args:
        extractor: ``"inception-v3-compat"`` (default, the paper's network, weights checked when the metric is
            built), ``"torchvision"``, an :class:`~ignite_igan.metrics.ImageExtractor` with ``features`` (e.g.
            ``ClassifierExtractor(net, features_fn=...)``), a :class:`~ignite_igan.metrics.SharedPass`, or a
            classifier ``nn.Module`` together with ``features_fn``.
        input_range: range of the generated images: ``"[-1,1]"`` (default), ``"[0,1]"`` or ``"uint8"``.
        num_features: D, if you want it checked (default: whatever the extractor returns).
        output_transform: maps the engine's output to the generated images (to ``(real, fake)`` without ``real``).
        device: where the extractor runs and the statistics are kept.
        real: the real side (see above); ``None`` for ``(real, fake)`` pairs.
        features_fn: with a classifier ``nn.Module`` as ``extractor``: ``features_fn(net, x) -> (N, D)``, e.g. the
            penultimate layer ``lambda net, x: net.body(x).flatten(1)``; ``x`` are the images in ``input_range``.
        extractor_batch_size: run the network on at most this many images at once.
        allow_tf32: allow TF32 in the network's pass (default ``False``, true float32).

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
        >>> real = RealImages(torch.rand(64, 3, 4, 4, generator=torch.Generator().manual_seed(0)))
        >>> fid = FID(extractor=net, features_fn=lambda net, x: net[0](x), input_range="[0,1]", real=real)
        >>> evaluator = Engine(lambda engine, batch: batch)
        >>> fid.attach(evaluator, "fid")
        >>> state = evaluator.run([torch.rand(32, 3, 4, 4) ** 2 for _ in range(2)])
        >>> state.metrics["fid"] > 0, state.protocols["fid"].n_samples
        (True, 64)
    """

    def __init__(
        self,
        extractor: Union[str, nn.Module, SharedPass, None] = "inception-v3-compat",
        input_range: str = "[-1,1]",
        num_features: Optional[int] = None,
        output_transform: Callable = lambda x: x,
        device: Union[str, torch.device] = torch.device("cpu"),
        *,
        real: Optional[RealSource] = None,
        features_fn: Optional[FeaturesFn] = None,
        extractor_batch_size: Optional[int] = None,
        allow_tf32: bool = False,
    ) -> None:
        num_features = check_int("num_features", num_features, minimum=1, allow_none=True)
        super().__init__(
            extractor, input_range, output_transform, device, extractor_batch_size, allow_tf32, features_fn
        )
        if not self._extractor.provides_features:
            raise ValueError(_missing_features_message(self._extractor))
        declared = self._extractor.num_features
        if num_features is not None and declared is not None and num_features != declared:
            raise ValueError(f"num_features={num_features}, but the extractor gives {declared} features")
        self._num_features = num_features if num_features is not None else declared
        self._real = _as_real(real)
        self._real_stats: Optional[FeatureStatistics] = None
        if isinstance(self._real, FeatureStatistics):
            if self._num_features is not None and self._real.num_features != self._num_features:
                raise ValueError(f"real statistics have {self._real.num_features} features, but the extractor gives "
                                 f"{self._num_features}; they were computed with another network or layer")
            self._real_stats = self._real = self._real.to(self._device)
        self._n_samples: Optional[int] = None
        self._n_real: Optional[int] = None

    @property
    def paired(self) -> bool:
        """True when ``update`` takes ``(real, fake)`` pairs (no ``real`` was given)."""
        return self._real is None

    def _real_options(self) -> Dict[str, Any]:
        """The keyword arguments of the real images' pass (:class:`SharedPass`)."""
        return self._options(self._real.input_range if isinstance(self._real, RealImages) else None)

    def real_key(self) -> Dict[str, Any]:
        """The cache key of the real statistics: everything that determines them (real images only)."""
        if not isinstance(self._real, RealImages):
            raise ValueError("real_key is for real images (real=RealImages(...), a DataLoader, Dataset or tensor)")
        return self._real.key(self._extractor, self._real_options())

    def cache_path(self) -> Optional[Path]:
        """The cache file of the real statistics (``None`` without a name for the real images)."""
        return self._real.cache_path(self.real_key()) if isinstance(self._real, RealImages) else None

    @property
    def real_statistics(self) -> FeatureStatistics:
        """The real side, given, loaded from the cache, or computed now (collective under ``ignite.distributed``).

        For :class:`RealImages` the key is checked on every access: if anything in it changed (e.g. the weights of
        a user classifier), the statistics are recomputed.
        """
        if self._real is None:
            raise ValueError("FID without real= has no fixed real statistics; update takes (real, fake) pairs")
        if isinstance(self._real, RealImages):
            self._real_stats = self._real.statistics(self._pass, self._real_options(), self._real_stats)
        return self._real_stats

    @property
    def protocol(self) -> Protocol:
        """The protocol card (``n_samples`` is the number of generated images in the last ``compute``)."""
        if self._real is None:
            real = "real images given to update() in (real, fake) pairs"
            if self._n_real is not None:
                real += f", {self._n_real} images"
        elif isinstance(self._real, FeatureStatistics):
            real = f"{self._real.source}, key {self._real.key_digest}"
        else:
            real = self._real_stats.source if self._real_stats is not None else self._real.description(self.real_key())
        real_range = self._real_options()["input_range"]
        if real_range != self._input_range:
            real += f" (real input {real_range})"
        dims = self._num_features or (self._real_stats.num_features if self._real_stats is not None else None)
        features = self._extractor.features_name or "features"  # FID's extractor provides features
        if dims is not None and not features.startswith(f"{dims} "):
            features += f" ({dims} features)"
        return self._card("fid", features, real_statistics=real)

    def attach(self, engine: Engine, name: str, usage: Union[str, MetricUsage] = EpochWise()) -> None:
        """Attaches the metric and, with ``real`` images, computes or loads their statistics now (before any run)."""
        if self._real is not None:
            self.real_statistics
        super().attach(engine, name, usage)

    @reinit__is_reduced
    def reset(self) -> None:
        self._fake = _Moments(self._device)
        self._real_moments = _Moments(self._device)
        self._pass.forget()

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        if self._real is not None:  # a pair here fails in to_uint8, which names what it got
            self._fake.add(self._run(output, "features"))
            return
        # The one check per batch: a tensor of two images would unpack as a pair silently.
        if not isinstance(output, (tuple, list)) or len(output) != 2:
            raise TypeError(f"FID without real= takes (real, fake) pairs of image batches, got "
                            f"{type(output).__name__}; pass real=RealImages(...) or FeatureStatistics to score "
                            "generated images alone")
        self._real_moments.add(self._run(output[0], "features", argument="real"))
        self._fake.add(self._run(output[1], "features", argument="fake"))

    def compute(self) -> float:
        """FID between the generated images' statistics (all processes) and the real statistics."""
        self._pass.forget()
        fake = self._fake.statistics("generated")
        if self._real is None:
            real = self._real_moments.statistics("real")
            self._n_real = real.count
        else:
            real = self.real_statistics
        if real.num_features != fake.num_features:
            raise ValueError(f"the real statistics have {real.num_features} features, the generated images "
                             f"{fake.num_features}; they were computed with another network or layer")
        device = real.sigma.device
        value = _frechet_from_factor(real.mu, real.sigma, real.factor(), fake.mu.to(device), fake.sigma.to(device))
        self._n_samples = fake.count
        return value

    def completed(self, engine: Engine, name: str) -> None:
        """Writes the FID (a float) into ``engine.state.metrics[name]`` and the card into ``engine.state.protocols``."""
        engine.state.metrics[name] = self.compute()
        publish_protocol(engine, name, self.protocol)


def _as_real(real: Optional[RealSource]) -> Union[None, FeatureStatistics, RealImages]:
    """The forms ``real=`` takes, each read by its constructor: a path by :meth:`FeatureStatistics.from_file`,
    ``(mu, sigma)`` or a mapping with them by :meth:`FeatureStatistics.from_arrays`, data by :class:`RealImages`."""
    if isinstance(real, (str, os.PathLike)):
        return FeatureStatistics.from_file(real)
    if isinstance(real, Mapping):
        real = (real["mu"], real["sigma"])  # a KeyError names the one missing
    if isinstance(real, (tuple, list)):
        if len(real) != 2:
            raise ValueError(f"real as a tuple or list must be (mu, sigma), got {len(real)} items; stack real images "
                             "into one tensor, or pass a Dataset or DataLoader")
        return FeatureStatistics.from_arrays(*real)
    return real if real is None or isinstance(real, (FeatureStatistics, RealImages)) else RealImages(real)


def _length(data: Any) -> Optional[int]:
    """The number of images one pass over ``data`` gives (``None`` if unknown); for a ``DataLoader``, its sampler's
    length (the data set's with a custom ``batch_sampler`` or an ``IterableDataset``) less the last partial batch when
    ``drop_last`` is set (as Ignite's ``examples/gan/dcgan.py`` loads)."""
    try:
        if not isinstance(data, DataLoader):
            return len(data)
        whole = data.batch_size is None or isinstance(data.dataset, IterableDataset)
        count = len(data.dataset if whole else data.sampler)  # type: ignore[arg-type]
    except TypeError:  # an IterableDataset or a sampler without __len__
        return None
    return count - count % data.batch_size if data.batch_size and data.drop_last else count
