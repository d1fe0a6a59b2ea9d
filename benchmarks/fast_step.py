"""Milliseconds per iteration of the paper's MNIST-setting semi-supervised step, from today's eager step to the
fused, graph-captured one.

    python benchmarks/fast_step.py --data-dir ../shared/data/fashion-mnist --device cuda \\
        --output docs/results/fast_step_cuda.json

The step is the fashion_mnist_ssl recipe's (``recipes/semi_supervised.py``): the paper's MNIST networks, batches
of 100 labeled / 100 unlabeled / 100 unlabeled images, ReferenceAdam, mean-squared feature matching, the
evaluation average, the non-finite guard and running averages of the outputs, through Ignite's ``Engine.run``.
Variants (``--variants``):

- ``host``: the step as recipes ran it before the fast paths: SemiSupervisedLoader (a host Dataset, one image at a
  time, copied to the device), outputs copied to the host at every iteration, the average as an attached handler;
- ``device``: the training set on the device (DeviceSemiSupervisedLoader), outputs left there;
- ``graph``: ``device`` with the whole iteration (both players, both optimizers, the average) captured in a CUDA
  graph (CUDA only);
- ``graph+compile``: ``graph`` with the models compiled by ``torch.compile`` (CUDA only);
- ``bare``: ``device``'s step function called on one fixed batch, without the engine, loader or handlers (what a
  recipe's iteration is compared with: goal 4's "at most 1.1x the bare step").

Each variant runs one untimed round of ``--iterations`` iterations (compilation and capture happen there; its time
is reported as the warm-up), then ``--rounds`` timed ones, and the median is reported. On CUDA, the kernels of one iteration are counted with ``torch.profiler``; on the CPU, the operators.
Without ``--data-dir`` the images are random bytes of Fashion-MNIST's shapes (the compute does not depend on them).
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from _harness import command_line, device_info, select_device, synchronize, utc_now, write_results
from ignite_igan.data import SemiSupervisedLoader, balanced_labeled_subset, dataset_labels
from ignite_igan.datasets import ScaledImages, load_dataset
from ignite_igan.device_data import DeviceSemiSupervisedLoader
from ignite_igan.engines import create_semi_supervised_trainer, outputs_on_device, outputs_to_floats
from ignite_igan.handlers import EvaluationAveraging
from ignite_igan.models import mnist_discriminator, mnist_generator
from ignite_igan.nn import data_dependent_init
from ignite_igan.optim import ReferenceAdam
from ignite_igan.experiments.runs import attach_nonfinite_guard, attach_progress

VARIANTS = ("host", "device", "graph", "graph+compile", "bare")
OUTPUTS = ["loss_labeled", "loss_unlabeled", "loss_generator", "train_error"]


def training_set(data_dir: Optional[Path]) -> ScaledImages:
    if data_dir is not None:
        return load_dataset("fashion_mnist", data_dir, train=True)
    images = torch.randint(0, 256, (60_000, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return ScaledImages(images, torch.arange(60_000) % 10, offset=0.0, scale=255.0, flatten=True)


def build(variant: str, train_set: ScaledImages, device: torch.device):
    """The trainer and loader of ``variant``, seeded as the recipe's seed 1."""
    graph = variant.startswith("graph")
    torch.manual_seed(1)
    labeled = balanced_labeled_subset(dataset_labels(train_set), 10, seed=1)
    generator, discriminator = mnist_generator().to(device), mnist_discriminator().to(device)
    init = torch.stack([train_set[i][0] for i in range(500)]).to(device)
    data_dependent_init(discriminator, init)
    d_opt = ReferenceAdam(discriminator.parameters(), lr=3e-3, betas=(0.5, 0.999), capturable=graph)
    g_opt = ReferenceAdam(generator.parameters(), lr=3e-3, betas=(0.5, 0.999), capturable=graph)
    averaging = EvaluationAveraging(discriminator, rate=1e-4, check_finite=False)  # as the recipes: the guard checks
    on_device = variant != "host"
    if on_device:
        loader = DeviceSemiSupervisedLoader(train_set, labeled, batch_size=100, seed=1, device=device, num_classes=10)
    else:
        loader = SemiSupervisedLoader(train_set, labeled, batch_size=100, seed=1, pin_memory=device.type == "cuda")
    trainer = create_semi_supervised_trainer(
        generator, discriminator, d_opt, g_opt, feature_matching_distance="mean_squared", device=device,
        output_transform=outputs_on_device if on_device else outputs_to_floats, check_labels=not on_device,
        after_step=[averaging.step_update] if graph else [], cuda_graph=graph, compile=variant == "graph+compile",
    )
    attach_nonfinite_guard(trainer)
    if not graph:
        averaging.attach(trainer)
    attach_progress(trainer, OUTPUTS, stream=io.StringIO())  # the recipes' running averages; lines unread
    return trainer, loader


def count_kernels(run_one: Callable[[], None], device: torch.device, iterations: int = 3) -> Dict[str, float]:
    """Kernels (CUDA) or operators (CPU) per iteration, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(iterations):
            run_one()
        synchronize(device)
    events = prof.events()
    kernels = [e for e in events if getattr(e, "device_type", None) is not None
               and str(e.device_type).endswith("CUDA") and "Memcpy" not in e.name and "Memset" not in e.name]
    operators = [e for e in events if e.name.startswith("aten::")]
    top_level = [e for e in operators if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    return {"kernels_per_iteration": len(kernels) / iterations if device.type == "cuda" else None,
            "operators_per_iteration": len(operators) / iterations,
            "top_level_operators_per_iteration": len(top_level) / iterations,
            "graph_launches_per_iteration": sum(e.name == "cudaGraphLaunch" for e in events) / iterations}


def measure(variant: str, train_set: ScaledImages, device: torch.device, args: argparse.Namespace) -> Dict[str, Any]:
    trainer, loader = build(variant, train_set, device)
    if variant == "bare":
        batch = next(iter(loader))
        step = trainer._process_function
        run_epoch: Callable[[], None] = lambda: [step(trainer, batch) for _ in range(args.iterations)]  # noqa: E731
    else:
        def run_epoch() -> None:  # the same run, one more epoch of --iterations iterations
            epoch = trainer.state.epoch if trainer.state.max_epochs else 0
            trainer.run(loader, max_epochs=epoch + 1, epoch_length=args.iterations)

    times = []
    for _ in range(1 + args.rounds):  # the first epoch is the warm-up: compilation and capture happen there
        synchronize(device)
        begin = time.perf_counter()
        run_epoch()
        synchronize(device)
        times.append(time.perf_counter() - begin)
    result = {"variant": variant, "seconds_per_iteration": statistics.median(times[1:]) / args.iterations,
              "rounds_s": times[1:], "warmup_s": times[0],
              "capture_s": list(getattr(trainer.state, "graph_capture_seconds", []) or [])}
    counts = count_kernels(run_epoch, device, iterations=1)
    result.update({k: v / args.iterations for k, v in counts.items() if v is not None})
    if variant != "bare":
        result["last_output"] = outputs_to_floats(trainer.state.output)
    return result


def markdown(report: Dict[str, Any]) -> str:
    lines = [f"# The MNIST-setting step, from eager to graph-captured ({report['device']['device']})", "",
             f"`{report['command']}`, {report['date']}; medians of {report['rounds']} rounds of "
             f"{report['iterations']} iterations.", "",
             "| variant | ms / iteration | 300 epochs (180,000 it.) | kernels / it. | operators / it. | warm-up s "
             "(compile, capture) |", "|---|---|---|---|---|---|"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error'][:80]} | | | | |")
            continue
        ms = 1000 * r["seconds_per_iteration"]
        kernels = "—" if r.get("kernels_per_iteration") is None else f"{r['kernels_per_iteration']:.0f}"
        lines.append(f"| {r['variant']} | {ms:.3f} | {180_000 * r['seconds_per_iteration'] / 60:.1f} min | {kernels} "
                     f"| {r['operators_per_iteration']:.0f} | {r['warmup_s']:.1f} "
                     f"({', '.join(f'{c:.2f}' for c in r['capture_s']) or '—'}) |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None, help="Fashion-MNIST (default: random bytes)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--variants", default=None, help=f"comma-separated, of {', '.join(VARIANTS)} (default: "
                        "all that the device runs)")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--output", type=Path, default=None, help="JSON results (Markdown beside it)")
    args = parser.parse_args(argv)
    device = select_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"), args.threads)
    variants = [v for v in (args.variants.split(",") if args.variants else VARIANTS)
                if device.type == "cuda" or not v.startswith("graph")]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}, expected some of {list(VARIANTS)}")
    train_set = training_set(args.data_dir)
    report: Dict[str, Any] = {"command": command_line(__file__, argv), "date": utc_now(), "device": device_info(device),
                              "iterations": args.iterations, "rounds": args.rounds, "results": []}
    for variant in variants:
        try:
            result = measure(variant, train_set, device, args)
        except Exception as error:  # recorded, and the other variants go on
            result = {"variant": variant, "error": f"{type(error).__name__}: {error}"}
        report["results"].append(result)
        print(result, flush=True)
        if args.output is not None:
            write_results(report, args.output, markdown(report), header=False)
    print(markdown(report))


if __name__ == "__main__":
    sys.exit(main())
