"""Inception Score throughput: our metric against torch-fidelity's ``calculate_metrics``.

Both score the same ``--n`` uint8 images of 32x32 with the same network and the same weights file, in batches of
``--batch-size``. The images are smooth random pictures (4x4 random colours upsampled bilinearly, fixed seed): pure
pixel noise looks the same to Inception after its global pooling, and would make every score 1.

* the weights: a state dict with the shapes of torch-fidelity's ``inception-v3-compat`` network and random values
  (He-initialized convolutions, batch-norm statistics near the identity, so that different images give different
  logits; timing does not need the real weights, which this script never downloads), written to a temporary file;
* ``ours``: :class:`~ignite_igan.metrics.InceptionScore` (``input_range="uint8"``, 10 splits, no shuffle) with a
  :class:`~ignite_igan.metrics.TFInceptionV3` loaded from that file through its checked path (SHA-256, then
  ``torch.load(weights_only=True)``), updated batch by batch and computed;
* ``ours (incl. build)``: the same, with the extractor built inside the timed region (what a one-off score costs;
  a training run builds it once and scores many times);
* ``torch-fidelity``: ``torch_fidelity.calculate_metrics(input1=<dataset of the same uint8 tensors>, isc=True,
  isc_splits=10, samples_shuffle=False, feature_extractor_weights_path=<the same file>, batch_size=<the same>,
  cache=False)``, which builds its network and a ``DataLoader`` on every call.

The variants run in alternating order, ``--repeats`` times each, after one small untimed warm-up of each. Before
timing, our extractor's logits on the warm-up images are compared with those of torch-fidelity's own network loaded
from the same file; the logits and the scores must agree, and the largest differences are reported.

The per-call fixed costs (building a network, starting a ``DataLoader``) are then measured on their own: the same
three variants on ``--fixed-n`` images (one small batch), ``--fixed-rounds`` alternating rounds. The difference to
``ours`` is what each call pays on top of the network's work; the per-image work is the same network in all three.

Run from the repository root (the issue's size; on a GPU)::

    python benchmarks/inception_throughput.py --device cuda --n 10000 --output docs/results/inception_throughput.json

Inception at 299x299 is slow on a small CPU; there, pass a smaller ``--n`` (the ratio is what matters) and say so.
The JSON holds every raw time; the Markdown table is printed and written next to it (same name, ``.md``).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from unittest import mock

import torch
from torch.utils.data import Dataset

from _harness import (  # first: it puts the repository root on sys.path (benchmarks/ is there already)
    alternating, command_line, device_info, format_times, load_average, load_note, select_device, utc_now,
    write_results,
)
from ignite_igan.metrics import InceptionScore, TFInceptionV3

VARIANTS = ("ours", "ours (incl. build)", "torch-fidelity")


def random_inception_state_dict(seed: int = 0) -> Dict[str, torch.Tensor]:
    """A state dict with the shapes of torch-fidelity's ``inception-v3-compat`` network and random values.

    The network is instantiated without loading anything. Convolutions get He-initialized weights and the batch
    norms statistics near the identity, so that the differences between images survive the 94 layers; the
    classifier spreads the logits over a few units.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as tf_module

    with mock.patch.object(tf_module, "load_state_dict_from_url", lambda *a, **k: {}), mock.patch.object(
        tf_module.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None
    ):
        torch.manual_seed(seed)
        net = tf_module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in net.state_dict().items():
        if not value.is_floating_point():
            state[key] = value.clone()
        elif key.endswith("running_var"):
            state[key] = 1.0 + 0.1 * torch.rand(value.shape, generator=generator)
        elif key.endswith("running_mean") or key.endswith(".bias"):
            state[key] = 0.01 * torch.randn(value.shape, generator=generator)
        elif key.endswith("bn.weight"):
            state[key] = 1.0 + 0.05 * torch.randn(value.shape, generator=generator)
        elif key == "fc.weight":  # logits with a spread of a few units, so that the score is not trivially 1
            state[key] = 3.0 * torch.randn(value.shape, generator=generator) / value.shape[1] ** 0.5
        else:  # convolutions: He initialization, so that the images' differences survive the 94 layers
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=generator) * (2.0 / fan_in) ** 0.5
    return state


class UInt8Images(Dataset):
    """The images as torch-fidelity wants a dataset: one uint8 (3, H, W) tensor per item."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def smooth_random_images(n: int, seed: int) -> torch.Tensor:
    """``n`` uint8 images of 3x32x32: random 4x4 colour grids, upsampled bilinearly."""
    low = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    high = torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)
    return (high * 255).round().clamp_(0, 255).to(torch.uint8)


def logits_difference(extractor: TFInceptionV3, path: Path, images: torch.Tensor, device: torch.device) -> float:
    """Largest difference between our extractor's logits and torch-fidelity's network's, loaded from ``path``."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    reference = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=str(path)
    ).to(device)
    with torch.no_grad():
        (theirs,) = reference(images.to(device))
        ours = extractor(images.to(device))
    return float((ours - theirs).abs().max())


def score_ours(
    images: torch.Tensor, extractor: Optional[TFInceptionV3], weights: Tuple[Path, str], batch_size: int,
    device: torch.device,
) -> float:
    if extractor is None:
        extractor = TFInceptionV3(weights_path=weights[0], sha256=weights[1])
    metric = InceptionScore(extractor=extractor, input_range="uint8", splits=10, device=device)
    metric.reset()
    for start in range(0, images.shape[0], batch_size):
        metric.update(images[start : start + batch_size])
    return metric.compute()["mean"]


def score_theirs(images: torch.Tensor, weights: Tuple[Path, str], batch_size: int, device: torch.device) -> float:
    import torch_fidelity

    result = torch_fidelity.calculate_metrics(
        input1=UInt8Images(images),
        cuda=device.type == "cuda",
        batch_size=batch_size,
        isc=True,
        isc_splits=10,
        samples_shuffle=False,
        feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(weights[0]),
        cache=False,
        verbose=False,
    )
    return float(result["inception_score_mean"])


def markdown(report: dict) -> str:
    meta = report["meta"]
    n = meta["n"]
    base = statistics.median(report["times_s"]["torch-fidelity"])
    lines = [
        f"{n} uint8 images of 3x32x32 (smooth random pictures), batch size {meta['batch_size']}, 10 splits, "
        "no shuffle; "
        f"Inception `inception-v3-compat` with random weights from one file; device: {meta['device']}; "
        f"{meta['repeats']} alternating rounds; "
        + load_note(meta["load_average_start"][0], meta["load_average_end"][0], meta["device_type"] == "cpu")
        + f" Largest difference between the implementations: {meta['max_logit_difference']:.1e} in the logits of "
        f"the warm-up images, {meta['max_score_difference']:.1e} in the scores (IS {report['scores']['ours'][0]:.4f}).",
        "",
        "| implementation | time, median (min–max) | images/s (median) | time / torch-fidelity's |",
        "|---|---:|---:|---:|",
    ]
    for name, values in report["times_s"].items():
        median = statistics.median(values)
        lines.append(f"| {name} | {format_times(values, 's', 2)} | {n / median:.1f} | {median / base:.3f} |")
    build = statistics.median(report["build_s"])
    lines += ["", f"Building the extractor alone (load + SHA-256 check), median: {build:.2f} s."]
    fixed = report.get("fixed_cost_times_s")
    if fixed:
        base = statistics.median(fixed["ours"])
        lines += [
            "",
            f"Per-call fixed costs ({meta['fixed_n']} images, one batch, {meta['fixed_rounds']} alternating rounds):",
            "",
            "| implementation | time, median (min–max) | minus `ours` |",
            "|---|---:|---:|",
        ]
        for name, values in fixed.items():
            median = statistics.median(values)
            lines.append(f"| {name} | {format_times(values, 's', 2)} | {median - base:+.2f} s |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Inception Score of the same uint8 images with our InceptionScore metric and with "
        "torch-fidelity's calculate_metrics, same network weights (random, from one file) and batch size; "
        "alternating runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda")
    parser.add_argument("--n", type=int, default=10_000, help="number of images (the issue's 10,000; use fewer on "
                        "a small CPU)")
    parser.add_argument("--batch-size", type=int, default=100, help="images per extractor call, both implementations")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds (each runs every variant once)")
    parser.add_argument("--fixed-n", type=int, default=10, help="images of the fixed-cost measurement (one batch)")
    parser.add_argument("--fixed-rounds", type=int, default=6, help="alternating rounds of the fixed-cost "
                        "measurement (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the raw numbers; the Markdown "
                        "table goes next to it with the suffix .md")
    args = parser.parse_args(argv)
    if args.n < 10:
        parser.error(f"--n must be >= 10 (10 splits), got {args.n}")
    if args.batch_size < 1 or args.repeats < 1 or args.threads < 0 or args.fixed_rounds < 0:
        parser.error("--batch-size and --repeats must be >= 1, --threads and --fixed-rounds >= 0")
    if args.fixed_rounds and not 10 <= args.fixed_n <= args.n:
        parser.error(f"--fixed-n must be between 10 (10 splits) and --n, got {args.fixed_n}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    device = select_device(args.device, args.threads)
    import torch_fidelity

    meta = {
        "date": utc_now(),
        "command": command_line(__file__, argv),
        **device_info(device),
        "torch_fidelity": torch_fidelity.__version__,
        "n": args.n,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "fixed_n": args.fixed_n,
        "fixed_rounds": args.fixed_rounds,
        "torch_fidelity_dataloader_workers": min(4, 2 * os.cpu_count()),  # its rule with save_cpu_ram=False
        "load_average_start": load_average(),
    }
    images = smooth_random_images(args.n, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights-inception-random.pth"
        torch.save(random_inception_state_dict(args.seed), path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        weights = (path, digest)

        build_times = []
        for _ in range(2):
            start = time.perf_counter()
            extractor = TFInceptionV3(weights_path=path, sha256=digest).to(device)
            build_times.append(time.perf_counter() - start)

        warm = images[: min(10, args.n)]
        print("warm-up and check of the logits ...", file=sys.stderr, flush=True)
        meta["max_logit_difference"] = logits_difference(extractor, path, warm, device)
        score_ours(warm, extractor, weights, args.batch_size, device)
        score_theirs(warm, weights, args.batch_size, device)

        runs = {
            "ours": lambda: score_ours(images, extractor, weights, args.batch_size, device),
            "ours (incl. build)": lambda: score_ours(images, None, weights, args.batch_size, device),
            "torch-fidelity": lambda: score_theirs(images, weights, args.batch_size, device),
        }
        times, scores = alternating(runs, args.repeats, device=device, progress=True)
        fixed_times, fixed_scores = None, None
        if args.fixed_rounds:
            few = images[: args.fixed_n]
            fixed_runs = {
                "ours": lambda: score_ours(few, extractor, weights, args.fixed_n, device),
                "ours (incl. build)": lambda: score_ours(few, None, weights, args.fixed_n, device),
                "torch-fidelity": lambda: score_theirs(few, weights, args.fixed_n, device),
            }
            fixed_times, fixed_scores = alternating(fixed_runs, args.fixed_rounds, device=device, progress=True)

    all_scores = [s for values in scores.values() for s in values]
    meta["max_score_difference"] = max(all_scores) - min(all_scores)
    if fixed_scores:
        few_scores = [s for values in fixed_scores.values() for s in values]
        meta["max_score_difference_fixed_n"] = max(few_scores) - min(few_scores)
    meta["load_average_end"] = load_average()
    report = {"meta": meta, "times_s": times, "scores": scores, "build_s": build_times,
              "fixed_cost_times_s": fixed_times}
    table = markdown(report)
    print(table)
    write_results(report, args.output, table,
                  extra=f"torch {meta['torch']}, torch-fidelity {meta['torch_fidelity']}")
    if meta["max_score_difference"] > 1e-6 or meta["max_logit_difference"] > 1e-4:
        print("the implementations disagree on the logits or the score: they did not compute the same thing",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
