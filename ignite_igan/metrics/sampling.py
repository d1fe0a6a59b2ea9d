"""Scoring a generator: draw a fixed set of samples in batches and feed them to Ignite metrics.

:class:`GeneratorEvaluator` is an evaluator for generators: every :meth:`~GeneratorEvaluator.run` draws the same
``n_samples`` noise vectors (seeded, independent of the batch size and of the number of processes), generates
images batch by batch under ``torch.no_grad()`` and updates the metrics attached to its Ignite ``engine``. The
generator's train/eval flags, device and buffers are exactly as they were afterwards, because all of
it happens inside :func:`evaluation_mode`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.metrics import Metric

from ignite_igan.metrics.inception import InceptionScore
from ignite_igan.metrics.modes import _module_device, evaluation_mode
from ignite_igan.metrics.protocol import Protocol, published_protocols
from ignite_igan.validation import check_choice, check_device, check_instance, check_int, check_methods

# evaluation_mode is also importable from here, as it was; the package lists it once, under modes.
__all__ = ["GeneratorEvaluator", "score_generator", "generate_samples"]

NoiseFn = Callable[[int, torch.Generator], Tensor]


class GeneratorEvaluator:
    """An Ignite evaluator that scores a generator on a fixed, seeded set of samples.

    The noise for all ``n_samples`` is drawn at the start of every :meth:`run` from a CPU ``torch.Generator`` seeded
    with ``seed``, so every run (and every process count and batch size) scores the same samples. The samples are
    cut into batches ``[b * batch_size, (b + 1) * batch_size)``; under ``ignite.distributed`` each process takes a
    contiguous block of whole batches, so the metrics, which gather in rank order, see the samples in the same
    order and in the same batches as a single process does.

    The metrics receive each generated batch, so an :class:`~ignite_igan.metrics.InceptionScore` and an
    :class:`~ignite_igan.metrics.FID` built with ``real=`` (the real data set or its statistics) score the same
    samples side by side; with the same network they share one pass per batch. Their protocol cards are in
    :attr:`protocols` (and ``engine.state.protocols``) after each run.

    Args:
        generator: the generator ``nn.Module``; ``generator(z)`` must return the samples.
        metrics: Ignite metrics to attach to ``engine`` (their input is the generated batch, after
            ``output_transform``). An FID's real statistics are computed (or loaded from their cache) here, when
            it is attached.
        n_samples: how many samples to score (50,000 in the paper).
        batch_size: samples per generator call (100 in the reference; it matters for batch-statistics generators,
            which also refuse a last batch of a single sample: choose ``n_samples % batch_size != 1``).
        seed: seed of the noise.
        noise_fn: ``noise_fn(n, generator) -> Tensor`` drawing ``n`` noise vectors on the CPU with the given
            ``torch.Generator``. Default: ``generator.sample_noise(n, generator=..., device="cpu")``.
        mode: the generator's mode while sampling, ``"eval"`` or ``"train"`` (batch statistics; see
            :func:`evaluation_mode`). Restored afterwards either way.
        device: run the generator there (moved back afterwards); ``None`` runs it where it is.
        output_transform: applied to each generated batch before the metrics see it.

    Attributes:
        engine: the Ignite ``Engine``; attach loggers, ``Checkpoint`` or more metrics to it.

    Example:
        >>> from ignite_igan.metrics import FID, GeneratorEvaluator, InceptionScore, RealImages, SharedPass
        >>> inception = SharedPass()  # doctest: +SKIP
        >>> fid = FID(inception, real=RealImages(train_set, name="cifar10", split="train"))  # doctest: +SKIP
        >>> scorer = GeneratorEvaluator(generator, {"is": InceptionScore(inception), "fid": fid})  # doctest: +SKIP
        >>> scorer.attach(trainer, Events.EPOCH_COMPLETED(every=10))  # doctest: +SKIP
        >>> scorer.run()  # doctest: +SKIP
        {'is': 8.1, 'is_std': 0.07, 'fid': 31.2}
        >>> print(scorer.protocols["fid"])  # doctest: +SKIP
    """

    def __init__(
        self,
        generator: nn.Module,
        metrics: Mapping[str, Metric],
        n_samples: int = 50_000,
        batch_size: int = 100,
        seed: int = 0,
        noise_fn: Optional[NoiseFn] = None,
        mode: str = "eval",
        device: Optional[Union[str, torch.device]] = None,
        output_transform: Optional[Callable[[Tensor], Any]] = None,
    ) -> None:
        self.generator = check_instance("generator", generator, nn.Module, "a torch.nn.Module")
        self.n_samples = check_int("n_samples", n_samples, minimum=1)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.seed = check_int("seed", seed)
        self.mode = check_choice("mode", mode, ("eval", "train"))
        if noise_fn is None:
            check_methods("generator", generator, ["sample_noise"], "a generator of ignite_igan.models; or noise_fn")
        self.device = check_device("device", device, allow_none=True)
        self._noise_fn = noise_fn or self._sample_noise
        self._output_transform = output_transform or (lambda samples: samples)
        self._noise: Optional[Tensor] = None
        self._run_device: Optional[torch.device] = None
        self.engine = Engine(self._step)
        for name, metric in metrics.items():
            metric.attach(self.engine, name)

    def _sample_noise(self, n: int, rng: torch.Generator) -> Tensor:
        return self.generator.sample_noise(n, generator=rng, device=torch.device("cpu"))

    def batches(self, rank: Optional[int] = None, world_size: Optional[int] = None) -> List[Tuple[int, int]]:
        """The ``(start, stop)`` sample ranges this process generates: a contiguous block of whole batches."""
        rank = idist.get_rank() if rank is None else rank
        world_size = idist.get_world_size() if world_size is None else world_size
        n, size = self.n_samples, self.batch_size
        all_batches = [(start, min(start + size, n)) for start in range(0, n, size)]
        if len(all_batches) < world_size:
            raise ValueError(
                f"n_samples={self.n_samples} with batch_size={self.batch_size} makes {len(all_batches)} batches, "
                f"fewer than the {world_size} processes; every process needs at least one"
            )
        first = rank * len(all_batches) // world_size
        last = (rank + 1) * len(all_batches) // world_size
        return all_batches[first:last]

    def _step(self, engine: Engine, batch: Tuple[int, int]) -> Any:
        start, stop = batch
        return self._output_transform(self.generator(self._noise[start:stop].to(self._run_device)))

    def run(self) -> Dict[str, Any]:
        """Generates the samples, runs the metrics and returns ``engine.state.metrics`` (a copy)."""
        batches = self.batches()
        noise = self._noise_fn(self.n_samples, torch.Generator(device="cpu").manual_seed(self.seed))
        if not isinstance(noise, Tensor) or noise.dim() < 1 or noise.shape[0] != self.n_samples:
            got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
            raise ValueError(f"the noise function must return a tensor with n={self.n_samples} rows, got {got}")
        try:
            with torch.no_grad(), evaluation_mode(self.generator, mode=self.mode, device=self.device):
                # Where the generator runs now (a generator without parameters: self.device, or where z is).
                self._run_device = self.device if self.device is not None else _module_device(self.generator)
                self._noise = noise
                self.engine.run(batches, max_epochs=1)
        finally:
            self._noise = None
        return dict(self.engine.state.metrics)

    @property
    def protocols(self) -> Dict[str, Protocol]:
        """The protocol cards of the last run's metrics, ``{name: Protocol}`` (``engine.state.protocols``)."""
        return published_protocols(self.engine)

    def __call__(self, engine: Optional[Engine] = None) -> Dict[str, Any]:
        """Event-handler form of :meth:`run`."""
        return self.run()

    def attach(
        self, trainer: Engine, event: Any = Events.EPOCH_COMPLETED, state_attributes: Optional[Mapping[str, str]] = None
    ) -> Any:
        """Runs the evaluation on ``trainer``'s ``event`` (e.g. ``Events.EPOCH_COMPLETED(every=10)``).

        With ``state_attributes`` ``{attribute: metric name}``, every evaluation's metric values are also set on
        ``trainer.state`` (after it, at the same event), where a checkpoint or a run's summary can read them, e.g.
        ``{"modes": "coverage"}``.

        Returns the ``RemovableEventHandle`` of the evaluation.

        Example:
            >>> generator = torch.nn.Linear(2, 2)
            >>> from ignite.metrics import Average
            >>> scorer = GeneratorEvaluator(generator, {"mean": Average(lambda x: x.mean())}, n_samples=4,
            ...                             batch_size=2, noise_fn=lambda n, rng: torch.randn(n, 2, generator=rng))
            >>> trainer = Engine(lambda engine, batch: None)
            >>> _ = scorer.attach(trainer, state_attributes={"sample_mean": "mean"})
            >>> _ = trainer.run([0], max_epochs=1)
            >>> trainer.state.sample_mean == scorer.engine.state.metrics["mean"]
            True
        """
        handle = trainer.add_event_handler(event, self)
        for attribute, metric in dict(state_attributes or {}).items():
            trainer.add_event_handler(event, lambda e, a=attribute, m=metric: setattr(e.state, a,
                                                                                    self.engine.state.metrics[m]))
        return handle


def score_generator(
    generator: nn.Module,
    metric: Optional[Metric] = None,
    name: str = "is",
    **kwargs: Any,
) -> Dict[str, Any]:
    """Scores a generator once and returns the metric values.

    Args:
        generator: the generator.
        metric: the metric (default: :class:`~ignite_igan.metrics.InceptionScore` with the paper's network and
            protocol, images in [-1, 1]).
        name: the metric's name in the result.
        **kwargs: passed to :class:`GeneratorEvaluator` (``n_samples``, ``batch_size``, ``seed``, ``noise_fn``,
            ``mode``, ``device``, ``output_transform``).

    Returns:
        The evaluator's ``state.metrics``, e.g. ``{"is": 8.1, "is_std": 0.07}``.
    """
    metric = InceptionScore() if metric is None else metric
    return GeneratorEvaluator(generator, {name: metric}, **kwargs).run()


def generate_samples(generator: nn.Module, n_samples: int, batch_size: int = 100, seed: int = 0) -> Tensor:
    """``n_samples`` samples of ``generator`` on the CPU, from the noise a :class:`GeneratorEvaluator` with ``seed``
    draws (``generator.sample_noise`` with a seeded CPU ``torch.Generator``), generated in batches without gradients.

    The generator runs where its parameters are, in the mode it is in (use :func:`evaluation_mode` to choose); a
    ``DistributedDataParallel``-wrapped generator is unwrapped. What :class:`GeneratorEvaluator` scores and what
    this returns are the same samples when the modes agree, e.g. to plot the scored samples.

    Example:
        >>> from ignite_igan.models import MixtureGenerator
        >>> generator = MixtureGenerator()
        >>> points = generate_samples(generator, 250, batch_size=100, seed=0)
        >>> points.shape, torch.equal(points, generate_samples(generator, 250, batch_size=50, seed=0))
        (torch.Size([250, 2]), True)
    """
    generator = getattr(generator, "module", generator)
    n_samples = check_int("n_samples", n_samples, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    noise = generator.sample_noise(n_samples, generator=torch.Generator().manual_seed(check_int("seed", seed)),
                                   device="cpu")
    with torch.no_grad():
        device = next(generator.parameters()).device
        return torch.cat([generator(chunk.to(device)).cpu() for chunk in noise.split(batch_size)])
