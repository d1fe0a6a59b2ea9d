"""Mode coverage on hand-placed samples with known answers, and the mixture samplers."""
import math

import numpy as np
import pytest
import torch

from ignite.engine import Engine

from ignite_igan.metrics import (
    GaussianMixture2D,
    ModeCoverage,
    default_min_count,
    grid_centers,
    grid_mixture,
    mode_coverage,
    ring_centers,
    ring_mixture,
)


def numpy_kl_to_uniform(counts):
    counts = np.asarray(counts, dtype=np.float64)
    p = counts / counts.sum()
    k = len(counts)
    return sum(pk * math.log(pk * k) for pk in p if pk > 0)


def test_centres():
    ring = ring_centers()
    assert ring.shape == (8, 2)
    np.testing.assert_allclose(ring.norm(dim=1).numpy(), 2.0)
    np.testing.assert_allclose(ring[2].numpy(), [0.0, 2.0], atol=1e-12)
    grid = grid_centers()
    assert grid.shape == (25, 2)
    assert sorted(set(grid[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert grid_centers(3, spacing=1.5).abs().max() == 1.5


def test_evenly_spread_over_the_grid_covers_all_modes_by_one_sample_and_none_by_the_threshold():
    # 2,500 samples on a regular 50 x 50 lattice over [-5, 5]^2 (cell 0.2, points at -4.9, -4.7, ..., 4.9).
    # Each centre has exactly 4 lattice points (+-0.1, +-0.1) within 3 std = 0.15 (distance 0.141); the next ones are
    # at distance 0.316. So: 100 high-quality samples, 4 per mode.
    ticks = torch.arange(50, dtype=torch.float64) * 0.2 - 4.9
    xs, ys = torch.meshgrid(ticks, ticks, indexing="ij")
    samples = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    mixture = grid_mixture()
    result = mixture.coverage(samples)
    assert result["modes_any"] == 25
    assert result["modes"] == 0 and result["min_count"] == 20
    assert result["high_quality"] == pytest.approx(100 / 2500)
    assert result["counts"] == [4] * 25
    assert result["kl"] == pytest.approx(0.0, abs=1e-15)


def test_uniform_samples_over_the_grid_square_cover_about_21_modes_by_the_one_sample_rule():
    # The example: 2,500 uniform samples on [-5, 5]^2; P(a mode gets >= 1) = 1 - exp(-2500 * pi 0.15^2 / 100).
    expected = 25 * (1 - math.exp(-2500 * math.pi * 0.15**2 / 100))
    assert 20 < expected < 22
    generator = torch.Generator().manual_seed(0)
    any_counts = []
    for _ in range(20):
        samples = torch.rand(2500, 2, generator=generator, dtype=torch.float64) * 10 - 5
        result = grid_mixture().coverage(samples)
        any_counts.append(result["modes_any"])
        assert result["modes"] == 0
    assert abs(np.mean(any_counts) - expected) < 1.0


def test_collapse_to_one_mode_and_partial_coverage():
    centers = grid_centers()
    collapsed = centers[7].repeat(2500, 1)
    result = mode_coverage(collapsed, centers, std=0.05)
    assert (result["modes"], result["modes_any"], result["high_quality"]) == (1, 1, 1.0)
    assert result["kl"] == pytest.approx(math.log(25))

    # Three modes with 30, 20 and 19 samples (threshold 20 at 2,500 samples), the rest far from every centre.
    parts = [centers[0].repeat(30, 1), centers[1].repeat(20, 1), centers[2].repeat(19, 1)]
    far = torch.tensor([[1.0, 1.0]], dtype=torch.float64).repeat(2500 - 69, 1)  # 1.41 from the nearest centre
    result = mode_coverage(torch.cat(parts + [far]), centers, std=0.05)
    assert (result["modes"], result["modes_any"]) == (2, 3)
    assert result["high_quality"] == pytest.approx(69 / 2500)
    counts = [30, 20, 19] + [0] * 22
    assert result["counts"] == counts
    assert result["kl"] == pytest.approx(numpy_kl_to_uniform(counts), rel=1e-12)
    assert mode_coverage(torch.cat(parts + [far]), centers, std=0.05, min_count=19)["modes"] == 3


def test_the_three_std_boundary_on_the_ring():
    mixture = ring_mixture()  # radius 2, std 0.02: high quality within 0.06
    centre = mixture.centers[3]
    direction = torch.tensor([0.6, 0.8], dtype=torch.float64)
    inside = centre + 0.059 * direction
    outside = centre + 0.061 * direction
    result = mixture.coverage(torch.stack([inside, outside]), min_count=1)
    assert result["counts"] == [0, 0, 0, 1, 0, 0, 0, 0]
    assert result["high_quality"] == 0.5 and result["modes"] == 1


def test_no_high_quality_sample_reports_log_k():
    centers = ring_centers()
    result = mode_coverage(torch.zeros(10, 2), centers, std=0.02)
    assert (result["modes"], result["modes_any"], result["high_quality"]) == (0, 0, 0.0)
    assert result["kl"] == pytest.approx(math.log(8))


def test_threshold_scales_with_the_sample_count():
    assert default_min_count(2500) == 20
    assert default_min_count(5000) == 40
    assert default_min_count(100) == 1
    assert default_min_count(2501) == 21


def test_metric_over_batches_equals_the_function():
    mixture = grid_mixture()
    generator = torch.Generator().manual_seed(3)
    samples = torch.cat([mixture.sample(1500, generator=generator), torch.rand(1000, 2, generator=generator) * 10 - 5])
    expected = mixture.coverage(samples)
    engine = Engine(lambda engine, batch: batch)
    ModeCoverage(mixture.centers, mixture.std).attach(engine, "grid")
    metrics = engine.run(list(samples.split(300))).metrics
    assert metrics["grid"] == expected["modes"]
    assert metrics["grid_any"] == expected["modes_any"]
    assert metrics["grid_high_quality"] == pytest.approx(expected["high_quality"])
    assert metrics["grid_kl"] == pytest.approx(expected["kl"])


def test_samplers_draw_the_mixture():
    mixture = grid_mixture()
    samples, modes = mixture.sample(20000, generator=torch.Generator().manual_seed(0), return_modes=True)
    assert samples.dtype == torch.float32 and samples.shape == (20000, 2)
    frequencies = torch.bincount(modes, minlength=25).double() / 20000
    assert (frequencies - 1 / 25).abs().max() < 0.01
    offsets = samples.double() - mixture.centers[modes]
    assert offsets.std(dim=0).numpy() == pytest.approx([0.05, 0.05], rel=0.03)
    # A 2-D Gaussian lies within 3 std with probability 1 - exp(-9/2) = 0.98889.
    assert mixture.coverage(samples)["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.003)
    again = mixture.sample(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, mixture.sample(5, generator=torch.Generator().manual_seed(0)))


def test_bad_input_errors():
    centers = grid_centers()
    with pytest.raises(ValueError, match=r"samples must have shape \(N, 2\), got \(10, 3\)"):
        mode_coverage(torch.zeros(10, 3), centers, 0.05)
    with pytest.raises(ValueError, match="samples contains NaN"):
        mode_coverage(torch.full((2, 2), float("nan")), centers, 0.05)
    with pytest.raises(TypeError, match="samples must be a torch.Tensor"):
        mode_coverage([[0.0, 0.0]], centers, 0.05)
    with pytest.raises(ValueError, match="std must be > 0, got 0"):
        mode_coverage(torch.zeros(2, 2), centers, 0)
    with pytest.raises(ValueError, match="min_count must be >= 1, got 0"):
        mode_coverage(torch.zeros(2, 2), centers, 0.05, min_count=0)
    with pytest.raises(ValueError, match=r"centers must have shape \(K, 2\)"):
        GaussianMixture2D(torch.zeros(3), 0.1)
    with pytest.raises(ValueError, match="samples must hold at least one sample"):
        mode_coverage(torch.zeros(0, 2), centers, 0.05)


def test_benchmark_mixtures_by_name_and_their_plot():
    from ignite_igan.metrics import benchmark_mixture

    ring = benchmark_mixture("ring")
    assert ring.num_modes == 8 and ring.std == 0.02 and benchmark_mixture("grid").num_modes == 25
    with pytest.raises(ValueError, match=r"mixture must be one of \('ring', 'grid'\), got 'spiral'"):
        benchmark_mixture("spiral")
    samples = ring.sample(50, generator=torch.Generator().manual_seed(0))
    figure = ring.plot(samples, title="ring")
    ax = figure.axes[0]
    assert ax.get_title() == "ring" and len(ax.patches) == 8  # one 3-std circle per mode
    assert ax.collections[0].get_offsets().shape == (50, 2)  # every sample drawn
    assert [patch.radius for patch in ax.patches] == [pytest.approx(0.06)] * 8
    with pytest.raises(ValueError, match=r"samples must have shape \(N, 2\), got \(50, 3\)"):
        ring.plot(torch.zeros(50, 3))
