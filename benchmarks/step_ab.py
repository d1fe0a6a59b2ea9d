"""One checkout's training iteration against another's, timed side by side (before and after a redesign).

The iteration is the Fashion-MNIST recipe's (the paper's MNIST networks): :func:`~ignite_igan.models.mnist_generator`
and :func:`~ignite_igan.models.mnist_discriminator`, :class:`~ignite_igan.optim.ReferenceAdam` (lr 3e-3, betas
(0.5, 0.999)) for both players, :func:`~ignite_igan.engines.create_semi_supervised_trainer` with mean-squared feature
matching and :class:`~ignite_igan.handlers.EvaluationAveraging` (rate 1e-4) attached after every iteration, on
batches of 100 labeled / 100 unlabeled / 100 unlabeled images (random images of MNIST's shape: the speed does not
depend on the pixels). Only names that every release of the package has are used, so both checkouts run the same
script.

Each round runs every checkout once, in a fresh process with one thread (``PYTHONPATH`` set to the checkout),
alternating which goes first; a process builds the trainer, runs ``--warmup`` iterations, then times
``--iterations`` iterations of ``trainer.run``. The result is each checkout's median milliseconds per iteration and
the median over rounds of the per-round ratio to the first checkout (paired: both ran in the same minute of a noisy
shared machine). From the repository root, against a checkout of the previous commit::

    git worktree add ../before HEAD~1
    python benchmarks/step_ab.py --checkouts ../before,. --rounds 9 --output docs/results/step_ab.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import command_line, machine_info, utc_now, write_results  # noqa: E402

WORKER = r"""
import sys, time, torch
from ignite.engine import Events
from ignite_igan import models
from ignite_igan.engines import create_semi_supervised_trainer
from ignite_igan.handlers import EvaluationAveraging
from ignite_igan.optim import ReferenceAdam

warmup, iterations = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(1)
torch.manual_seed(0)
generator, discriminator = models.mnist_generator(), models.mnist_discriminator()
d_opt = ReferenceAdam(discriminator.parameters(), lr=3e-3, betas=(0.5, 0.999))
g_opt = ReferenceAdam(generator.parameters(), lr=3e-3, betas=(0.5, 0.999))
trainer = create_semi_supervised_trainer(generator, discriminator, d_opt, g_opt,
                                         feature_matching_distance="mean_squared")
EvaluationAveraging(discriminator, rate=1e-4).attach(trainer)
batch = (torch.rand(100, 784), torch.arange(100) % 10, torch.rand(100, 784), torch.rand(100, 784))
trainer.run([batch] * warmup, max_epochs=1)
start = time.perf_counter()
trainer.run([batch] * iterations, max_epochs=1)
print(1000 * (time.perf_counter() - start) / iterations)
"""


def time_checkout(checkout: Path, warmup: int, iterations: int) -> float:
    """Milliseconds per iteration of one fresh process importing ``ignite_igan`` from ``checkout``."""
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", WORKER, str(warmup), str(iterations)], env=env, cwd=checkout,
                          check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def compare(checkouts: Sequence[Path], rounds: int, warmup: int, iterations: int) -> Dict[str, Any]:
    times: List[List[float]] = [[] for _ in checkouts]
    order = list(range(len(checkouts)))
    for _ in range(rounds):
        for index in order:
            times[index].append(time_checkout(checkouts[index], warmup, iterations))
        order.reverse()
    ratios = [[t / base for t, base in zip(times[i], times[0])] for i in range(len(checkouts))]
    return {
        "checkouts": [str(c) for c in checkouts],
        "ms_per_iteration": times,
        "median_ms": [statistics.median(t) for t in times],
        "median_ratio_to_first": [statistics.median(r) for r in ratios],
    }


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkouts", required=True, help="comma-separated checkouts; the first is the reference")
    parser.add_argument("--rounds", type=int, default=9, help="rounds (default: 9)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations per process (default: 5)")
    parser.add_argument("--iterations", type=int, default=40, help="timed iterations per process (default: 40)")
    parser.add_argument("--output", type=Path, help="write the JSON here and a Markdown table beside it")
    args = parser.parse_args(argv)
    checkouts = [Path(c).resolve() for c in args.checkouts.split(",")]
    result = compare(checkouts, args.rounds, args.warmup, args.iterations)
    result.update(machine=machine_info(), date=utc_now(), command=command_line(__file__, argv))
    lines = ["| checkout | median ms / iteration | median paired ratio |", "|---|---:|---:|"]
    lines += [f"| {c} | {m:.2f} | {r:.3f} |" for c, m, r in
              zip(args.checkouts.split(","), result["median_ms"], result["median_ratio_to_first"])]
    print("\n".join(lines))
    write_results(result, args.output, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
