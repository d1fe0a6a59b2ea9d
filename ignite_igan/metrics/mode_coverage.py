"""Mode coverage on the 2-D mixture benchmarks: a ring of 8 and a 5x5 grid of 25 Gaussians.

The data (:class:`GaussianMixture2D`, :func:`ring_mixture`, :func:`grid_mixture`) and the measures live together so
that recipes, tests and benchmarks use the same mixtures.

Definitions (all in :func:`mode_coverage`):

- A sample is **high quality** when it lies within ``3 * std`` (Euclidean) of its nearest centre; it belongs to
  that centre's mode.
- **modes_any**: modes with at least one high-quality sample (the literature's rule, e.g. Unrolled GAN, VEEGAN).
- **modes**: modes with at least ``min_count`` high-quality samples. By default ``min_count`` is 0.8% of the
  samples, i.e. 20 of 2,500, rounded up. A generator that spreads its samples evenly over the grid's square
  "covers" most modes under the one-sample rule (about 21 of 25 for 2,500 uniform samples on [-5, 5]^2 with the
  default grid), but none under this rule.
- **high_quality**: the fraction of samples that are high quality.
- **kl**: ``KL(p || uniform) = sum_k p_k log(K p_k)`` in nats, where ``p`` is the histogram over the K modes of the
  high-quality samples. Empty modes contribute 0 (``0 log 0 = 0``, the limit), so the value is finite and lies in
  ``[0, log K]``: 0 for perfectly balanced modes, ``log K`` when every high-quality sample is in one mode. With no
  high-quality sample at all the histogram does not exist; ``kl`` is then reported as ``log K``, the value of total
  collapse, so that curves stay finite (``high_quality == 0`` tells the two cases apart).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Union

import torch
from torch import Tensor

from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from ignite_igan.validation import check_choice, check_device, check_int, check_points, check_real

__all__ = [
    "benchmark_mixture",
    "ring_centers",
    "grid_centers",
    "GaussianMixture2D",
    "ring_mixture",
    "grid_mixture",
    "default_min_count",
    "mode_coverage",
    "ModeCoverage",
]


def ring_centers(num_modes: int = 8, radius: float = 2.0) -> Tensor:
    """``num_modes`` centres evenly spaced on a circle of ``radius``, the first at angle 0: ``(num_modes, 2)``."""
    num_modes = check_int("num_modes", num_modes, minimum=1)
    radius = check_real("radius", radius, minimum=0.0, low_open=True)
    angles = torch.arange(num_modes, dtype=torch.float64) * (2 * math.pi / num_modes)
    return torch.stack([radius * torch.cos(angles), radius * torch.sin(angles)], dim=1)


def grid_centers(size: int = 5, spacing: float = 2.0) -> Tensor:
    """A ``size x size`` grid of centres ``spacing`` apart, centred on the origin: ``(size**2, 2)``, row-major.

    The defaults give the usual grid {-4, -2, 0, 2, 4}^2.
    """
    size = check_int("size", size, minimum=1)
    spacing = check_real("spacing", spacing, minimum=0.0, low_open=True)
    ticks = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) * spacing
    ys, xs = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


class GaussianMixture2D:
    """An equal-weight mixture of isotropic 2-D Gaussians with one shared ``std``.

    Args:
        centers: ``(K, 2)`` mode centres.
        std: the standard deviation of every component.

    Example:
        >>> import torch
        >>> mixture = ring_mixture()
        >>> mixture.sample(4, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 2])
    """

    def __init__(self, centers: Tensor, std: float) -> None:
        self.centers = torch.as_tensor(centers, dtype=torch.float64)
        if self.centers.dim() != 2 or self.centers.shape[1] != 2 or self.centers.shape[0] < 1:
            raise ValueError(f"centers must have shape (K, 2) with K >= 1, got {tuple(self.centers.shape)}")
        self.std = float(check_real("std", std, minimum=0.0, low_open=True))

    @property
    def num_modes(self) -> int:
        return self.centers.shape[0]

    def sample(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        dtype: torch.dtype = torch.float32,
        return_modes: bool = False,
    ) -> Union[Tensor, tuple]:
        """Draws ``n`` samples ``(n, 2)`` (each mode with probability 1/K); with ``return_modes`` also their modes."""
        modes = torch.randint(self.num_modes, (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        samples = (self.centers[modes] + self.std * noise).to(dtype)
        return (samples, modes) if return_modes else samples

    def coverage(self, samples: Tensor, min_count: Optional[int] = None) -> Dict[str, Any]:
        """:func:`mode_coverage` of ``samples`` against this mixture."""
        n = check_points("samples", samples).shape[0]
        if n == 0:
            raise ValueError("samples must hold at least one sample, got 0")
        min_count = check_int("min_count", default_min_count(n) if min_count is None else min_count, minimum=1)
        return _summary(_high_quality_counts(samples, self.centers, self.std), n, min_count)

    def plot(self, samples: Tensor, ax: Any = None, title: Optional[str] = None) -> Any:
        """Draws ``samples`` ``(N, 2)`` over the modes, each mode's high-quality zone (3 std) as a circle, on ``ax``
        (default: a new 4x4-inch figure with matplotlib's Agg backend, which needs no display); returns the figure.

        Example:
            >>> import torch
            >>> mixture = ring_mixture()
            >>> figure = mixture.plot(mixture.sample(100, generator=torch.Generator().manual_seed(0)), title="ring")
            >>> figure.axes[0].get_title(), len(figure.axes[0].patches)
            ('ring', 8)
        """
        import matplotlib

        if ax is None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Circle

        check_points("samples", samples)
        figure, ax = plt.subplots(figsize=(4, 4)) if ax is None else (ax.figure, ax)
        points, centers = samples.detach().cpu().double().numpy(), self.centers.numpy()
        for center in centers:
            ax.add_patch(Circle(tuple(center), 3 * self.std, fill=False, color="tab:red", lw=0.6))
        ax.scatter(points[:, 0], points[:, 1], s=1.5, alpha=0.35, color="tab:blue", linewidths=0)
        extent = float(abs(centers).max()) + 1.0
        ax.set(xlim=(-extent, extent), ylim=(-extent, extent), aspect="equal", xticks=[], yticks=[])
        if title is not None:
            ax.set_title(title, fontsize=8)
        return figure


def ring_mixture(num_modes: int = 8, radius: float = 2.0, std: float = 0.02) -> GaussianMixture2D:
    """The ring benchmark: 8 Gaussians on a circle of radius 2 with std 0.02 (Unrolled GAN's setting)."""
    return GaussianMixture2D(ring_centers(num_modes, radius), std)


def grid_mixture(size: int = 5, spacing: float = 2.0, std: float = 0.05) -> GaussianMixture2D:
    """The grid benchmark: 25 Gaussians at {-4, -2, 0, 2, 4}^2 with std 0.05 (VEEGAN/PacGAN's setting)."""
    return GaussianMixture2D(grid_centers(size, spacing), std)


_BENCHMARKS = {"ring": ring_mixture, "grid": grid_mixture}


def benchmark_mixture(name: str) -> GaussianMixture2D:
    """The benchmark mixture ``name``: ``"ring"`` (8 modes, std 0.02) or ``"grid"`` (25 modes, std 0.05).

    Example:
        >>> benchmark_mixture("grid").num_modes
        25
    """
    return _BENCHMARKS[check_choice("mixture", name, tuple(_BENCHMARKS))]()


def default_min_count(n_samples: int) -> int:
    """The default threshold for a covered mode: 20 high-quality samples per 2,500 (0.8%), rounded up, at least 1."""
    return max(1, math.ceil(n_samples * 20 / 2500))


def _high_quality_counts(samples: Tensor, centers: Tensor, std: float) -> Tensor:
    """The number of high-quality samples of every mode: those within 3 std of their nearest centre."""
    distances = torch.cdist(samples.to(torch.float64), centers.to(device=samples.device, dtype=torch.float64))
    nearest_distance, nearest = distances.min(dim=1)
    return torch.bincount(nearest[nearest_distance <= 3 * std], minlength=centers.shape[0])


def _summary(hq_counts: Tensor, n_samples: int, min_count: Optional[int]) -> Dict[str, Any]:
    min_count = default_min_count(n_samples) if min_count is None else min_count
    num_modes = hq_counts.shape[0]
    hq_total = int(hq_counts.sum())
    if hq_total > 0:
        p = hq_counts.to(torch.float64) / hq_total
        nonzero = p > 0
        kl = float((p[nonzero] * torch.log(p[nonzero] * num_modes)).sum())
    else:
        kl = math.log(num_modes)
    return {
        "modes": int((hq_counts >= min_count).sum()),
        "modes_any": int((hq_counts >= 1).sum()),
        "high_quality": hq_total / n_samples,
        "kl": kl,
        "counts": hq_counts.cpu().tolist(),
        "min_count": min_count,
        "num_samples": n_samples,
    }


def mode_coverage(
    samples: Tensor, centers: Tensor, std: float, min_count: Optional[int] = None
) -> Dict[str, Any]:
    """Mode coverage of 2-D ``samples`` against a mixture with ``centers`` and ``std`` (definitions: module doc).

    Args:
        samples: ``(N, 2)`` generated samples.
        centers: ``(K, 2)`` mode centres, e.g. :func:`grid_centers`.
        std: the components' standard deviation; a sample within ``3 * std`` of its nearest centre is high quality.
        min_count: high-quality samples a mode needs to count in ``modes``; default :func:`default_min_count`
            (20 per 2,500 samples).

    Returns:
        ``{"modes", "modes_any", "high_quality", "kl", "counts", "min_count", "num_samples"}`` where ``counts`` is
        the list of high-quality samples per mode.

    Example:
        >>> import torch
        >>> centers = grid_centers()
        >>> result = mode_coverage(centers.repeat(100, 1), centers, std=0.05)
        >>> result["modes"], result["modes_any"], result["high_quality"], result["kl"]
        (25, 25, 1.0, 0.0)
    """
    return GaussianMixture2D(centers, std).coverage(samples, min_count)


class ModeCoverage(Metric):
    """:func:`mode_coverage` as an Ignite metric, summed over batches and processes.

    Attached under ``name`` it writes ``name`` (modes with at least ``min_count`` high-quality samples),
    ``name + "_any"`` (modes with at least one), ``name + "_high_quality"`` (fraction) and ``name + "_kl"``
    (KL of the mode histogram to uniform, nats) into ``engine.state.metrics``.

    Args:
        centers: ``(K, 2)`` mode centres (e.g. ``grid_mixture().centers``).
        std: the components' standard deviation.
        min_count: as in :func:`mode_coverage` (default: 20 per 2,500 of the samples seen).
        output_transform: maps the engine's output to the ``(N, 2)`` samples.
        device: where the counts are kept.

    Example:
        >>> from ignite.engine import Engine
        >>> mixture = grid_mixture()
        >>> evaluator = Engine(lambda engine, batch: batch)  # batches of generated 2-D samples
        >>> ModeCoverage(mixture.centers, mixture.std).attach(evaluator, "modes")
        >>> state = evaluator.run([mixture.sample(1250), mixture.sample(1250)])
        >>> state.metrics["modes"], state.metrics["modes_any"]
        (25, 25)
    """

    required_output_keys = None
    _state_dict_all_req_keys = ("_hq_counts", "_num_samples")

    def __init__(
        self,
        centers: Tensor,
        std: float,
        min_count: Optional[int] = None,
        output_transform: Callable = lambda x: x,
        device: Union[str, torch.device] = torch.device("cpu"),
    ) -> None:
        self._mixture = GaussianMixture2D(centers, std)  # checks both
        self._min_count = check_int("min_count", min_count, minimum=1, allow_none=True)
        device = check_device("device", device)
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    @reinit__is_reduced
    def reset(self) -> None:
        self._hq_counts = torch.zeros(self._mixture.num_modes, dtype=torch.int64, device=self._device)
        self._num_samples = torch.tensor(0, dtype=torch.int64, device=self._device)

    @reinit__is_reduced
    def update(self, output: Tensor) -> None:
        samples = check_points("samples", output)  # NaN samples would count as uncovered, silently
        counts = _high_quality_counts(samples.detach(), self._mixture.centers, self._mixture.std)
        self._hq_counts += counts.to(self._device)
        self._num_samples += samples.shape[0]

    @sync_all_reduce("_hq_counts", "_num_samples")
    def compute(self) -> Dict[str, Any]:
        n = int(self._num_samples)
        if n == 0:
            raise NotComputableError("ModeCoverage must have at least one sample before it can be computed")
        return _summary(self._hq_counts.cpu(), n, self._min_count)

    def completed(self, engine: Engine, name: str) -> None:
        result = self.compute()
        for suffix, key in (("", "modes"), ("_any", "modes_any"), ("_high_quality", "high_quality"), ("_kl", "kl")):
            engine.state.metrics[name + suffix] = result[key]
