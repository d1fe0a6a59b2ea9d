"""FID of generated images against a real data set (or precomputed statistics), as an Ignite metric.

:class:`FID` scores the generated images an evaluator produces against the feature statistics of real images:

- ``FID(real=dataset_or_loader, real_name="cifar10", real_split="train")``: the mean and covariance of the
  extractor's features of the real images are computed once (accumulated in float64), kept in memory, and saved to
  a cache file whose name and contents carry a key of everything that determines them (data set name and split,
  number of images, network and the SHA-256 of its weights, resize, input range, rounding, dtype, TF32, batch
  sizes, features function). A later run with the same key loads the file; any difference in the key computes the
  statistics again (a stale cache is never used).
- ``FID(real="stats.npz")`` or ``FID(real=(mu, sigma))``: precomputed statistics, e.g. the ``.npz`` files with
  ``mu``/``sigma`` that pytorch-fid and others publish (they must come from the same network and preprocessing).
- ``FID()`` without ``real``: ``update((real, fake))`` takes pairs of batches, as Ignite's ``FID`` does.

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
from ignite.metrics import Metric
from ignite.metrics.metric import EpochWise, MetricUsage, reinit__is_reduced

from ignite_igan.functional import _check_statistics, _covariance_factor, _frechet_from_factor
from ignite_igan.metrics.extractors import (
    FeaturesFn,
    ImageExtractor,
    _as_extractor,
    _missing_features_message,
    _normalize_range,
    callable_fingerprint,
    forget_last_batch,
    run_extractor,
    sha256_of_file,
)
from ignite_igan.metrics.protocol import ROUNDING, Protocol, publish_protocol

from ignite_igan.validation import check_bool, check_int

__all__ = ["FID", "FeatureStatistics", "default_statistics_dir"]

#: Version of the cache key's layout; bumped whenever the way statistics are computed changes.
CACHE_FORMAT = 1

RealSource = Union[DataLoader, Dataset, Tensor, str, os.PathLike, Tuple[Any, Any], Mapping[str, Any], "FeatureStatistics"]


def default_statistics_dir() -> Path:
    """Where :class:`FID` caches real statistics by default: ``<torch hub dir>/../ignite_igan/fid_statistics``
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
        mu, sigma = _check_statistics("mu", mu, "sigma", sigma)
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
        if not torch.isfinite(f).all():
            raise ValueError("features must be finite, got NaN or inf")
        mu = f.mean(dim=0)
        centered = f - mu
        sigma = centered.T @ centered / (f.shape[0] - 1)
        kwargs.setdefault("count", int(f.shape[0]))
        return cls(mu, sigma, **kwargs)

    def to(self, device: Union[str, torch.device]) -> "FeatureStatistics":
        """The same statistics on ``device``."""
        moved = FeatureStatistics(self.mu.to(device), self.sigma.to(device), self.count, self.key, self.source)
        return moved

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
                names = set(data.files)
                if not {"mu", "sigma"} <= names:
                    raise ValueError(
                        f"real statistics file {str(path)!r} must hold arrays 'mu' and 'sigma', got {sorted(names)}"
                    )
                mu, sigma = np.array(data["mu"]), np.array(data["sigma"])
                count = int(data["count"]) if "count" in names and int(data["count"]) > 0 else None
                key_text = str(data["key"]) if "key" in names else ""
                source = str(data["source"]) if "source" in names else f"file {path.name}"
        except (OSError, EOFError) as error:  # not a zip file, truncated
            raise ValueError(f"real statistics file {str(path)!r} is not a readable .npz: {error}") from error
        key = json.loads(key_text) if key_text else None
        return cls(torch.from_numpy(mu), torch.from_numpy(sigma), count=count, key=key, source=source)

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
        self.mean: Optional[Tensor] = None
        self.scatter: Optional[Tensor] = None
        self.count = 0

    def add(self, features: Tensor, what: str) -> None:
        f = features.detach().to(device=self.device, dtype=torch.float64)
        if f.dim() != 2:
            raise ValueError(f"the {what} features must have shape (N, D), got {tuple(f.shape)}")
        if not torch.isfinite(f).all():
            raise ValueError(f"the extractor returned NaN or inf features for the {what} images")
        if f.shape[0] == 0:
            return
        if self.mean is not None and f.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"the extractor returned {f.shape[1]} features for the {what} images, earlier {self.mean.shape[0]}"
            )
        n_b = int(f.shape[0])
        batch_mean = f.mean(dim=0)
        centred = f - batch_mean
        batch_scatter = centred.T @ centred
        if self.mean is None:
            self.mean, self.scatter, self.count = batch_mean, batch_scatter, n_b
            return
        n_a = self.count
        n = n_a + n_b
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.scatter = self.scatter + batch_scatter + torch.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def reduced(self) -> Tuple[Optional[Tensor], Optional[Tensor], int]:
        """``(mean, scatter, count)`` over all processes (collective: every process must call it)."""
        if idist.get_world_size() == 1:
            return self.mean, self.scatter, self.count
        local_d = 0 if self.mean is None else int(self.mean.shape[0])
        d = int(idist.all_reduce(local_d, op="MAX"))
        count = int(idist.all_reduce(self.count))
        if d == 0 or count == 0:
            return None, None, count
        if local_d not in (0, d):
            raise ValueError(f"processes disagree on the number of features: {local_d} here, {d} elsewhere")
        zeros = torch.zeros(d, dtype=torch.float64, device=self.device)
        local_mean = self.mean if self.mean is not None else zeros
        total = idist.all_reduce(local_mean * self.count).to(self.device)
        mean = total / count
        if self.mean is None:
            scatter = torch.zeros(d, d, dtype=torch.float64, device=self.device)
        else:
            offset = self.mean - mean
            scatter = self.scatter + torch.outer(offset, offset) * self.count
        scatter = idist.all_reduce(scatter).to(self.device)
        return mean, scatter, count

    def statistics(self, what: str = "features", **kwargs: Any) -> FeatureStatistics:
        mean, scatter, count = self.reduced()
        if mean is None or count == 0:
            raise NotComputableError(f"FID must have at least one {what} image before it can be computed")
        if count < 2:
            raise ValueError(f"FID needs at least 2 {what} images for a covariance, got {count}")
        sigma = scatter / (count - 1)
        sigma = 0.5 * (sigma + sigma.T)
        kwargs.setdefault("count", count)
        return FeatureStatistics(mean, sigma, **kwargs)


def _default_images(batch: Any) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]  # (images, labels)
    raise TypeError(
        f"real data must give image tensors or (images, labels) pairs, got {type(batch).__name__}; pass "
        "real_transform=lambda batch: <the images> to pick them out"
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "data"


class FID(Metric):
    """Fréchet Inception Distance of generated images against real data, by the paper network's pool features.

    With ``real=`` (a ``DataLoader``, a ``Dataset``, a tensor of images, an ``.npz`` file, ``(mu, sigma)`` or
    :class:`FeatureStatistics`), ``update`` takes a batch of generated images, so the metric goes into a
    :class:`~ignite_igan.metrics.GeneratorEvaluator` next to the Inception Score and is scored at every evaluation::

        fid = FID(real=train_set, real_name="cifar10", real_split="train", input_range="[-1,1]")
        scorer = GeneratorEvaluator(generator, {"is": InceptionScore(), "fid": fid}, n_samples=50_000)

    The real images must be in ``real_input_range`` (default: ``input_range``, the generator's). Their statistics
    are computed (or loaded from the cache) when the metric is attached to an engine, i.e. before training starts,
    or else at the first ``compute``; see the module docstring for the cache. Without ``real``,
    ``update((real, fake))`` takes pairs of batches (any sizes), as Ignite's ``FID`` does.

    Images are rounded to uint8 (:func:`~ignite_igan.metrics.to_uint8`) and passed through the extractor's features
    (2048 ``pool_3`` features of the paper's Inception by default). The float64 means and scatter matrices are
    all-reduced across processes. When an :class:`~ignite_igan.metrics.InceptionScore` and this metric use the same network (both by
    name, or the same instance) and see the same batch, the network runs once for both. The result,
    :func:`~ignite_igan.functional.frechet_distance` of the two Gaussians, goes to ``engine.state.metrics[name]``
    as a float, and the protocol card (:class:`~ignite_igan.metrics.Protocol`, with the real statistics' key) to
    ``engine.state.protocols[name]``; it is also ``metric.protocol``.

    Args:
        extractor: ``"inception-v3-compat"`` (default, the paper's network, weights checked when the metric is
            built), ``"torchvision"``, an :class:`~ignite_igan.metrics.ImageExtractor` with ``features`` (e.g.
            ``ClassifierExtractor(net, features_fn=...)``), or a classifier ``nn.Module`` together with
            ``features_fn``.
        input_range: range of the generated images: ``"[-1,1]"`` (default), ``"[0,1]"`` or ``"uint8"``.
        num_features: D, if you want it checked (default: whatever the extractor returns).
        output_transform: maps the engine's output to the generated images (to ``(real, fake)`` without ``real``).
        device: where the extractor runs and the statistics are kept.
        real: the real data or statistics (see above); ``None`` for ``(real, fake)`` pairs.
        features_fn: with a classifier ``nn.Module`` as ``extractor``: ``features_fn(net, x) -> (N, D)``, e.g. the
            penultimate layer ``lambda net, x: net.body(x).flatten(1)``; ``x`` are the images in ``input_range``.
        real_name: the real data set's name (e.g. ``"cifar10"``); required to cache its statistics.
        real_split: its split (e.g. ``"train"``), part of the cache key.
        real_samples: use the first this many real images (default: all). Needs an unshuffled order.
        real_input_range: range of the real images (default: ``input_range``).
        real_transform: ``real_transform(batch) -> images`` for the real data's batches (default: the batch itself,
            or its first element for ``(images, labels)``).
        real_batch_size: batch size of the pass over a real ``Dataset`` (a ``DataLoader`` keeps its own).
        cache_dir: where real statistics are cached (default :func:`default_statistics_dir`); used only with
            ``real_name``.
        extractor_batch_size: run the network on at most this many images at once.
        allow_tf32: allow TF32 in the network's pass (default ``False``, true float32).

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
        >>> real = torch.rand(64, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> fid = FID(extractor=net, features_fn=lambda net, x: net[0](x), input_range="[0,1]", real=real)
        >>> evaluator = Engine(lambda engine, batch: batch)
        >>> fid.attach(evaluator, "fid")
        >>> state = evaluator.run([torch.rand(32, 3, 4, 4) ** 2 for _ in range(2)])
        >>> state.metrics["fid"] > 0, state.protocols["fid"].n_samples
        (True, 64)
    """

    required_output_keys = None

    def __init__(
        self,
        extractor: Union[str, nn.Module, None] = "inception-v3-compat",
        input_range: str = "[-1,1]",
        num_features: Optional[int] = None,
        output_transform: Callable = lambda x: x,
        device: Union[str, torch.device] = torch.device("cpu"),
        *,
        real: Optional[RealSource] = None,
        features_fn: Optional[FeaturesFn] = None,
        real_name: Optional[str] = None,
        real_split: Optional[str] = None,
        real_samples: Optional[int] = None,
        real_input_range: Optional[str] = None,
        real_transform: Optional[Callable[[Any], Tensor]] = None,
        real_batch_size: int = 100,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
        extractor_batch_size: Optional[int] = None,
        allow_tf32: bool = False,
    ) -> None:
        for name, value in (
            ("num_features", num_features),
            ("real_samples", real_samples),
            ("extractor_batch_size", extractor_batch_size),
        ):
            check_int(name, value, minimum=1, allow_none=True)
        num_features, real_samples, extractor_batch_size = (
            None if v is None else int(v) for v in (num_features, real_samples, extractor_batch_size)
        )
        real_batch_size = check_int("real_batch_size", real_batch_size, minimum=1)
        allow_tf32 = check_bool("allow_tf32", allow_tf32)
        for name, value in (("real_name", real_name), ("real_split", real_split)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a non-empty string or None, got {value!r}")
        if real_transform is not None and not callable(real_transform):
            raise TypeError(f"real_transform must be callable, got {type(real_transform).__name__}")
        self._input_range = _normalize_range(input_range)
        self._real_input_range = _normalize_range(
            real_input_range if real_input_range is not None else self._input_range, argument="real_input_range"
        )
        self._allow_tf32 = allow_tf32
        self._extractor_batch_size = extractor_batch_size
        # The network first (reset() needs it): a named one is built, and its weights checked, right now.
        self._extractor = _as_extractor(
            extractor, self._input_range, device=torch.device(device), features_fn=features_fn
        )
        self._extractor.to(torch.device(device))
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)
        if not self._extractor.provides_features:
            raise ValueError(_missing_features_message(self._extractor))
        declared = self._extractor.num_features
        if num_features is not None and declared is not None and num_features != declared:
            raise ValueError(f"num_features={num_features}, but the extractor gives {declared} features")
        self._num_features = num_features if num_features is not None else declared

        self._real_name = real_name
        self._real_split = real_split
        self._real_samples = real_samples
        self._real_transform = real_transform
        self._real_batch_size = real_batch_size
        self._real_data: Any = None
        self._real_stats: Optional[FeatureStatistics] = None
        self._given_stats = False
        self._n_samples: Optional[int] = None
        self._n_real: Optional[int] = None
        if (real_name is None) and (real_split is not None or cache_dir is not None):
            raise ValueError(
                "real_split and cache_dir need real_name: the name of the real data set is part of the cache key"
            )
        self._cache_dir = (
            Path(cache_dir).expanduser() if cache_dir is not None else default_statistics_dir()
        ) if real_name is not None else None
        self._classify_real(real)

    # ----------------------------------------------------------------------------------------------------------
    # The real side
    def _classify_real(self, real: Any) -> None:
        if real is None:
            if self._real_name is not None or self._real_samples is not None or self._real_transform is not None:
                raise ValueError("real_name, real_samples and real_transform describe real=...; pass real too")
            return
        stats: Optional[FeatureStatistics] = None
        if isinstance(real, FeatureStatistics):
            stats = real
        elif isinstance(real, (str, os.PathLike)):
            path = Path(real).expanduser()
            if path.suffix != ".npz":
                raise ValueError(f"real must be a .npz file of statistics (mu, sigma) when it is a path, got {str(real)!r}")
            loaded = FeatureStatistics.load(path)
            key = {"source": "npz", "file": path.name, "sha256": sha256_of_file(path)}
            stats = FeatureStatistics(loaded.mu, loaded.sigma, loaded.count, key, f"file {path.name}")
        elif isinstance(real, Mapping):
            if not {"mu", "sigma"} <= set(real):
                raise ValueError(f"real as a mapping must have 'mu' and 'sigma', got keys {sorted(real)}")
            stats = self._stats_from_arrays(real["mu"], real["sigma"])
        elif isinstance(real, (tuple, list)):
            if len(real) != 2:
                raise ValueError(
                    f"real as a tuple or list must be (mu, sigma), got {len(real)} items; stack real images into one "
                    "tensor, or pass a Dataset or DataLoader"
                )
            stats = self._stats_from_arrays(real[0], real[1])
        elif isinstance(real, Tensor):
            if real.dim() < 2 or real.shape[0] < 2:
                raise ValueError(f"real images must have shape (N, C, H, W) with N >= 2, got {tuple(real.shape)}")
            self._real_data = real
        elif isinstance(real, DataLoader):
            sampler = real.sampler
            if isinstance(sampler, DistributedSampler) or isinstance(getattr(real, "batch_sampler", None), DistributedSampler):
                raise ValueError(
                    "real must not be a DataLoader with a DistributedSampler: FID shards the real data across "
                    "processes itself (pass the Dataset, or a DataLoader without a distributed sampler)"
                )
            if isinstance(sampler, RandomSampler) and self._real_samples is not None:
                size = _length(real.dataset)
                if size is None or self._real_samples < size:
                    raise ValueError(
                        f"real is a shuffling DataLoader and real_samples={self._real_samples} takes a subset: the "
                        "first images would differ from run to run. Pass shuffle=False (or the Dataset)"
                    )
            if isinstance(sampler, RandomSampler) and real.drop_last and real.batch_size:
                size = _length(real.dataset)
                if size is None or size % real.batch_size:
                    raise ValueError(
                        f"real is a shuffling DataLoader with drop_last=True, which leaves out other images on every "
                        f"pass (batch_size={real.batch_size}, {size if size is not None else 'unknown'} images): the "
                        "real statistics would differ from run to run. Pass the Dataset, or shuffle=False"
                    )
            self._real_data = real
        elif isinstance(real, (Dataset, IterableDataset)) or (hasattr(real, "__getitem__") and hasattr(real, "__len__")):
            self._real_data = real
        else:
            raise TypeError(
                "real must be a DataLoader, a Dataset, a tensor of images, an .npz path, (mu, sigma), a mapping with "
                f"'mu' and 'sigma' or FeatureStatistics, got {type(real).__name__}"
            )
        if stats is not None:
            if self._real_samples is not None or self._real_transform is not None:
                raise ValueError("real_samples and real_transform apply to real images, not to precomputed statistics")
            if self._num_features is not None and stats.num_features != self._num_features:
                raise ValueError(
                    f"real statistics have {stats.num_features} features, but the extractor gives "
                    f"{self._num_features}; they were computed with another network or layer"
                )
            self._real_stats = stats.to(self._device)
            self._given_stats = True
        elif self._real_name is not None and self._real_samples is None and _length(self._real_data) is None:
            raise ValueError(
                "the real data has no length; pass real_samples=N so that the cache key can name the number of images"
            )

    def _stats_from_arrays(self, mu: Any, sigma: Any) -> FeatureStatistics:
        arrays = {}
        for name, value in (("mu", mu), ("sigma", sigma)):
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            if not isinstance(value, Tensor):
                raise TypeError(f"real {name} must be a tensor or NumPy array, got {type(value).__name__}")
            arrays[name] = value.detach().to("cpu", torch.float64)
        digest = hashlib.sha256()
        for name in ("mu", "sigma"):
            digest.update(arrays[name].contiguous().numpy().tobytes())
        key = {"source": "tensors", "sha256": digest.hexdigest()}
        return FeatureStatistics(arrays["mu"], arrays["sigma"], None, key, "given mu/sigma")

    @property
    def paired(self) -> bool:
        """True when ``update`` takes ``(real, fake)`` pairs (no ``real`` was given)."""
        return self._real_data is None and not self._given_stats

    def _real_count(self) -> Optional[int]:
        length = _length(self._real_data)
        if self._real_samples is None:
            return length
        if length is not None and self._real_samples > length:
            raise ValueError(f"real_samples={self._real_samples}, but the real data has only {length} images")
        return self._real_samples

    def real_key(self) -> Dict[str, Any]:
        """The cache key of the real statistics: everything that determines them (data mode only)."""
        if self._real_data is None:
            raise ValueError("real_key is for real images (real=DataLoader/Dataset/tensor)")
        info = self._extractor.describe()
        return {
            "format": CACHE_FORMAT,
            "real_name": self._real_name,
            "real_split": self._real_split,
            "n_images": self._real_count(),
            "network": info["network"],
            "weights_sha256": info["weights_sha256"],
            "features": info["features"],
            "resize": info["resize"],
            "dtype": info["dtype"],
            "input_range": self._real_input_range,
            "rounding": ROUNDING,
            "allow_tf32": self._allow_tf32,
            "real_batch_size": self._real_batch_size if not isinstance(self._real_data, DataLoader)
            else self._real_data.batch_size,
            "extractor_batch_size": self._extractor_batch_size,
            "real_transform": callable_fingerprint(self._real_transform) if self._real_transform else None,
        }

    def cache_path(self) -> Optional[Path]:
        """The cache file of the real statistics (``None`` without ``real_name``)."""
        if self._cache_dir is None or self._real_data is None:
            return None
        name = _slug(self._real_name) + (f"_{_slug(self._real_split)}" if self._real_split else "")
        return self._cache_dir / f"fid_{name}_{_key_digest(self.real_key())[:16]}.npz"

    @property
    def real_statistics(self) -> FeatureStatistics:
        """The real side, given, loaded from the cache, or computed now (collective under ``ignite.distributed``).

        In data mode the key is checked on every access: if anything in it changed (e.g. the weights of a user
        classifier), the statistics are recomputed.
        """
        if self.paired:
            raise ValueError("FID without real= has no fixed real statistics; update takes (real, fake) pairs")
        if self._given_stats:
            assert self._real_stats is not None
            return self._real_stats
        key = self.real_key()
        if self._real_stats is None or self._real_stats.key != key:
            self._real_stats = self._load_or_compute(key)
        return self._real_stats

    def _try_load(self, path: Path, key: Dict[str, Any]) -> Optional[FeatureStatistics]:
        if not path.is_file():
            return None
        try:
            stats = FeatureStatistics.load(path)
        except (ValueError, OSError) as error:
            warnings.warn(f"FID: ignoring the unreadable cache file {str(path)!r} ({error}); recomputing", RuntimeWarning)
            return None
        if stats.key != key:
            return None  # another key under the same name (hash collision or an edited file): never use it
        return stats

    def _load_or_compute(self, key: Dict[str, Any]) -> FeatureStatistics:
        path = self.cache_path()
        world_size, rank = idist.get_world_size(), idist.get_rank()
        description = self._real_description(key)
        loaded = self._try_load(path, key) if path is not None and rank == 0 else None
        if world_size > 1 and path is not None:
            hit = int(idist.broadcast(torch.tensor([int(loaded is not None)]), src=0)[0])
            if hit:
                mu = idist.broadcast(loaded.mu if rank == 0 else None, src=0, safe_mode=True)
                sigma = idist.broadcast(loaded.sigma if rank == 0 else None, src=0, safe_mode=True)
                count = int(idist.broadcast(torch.tensor([loaded.count if rank == 0 else 0]), src=0)[0])
                loaded = FeatureStatistics(mu.cpu(), sigma.cpu(), count, key, description)
        if loaded is not None:
            return FeatureStatistics(loaded.mu, loaded.sigma, loaded.count, key, description).to(self._device)
        stats = self._compute_real(key, description)
        if path is not None and rank == 0:
            stats.save(path)
        return stats

    def _real_description(self, key: Dict[str, Any]) -> str:
        name = (self._real_name or "unnamed real data") + (f"/{self._real_split}" if self._real_split else "")
        count = key["n_images"]
        return f"{name}, {count if count is not None else '?'} images, key {_key_digest(key)[:12]}"

    def _real_batches(self) -> Iterator[Tensor]:
        """This process's share of the first ``n`` real images, batch by batch."""
        data = self._real_data
        world_size, rank = idist.get_world_size(), idist.get_rank()
        select = self._real_transform or _default_images
        n = self._real_count()
        if isinstance(data, DataLoader) or n is None:
            # A generator of its own: iterating a DataLoader otherwise draws from the global RNG (and so would
            # shift a training run that computes the real statistics in the middle of it).
            loader = data if isinstance(data, DataLoader) else DataLoader(
                data, batch_size=self._real_batch_size, generator=torch.Generator())
            offset = 0
            for index, batch in enumerate(loader):
                if n is not None and offset >= n:
                    break
                images = select(batch)
                if not isinstance(images, Tensor) or images.dim() < 1:
                    raise TypeError(f"real_transform must return a tensor of images, got {type(images).__name__}")
                take = images.shape[0] if n is None else min(images.shape[0], n - offset)
                if index % world_size == rank:
                    yield images[:take]
                offset += take
            if n is not None and offset < n:
                expected = f"real_samples={n}" if self._real_samples is not None else f"its length, {n}"
                raise ValueError(f"the real data gave {offset} images, fewer than {expected}")
            return
        start, stop = rank * n // world_size, (rank + 1) * n // world_size
        if isinstance(data, Tensor):
            for begin in range(start, stop, self._real_batch_size):
                yield select(data[begin : min(begin + self._real_batch_size, stop)])
            return
        loader = DataLoader(Subset(data, range(start, stop)), batch_size=self._real_batch_size, shuffle=False,
                            generator=torch.Generator())
        iterator = iter(loader)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except TypeError as error:
                if "default_collate" in str(error) or "PIL" in str(error):
                    raise TypeError(
                        f"the real data set's items cannot be batched ({error}); give it a transform that makes "
                        "tensors, e.g. torchvision.transforms.ToTensor() with real_input_range='[0,1]'"
                    ) from error
                raise
            yield select(batch)

    def _compute_real(self, key: Dict[str, Any], description: str) -> FeatureStatistics:
        moments = _Moments(self._device)
        try:
            for images in self._real_batches():
                features = run_extractor(
                    self._extractor,
                    images,
                    input_range=self._real_input_range,
                    output="features",
                    device=self._device,
                    allow_tf32=self._allow_tf32,
                    batch_size=self._extractor_batch_size,
                    argument="real images",
                )
                moments.add(features, "real")
        finally:
            forget_last_batch(self._extractor)
        stats = moments.statistics("real", key=key, source=description)
        expected = key["n_images"]
        if expected is not None and stats.count != expected:
            raise ValueError(f"the real pass saw {stats.count} images, expected {expected}")
        if expected is None:  # no length known and no cache: record the count that was seen
            stats.key = dict(key, n_images=stats.count)
            stats.source = self._real_description(stats.key)
        return stats

    # ----------------------------------------------------------------------------------------------------------
    # The metric
    @property
    def extractor(self) -> ImageExtractor:
        """The network."""
        return self._extractor

    @property
    def protocol(self) -> Protocol:
        """The protocol card (``n_samples``: generated images in the last ``compute``)."""
        info = self._extractor.describe()
        if self.paired:
            real = "real images given to update() in (real, fake) pairs"
            if self._n_real is not None:
                real += f", {self._n_real} images"
        elif self._given_stats:
            assert self._real_stats is not None
            real = f"{self._real_stats.source}, key {self._real_stats.key_digest}"
        elif self._real_stats is not None:
            real = self._real_stats.source
        else:
            real = self._real_description(self.real_key())
        dims = self._num_features or (self._real_stats.num_features if self._real_stats is not None else None)
        features = info["features"] or "features"
        return Protocol.of_network(
            "fid",
            info,
            output=features if (dims is None or features.startswith(f"{dims} ")) else f"{features} ({dims} features)",
            input_range=self._input_range,
            rounding=ROUNDING,
            allow_tf32=self._allow_tf32,
            n_samples=self._n_samples,
            real_statistics=real
            + (f" (real input {self._real_input_range})" if self._real_input_range != self._input_range else ""),
        )

    def attach(self, engine: Engine, name: str, usage: Union[str, MetricUsage] = EpochWise()) -> None:
        """Attaches the metric and, with ``real`` images, computes or loads their statistics now (before any run)."""
        if not self.paired:
            self.real_statistics
        super().attach(engine, name, usage)

    @reinit__is_reduced
    def reset(self) -> None:
        self._fake = _Moments(self._device)
        self._real_moments = _Moments(self._device)
        forget_last_batch(self._extractor)

    def _features(self, images: Any, input_range: str, argument: str) -> Tensor:
        return run_extractor(
            self._extractor,
            images,
            input_range=input_range,
            output="features",
            device=self._device,
            allow_tf32=self._allow_tf32,
            batch_size=self._extractor_batch_size,
            argument=argument,
        )

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        if self.paired:
            if not isinstance(output, (tuple, list)) or len(output) != 2:
                raise TypeError(
                    f"FID without real= takes (real, fake) pairs of image batches, got {type(output).__name__}; pass "
                    "real=<DataLoader, Dataset, .npz or (mu, sigma)> to score generated images alone"
                )
            real, fake = output
            self._real_moments.add(self._features(real, self._real_input_range, "real"), "real")
            self._fake.add(self._features(fake, self._input_range, "fake"), "generated")
            return
        if isinstance(output, (tuple, list)):
            raise TypeError(
                f"FID(real=...) takes a batch of generated images, got a {type(output).__name__} of {len(output)}; "
                "use output_transform to pick the images (pairs (real, fake) are for FID without real=)"
            )
        self._fake.add(self._features(output, self._input_range, "images"), "generated")

    def compute(self) -> float:
        """FID between the generated images' statistics (all processes) and the real statistics."""
        forget_last_batch(self._extractor)
        fake = self._fake.statistics("generated")
        if self.paired:
            real = self._real_moments.statistics("real")
            self._n_real = real.count
        else:
            real = self.real_statistics
        if real.num_features != fake.num_features:
            raise ValueError(
                f"the real statistics have {real.num_features} features, the generated images {fake.num_features}; "
                "they were computed with another network or layer"
            )
        sigma = fake.sigma.to(real.sigma.device)
        mu = fake.mu.to(real.sigma.device)
        value = _frechet_from_factor(real.mu, real.sigma, real.factor(), mu, sigma)
        self._n_samples = fake.count
        return value

    def completed(self, engine: Engine, name: str) -> None:
        """Writes the FID (a float) into ``engine.state.metrics[name]`` and the card into ``engine.state.protocols``."""
        engine.state.metrics[name] = self.compute()
        publish_protocol(engine, name, self.protocol)


def _length(data: Any) -> Optional[int]:
    """The number of images one pass over ``data`` gives (``None`` if unknown); for a ``DataLoader``, its sampler's
    length less the last partial batch when ``drop_last`` is set (as Ignite's ``examples/gan/dcgan.py`` loads)."""
    if data is None:
        return None
    if isinstance(data, DataLoader):
        if data.batch_size is None or isinstance(data.dataset, IterableDataset):
            count = _length(data.dataset)  # a custom batch_sampler, or no sampler: what the data set holds
        else:
            try:
                count = len(data.sampler)  # type: ignore[arg-type]
            except TypeError:
                count = None
        if count is not None and data.batch_size and data.drop_last:
            count -= count % data.batch_size
        return count
    if isinstance(data, IterableDataset):
        try:
            return len(data)  # type: ignore[arg-type]
        except TypeError:
            return None
    try:
        return len(data)
    except TypeError:
        return None
