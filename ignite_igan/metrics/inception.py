"""The Inception Score of the paper as an Ignite metric.

:class:`InceptionScore` follows the protocol of ``inception_score/model.py`` (:ref:`ref-inception-score`): the 1008
unbiased logits of TensorFlow's 2015-12-05 Inception (through torch-fidelity's port), softmax over all of them, the
samples cut **in order** into 10 contiguous splits, ``exp(mean KL)`` per split, and the mean and population std of the
split scores, computed in float64 by :func:`ignite_igan.functional.inception_score`. Its protocol card
(:class:`~ignite_igan.metrics.Protocol`) is ``metric.protocol``. FID is :class:`ignite_igan.metrics.FID`
(module :mod:`ignite_igan.metrics.fid`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

import ignite.distributed as idist
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics.metric import reinit__is_reduced

from ignite_igan.functional import inception_score
from ignite_igan.metrics.extractors import SharedPass, TFInceptionV3, _ExtractorMetric
from ignite_igan.metrics.protocol import Protocol, publish_protocol
from ignite_igan.validation import check_bool, check_int

__all__ = ["InceptionScore", "gather_in_rank_order"]


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


class InceptionScore(_ExtractorMetric):
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

    The protocol card (:class:`~ignite_igan.metrics.Protocol`: network, weights SHA-256, resize, input range and
    rounding, number of samples, splits and their order, dtype, TF32) is ``metric.protocol``; attached under
    ``name``, the metric also puts it into ``engine.state.protocols[name]`` at every completion.

    Args:
        extractor: the network: ``"inception-v3-compat"`` (default: the paper's network, :class:`TFInceptionV3`),
            ``"torchvision"`` (:class:`TorchvisionInceptionV3`, lower scores), an
            :class:`~ignite_igan.metrics.ImageExtractor` instance (e.g.
            ``TFInceptionV3(weights_path=..., dtype=torch.float64)``), or any classifier ``nn.Module`` returning
            logits (wrapped in :class:`ClassifierExtractor`; it receives the images in ``input_range``). A named
            network is built when the metric is: its weights are found (downloaded on first use) and their SHA-256
            checked right away, so a missing file fails here and not after an epoch of training. Metrics that name
            the same network on the same device share one copy. A :class:`~ignite_igan.metrics.SharedPass` given
            to this metric and to :class:`~ignite_igan.metrics.FID` runs the network once per batch for both.
        input_range: what the images are: ``"[-1,1]"`` (default, tanh generators), ``"[0,1]"`` or ``"uint8"``.
        splits: number of contiguous splits (10 in the paper).
        shuffle: shuffle the samples before splitting (off by default, as in the original code).
        seed: seed of the shuffle; ``np.random.RandomState(seed).permutation`` as torch-fidelity does, so
            ``shuffle=True, seed=2020`` reproduces torch-fidelity's default.
        extractor_batch_size: run the extractor on at most this many images at once (``None``: the whole batch).
        allow_tf32: allow TF32 matmuls and convolutions in the network's pass (default ``False``: true float32 as
            in the reference; see :func:`~ignite_igan.metrics.tf32_mode`). Only matters on Ampere or later GPUs.
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
        >>> state.protocols["is"].n_samples, state.protocols["is"].splits
        (12, 2)
    """

    def __init__(
        self,
        extractor: Union[str, nn.Module, SharedPass, None] = "inception-v3-compat",
        input_range: str = "[-1,1]",
        splits: int = 10,
        shuffle: bool = False,
        seed: int = 2020,
        extractor_batch_size: Optional[int] = None,
        output_transform: Callable = lambda x: x,
        device: Union[str, torch.device] = torch.device("cpu"),
        allow_tf32: bool = False,
    ) -> None:
        self._splits = check_int("splits", splits, minimum=1)
        self._shuffle = check_bool("shuffle", shuffle)
        self._seed = check_int("seed", seed)
        self._n_samples: Optional[int] = None
        self._num_logits: Optional[int] = None
        super().__init__(extractor, input_range, output_transform, device, extractor_batch_size, allow_tf32)

    @property
    def protocol(self) -> Protocol:
        """The protocol card of this metric's numbers (``n_samples`` is that of the last ``compute``)."""
        num_logits = self._extractor.num_logits or self._num_logits
        output = f"softmax over {num_logits or 'K'} logits"
        if isinstance(self._extractor, TFInceptionV3):
            output += " without bias (pool_3 @ W)"
        return self._card(
            "inception_score",
            output,
            splits=self._splits,
            split_order="contiguous, after a seeded shuffle" if self._shuffle else "contiguous, in sample order",
            shuffle_seed=self._seed if self._shuffle else None,
        )

    @reinit__is_reduced
    def reset(self) -> None:
        self._logits: List[Tensor] = []
        self._indices: List[Tensor] = []
        self._pass.forget()

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        images, indices = output if isinstance(output, (tuple, list)) and len(output) == 2 else (output, None)
        self._logits.append(self._run(images, "logits").to(self._device))
        if indices is not None:
            self._indices.append(indices.detach().reshape(-1).to(self._device))

    def _gathered_logits(self) -> Tensor:
        empty = torch.zeros(0, self._extractor.num_logits or 0, device=self._device)
        local = torch.cat(self._logits) if self._logits else empty
        local_indices = torch.cat(self._indices) if self._indices else torch.zeros(0, dtype=torch.int64)
        with_indices = len(self._indices) > 0
        # Checked once here: a float index would be truncated and a missing one would drop a sample, silently.
        if with_indices and (local_indices.is_floating_point() or local_indices.shape[0] != local.shape[0]):
            raise ValueError("indices must be integers, one per image, given with every batch or with none; got "
                             f"{local_indices.shape[0]} {local_indices.dtype} indices for {local.shape[0]} images")
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
            indices = gather_in_rank_order(local_indices.to(device=self._device, dtype=torch.int64)).cpu()
            order = torch.argsort(indices, stable=True)
            counts = torch.unique_consecutive(indices[order], return_counts=True)[1]
            first = torch.cumsum(counts, 0) - counts  # the first of each index's repeats (DistributedSampler's padding)
            logits = logits[order[first].to(logits.device)]
        return logits

    def compute(self) -> Dict[str, float]:
        """Returns ``{"mean": float, "std": float}`` over all processes' samples."""
        self._pass.forget()
        logits = self._gathered_logits()
        n = logits.shape[0]
        if n == 0:
            raise NotComputableError("InceptionScore must have at least one sample before it can be computed")
        if self._shuffle:
            permutation = np.random.RandomState(self._seed).permutation(n)
            logits = logits[torch.from_numpy(permutation).to(logits.device)]
        mean, std = inception_score(logits, splits=self._splits)
        self._n_samples = int(n)
        self._num_logits = int(logits.shape[1])
        return {"mean": mean, "std": std}

    def completed(self, engine: Engine, name: str) -> None:
        """Writes ``name`` (the mean) and ``name + "_std"`` into ``engine.state.metrics``, and the protocol card
        into ``engine.state.protocols[name]``."""
        result = self.compute()
        engine.state.metrics[name] = result["mean"]
        engine.state.metrics[f"{name}_std"] = result["std"]
        publish_protocol(engine, name, self.protocol)


# Backward compatibility: FID used to live here (``from ignite_igan.metrics.inception import FID`` keeps working).
from ignite_igan.metrics.fid import FID  # noqa: E402,F401
