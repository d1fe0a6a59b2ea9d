"""The Inception Score of the paper as an Ignite metric, and FID through the same network.

:class:`InceptionScore` follows the protocol of ``inception_score/model.py`` (spec §5): the 1008 unbiased logits of
TensorFlow's 2015-12-05 Inception (through torch-fidelity's port), softmax over all of them, the samples cut **in
order** into 10 contiguous splits, ``exp(mean KL)`` per split, and the mean and population std of the split scores,
computed in float64 by :func:`ignite_igan.functional.inception_score`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

import ignite.distributed as idist
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics import FID as IgniteFID
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced

from ignite_igan.functional import inception_score
from ignite_igan.metrics.extractors import (
    ImageExtractor,
    _as_extractor,
    _build_named_extractor,
    _normalize_range,
    to_uint8,
)

__all__ = ["InceptionScore", "FID", "gather_in_rank_order"]


def gather_in_rank_order(local: Tensor) -> Tensor:
    """Concatenates every process's ``local`` rows in rank order (rows may differ in number between processes).

    With one process this returns ``local``. All processes must call it (it is a collective).
    """
    world_size = idist.get_world_size()
    if world_size == 1:
        return local
    counts = idist.all_gather(int(local.shape[0]))
    counts = [int(c) for c in (counts.tolist() if isinstance(counts, Tensor) else counts)]
    shapes = [[c] + list(local.shape[1:]) for c in counts]
    parts = idist.all_gather_tensors_with_shapes(local, shapes)
    return torch.cat([p[:c] for p, c in zip(parts, counts)], dim=0)


class InceptionScore(Metric):
    """The Inception Score by the paper's protocol (splits, std, the 2015 TensorFlow network), as an Ignite metric.

    ``update`` takes a batch of images (or ``(images, indices)``), converts it to uint8 by rounding according to
    ``input_range``, runs the extractor and stores the logits; ``compute`` gathers the logits of all processes in
    a fixed order and returns ``{"mean": ..., "std": ...}``. Attached to an engine under ``name``, the metric puts
    the mean in ``engine.state.metrics[name]`` and the std in ``engine.state.metrics[name + "_std"]``, both floats,
    so progress bars, loggers and ``Checkpoint(score_function=Checkpoint.get_default_score_fn(name))`` work.

    Sample order decides which samples share a split (the splits are contiguous). Under ``ignite.distributed`` the
    logits are gathered rank by rank, so processes that each hold a contiguous block of the samples (as
    :class:`~ignite_igan.metrics.GeneratorEvaluator` arranges) reproduce the single-process score exactly. For
    other shardings, such as ``DistributedSampler``'s interleaving, pass each sample's global index with the images
    (``output_transform=lambda out: (out[0], out[1])``): the logits are then put back in index order and
    duplicated indices (``DistributedSampler``'s padding) are dropped.

    Args:
        extractor: the network: ``"inception-v3-compat"`` (default: the paper's network, :class:`TFInceptionV3`,
            weights downloaded and checked on first use), ``"torchvision"`` (:class:`TorchvisionInceptionV3`, lower
            scores), an :class:`~ignite_igan.metrics.ImageExtractor` instance (e.g.
            ``TFInceptionV3(weights_path=..., dtype=torch.float64)``), or any classifier ``nn.Module`` returning
            logits (wrapped in :class:`ClassifierExtractor`; it receives the images in ``input_range``).
        input_range: what the images are: ``"[-1,1]"`` (default, tanh generators), ``"[0,1]"`` or ``"uint8"``.
        splits: number of contiguous splits (10 in the paper).
        shuffle: shuffle the samples before splitting (off by default, as in the original code).
        seed: seed of the shuffle; ``np.random.RandomState(seed).permutation`` as torch-fidelity does, so
            ``shuffle=True, seed=2020`` reproduces torch-fidelity's default.
        extractor_batch_size: run the extractor on at most this many images at once (``None``: the whole batch).
        output_transform: maps the engine's output to ``images`` or ``(images, indices)``.
        device: where the extractor runs and the logits are kept.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        >>> metric = InceptionScore(extractor=classifier, input_range="[0,1]", splits=2)
        >>> evaluator = Engine(lambda engine, batch: batch)
        >>> metric.attach(evaluator, "is")
        >>> state = evaluator.run([torch.rand(4, 3, 8, 8) for _ in range(3)])
        >>> sorted(state.metrics)
        ['is', 'is_std']
    """

    required_output_keys = None

    def __init__(
        self,
        extractor: Union[str, nn.Module, None] = "inception-v3-compat",
        input_range: str = "[-1,1]",
        splits: int = 10,
        shuffle: bool = False,
        seed: int = 2020,
        extractor_batch_size: Optional[int] = None,
        output_transform: Callable = lambda x: x,
        device: Union[str, torch.device] = torch.device("cpu"),
    ) -> None:
        if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
            raise ValueError(f"splits must be a positive integer, got {splits!r}")
        if extractor_batch_size is not None and (
            isinstance(extractor_batch_size, bool) or not isinstance(extractor_batch_size, int) or extractor_batch_size < 1
        ):
            raise ValueError(f"extractor_batch_size must be a positive integer or None, got {extractor_batch_size!r}")
        self._input_range = _normalize_range(input_range)
        self._extractor, self._extractor_name = _as_extractor(extractor, self._input_range)
        self._splits = splits
        self._shuffle = bool(shuffle)
        self._seed = seed
        self._extractor_batch_size = extractor_batch_size
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)
        if self._extractor is not None:
            self._extractor.to(self._device)

    @property
    def extractor(self) -> ImageExtractor:
        """The network, built on first use when it was given by name."""
        if self._extractor is None:
            self._extractor = _build_named_extractor(self._extractor_name).to(self._device)
        return self._extractor

    @reinit__is_reduced
    def reset(self) -> None:
        self._logits: List[Tensor] = []
        self._indices: List[Tensor] = []

    def _split_output(self, output: Any) -> Tuple[Tensor, Optional[Tensor]]:
        if isinstance(output, (tuple, list)):
            indices = output[1] if len(output) == 2 else None
            is_index = (
                isinstance(indices, Tensor)
                and not indices.is_floating_point()
                and indices.dtype != torch.bool
                and indices.dim() == 1
            )
            if not is_index:
                raise TypeError(
                    f"images must be a torch.Tensor, got {type(output).__name__} (stack lists or TensorDataset items "
                    "into one tensor first; a pair (images, indices) needs a 1-D integer tensor of indices)"
                )
            return output[0], indices
        return output, None

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        images, indices = self._split_output(output)
        uint8 = to_uint8(images, self._input_range, argument="images")
        extractor = self.extractor
        extractor.check_images(uint8, argument="images")
        n = uint8.shape[0]
        if indices is not None and (indices.dim() != 1 or indices.shape[0] != n):
            raise ValueError(f"indices must have shape ({n},) to match images, got {tuple(indices.shape)}")
        if self._logits and (indices is not None) != bool(self._indices):
            raise ValueError("indices must be given with every batch or with none")
        step = self._extractor_batch_size or n
        chunks = []
        with torch.no_grad():
            for start in range(0, n, step):
                logits = extractor(uint8[start : start + step].to(self._device))
                if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != min(step, n - start):
                    raise ValueError(
                        f"the extractor must return logits of shape (N, K), got "
                        f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}"
                    )
                chunks.append(logits.detach())
        logits = torch.cat(chunks).to(self._device)
        if self._logits and logits.shape[1] != self._logits[0].shape[1]:
            raise ValueError(f"the extractor returned {logits.shape[1]} logits, earlier {self._logits[0].shape[1]}")
        self._logits.append(logits)
        if indices is not None:
            self._indices.append(indices.detach().to(device=self._device, dtype=torch.int64))

    def _gathered_logits(self) -> Tensor:
        if self._logits:
            local = torch.cat(self._logits)
        else:
            num_logits = getattr(self._extractor, "num_logits", None) or 0
            local = torch.zeros(0, num_logits, device=self._device)
        with_indices = len(self._indices) > 0
        if idist.get_world_size() > 1:
            # Every process must take part in the same collectives, including one that saw no batch.
            num_classes = int(idist.all_reduce(int(local.shape[1]), op="MAX"))
            if local.shape[1] != num_classes:
                local = torch.zeros(0, num_classes, dtype=local.dtype, device=self._device)
            any_indices = int(idist.all_reduce(int(with_indices), op="MAX"))
            all_indices = int(idist.all_reduce(int(with_indices or not self._logits), op="MIN"))
            if any_indices and not all_indices:
                raise ValueError("give indices on every process or on none")
            with_indices = bool(any_indices)
            # float64 for the transfer: processes may hold float32 or float64 logits and must agree on the dtype.
            logits = gather_in_rank_order(local.to(torch.float64))
        else:
            logits = local
        if with_indices:
            local_indices = torch.cat(self._indices) if self._indices else torch.zeros(0, dtype=torch.int64)
            indices = gather_in_rank_order(local_indices.to(self._device)).cpu()
            order = torch.argsort(indices, stable=True)
            sorted_indices = indices[order]
            keep = torch.ones_like(sorted_indices, dtype=torch.bool)
            keep[1:] = sorted_indices[1:] != sorted_indices[:-1]
            logits = logits[order[keep].to(logits.device)]
        return logits

    def compute(self) -> Dict[str, float]:
        """Returns ``{"mean": float, "std": float}`` over all processes' samples."""
        logits = self._gathered_logits()
        n = logits.shape[0]
        if n == 0:
            raise NotComputableError("InceptionScore must have at least one sample before it can be computed")
        if n < self._splits:
            raise ValueError(
                f"InceptionScore with splits={self._splits} needs at least {self._splits} samples, got {n}; "
                "evaluate more samples or lower splits"
            )
        if self._shuffle:
            permutation = np.random.RandomState(self._seed).permutation(n)
            logits = logits[torch.from_numpy(permutation).to(logits.device)]
        mean, std = inception_score(logits, splits=self._splits)
        return {"mean": mean, "std": std}

    def completed(self, engine: Engine, name: str) -> None:
        """Writes ``name`` (the mean) and ``name + "_std"`` into ``engine.state.metrics``."""
        result = self.compute()
        engine.state.metrics[name] = result["mean"]
        engine.state.metrics[f"{name}_std"] = result["std"]


class _PoolFeatures(nn.Module):
    """Raw images -> validated uint8 -> the extractor's pool features; the feature extractor Ignite's FID calls."""

    def __init__(self, extractor: Union[str, nn.Module, None], input_range: str) -> None:
        super().__init__()
        self.input_range = _normalize_range(input_range)
        built, self._name = _as_extractor(extractor, self.input_range)
        self.extractor = built

    def forward(self, images: Tensor) -> Tensor:
        if self.extractor is None:
            device = images.device
            self.extractor = _build_named_extractor(self._name).to(device)
        uint8 = to_uint8(images, self.input_range, argument="images")
        self.extractor.check_images(uint8, argument="images")
        return self.extractor.features(uint8)


class FID(IgniteFID):
    """Fréchet Inception Distance on the pool features of the paper's network, computed by Ignite's ``FID``.

    ``update((real, fake))`` takes equal-sized batches of real and generated images in ``input_range``; they are
    converted to uint8 by rounding and passed through the extractor's 2048 ``pool_3`` features (for the default,
    torch-fidelity's ``inception-v3-compat``, the features FID is usually reported with). Ignite's ``FID`` does the
    running means/covariances (summed across processes) and the Fréchet distance.

    Args:
        extractor: as for :class:`InceptionScore`; a user module must be an :class:`ImageExtractor` with
            ``features`` (e.g. ``ClassifierExtractor(net, features_fn=...)``).
        input_range: ``"[-1,1]"`` (default), ``"[0,1]"`` or ``"uint8"``.
        num_features: the feature size (default: the extractor's ``num_features``, 2048 for Inception).
        output_transform: maps the engine's output to ``(real, fake)``.
        device: where the statistics are kept and the extractor runs.
    """

    def __init__(
        self,
        extractor: Union[str, nn.Module, None] = "inception-v3-compat",
        input_range: str = "[-1,1]",
        num_features: Optional[int] = None,
        output_transform: Callable = lambda x: x,
        device: Union[str, torch.device] = torch.device("cpu"),
    ) -> None:
        features = _PoolFeatures(extractor, input_range)
        if num_features is None:
            if features.extractor is None:
                num_features = 2048
            else:
                num_features = features.extractor.num_features
        if num_features is None:
            raise ValueError("num_features must be given for an extractor that does not declare num_features")
        super().__init__(
            num_features=num_features, feature_extractor=features, output_transform=output_transform, device=device
        )
