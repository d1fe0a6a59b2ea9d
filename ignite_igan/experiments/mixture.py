"""The 2-D Gaussian-mixture experiment: a small GAN with a switch for each technique of the paper.

The data are the mode-coverage benchmarks of :mod:`ignite_igan.metrics.mode_coverage`: a ring of 8 Gaussians
(radius 2, std 0.02) or a 5x5 grid of 25 (spacing 2, std 0.05). Samples are drawn fresh for every batch, so the
data set is infinite and an **epoch is a fixed number of iterations** (``iterations_per_epoch``, 500 by default:
50,000 fresh real samples at batch size 100).

The networks are small MLPs (:class:`MixtureGenerator`, :class:`MixtureDiscriminator`), the same in every setting;
the techniques are switches of :class:`MixtureConfig`, each implemented by the package's own part:

- ``minibatch_discrimination``: a :class:`~ignite_igan.nn.MinibatchDiscrimination` layer (the reference's
  parametrization) between the discriminator's last hidden layer and its output;
- ``feature_matching``: the generator matches the batch means of that output layer's input
  (``generator_loss="feature_matching"`` of :func:`~ignite_igan.engines.create_gan_trainer`);
- ``label_smoothing``: :class:`~ignite_igan.handlers.OneSidedLabelSmoothing` (real target ``real_target``);
- ``historical_averaging``: one :class:`~ignite_igan.handlers.HistoricalAveraging` per player.

**The minibatch layer's data-dependent initialization.** The reference initializes the layer on a real batch so
that the mean nearest-neighbour L1 distance of every kernel is 2 (spec §1.5). On these mixtures a real example's
nearest neighbour is always in its own mode, so that init sets the kernels' length scale to the *within-mode*
spread, a small fraction of the distance between modes. A generator collapsed onto a region a few times wider than
a mode then gets the same minibatch features as data spread over the whole plane: ``exp(-d)`` is ~0 for every
pair, so the layer has no signal, and since ``exp(-d)`` has no gradient at large ``d`` it cannot learn its way
back. With ``minibatch_init="none"`` (our default here) the layer keeps its init-time scale (every column of T has
unit norm), at which distances between modes are O(1) and a collapsed batch stands out;
``minibatch_init="data"`` runs the reference's init on ``init_samples`` real examples. In
``benchmarks/mode_coverage.py`` (ring, 5 seeds, 4,000 iterations, before ``data_scale``) the reference's init
collapsed like the vanilla GAN (0.6 modes), the init-time scale covered 7.8 of 8 modes.
``minibatch_init="batch_mean"`` (:func:`batch_mean_init`) is a data-dependent alternative that keeps the
reference's idea (a length scale set from real data, independent of the body's scale) but uses the *mean pairwise*
distance, which the distances between modes dominate, and sets it to 2; on the grid it rescales the init-time
distances by less than a factor 2 (init-time mean 1.0-1.4 per kernel). On the grid (5 seeds, 10,000 iterations,
with ``data_scale``) it covered as many modes on average as ``"none"`` (14.2 of 25), with more high-quality samples
(67 % against 58 %) but a much larger spread across seeds, so it is an option, not the default.

**The data's scale** (``data_scale``). PyTorch's default init of a ``Linear(2, H)`` layer puts the kinks of the
first hidden layer within about one unit of the origin and the generator's initial outputs near 0, while the grid
spans [-4, 4] with modes of std 0.05. The discriminator then has few pieces out where most modes are and cannot
draw sharp bumps there, and the samples stay smeared between modes (under 20 % high quality in every setting at
4,000 iterations). So both networks work in units of the mixture's extent: the discriminator sees ``x / s`` and
the generator emits ``s`` times its last layer, with ``s`` the largest absolute centre coordinate by default
(ring 2, grid 4; ``data_scale=1.0`` is the raw plane). The same networks in every setting, only re-parametrized.
On grid seed 0 with minibatch discrimination at 10,000 iterations it moved the result from 1 mode with >= 20
samples at 3 % high quality to 18 modes at 76 %.

**Generator loss.** The same in every setting except feature matching (which *is* a generator loss): the
non-saturating ``-log D(G(z))``. The reference's minimax (saturating) loss gives the generator almost no gradient
while the discriminator rejects its samples confidently, which on these tight mixtures is most of early training;
``generator_loss="minimax"`` with ``generator_steps=3`` is the reference's MD setting (one grid run with it showed
no clear gain over the non-saturating loss, at 1.7 times the cost).

**Defaults** (the benchmark's setting): generator 3x128 ReLU from z ~ N(0, I_16), discriminator 2x128
LeakyReLU(0.2), both in units of the mixture's extent (``data_scale``), minibatch layer B=5, C=3 (B=10, C=5 did
worse on the one ring seed tried, at 1.3 times the cost), the reference's Adam (lr 1e-3, β1 = 0.5) for both
players with a linear decay to 0 over the last half of the run (the samples sharpen onto the modes mostly while
the rate decays; lr 5e-4 was slightly worse on one grid seed), 20 epochs of 500 iterations (10,000).

Example:
    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> config = MixtureConfig(mixture="ring", minibatch_discrimination=True, epochs=1, iterations_per_epoch=5,
    ...                        decay_epochs=0)
    >>> experiment = create_experiment(config)
    >>> state = experiment.run()
    >>> state.iteration
    5
    >>> result = experiment.evaluate(num_samples=500)
    >>> sorted(result)[:4]
    ['counts', 'high_quality', 'kl', 'min_count']
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events, State
from torch import Tensor, nn

from ignite_igan.cli import nonnegative_int, positive_float, positive_int
from ignite_igan.engines import create_gan_trainer
from ignite_igan.experiments.runner import (
    attach_run_handlers,
    prepare_run,
    tensorboard_dir,
    write_summary,
)
from ignite_igan.handlers import DataDependentInitialization, HistoricalAveraging, OneSidedLabelSmoothing
from ignite_igan.metrics.mode_coverage import GaussianMixture2D, ModeCoverage, grid_mixture, mode_coverage, ring_mixture
from ignite_igan.metrics.sampling import GeneratorEvaluator
from ignite_igan.nn import MinibatchDiscrimination
from ignite_igan.optim import EpochLRScheduler, ReferenceAdam, linear_decay_factor

__all__ = [
    "MIXTURES",
    "MINIBATCH_INITS",
    "MixtureConfig",
    "build_mixture",
    "MixtureGenerator",
    "MixtureDiscriminator",
    "batch_mean_init",
    "MixtureStream",
    "MixtureExperiment",
    "create_experiment",
    "data_scale",
    "scatter_plot",
    "add_arguments",
    "config_from_args",
    "run",
]

MIXTURES = ("ring", "grid")
MINIBATCH_INITS = ("none", "data", "batch_mean")
GENERATOR_LOSSES = ("non_saturating", "minimax")
OUTPUT_NAMES = ("loss_discriminator", "loss_generator", "D_x", "D_G_z")


def build_mixture(name: str) -> GaussianMixture2D:
    """The benchmark mixture called ``name``: ``"ring"`` (8 modes, std 0.02) or ``"grid"`` (25 modes, std 0.05)."""
    if name == "ring":
        return ring_mixture()
    if name == "grid":
        return grid_mixture()
    raise ValueError(f"mixture must be one of {MIXTURES}, got {name!r}")


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------
def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_real(name: str, value: Any, low: float, high: float, low_open: bool = True, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if not math.isfinite(value) or below or above:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


@dataclasses.dataclass
class MixtureConfig:
    """Everything that defines one mixture run; the checks run when it is built.

    Attributes:
        mixture: ``"ring"`` or ``"grid"``.
        minibatch_discrimination: add the minibatch layer to the discriminator.
        feature_matching: train the generator by feature matching (``squared_l2``, the paper's distance) on the
            input of the discriminator's output layer.
        label_smoothing: one-sided label smoothing of the real targets to ``real_target``.
        historical_averaging: historical averaging of both players with weight ``historical_weight``.
        generator_loss: ``"non_saturating"`` or ``"minimax"``; ignored with ``feature_matching``.
        generator_steps: generator updates per discriminator update.
        real_target: the smoothed real target, in (0, 1).
        historical_weight: λ of historical averaging, >= 0 (the paper gives no value).
        minibatch_kernels: B, the number of minibatch kernels.
        minibatch_kernel_dim: C, the dimensions of each kernel.
        minibatch_init: ``"none"`` (the layer's init-time scale), ``"data"`` (the reference's data-dependent init
            on ``init_samples`` real examples) or ``"batch_mean"`` (:func:`batch_mean_init` on ``init_samples``
            real examples); see the module documentation.
        init_samples: examples in the data-dependent init batch (500 in the reference).
        data_scale: the networks work in units of ``data_scale``: the discriminator sees ``x / data_scale``, the
            generator emits ``data_scale`` times its last layer. Default (None): the mixture's largest absolute
            centre coordinate (ring 2, grid 4); 1.0 is the raw plane. See the module documentation.
        z_dim: dimension of the generator's noise z ~ N(0, I).
        generator_hidden, generator_layers: width and number of the generator's hidden ReLU layers.
        discriminator_hidden, discriminator_layers: width and number of the discriminator's hidden LeakyReLU(0.2)
            layers.
        lr: Adam's learning rate for both players (the reference's Adam, β1 = 0.5).
        decay_epochs: the learning rates decay linearly to zero over the last ``decay_epochs`` epochs (0: constant).
        batch_size: real and generated examples per batch.
        epochs: training epochs.
        iterations_per_epoch: iterations (discriminator updates) per epoch; the data are infinite.
        eval_samples: samples scored by the mode-coverage metric (2,500 is the benchmark's number).
        eval_seed: seed of the evaluation noise (the same samples after every epoch).
        seed: seed of the real-data stream (the models' initialization and noise come from torch's global
            generator, which the caller seeds).
    """

    mixture: str = "ring"
    minibatch_discrimination: bool = False
    feature_matching: bool = False
    label_smoothing: bool = False
    historical_averaging: bool = False
    generator_loss: str = "non_saturating"
    generator_steps: int = 1
    real_target: float = 0.9
    historical_weight: float = 1e-2
    minibatch_kernels: int = 5
    minibatch_kernel_dim: int = 3
    minibatch_init: str = "none"
    init_samples: int = 500
    data_scale: Optional[float] = None
    z_dim: int = 16
    generator_hidden: int = 128
    generator_layers: int = 3
    discriminator_hidden: int = 128
    discriminator_layers: int = 2
    lr: float = 1e-3
    decay_epochs: int = 10
    batch_size: int = 100
    epochs: int = 20
    iterations_per_epoch: int = 500
    eval_samples: int = 2500
    eval_seed: int = 0
    seed: int = 1

    def __post_init__(self) -> None:
        if self.mixture not in MIXTURES:
            raise ValueError(f"mixture must be one of {MIXTURES}, got {self.mixture!r}")
        for name in ("minibatch_discrimination", "feature_matching", "label_smoothing", "historical_averaging"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.generator_loss not in GENERATOR_LOSSES:
            raise ValueError(f"generator_loss must be one of {GENERATOR_LOSSES}, got {self.generator_loss!r}")
        if self.minibatch_init not in MINIBATCH_INITS:
            raise ValueError(f"minibatch_init must be one of {MINIBATCH_INITS}, got {self.minibatch_init!r}")
        for name, minimum in (
            ("generator_steps", 1), ("minibatch_kernels", 1), ("minibatch_kernel_dim", 1), ("init_samples", 2),
            ("z_dim", 1), ("generator_hidden", 1), ("generator_layers", 1), ("discriminator_hidden", 1),
            ("discriminator_layers", 1), ("decay_epochs", 0), ("batch_size", 2), ("epochs", 1),
            ("iterations_per_epoch", 1), ("eval_samples", 1), ("eval_seed", 0), ("seed", 0),
        ):
            _check_int(name, getattr(self, name), minimum)
        _check_real("real_target", self.real_target, 0.0, 1.0, low_open=True, high_open=True)
        _check_real("historical_weight", self.historical_weight, 0.0, math.inf, low_open=False, high_open=True)
        _check_real("lr", self.lr, 0.0, math.inf, low_open=True, high_open=True)
        if self.data_scale is not None:
            _check_real("data_scale", self.data_scale, 0.0, math.inf, low_open=True, high_open=True)
        if self.decay_epochs > self.epochs:
            raise ValueError(
                f"decay_epochs must be <= epochs ({self.epochs}): the decay happens over the last epochs of the run, "
                f"got {self.decay_epochs}"
            )

    @property
    def techniques(self) -> List[str]:
        """The names of the switches that are on."""
        names = ("minibatch_discrimination", "feature_matching", "label_smoothing", "historical_averaging")
        return [name for name in names if getattr(self, name)]


# ---------------------------------------------------------------------------------------------------------------
# Networks and data
# ---------------------------------------------------------------------------------------------------------------
class MixtureGenerator(nn.Module):
    """An MLP from z ~ N(0, I) to 2-D points: ``layers`` hidden ReLU layers of ``hidden`` units, linear output
    multiplied by ``scale`` (the data's scale: see :class:`MixtureConfig`'s ``data_scale``).

    Example:
        >>> gen = MixtureGenerator(z_dim=4, hidden=8, layers=2)
        >>> gen(gen.sample_noise(3)).shape
        torch.Size([3, 2])
    """

    def __init__(self, z_dim: int = 16, hidden: int = 256, layers: int = 3, scale: float = 1.0) -> None:
        super().__init__()
        for name, value in (("z_dim", z_dim), ("hidden", hidden), ("layers", layers)):
            _check_int(name, value, 1)
        _check_real("scale", scale, 0.0, math.inf, low_open=True, high_open=True)
        self.z_dim = z_dim
        self.scale = float(scale)
        blocks: List[nn.Module] = []
        width = z_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        blocks.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*blocks)

    def sample_noise(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> Tensor:
        """``n`` noise vectors z ~ N(0, I) of ``z_dim`` dimensions, on ``device`` (default: the model's)."""
        _check_int("n", n, 1)
        parameter = next(self.parameters())
        device = parameter.device if device is None else device
        if generator is not None and torch.device(device).type != generator.device.type:
            return torch.randn(n, self.z_dim, generator=generator, dtype=parameter.dtype).to(device)
        return torch.randn(n, self.z_dim, generator=generator, device=device, dtype=parameter.dtype)

    def forward(self, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.z_dim:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {shape}")
        return self.net(z) * self.scale


class MixtureDiscriminator(nn.Module):
    """An MLP on 2-D points with an optional minibatch-discrimination layer before its single-logit output.

    ``forward(x)`` returns the real-vs-fake logits ``(N,)``; ``forward(x, return_features=True)`` also returns
    the input of the output layer (the last hidden layer, with the minibatch features appended when the layer is
    on), which is what feature matching compares. Call it once per source (real, generated): the minibatch
    features of an example depend on the rest of its batch.

    Args:
        hidden: width of the hidden LeakyReLU(0.2) layers.
        layers: number of hidden layers.
        scale: the input is divided by it (the data's scale: see :class:`MixtureConfig`'s ``data_scale``).
        minibatch_kernels: B of the minibatch layer; 0 for none.
        minibatch_kernel_dim: C of the minibatch layer.

    Example:
        >>> import torch
        >>> disc = MixtureDiscriminator(hidden=8, layers=2, minibatch_kernels=3, minibatch_kernel_dim=2)
        >>> logits, features = disc(torch.randn(5, 2), return_features=True)
        >>> logits.shape, features.shape
        (torch.Size([5]), torch.Size([5, 11]))
    """

    def __init__(
        self,
        hidden: int = 256,
        layers: int = 2,
        minibatch_kernels: int = 0,
        minibatch_kernel_dim: int = 3,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        _check_real("scale", scale, 0.0, math.inf, low_open=True, high_open=True)
        self.scale = float(scale)
        for name, value in (("hidden", hidden), ("layers", layers), ("minibatch_kernel_dim", minibatch_kernel_dim)):
            _check_int(name, value, 1)
        _check_int("minibatch_kernels", minibatch_kernels, 0)
        blocks: List[nn.Module] = []
        width = 2
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.body = nn.Sequential(*blocks)
        self.minibatch = (
            MinibatchDiscrimination(width, minibatch_kernels, minibatch_kernel_dim) if minibatch_kernels else None
        )
        self.out = nn.Linear(width + minibatch_kernels, 1)

    def forward(self, x: Tensor, return_features: bool = False) -> Any:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (N, 2), got {shape}")
        features = self.body(x / self.scale)
        if self.minibatch is not None:
            features = self.minibatch(features)
        logits = self.out(features).squeeze(1)
        return (logits, features) if return_features else logits


def batch_mean_init(discriminator: "MixtureDiscriminator", x: Tensor, target: float = 2.0) -> Tensor:
    """Scales the minibatch layer of ``discriminator`` so that every kernel's *mean pairwise* L1 distance on the
    real batch ``x`` is ``target``, and centres its features there (``bias <- -mean o``); returns the per-kernel
    mean distances before the scaling.

    Why not the reference's nearest-neighbour statistic: on a mixture of tight modes a real example's nearest
    neighbour is in its own mode, so that init sets the length scale to the within-mode spread and the layer
    cannot tell a collapse a few modes wide from the data (see the module documentation). The mean over all
    pairs is dominated by the distances *between* modes, so this init puts them at O(1), where ``exp(-d)``
    separates a collapsed batch from a spread one, while staying data-dependent (independent of the body's
    scale at initialization). Used by ``minibatch_init="batch_mean"``; the library's reference init
    (:class:`~ignite_igan.nn.MinibatchDiscrimination`) is unchanged.

    Example:
        >>> import torch
        >>> disc = MixtureDiscriminator(hidden=8, layers=1, minibatch_kernels=3, minibatch_kernel_dim=2)
        >>> _ = batch_mean_init(disc, torch.randn(50, 2))
        >>> m = (disc.body(torch.randn(50, 2)) @ disc.minibatch.projection().flatten(1)).view(50, 3, 2)
        >>> m.shape
        torch.Size([50, 3, 2])
    """
    layer = discriminator.minibatch
    if layer is None:
        raise ValueError("discriminator has no minibatch layer (minibatch_kernels=0)")
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[0] < 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a batch of at least 2 examples (N >= 2, 2), got {shape}")
    _check_real("target", target, 0.0, math.inf, low_open=True, high_open=True)
    with torch.no_grad():
        features = discriminator.body(x / discriminator.scale)
        m = (features @ layer.projection().flatten(1)).view(x.shape[0], layer.num_kernels, layer.kernel_dim)
        distances = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(dim=3)  # (N, N, B), zero diagonal
        n = x.shape[0]
        mean = distances.sum(dim=(0, 1)) / (n * (n - 1))  # (B,)
        if not bool((mean > 0).all()):
            raise ValueError("batch_mean_init: a kernel sees identical examples (mean pairwise distance 0)")
        layer.log_weight_scale.sub_((mean / target).log().unsqueeze(1))
        o = (-distances / (mean / target)).exp().sum(dim=1) - 1.0  # self excluded, as the layer does
        layer.bias.copy_(-o.mean(dim=0))
    return mean


def _derived_seed(*parts: int) -> int:
    """An independent 63-bit seed for a (seed, stream, rank) triple, so that streams never share random numbers."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class MixtureStream:
    """An endless stream of batches freshly sampled from a mixture, with its own seeded random generator.

    Its ``state_dict`` holds the generator's state, so a checkpointed run resumes with the very batches an
    uninterrupted run would have drawn. Batches are drawn only when the trainer asks for them, so the stream never
    runs ahead of the iteration counter.

    Example:
        >>> from ignite_igan.metrics.mode_coverage import ring_mixture
        >>> stream = MixtureStream(ring_mixture(), batch_size=4, seed=0)
        >>> next(iter(stream)).shape
        torch.Size([4, 2])
    """

    _STREAM_ID = 1  # tells the data stream's seed apart from others derived from the same run seed

    def __init__(self, mixture: GaussianMixture2D, batch_size: int, seed: int, rank: int = 0) -> None:
        if not isinstance(mixture, GaussianMixture2D):
            raise TypeError(f"mixture must be a GaussianMixture2D, got {type(mixture).__name__}")
        _check_int("batch_size", batch_size, 1)
        _check_int("seed", seed, 0)
        _check_int("rank", rank, 0)
        self.mixture = mixture
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(_derived_seed(seed, self._STREAM_ID, rank))

    def __iter__(self) -> Iterator[Tensor]:
        while True:
            yield self.mixture.sample(self.batch_size, generator=self.generator)

    def state_dict(self) -> Dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"generator"}:
            got = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
            raise ValueError(f"state_dict must have the key ['generator'], got {got}")
        self.generator.set_state(state_dict["generator"])


# ---------------------------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class MixtureExperiment:
    """The built parts of one run (what :func:`create_experiment` returns).

    Attributes:
        config: the configuration.
        mixture: the target distribution.
        generator, discriminator: the networks (``DistributedDataParallel``-wrapped under several processes).
        d_optimizer, g_optimizer: the players' optimizers.
        trainer: the Ignite trainer, with the technique handlers attached.
        data: the real-data stream.
        handlers: the stateful technique handlers by name.
        to_save: everything a checkpoint must hold to resume exactly (models, optimizers, trainer, data stream,
            handlers); :func:`ignite_igan.experiments.runner.attach_run_handlers` adds the random states.
    """

    config: MixtureConfig
    mixture: GaussianMixture2D
    generator: nn.Module
    discriminator: nn.Module
    d_optimizer: torch.optim.Optimizer
    g_optimizer: torch.optim.Optimizer
    trainer: Engine
    data: MixtureStream
    handlers: Dict[str, Any]
    to_save: Dict[str, Any]

    @property
    def raw_generator(self) -> MixtureGenerator:
        """The generator without a ``DistributedDataParallel`` wrapper."""
        return getattr(self.generator, "module", self.generator)

    def run(self, epochs: Optional[int] = None) -> State:
        """Trains to ``epochs`` (default ``config.epochs``) epochs of ``config.iterations_per_epoch`` iterations."""
        epochs = self.config.epochs if epochs is None else epochs
        return self.trainer.run(self.data, max_epochs=epochs, epoch_length=self.config.iterations_per_epoch)

    def samples(self, num_samples: Optional[int] = None, seed: Optional[int] = None) -> Tensor:
        """``num_samples`` generated points ``(N, 2)`` on the CPU from noise seeded with ``seed`` (the same noise
        as the per-epoch evaluation with the defaults ``config.eval_samples`` and ``config.eval_seed``)."""
        num_samples = self.config.eval_samples if num_samples is None else num_samples
        seed = self.config.eval_seed if seed is None else seed
        generator = self.raw_generator
        noise = generator.sample_noise(num_samples, generator=torch.Generator().manual_seed(seed), device="cpu")
        points = []
        with torch.no_grad():
            for chunk in noise.split(self.config.batch_size):
                points.append(generator(chunk.to(next(generator.parameters()).device)).cpu())
        return torch.cat(points)

    def evaluate(self, num_samples: Optional[int] = None, seed: Optional[int] = None) -> Dict[str, Any]:
        """:func:`~ignite_igan.metrics.mode_coverage.mode_coverage` of :meth:`samples` (counts per mode included)."""
        return mode_coverage(self.samples(num_samples, seed), self.mixture.centers, self.mixture.std)

    def evaluator(self) -> GeneratorEvaluator:
        """A :class:`~ignite_igan.metrics.GeneratorEvaluator` with the :class:`ModeCoverage` metric as
        ``"coverage"`` on the same samples as :meth:`samples`; attach it to the trainer to score every epoch."""
        metric = ModeCoverage(self.mixture.centers, self.mixture.std)
        return GeneratorEvaluator(
            self.raw_generator,
            {"coverage": metric},
            n_samples=self.config.eval_samples,
            batch_size=self.config.batch_size,
            seed=self.config.eval_seed,
        )


def data_scale(config: MixtureConfig, mixture: GaussianMixture2D) -> float:
    """``config.data_scale``, or by default the mixture's largest absolute centre coordinate (ring 2, grid 4)."""
    if config.data_scale is not None:
        return float(config.data_scale)
    return float(mixture.centers.abs().max())


def create_experiment(config: MixtureConfig, device: Optional[Union[str, torch.device]] = None) -> MixtureExperiment:
    """Builds the networks, optimizers, data stream and trainer of ``config``, with the technique handlers attached.

    The generator is built first, from torch's global random generator (seed it first; the recipe does with
    :func:`~ignite_igan.experiments.runner.prepare_run`): with the same seed every setting starts from the same
    generator, which pairs the settings of a benchmark. Under ``ignite.distributed`` the models are wrapped by
    :func:`ignite.distributed.auto_model` and every process draws its own real data.

    Args:
        config: the run's configuration.
        device: where the models live; default ``ignite.distributed.device()``.

    Returns:
        A :class:`MixtureExperiment`.
    """
    if not isinstance(config, MixtureConfig):
        raise TypeError(f"config must be a MixtureConfig, got {type(config).__name__}")
    device = idist.device() if device is None else torch.device(device)
    mixture = build_mixture(config.mixture)
    scale = data_scale(config, mixture)
    generator = MixtureGenerator(config.z_dim, config.generator_hidden, config.generator_layers, scale).to(device)
    discriminator = MixtureDiscriminator(
        config.discriminator_hidden,
        config.discriminator_layers,
        config.minibatch_kernels if config.minibatch_discrimination else 0,
        config.minibatch_kernel_dim,
        scale,
    ).to(device)
    if idist.get_world_size() > 1:
        generator = idist.auto_model(generator)
        discriminator = idist.auto_model(discriminator)
    betas = (0.5, 0.999)
    d_optimizer = ReferenceAdam(discriminator.parameters(), lr=config.lr, betas=betas)
    g_optimizer = ReferenceAdam(generator.parameters(), lr=config.lr, betas=betas)
    trainer = create_gan_trainer(
        generator,
        discriminator,
        d_optimizer,
        g_optimizer,
        generator_loss="feature_matching" if config.feature_matching else config.generator_loss,
        feature_matching_distance="squared_l2",
        generator_steps=config.generator_steps,
        device=device,
    )
    data = MixtureStream(mixture, config.batch_size, config.seed, rank=idist.get_rank())
    handlers: Dict[str, Any] = {}
    if config.minibatch_discrimination and config.minibatch_init == "data":
        init_batch = mixture.sample(
            config.init_samples, generator=torch.Generator().manual_seed(_derived_seed(config.seed, 2, 0))
        )
        handlers["minibatch_init"] = DataDependentInitialization(discriminator, init_batch)
        handlers["minibatch_init"].attach(trainer)
    if config.minibatch_discrimination and config.minibatch_init == "batch_mean":
        init_batch = mixture.sample(
            config.init_samples, generator=torch.Generator().manual_seed(_derived_seed(config.seed, 2, 0))
        )
        batch_mean_init(getattr(discriminator, "module", discriminator), init_batch.to(device))
    if config.label_smoothing:
        handlers["label_smoothing"] = OneSidedLabelSmoothing(real_target=config.real_target)
        handlers["label_smoothing"].attach(trainer)
    if config.historical_averaging:
        for player, model, optimizer in (("d", discriminator, d_optimizer), ("g", generator, g_optimizer)):
            handler = HistoricalAveraging(model, weight=config.historical_weight, optimizer=optimizer)
            handler.attach(trainer, name=f"historical_penalty_{player}")
            handlers[f"historical_averaging_{player}"] = handler
    if config.decay_epochs:
        total, decay = config.epochs, config.decay_epochs
        EpochLRScheduler([d_optimizer, g_optimizer], lambda epoch: linear_decay_factor(epoch, total, decay)).attach(
            trainer
        )
    to_save: Dict[str, Any] = {
        "generator": generator,
        "discriminator": discriminator,
        "d_optimizer": d_optimizer,
        "g_optimizer": g_optimizer,
        "trainer": trainer,
        "data": data,
        **handlers,
    }
    return MixtureExperiment(
        config, mixture, generator, discriminator, d_optimizer, g_optimizer, trainer, data, handlers, to_save
    )


# ---------------------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------------------
def scatter_plot(samples: Tensor, mixture: GaussianMixture2D, ax: Any = None, title: Optional[str] = None) -> Any:
    """Draws ``samples`` over the mixture's modes (a circle of radius 3 std around each centre: the high-quality
    zone of the mode-coverage metric) on a matplotlib axis; returns the figure.

    matplotlib is imported here, with the Agg backend when no figure exists yet, so the package never needs it
    otherwise.

    Args:
        samples: ``(N, 2)`` points.
        mixture: the target mixture.
        ax: the axis to draw on; default a new 4x4-inch figure.
        title: the axis title.
    """
    import matplotlib

    if ax is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    if not isinstance(samples, Tensor) or samples.dim() != 2 or samples.shape[1] != 2:
        shape = tuple(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__
        raise ValueError(f"samples must have shape (N, 2), got {shape}")
    if ax is None:
        figure, ax = plt.subplots(figsize=(4, 4))
    else:
        figure = ax.figure
    points = samples.detach().cpu().double().numpy()
    centers = mixture.centers.numpy()
    for center in centers:
        ax.add_patch(Circle(tuple(center), 3 * mixture.std, fill=False, color="tab:red", lw=0.6))
    ax.scatter(points[:, 0], points[:, 1], s=1.5, alpha=0.35, color="tab:blue", linewidths=0)
    extent = float(np.abs(centers).max()) + 1.0
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)
    return figure


# ---------------------------------------------------------------------------------------------------------------
# Command line (recipes/mixture.py)
# ---------------------------------------------------------------------------------------------------------------
def _fraction_open(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the mixture's flags to a :func:`~ignite_igan.cli.recipe_parser` (defaults from :class:`MixtureConfig`).

    Build the parser with ``iterations_per_epoch=MixtureConfig.iterations_per_epoch``: the data are infinite, so an
    epoch is that many iterations of fresh samples.
    """
    d = MixtureConfig()
    group = parser.add_argument_group("mixture")
    group.add_argument("--mixture", choices=MIXTURES, default=d.mixture, help="ring of 8 or 5x5 grid of 25 Gaussians")
    group.add_argument("--minibatch-discrimination", action="store_true", help="minibatch layer in the discriminator")
    group.add_argument("--feature-matching", action="store_true", help="train the generator by feature matching")
    group.add_argument("--label-smoothing", action="store_true", help="one-sided label smoothing (see --real-target)")
    group.add_argument("--historical-averaging", action="store_true", help="historical averaging of both players")
    group.add_argument("--all-techniques", action="store_true", help="all four switches above")
    group.add_argument(
        "--generator-loss",
        choices=GENERATOR_LOSSES,
        default=None,
        help=f"the generator's loss when feature matching is off ({d.generator_loss} if not given)",
    )
    group.add_argument("--generator-steps", type=positive_int, default=d.generator_steps, help="G updates per D update")
    group.add_argument("--real-target", type=_fraction_open, default=d.real_target, help="smoothed real target")
    group.add_argument(
        "--historical-weight",
        type=_nonnegative_float,
        default=d.historical_weight,
        help="λ of historical averaging (the paper gives none)",
    )
    group.add_argument("--minibatch-kernels", type=positive_int, default=d.minibatch_kernels, help="B: kernels")
    group.add_argument(
        "--minibatch-kernel-dim", type=positive_int, default=d.minibatch_kernel_dim, help="C: dimensions per kernel"
    )
    group.add_argument(
        "--minibatch-init",
        choices=MINIBATCH_INITS,
        default=d.minibatch_init,
        help="'data': the reference's data-dependent init of the minibatch layer on --init-samples real examples; "
        "'batch_mean': mean pairwise distance 2 on them instead of the nearest-neighbour one; 'none': init-time scale",
    )
    group.add_argument("--init-samples", type=positive_int, default=d.init_samples, help="data-dependent init batch")
    group.add_argument(
        "--data-scale",
        type=positive_float,
        default=d.data_scale,
        help="networks work in units of this (D sees x/scale, G emits scale*output); default: the mixture's extent",
    )
    group.add_argument("--z-dim", type=positive_int, default=d.z_dim, help="generator noise dimension")
    group.add_argument("--generator-hidden", type=positive_int, default=d.generator_hidden, help="hidden units")
    group.add_argument("--generator-layers", type=positive_int, default=d.generator_layers, help="hidden layers")
    group.add_argument("--discriminator-hidden", type=positive_int, default=d.discriminator_hidden, help="hidden units")
    group.add_argument("--discriminator-layers", type=positive_int, default=d.discriminator_layers, help="hidden layers")
    group.add_argument("--lr", type=positive_float, default=d.lr, help="Adam learning rate of both players")
    group.add_argument(
        "--decay-epochs",
        type=nonnegative_int,
        default=None,
        help="the learning rates decay linearly to 0 over this many last epochs (default: half of --epochs)",
    )
    group.add_argument("--eval-samples", type=positive_int, default=d.eval_samples, help="samples scored per epoch")
    group.add_argument("--eval-seed", type=nonnegative_int, default=d.eval_seed, help="seed of the evaluation noise")
    parser.set_defaults(epochs=d.epochs, batch_size=d.batch_size)
    return parser


def config_from_args(args: argparse.Namespace, parser: Optional[argparse.ArgumentParser] = None) -> MixtureConfig:
    """The :class:`MixtureConfig` of parsed flags; conflicting flags end in ``parser.error`` (or a ValueError)."""

    def fail(message: str) -> None:
        if parser is not None:
            parser.error(message)
        raise ValueError(message)

    everything = args.all_techniques
    feature_matching = args.feature_matching or everything
    if feature_matching and args.generator_loss is not None:
        fail(
            f"--generator-loss {args.generator_loss} conflicts with --feature-matching: feature matching is the "
            "generator's loss; drop one of them"
        )
    minibatch = args.minibatch_discrimination or everything
    if minibatch and args.batch_size < 2:
        fail(
            f"--batch-size must be >= 2 with --minibatch-discrimination (features compare examples), "
            f"got {args.batch_size}"
        )
    decay_epochs = args.epochs // 2 if args.decay_epochs is None else args.decay_epochs
    if decay_epochs > args.epochs:
        fail(f"--decay-epochs must be <= --epochs ({args.epochs}), got {decay_epochs}")
    try:
        return MixtureConfig(
            mixture=args.mixture,
            minibatch_discrimination=minibatch,
            feature_matching=feature_matching,
            label_smoothing=args.label_smoothing or everything,
            historical_averaging=args.historical_averaging or everything,
            generator_loss=args.generator_loss or MixtureConfig.generator_loss,
            generator_steps=args.generator_steps,
            real_target=args.real_target,
            historical_weight=args.historical_weight,
            minibatch_kernels=args.minibatch_kernels,
            minibatch_kernel_dim=args.minibatch_kernel_dim,
            minibatch_init=args.minibatch_init,
            init_samples=args.init_samples,
            data_scale=args.data_scale,
            z_dim=args.z_dim,
            generator_hidden=args.generator_hidden,
            generator_layers=args.generator_layers,
            discriminator_hidden=args.discriminator_hidden,
            discriminator_layers=args.discriminator_layers,
            lr=args.lr,
            decay_epochs=decay_epochs,
            batch_size=args.batch_size,
            epochs=args.epochs,
            iterations_per_epoch=args.iterations_per_epoch,
            eval_samples=args.eval_samples,
            eval_seed=args.eval_seed,
            seed=args.seed,
        )
    except (TypeError, ValueError) as error:
        fail(str(error))
        raise


def run(local_rank: int, args: argparse.Namespace) -> Dict[str, Any]:
    """The recipe's work in one process (what :func:`ignite_igan.cli.launch` runs): train, score, plot, summarize.

    Writes into ``args.output_dir``: ``checkpoints/`` (every epoch, atomically; ``--resume`` continues from the
    newest), ``tensorboard/`` (losses, learning rates, the historical-averaging penalties, the mode-coverage
    metrics after every epoch and the final scatter plot), ``samples.png`` (the final scatter plot) and
    ``summary.json`` (configuration, seeds, final metrics with the per-mode counts, time).

    Returns:
        The final mode-coverage result.
    """
    started = time.time()
    config = config_from_args(args)
    device = prepare_run(args)
    experiment = create_experiment(config, device=device)
    trainer = experiment.trainer

    evaluator = experiment.evaluator()
    evaluator.attach(trainer, Events.EPOCH_COMPLETED)  # before the checkpoint handler: a resumed run re-scores nothing

    from ignite_igan.logging import attach_tensorboard

    state_attributes = [name for name in ("real_target",) if config.label_smoothing]
    if config.historical_averaging:
        state_attributes += ["historical_penalty_d", "historical_penalty_g"]
    logger = attach_tensorboard(
        str(tensorboard_dir(args)),
        trainer,
        evaluators={"coverage": evaluator.engine},
        optimizers={"d_optimizer": experiment.d_optimizer, "g_optimizer": experiment.g_optimizer},
        state_attributes=state_attributes,
        log_every=10,
    )
    resumed = attach_run_handlers(trainer, args, experiment.to_save, OUTPUT_NAMES)
    try:
        experiment.run(config.epochs)
        result = experiment.evaluate()
        plot_path = None
        if idist.get_rank() == 0:
            figure = scatter_plot(
                experiment.samples(), experiment.mixture, title=_describe(config, result)
            )
            plot_path = Path(args.output_dir) / "samples.png"
            figure.savefig(plot_path, dpi=100, bbox_inches="tight")
            writer = getattr(logger, "writer", None)
            if writer is not None:
                writer.add_figure("samples", figure, global_step=trainer.state.iteration)
            import matplotlib.pyplot as plt

            plt.close(figure)
        metrics = {key: result[key] for key in ("modes", "modes_any", "high_quality", "kl", "counts", "min_count")}
        write_summary(
            args,
            metrics,
            started,
            extra={
                "techniques": config.techniques,
                "iterations": trainer.state.iteration,
                "resumed_from": str(resumed) if resumed is not None else None,
                "scatter_plot": str(plot_path) if plot_path is not None else None,
            },
        )
    finally:
        logger.close()
    return result


def _describe(config: MixtureConfig, result: Mapping[str, Any]) -> str:
    techniques = ", ".join(config.techniques) or "vanilla"
    return (
        f"{config.mixture}: {techniques}\nmodes {result['modes']} (any {result['modes_any']}), "
        f"high quality {100 * result['high_quality']:.1f}%, KL {result['kl']:.3f}"
    )
