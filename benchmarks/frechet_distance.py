"""The Fréchet distance on 2048-d statistics: ours against SciPy's ``sqrtm`` formula and Ignite's.

Three ways to compute FID's ``||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2))`` from the same float64
statistics:

* ``ours``: :func:`ignite_igan.functional.frechet_distance` (``S1 = F Fᵀ`` by Cholesky, or by the
  eigendecomposition for a singular covariance, then the eigenvalues of ``Fᵀ S2 F``; float64, exact, no fallback);
* ``ours, real factor cached``: the same with the real side's factor computed once, as
  :class:`~ignite_igan.metrics.FID` does from its second evaluation on (the real statistics never change);
* ``scipy sqrtm``: the formula of pytorch-fid / the original TTUR code, ``scipy.linalg.sqrtm(S1 @ S2)``, real part;
* ``ignite fid_score``: ``ignite.metrics.gan.fid.fid_score(mu1, mu2, sigma1, sigma2)`` (the same SciPy formula,
  plus a silent diagonal fallback when the square root is not finite).

The statistics are realistic in shape: the mean and covariance of ``--samples`` random ``--dim``-d features with a
decaying spectrum (eigenvalues ``∝ k^-1.2`` in a random basis, non-negative features like ReLU pool outputs), two
independent sets. A second pair shares one random basis (commuting covariances), for which the exact value is
known in closed form (``||Δmu||² + Σ(√a - √b)²``): every method's error against it is reported.

The methods run in alternating order (ABCD ABCD ...), ``--repeats`` times each, with ``--threads`` threads for
PyTorch and for NumPy/SciPy's BLAS (set before they are imported).

Then the cost of FID's real side with a cache: the real statistics of ``--cache-images`` small images (3x32x32) with
a small stand-in extractor (a 2-layer CNN with 2048 features, not Inception), computed (pass over the images,
float64 moments, cache file written) against loaded from the cache file, alternating, ``--repeats`` times.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/frechet_distance.py --repeats 3 --output docs/results/frechet_distance.json

The JSON holds every raw time; the Markdown table is printed and written next to it (same name, ``.md``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple


def parse_args(argv: List[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension (default 2048, Inception's pool_3)")
    parser.add_argument("--samples", type=int, default=10_000, help="features per statistics set (default 10000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each method (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch and BLAS threads (default 1)")
    parser.add_argument("--cache-images", type=int, default=2000, help="real images for the cache part (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("docs/results/frechet_distance.json"))
    return parser.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # BLAS reads these when it is loaded: before numpy, scipy and torch are imported
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(ARGS.threads)

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.linalg  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import ignite  # noqa: E402
from ignite.metrics.gan.fid import fid_score as ignite_fid_score  # noqa: E402

from _harness import alternating, command_line, load_average, machine_info, utc_now, write_results  # noqa: E402
from ignite_igan.functional import _covariance_factor, _frechet_from_factor, frechet_distance  # noqa: E402
from ignite_igan.metrics import FID, ClassifierExtractor, RealImages  # noqa: E402


# --------------------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------------------
def decaying_features(n: int, dim: int, basis: torch.Tensor, spectrum: torch.Tensor, shift: float, rng) -> torch.Tensor:
    """``n`` features with covariance ≈ basis·diag(spectrum)·basisᵀ, made non-negative like ReLU pool features."""
    z = torch.randn(n, dim, generator=rng, dtype=torch.float64) * spectrum.sqrt()
    return (z @ basis.T + shift).clamp(min=0.0)


def statistics_of(features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    mu = features.mean(0)
    centered = features - mu
    return mu, centered.T @ centered / (features.shape[0] - 1)


def random_basis(dim: int, rng) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=rng, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def make_statistics(args: argparse.Namespace) -> Dict[str, Any]:
    rng = torch.Generator().manual_seed(args.seed)
    k = torch.arange(1, args.dim + 1, dtype=torch.float64)
    spectrum1, spectrum2 = k ** -1.2, 1.3 * k ** -1.1
    real = decaying_features(args.samples, args.dim, random_basis(args.dim, rng), spectrum1, 0.3, rng)
    fake = decaying_features(args.samples, args.dim, random_basis(args.dim, rng), spectrum2, 0.35, rng)
    mu1, sigma1 = statistics_of(real)
    mu2, sigma2 = statistics_of(fake)
    # Commuting pair with a closed form: S_i = Q diag(a_i) Qᵀ.
    q = random_basis(args.dim, rng)
    a, b = spectrum1 * (1 + torch.rand(args.dim, generator=rng, dtype=torch.float64)), spectrum2
    cmu1 = torch.randn(args.dim, generator=rng, dtype=torch.float64) * 0.01
    cmu2 = cmu1 + 0.01
    exact = float(((cmu1 - cmu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    eigenvalues = torch.linalg.eigvalsh(sigma1)
    return {
        "realistic": (mu1, sigma1, mu2, sigma2),
        "commuting": ((cmu1, (q * a) @ q.T, cmu2, (q * b) @ q.T), exact),
        "eigenvalues": (float(eigenvalues.min()), float(eigenvalues.max())),
    }


# --------------------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------------------
def scipy_formula(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """pytorch-fid's ``calculate_frechet_distance`` without its eps fallback: sqrtm of the product, real part."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def methods(stats: Tuple[torch.Tensor, ...]) -> Dict[str, Callable[[], float]]:
    mu1, sigma1, mu2, sigma2 = stats
    numpy_stats = [t.numpy() for t in stats]
    factor1 = _covariance_factor("sigma1", 0.5 * (sigma1 + sigma1.T))

    def cached() -> float:
        return _frechet_from_factor(mu1, sigma1, factor1, mu2, 0.5 * (sigma2 + sigma2.T))

    return {
        "ours": lambda: frechet_distance(mu1, sigma1, mu2, sigma2),
        "ours, real factor cached": cached,
        "scipy sqrtm": lambda: scipy_formula(*numpy_stats),
        "ignite fid_score": lambda: ignite_fid_score(mu1, mu2, sigma1, sigma2),
    }


def time_alternating(variants: Dict[str, Callable[[], Any]], repeats: int) -> Dict[str, Dict[str, Any]]:
    """Seconds and values of each method, in the same order every round (ABCD ABCD ...)."""
    seconds, values = alternating(variants, repeats, mirror=False, progress=True)
    return {name: {"seconds": seconds[name], "values": values[name]} for name in variants}


# --------------------------------------------------------------------------------------------------------------
# The cache of real statistics
# --------------------------------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """A stand-in extractor: two strided convolutions, 128 channels x 4 x 4 = 2048 features."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.head = nn.Linear(2048, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def body_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.body(x)


def measure_cache(args: argparse.Namespace) -> Dict[str, Any]:
    torch.manual_seed(args.seed)
    extractor = ClassifierExtractor(SmallCNN(), "[-1,1]", features_fn=body_features)
    rng = torch.Generator().manual_seed(args.seed + 1)
    # Smooth random pictures (4x4 colours upsampled), in [-1, 1].
    coarse = torch.rand(args.cache_images, 3, 4, 4, generator=rng)
    images = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False) * 2 - 1
    with tempfile.TemporaryDirectory() as cache_dir:
        def recompute() -> float:
            for old in Path(cache_dir).glob("*.npz"):
                old.unlink()
            fid = FID(extractor, real=RealImages(images, name="bench", split="train", cache_dir=cache_dir))
            return float(fid.real_statistics.sigma.trace())

        def load() -> float:
            fid = FID(extractor, real=RealImages(images, name="bench", split="train", cache_dir=cache_dir))
            return float(fid.real_statistics.sigma.trace())

        recompute()  # untimed warm-up, and the file the first load reads
        timings = time_alternating({"recomputed (pass + moments + write)": recompute, "loaded from cache": load},
                                   args.repeats)
        files = list(Path(cache_dir).glob("*.npz"))
        size = files[0].stat().st_size if files else None
    traces = {name: r["values"] for name, r in timings.items()}
    return {"images": args.cache_images, "image_shape": [3, 32, 32], "features": 2048, "cache_file_bytes": size,
            "timings": timings, "sigma_traces": traces}


# --------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------
def _median(values: List[float]) -> float:
    return statistics.median(values)


def markdown(report: Dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; CPU: {meta['cpu']} ({meta['logical_cpus']} logical CPUs); {meta['threads']} thread(s) "
        f"for PyTorch and BLAS; torch {meta['torch']}, scipy {meta['scipy']}, numpy {meta['numpy']}, "
        f"pytorch-ignite {meta['ignite']}; Python {meta['python']}. Load average at start/end: "
        f"{meta['load_start']} / {meta['load_end']}.",
        "",
        f"Statistics: mean and covariance of {meta['samples']:,} random {meta['dim']}-d features with a decaying "
        f"spectrum (real covariance eigenvalues in [{report['eigenvalues'][0]:.2e}, {report['eigenvalues'][1]:.2e}]); "
        f"{meta['repeats']} alternating runs of each method.",
        "",
        "| method | median s | min-max s | speed-up vs scipy | FID | − ours | exact case: error |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    timings = report["realistic"]
    scipy_median = _median(timings["scipy sqrtm"]["seconds"])
    ours_value = timings["ours"]["values"][0]
    for name, result in timings.items():
        seconds = result["seconds"]
        value = result["values"][0]
        error = report["commuting"]["errors"][name]
        lines.append(
            f"| {name} | {_median(seconds):.3f} | {min(seconds):.3f}-{max(seconds):.3f} | "
            f"{scipy_median / _median(seconds):.2f}x | {value:.9f} | {value - ours_value:+.2e} | {error:+.2e} |"
        )
    lines += [
        "",
        f"Exact case: commuting covariances (one random basis), closed form {report['commuting']['exact']:.12f}; "
        "the column gives each method's value minus it.",
        "",
        f"FID's real statistics of {report['cache']['images']:,} images 3x32x32 with a small stand-in CNN "
        f"({report['cache']['features']} features), cache file {report['cache']['cache_file_bytes']:,} bytes:",
        "",
        "| real statistics | median s | min-max s |",
        "|---|---:|---:|",
    ]
    for name, result in report["cache"]["timings"].items():
        seconds = result["seconds"]
        lines.append(f"| {name} | {_median(seconds):.3f} | {min(seconds):.3f}-{max(seconds):.3f} |")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> Dict[str, Any]:
    torch.set_num_threads(args.threads)
    load_start = " ".join(f"{x:.2f}" for x in load_average())
    print("building statistics ...", file=sys.stderr, flush=True)
    stats = make_statistics(args)
    print("timing the Fréchet distance ...", file=sys.stderr, flush=True)
    realistic = time_alternating(methods(stats["realistic"]), args.repeats)
    commuting_stats, exact = stats["commuting"]
    commuting_values = {name: fn() for name, fn in methods(commuting_stats).items()}
    print("timing the real statistics' cache ...", file=sys.stderr, flush=True)
    cache = measure_cache(args)
    report = {
        "meta": {
            "command": command_line(__file__),
            "date": utc_now("%Y-%m-%d %H:%M UTC"),
            **machine_info(),
            "threads": args.threads,
            "scipy": scipy.__version__,
            "numpy": np.__version__,
            "ignite": ignite.__version__,
            "dim": args.dim,
            "samples": args.samples,
            "repeats": args.repeats,
            "load_start": load_start,
            "load_end": " ".join(f"{x:.2f}" for x in load_average()),
        },
        "eigenvalues": stats["eigenvalues"],
        "realistic": realistic,
        "commuting": {
            "exact": exact,
            "values": commuting_values,
            "errors": {name: value - exact for name, value in commuting_values.items()},
        },
        "cache": cache,
    }
    text = markdown(report)
    write_results(report, args.output, text, header=False)  # the Markdown has its own command and date
    print(text)
    return report


if __name__ == "__main__":
    main(ARGS)
