"""Does the semi-supervised GAN beat classical baselines on real data at scale? Fashion-MNIST, 100 labels.

On Fashion-MNIST (70,000 real images through ``torchvision.datasets.FashionMNIST``; 60,000 training, 10,000 test),
with 100 labels (10 per class) and seeds ``s`` = 1, 2, 3 (labeled subset and initialization: ``--seed s
--seed-data s``, so every method sees the same labeled examples), four methods:

1. **GAN**: ``recipes/fashion_mnist_ssl.py``, the paper's MNIST setting (feature matching, the reference's networks,
   noise, learning rate 3e-3, batches of 100, evaluation average at rate 1e-4), for ``--epochs`` epochs of 600
   iterations. Scored with the averaged discriminator **after the last epoch**, never the best epoch; the test
   error after every epoch is kept as the curve.
2. **labeled only**: the same discriminator trained on the 100 labeled images alone for as many steps, with the
   same noise, init and averaging (the recipe's ``--baseline``).
3. **LabelSpreading** (``sklearn.semi_supervised.LabelSpreading``), kernel ``knn`` and kernel ``rbf``, each with its
   settings chosen by cross-validation on the labeled examples only (fold ``j`` holds out the ``j``-th labeled
   image of every class; the fewest held-out errors win, then the lower held-out log-loss, then grid order). The
   knn graph is built over all unlabeled images; the rbf kernel is dense (N² memory), so it runs over the labeled
   images plus a fixed random 10,000 of the unlabeled ones. Transductive fit, then ``predict`` on the test set.
4. **logistic regression** on the 100 labeled images (scikit-learn, ``C`` chosen by the same cross-validation).

**The regime study** repeats the GAN and LabelSpreading (knn) with pools of 2,000 and 8,000 unlabeled images
(``--unlabeled-examples``, the labeled ones included; seeds 1 and 2) for the same number of iterations as the
main runs, and one seed runs for ``--long-epochs`` epochs to show where the curve goes.

Every run is the recipe in a subprocess (one torch thread each, ``--jobs`` at a time) writing into ``--work-dir``;
a run whose ``summary.json`` exists is not run again, so the command can be repeated after an interruption. Run
from the repository root::

    python benchmarks/fashion_mnist_ssl.py --data-dir ../shared/data/fashion-mnist --jobs 2 \\
        --output docs/results/fashion_mnist_ssl.json

The JSON holds every raw number; the Markdown table goes next to it (``.md``) with a plot (``.png``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "fashion_mnist_ssl.py"
ITERATIONS_PER_EPOCH = 600  # 60,000 training images in batches of 100


def gan_run_name(seed: int, unlabeled: Optional[int], epochs: int) -> str:
    pool = "all" if unlabeled is None else str(unlabeled)
    return f"gan_seed{seed}_unl{pool}_ep{epochs}"


def gan_command(args: argparse.Namespace, seed: int, unlabeled: Optional[int], epochs: int, baseline: bool,
                eval_every: int) -> List[str]:
    """The recipe's command line for one GAN run (every flag not given is the recipe's default)."""
    command = [
        sys.executable, str(RECIPE), "--data-dir", str(args.data_dir),
        "--output-dir", str(args.work_dir / gan_run_name(seed, unlabeled, epochs)),
        "--seed", str(seed), "--seed-data", str(seed), "--epochs", str(epochs), "--eval-every", str(eval_every),
        "--threads", "1", "--no-progress", "--image-every", "6000",
    ]
    if unlabeled is not None:
        command += ["--unlabeled-examples", str(unlabeled)]
    command.append("--baseline" if baseline else "--no-baseline")
    return command


def gan_jobs(args: argparse.Namespace) -> List[List[str]]:
    """Every GAN run of the benchmark, in the order they are started."""
    iterations = args.epochs * ITERATIONS_PER_EPOCH
    jobs = [gan_command(args, seed, None, args.epochs, True, 1) for seed in args.seeds]
    for seed in args.seeds[:2]:
        for unlabeled in args.regime_sizes:
            per_epoch = unlabeled // 100
            epochs = iterations // per_epoch
            # An evaluation about every 1,200 iterations, at whole epochs.
            jobs.append(gan_command(args, seed, unlabeled, epochs, False, max(1, 1200 // per_epoch)))
    if args.long_epochs:
        jobs.append(gan_command(args, args.seeds[0], None, args.long_epochs, False, 2))
    return jobs


def run_job(command: List[str]) -> Dict[str, Any]:
    output = Path(command[command.index("--output-dir") + 1])
    if (output / "summary.json").is_file():
        return {"output": str(output), "skipped": True}
    output.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    started = time.time()
    with open(output / "run.log", "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return {"output": str(output), "returncode": code, "seconds": time.time() - started}


def run_gan_jobs(args: argparse.Namespace) -> None:
    jobs = gan_jobs(args)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for result in pool.map(run_job, jobs):
            print(json.dumps(result), flush=True)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "fashion-mnist",
                        help="the folder holding FashionMNIST/raw/")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "bench_fashion_mnist",
                        help="where the runs go; finished runs found there are reused")
    parser.add_argument("--output", type=Path, default=None, help="JSON results (Markdown and PNG next to it)")
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=20, help="epochs of 600 iterations of the main GAN runs")
    parser.add_argument("--regime-sizes", type=lambda s: [int(v) for v in s.split(",") if v], default=[2000, 8000],
                        help="unlabeled pool sizes of the regime study (the full 60,000 are the main runs)")
    parser.add_argument("--long-epochs", type=int, default=100, help="epochs of the one long run (0: none)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--stage", choices=["gan", "classical", "report", "all"], default="all")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.stage in ("gan", "all"):
        run_gan_jobs(args)


if __name__ == "__main__":
    main()
