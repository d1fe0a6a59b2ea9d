"""The paper's CIFAR-10 training steps and a 50,000-sample Inception Score on a GPU.

Written to be run in one command on a machine with one GPU (an H200 in the issue)::

    python benchmarks/gpu_paper_step.py --output docs/results/gpu_paper_step.json

It measures, with **synthetic tensors of the right shapes** (no data set is needed; the compute does not depend
on the pixel values):

1. **Semi-supervised step** (paper §5, the CIFAR-10 feature-matching script): ``create_semi_supervised_trainer``
   with :func:`~ignite_igan.models.cifar10_fm_discriminator` and :func:`~ignite_igan.models.cifar10_generator`
   (batch norm), batches of 100 labeled / 100 unlabeled / 100 unlabeled images of 3x32x32, mean-absolute feature
   matching, one generator step, :class:`~ignite_igan.optim.ReferenceAdam`.
2. **Sample-quality step** (paper §3-4, the CIFAR-10 "our methods" setting of ``recipes/cifar10_samples.py``):
   ``create_gan_trainer`` with :func:`~ignite_igan.models.cifar10_md_discriminator` (minibatch discrimination, 10
   classes, conditional with class weight 2), the virtual-batch-norm generator with a reference batch of 100,
   one-sided label smoothing (target 0.9), the saturating minimax generator loss and 3 generator steps per
   discriminator step; batches of 100 images with labels.

each in ``--modes``: ``fp32`` (float32; PyTorch's default TF32 settings, recorded in the JSON), ``bf16`` (the
trainers' ``amp="bf16"``: bfloat16 autocast), ``compile`` (the trainers' ``compile=True``: ``torch.compile`` of the
models' forward passes), ``fp32-nosync`` (float32 with ``output_transform=lambda out: out``: no per-iteration copy
of the step's numbers to the host, so no host-device synchronization; the difference to ``fp32`` is what that copy
costs) and optionally ``compile+bf16``. Each runs ``--warmup`` untimed iterations (compilation
happens there and is timed separately), then ``--iterations`` timed ones through ``trainer.run`` (the default
``output_transform`` copies the step's numbers to the host every iteration, as in a real run). Reported: iterations
per second, milliseconds per iteration, the time the paper's 600,000 iterations (1,200 epochs of 500 batches) would
take, the warm-up time, the peak GPU memory, and for ``torch.compile`` the graphs compiled and graph breaks (a graph
compiled during the timed iterations is flagged in the table).

3. **Inception Score of 50,000 generated images, end to end**: :class:`~ignite_igan.metrics.GeneratorEvaluator`
   draws 50,000 noise vectors, the VBN generator makes 32x32 images in batches of ``--is-batch-size`` (the recipe's
   100), and :class:`~ignite_igan.metrics.InceptionScore` scores them with
   :class:`~ignite_igan.metrics.TFInceptionV3` (the paper's network; here with **random weights** of the right
   shapes, loaded from a temporary file through the same checked path; timing does not need the real weights).

Goals: the full paper run (600,000 iterations) in under one hour on one H200, i.e. at least 167
iterations per second; 50,000-sample IS in under a minute.

``--quick`` runs everything with tiny counts and batches (to check the script, e.g. on a CPU); its numbers mean
nothing. Results are written after every measurement, so a run cut short keeps what it measured; a mode that fails
(e.g. ``torch.compile`` on an unsupported setup) is recorded with its error and the others go on.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from _harness import (  # first: it puts the repository root on sys.path (benchmarks/ is there already)
    command_line, device_info, select_device, synchronize, utc_now, write_results,
)
from ignite_igan.engines import create_gan_trainer, create_semi_supervised_trainer
from ignite_igan.metrics import FID, GeneratorEvaluator, InceptionScore, SharedPass, TFInceptionV3
from ignite_igan.models import cifar10_fm_discriminator, cifar10_generator, cifar10_md_discriminator
from ignite_igan.nn import data_dependent_init
from ignite_igan.optim import ReferenceAdam
from inception_throughput import random_inception_state_dict  # benchmarks/inception_throughput.py

PAPER_ITERATIONS = 600_000  # 1,200 epochs x 500 batches of 100 (CIFAR-10's 50,000 training images)
MODES = {
    "fp32": dict(amp=False, compile=False),
    "bf16": dict(amp="bf16", compile=False),
    "compile": dict(amp=False, compile=True),
    "compile+bf16": dict(amp="bf16", compile=True),
    # float32 without the per-iteration copy of the step's numbers to the host (no host-device synchronization):
    # what that copy costs.
    "fp32-nosync": dict(amp=False, compile=False, output_transform=lambda outputs: outputs),
    # The whole iteration captured in a CUDA graph (semi-supervised step only; capturable ReferenceAdam, outputs
    # left on the device), alone and with TF32 matrix products, bf16 autocast or compiled models.
    "graph": dict(amp=False, compile=False, cuda_graph=True, output_transform=lambda outputs: outputs),
    "graph+tf32": dict(amp=False, compile=False, cuda_graph=True, tf32=True, output_transform=lambda outputs: outputs),
    "graph+bf16": dict(amp="bf16", compile=False, cuda_graph=True, output_transform=lambda outputs: outputs),
    "graph+compile": dict(amp=False, compile=True, cuda_graph=True, output_transform=lambda outputs: outputs),
    "graph+compile+tf32": dict(amp=False, compile=True, cuda_graph=True, tf32=True,
                               output_transform=lambda outputs: outputs),
}
STEPS = ("semi-supervised", "sample-quality")


def images(n: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, 3, 32, 32, generator=generator) * 2 - 1).to(device)


def labels(n: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 10, (n,), generator=generator).to(device)


# --------------------------------------------------------------------------------------------------------------
# The two training steps
# --------------------------------------------------------------------------------------------------------------
def build_step(step: str, mode: str, args: argparse.Namespace, device: torch.device) -> Tuple[Any, List[Any]]:
    """The trainer for ``step`` in ``mode`` and one (synthetic) batch for it."""
    torch.manual_seed(args.seed)
    data_rng = torch.Generator().manual_seed(args.seed)
    b = args.batch_size
    options = dict(MODES[mode])
    options.pop("tf32", None)  # set around the measurement
    graph = options.get("cuda_graph", False)
    if graph and step != "semi-supervised":
        raise ValueError("cuda_graph is an option of the semi-supervised trainer only")
    if step == "semi-supervised":
        generator = cifar10_generator("batch").to(device)
        discriminator = cifar10_fm_discriminator().to(device)
        data_dependent_init(generator, generator.sample_noise(b, device=device))
        data_dependent_init(discriminator, images(b, device, data_rng))
        d_opt = ReferenceAdam(discriminator.parameters(), lr=3e-4, betas=(0.5, 0.999), capturable=graph)
        g_opt = ReferenceAdam(generator.parameters(), lr=3e-4, betas=(0.5, 0.999), capturable=graph)
        trainer = create_semi_supervised_trainer(
            generator, discriminator, d_opt, g_opt, feature_matching_distance="mean_absolute", device=device,
            **options,
        )
        batch = (images(b, device, data_rng), labels(b, device, data_rng), images(b, device, data_rng),
                 images(b, device, data_rng))
    else:
        generator = cifar10_generator("virtual").to(device)
        discriminator = cifar10_md_discriminator(num_classes=10).to(device)
        generator.set_reference(generator.sample_noise(args.reference_size, device=device))
        data_dependent_init(generator, generator.sample_noise(b, device=device))
        data_dependent_init(discriminator, images(b, device, data_rng))
        d_opt = ReferenceAdam(discriminator.parameters(), lr=3e-4, betas=(0.5, 0.999))
        g_opt = ReferenceAdam(generator.parameters(), lr=3e-4, betas=(0.5, 0.999))
        trainer = create_gan_trainer(
            generator, discriminator, d_opt, g_opt, generator_loss="minimax", generator_steps=3,
            real_target=0.9, conditional=True, class_weight=2.0, device=device, **options,
        )
        batch = (images(b, device, data_rng), labels(b, device, data_rng))
    return trainer, [batch]


def _dynamo_counts() -> Dict[str, int]:
    from torch._dynamo.utils import counters

    return {"unique_graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values()))}


def measure_step(step: str, mode: str, args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    tf32 = MODES[mode].get("tf32", False)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if tf32:  # other modes keep the settings the script runs with (recorded in the JSON)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        return _measure_step(step, mode, args, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _measure_step(step: str, mode: str, args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    trainer, data = build_step(step, mode, args, device)
    before = _dynamo_counts()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    trainer.run(data * args.warmup, max_epochs=1)
    synchronize(device)
    warmup_s = time.perf_counter() - start
    after_warmup = _dynamo_counts()
    start = time.perf_counter()
    trainer.run(data * args.iterations, max_epochs=1)
    synchronize(device)
    elapsed = time.perf_counter() - start
    per_iteration = elapsed / args.iterations
    after_timed = _dynamo_counts()
    output = {name: float(value) for name, value in trainer.state.output.items()}
    return {
        "step": step,
        "mode": mode,
        "iterations": args.iterations,
        "timed_s": elapsed,
        "seconds_per_iteration": per_iteration,
        "iterations_per_second": 1.0 / per_iteration,
        "paper_run_hours": PAPER_ITERATIONS * per_iteration / 3600.0,
        "warmup_iterations": args.warmup,
        "warmup_s": warmup_s,
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
        "compiled_graphs_in_warmup": after_warmup["unique_graphs"] - before["unique_graphs"],
        "graph_breaks_in_warmup": after_warmup["graph_breaks"] - before["graph_breaks"],
        "recompiled_graphs_in_timed_run": after_timed["unique_graphs"] - after_warmup["unique_graphs"],
        "last_output": output,
        "finite": all(v == v and abs(v) != float("inf") for v in output.values()),
    }


# --------------------------------------------------------------------------------------------------------------
# Inception Score of generated images
# --------------------------------------------------------------------------------------------------------------
def random_inception_weights(directory: Path, seed: int) -> Tuple[Path, str]:
    """A weights file with the shapes of the paper's network and random values, and its SHA-256."""
    path = directory / "weights-inception-random.pth"
    torch.save(random_inception_state_dict(seed), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def measure_scores(args: argparse.Namespace, device: torch.device, with_fid: bool) -> Dict[str, Any]:
    """IS (and with ``with_fid`` FID) of ``--is-samples`` generated images in one ``GeneratorEvaluator`` run.

    What a user writes: :class:`~ignite_igan.metrics.InceptionScore` (and :class:`~ignite_igan.metrics.FID` on the
    same network: each generated batch goes through it once for both, FID against precomputed real statistics,
    ``real=(mu, sigma)``, here random positive definite ones of the right size). Timed from the first noise vector
    to the numbers.
    """
    torch.manual_seed(args.seed)
    generator = cifar10_generator("virtual").to(device)
    generator.set_reference(generator.sample_noise(args.reference_size, device=device))
    data_dependent_init(generator, generator.sample_noise(args.batch_size, device=device))
    with tempfile.TemporaryDirectory() as tmp:
        path, digest = random_inception_weights(Path(tmp), args.seed)
        start = time.perf_counter()
        extractor = TFInceptionV3(weights_path=path, sha256=digest).to(device)
        synchronize(device)
        build_s = time.perf_counter() - start
    rng = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    a = torch.randn(2048, 2048, generator=rng, dtype=torch.float64)
    real = (torch.randn(2048, generator=rng, dtype=torch.float64), a @ a.T / 2048)

    def evaluate(n: int) -> Tuple[Dict[str, Any], float]:
        shared = SharedPass(extractor)  # one Inception pass per batch for IS and FID
        metrics = {"is": InceptionScore(shared, input_range="[-1,1]", splits=10, device=device)}
        if with_fid:
            metrics["fid"] = FID(shared, input_range="[-1,1]", real=real, device=device)
        scorer = GeneratorEvaluator(generator, metrics, n_samples=n, batch_size=args.is_batch_size, seed=0,
                                    mode="eval")
        synchronize(device)
        begin = time.perf_counter()
        result = scorer.run()
        synchronize(device)
        return result, time.perf_counter() - begin

    _, warmup_s = evaluate(max(10, min(args.is_samples, 2 * args.is_batch_size)))
    result, elapsed = evaluate(args.is_samples)
    report = {
        "n_samples": args.is_samples,
        "batch_size": args.is_batch_size,
        "seconds": elapsed,
        "images_per_second": args.is_samples / elapsed,
        "extractor_build_s": build_s,
        "warmup_s": warmup_s,
        "inception_score_random_weights": result["is"],
        "inception_score_std": result["is_std"],
    }
    if with_fid:
        report["fid_random_weights"] = result["fid"]
    return report


# --------------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------------
def _hours(hours: float) -> str:
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.2f} h"


def markdown(report: Dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"Device: {meta['device']}; torch {meta['torch']}; batch {meta['batch_size']}"
        + (" (--quick: these numbers mean nothing)" if meta["quick"] else "")
        + f"; synthetic tensors of the right shapes; {meta['iterations']} timed iterations after {meta['warmup']} "
        f"warm-up; cudnn.allow_tf32={meta['cudnn_allow_tf32']}, matmul.allow_tf32={meta['matmul_allow_tf32']}, "
        f"cudnn.benchmark={meta['cudnn_benchmark']}.",
        "",
        "| step | mode | iterations/s | ms/iteration | 600,000 iterations | under 1 h? | warm-up (compile) "
        "| peak GPU memory |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for row in report["steps"]:
        if "error" in row:
            lines.append(f"| {row['step']} | {row['mode']} | failed: {row['error'].splitlines()[-1][:120]} | | | | | |")
            continue
        memory = f"{row['peak_memory_bytes'] / 2**30:.2f} GiB" if row["peak_memory_bytes"] is not None else "n/a"
        if row.get("recompiled_graphs_in_timed_run"):
            memory += f" ({row['recompiled_graphs_in_timed_run']} graphs compiled during the timed run!)"
        lines.append(
            f"| {row['step']} | {row['mode']} | {row['iterations_per_second']:.1f} | "
            f"{row['seconds_per_iteration'] * 1e3:.2f} | {_hours(row['paper_run_hours'])} | "
            f"{'yes' if row['paper_run_hours'] < 1 else 'no'} | {row['warmup_s']:.1f} s | {memory} |"
        )
    score = report.get("inception_score")
    if score:
        lines.append("")
        if "error" in score:
            lines.append(f"Inception Score: failed: {score['error'].splitlines()[-1][:200]}")
        else:
            lines.append(
                f"Inception Score of {score['n_samples']:,} generated 32x32 images, end to end (VBN generator in "
                f"batches of {score['batch_size']}, TFInceptionV3 with random weights): {score['seconds']:.1f} s "
                f"({score['images_per_second']:.0f} images/s; under a minute: "
                f"{'yes' if score['seconds'] < 60 else 'no'}); extractor build {score['extractor_build_s']:.1f} s, "
                f"warm-up {score['warmup_s']:.1f} s."
            )
    both = report.get("is_and_fid")
    if both:
        lines.append("")
        if "error" in both:
            lines.append(f"IS and FID: failed: {both['error'].splitlines()[-1][:200]}")
        else:
            lines.append(
                f"IS and FID of {both['n_samples']:,} generated 32x32 images in one GeneratorEvaluator run "
                f"(TFInceptionV3 with random weights, one pass per batch for both; FID against precomputed real "
                f"statistics): {both['seconds']:.1f} s (under a minute: {'yes' if both['seconds'] < 60 else 'no'})."
            )
    return "\n".join(lines) + "\n"


def write(report: Dict[str, Any], output: Optional[Path]) -> str:
    table = markdown(report)
    write_results(report, output, table)
    return table


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Iterations per second of the paper's CIFAR-10 semi-supervised and sample-quality steps "
        "(float32, bf16 autocast, torch.compile), the implied time of 600,000 iterations, and the time of a "
        "50,000-sample Inception Score, on synthetic tensors.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--modes", default="fp32,bf16,compile,fp32-nosync",
                        help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    parser.add_argument("--iterations", type=int, default=200, help="timed iterations per step and mode")
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations first (compilation happens here)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: the paper's 100)")
    parser.add_argument("--reference-size", type=int, default=None, help="VBN reference batch (default: the batch "
                        "size, as recipes/cifar10_samples.py)")
    parser.add_argument("--is-samples", type=int, default=None, help="samples of the Inception Score (default "
                        "50,000; 0 skips it)")
    parser.add_argument("--is-batch-size", type=int, default=None, help="generator batch while scoring (default "
                        "100, the recipe's)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="set torch.backends.cudnn.benchmark (the "
                        "recipes do not)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="tiny counts and batches, to check that the script "
                        "runs (e.g. on a CPU); the numbers mean nothing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the raw numbers, rewritten after "
                        "every measurement; the Markdown table goes next to it with the suffix .md")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.warmup = min(args.iterations, 2), min(args.warmup, 1)
        args.batch_size = args.batch_size or 10
        args.is_samples = 20 if args.is_samples is None else args.is_samples
        args.is_batch_size = args.is_batch_size or 10
    args.batch_size = args.batch_size or 100
    args.reference_size = args.reference_size or args.batch_size
    args.is_samples = 50_000 if args.is_samples is None else args.is_samples
    args.is_batch_size = args.is_batch_size or 100
    args.modes_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.steps_list = [s.strip() for s in args.steps.split(",") if s.strip()]
    for mode in args.modes_list:
        if mode not in MODES:
            parser.error(f"--modes: unknown mode {mode!r}, expected some of {list(MODES)}")
    for step in args.steps_list:
        if step not in STEPS:
            parser.error(f"--steps: unknown step {step!r}, expected some of {list(STEPS)}")
    if args.iterations < 1 or args.warmup < 1:
        parser.error("--iterations and --warmup must be >= 1")
    if args.batch_size < 2 or args.reference_size < 1 or args.is_batch_size < 1 or args.is_samples < 0:
        parser.error("--batch-size must be >= 2, --reference-size and --is-batch-size >= 1, --is-samples >= 0")
    if 0 < args.is_samples < 10:
        parser.error(f"--is-samples must be 0 or >= 10 (10 splits), got {args.is_samples}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    device = select_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"), args.threads)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # as the recipes do on the CPU
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    meta = {
        "date": utc_now(),
        "command": command_line(__file__, argv),
        **device_info(device),
        "cuda": torch.version.cuda,
        "quick": args.quick,
        "batch_size": args.batch_size,
        "reference_size": args.reference_size,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "modes": args.modes_list,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "paper_iterations": PAPER_ITERATIONS,
        "data": "synthetic tensors of the right shapes (uniform images in [-1, 1], uniform labels)",
    }
    report: Dict[str, Any] = {"meta": meta, "steps": []}
    for step in args.steps_list:
        for mode in args.modes_list:
            print(f"{step}, {mode} ...", file=sys.stderr, flush=True)
            try:
                row = measure_step(step, mode, args, device)
            except Exception:  # noqa: BLE001 - one failing mode must not lose the others' numbers
                row = {"step": step, "mode": mode, "error": traceback.format_exc()}
                print(row["error"], file=sys.stderr)
            report["steps"].append(row)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            write(report, args.output)
    if args.is_samples:
        print(f"Inception Score of {args.is_samples} samples ...", file=sys.stderr, flush=True)
        try:
            report["inception_score"] = measure_scores(args, device, with_fid=False)
        except Exception:  # noqa: BLE001
            report["inception_score"] = {"error": traceback.format_exc()}
            print(report["inception_score"]["error"], file=sys.stderr)
        write(report, args.output)
        print("IS and FID of the same samples ...", file=sys.stderr, flush=True)
        try:
            report["is_and_fid"] = measure_scores(args, device, with_fid=True)
        except Exception:  # noqa: BLE001
            report["is_and_fid"] = {"error": traceback.format_exc()}
            print(report["is_and_fid"]["error"], file=sys.stderr)
    table = write(report, args.output)
    print(table)
    failed = [row for row in report["steps"] if "error" in row] + (
        [report["inception_score"]] if "error" in report.get("inception_score", {}) else []
    ) + ([report["is_and_fid"]] if "error" in report.get("is_and_fid", {}) else [])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
