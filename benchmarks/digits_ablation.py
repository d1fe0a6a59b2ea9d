"""Benchmark 3: the paper's Inception-table ablations, scored on digits with a digits classifier.

The paper's Table 3 scores CIFAR-10 samples with Inception. On scikit-learn's 8x8 digits, which run here without a
download, the network of the score is a digits classifier trained on the full training set (1,297 digits), the
classifier-based score used for MNIST in the literature:

1. :func:`ignite_igan.models.train_digits_classifier` trains the classifier (seed 0); its test
   accuracy on the 500 test digits is reported.
2. The score of real digits with the same protocol: 5,000 draws (with replacement, seeded) from the test set and
   from the training set, 10 contiguous splits, mean ± std of the split scores.
3. For every column of the table (``sample_quality.ABLATIONS``) and every seed, one run of the digits setting of
   the sample-quality experiment (``python recipes/digits_samples.py``, its defaults:
   60 epochs of 12 steps, 3 generator steps per discriminator step, lr 3e-3 decaying over the last 20 epochs),
   scored every 10 epochs on 5,000 samples in 10 splits with the classifier above. The table reports the final
   score, mean ± std (ddof 1) over seeds, the per-seed values, and the mean within-run split std.
4. A PNG of 100 samples of the "our methods" and "-MBF" generators of the first seed.

Runs go in ``--processes`` parallel subprocesses of one thread each. Nothing is tuned on the outcome: the digits
setting's defaults were fixed before this benchmark was run, and the numbers are whatever comes out.

Run from the repository root::

    python benchmarks/digits_ablation.py --output docs/results/digits_ablation.json

The JSON holds every raw number (each run's score history and summary); the Markdown table is printed and written
next to it (same name, ``.md``), the PNG too (``.png``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from _harness import ROOT, command_line, cpu_model, utc_now, write_results  # benchmarks/ is on sys.path
from ignite_igan.datasets import load_dataset
from ignite_igan.metrics import ClassifierExtractor, InceptionScore
from ignite_igan.models import train_digits_classifier

sys.path.insert(0, str(ROOT / "recipes"))
import sample_quality as sq  # noqa: E402  (recipes/sample_quality.py)

SWITCH_TEXT = {name: " ".join(flags) or "(defaults)" for name, flags in sq.ABLATIONS.items()}


def real_scores(classifier: torch.nn.Module, samples: int, splits: int, seed: int) -> Dict[str, Dict[str, float]]:
    """The score of real digits: ``samples`` seeded draws with replacement from each split of the data set."""
    scores = {}
    for name, train in (("test", False), ("train", True)):
        dataset = load_dataset("digits", train=train)
        images = (dataset.images.float() / 16.0).flatten(1)
        draw = torch.randint(len(images), (samples,), generator=torch.Generator().manual_seed(seed))
        metric = InceptionScore(
            ClassifierExtractor(classifier, input_range="[0,1]", num_logits=10), input_range="[0,1]", splits=splits
        )
        metric.update(images[draw])
        scores[name] = metric.compute()
    return scores


def run_all(jobs: List[Tuple[str, int, List[str]]], processes: int, work: Path) -> Dict[Tuple[str, int], float]:
    """Runs the subprocesses, ``processes`` at a time; returns each run's wall time."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    pending, running, walls = list(jobs), {}, {}
    while pending or running:
        while pending and len(running) < processes:
            name, seed, command = pending.pop(0)
            log = open(work / f"{name}_{seed}.log", "w")
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            running[(name, seed)] = (process, log, time.time())
            print(f"started {name} seed {seed}", flush=True)
        time.sleep(0.5)
        for key, (process, log, started) in list(running.items()):
            if process.poll() is not None:
                log.close()
                walls[key] = time.time() - started
                del running[key]
                if process.returncode != 0:
                    raise RuntimeError(f"run {key} failed with exit code {process.returncode}; see {log.name}")
                print(f"finished {key[0]} seed {key[1]} in {walls[key]:.0f} s", flush=True)
    return walls


def sample_grid(run_dirs: Dict[str, Path], epochs: int, path: Path) -> None:
    """One PNG: 100 samples (fixed noise) of each listed run's final generator, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    # squeeze=False: a single run still gives a row of axes to iterate over.
    figure, axes = plt.subplots(1, len(run_dirs), figsize=(3.2 * len(run_dirs), 3.5), squeeze=False)
    for axis, (title, run_dir) in zip(axes[0], run_dirs.items()):
        state = torch.load(run_dir / "checkpoints" / f"checkpoint_{epochs}.pt", weights_only=True)
        normalization = "virtual" if "reference_noise" in state["generator"] else "batch"
        generator = sq.SETTINGS["digits_samples"].generator(normalization=normalization)
        generator.load_state_dict(state["generator"])
        with torch.no_grad():
            images = generator(generator.sample_noise(100, generator=torch.Generator().manual_seed(0)))
        grid = make_grid(images.view(-1, 1, 8, 8), nrow=10, padding=1, pad_value=1.0)
        axis.imshow(grid[0].numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        axis.set_title(title)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def markdown(result: Dict[str, Any]) -> str:
    config = result["config"]
    lines = [
        f"Digits sample quality, {len(config['seeds'])} seeds × {len(config['settings'])} settings, "
        f"{config['epochs']} epochs each; score of {config['is_samples']:,} samples in {config['is_splits']} splits "
        f"with a digits classifier (test accuracy {100 * result['classifier']['test_accuracy']:.1f} %).",
        "",
        "| column | switches | paper (CIFAR-10, Inception) | digits score, final epoch (mean ± std over seeds) "
        "| per seed | mean split std |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("test", "train"):
        real = result["real_data"][name]
        paper = sq.PAPER_INCEPTION_SCORES["real"] if name == "test" else ""
        lines.append(
            f"| real digits ({name} set, {config['is_samples']:,} draws) | | {paper} | {real['mean']:.2f} | | "
            f"{real['std']:.2f} |"
        )
    for name in config["settings"]:
        row = result["settings"][name]
        per_seed = ", ".join(f"{v:.2f}" for v in row["final_scores"])
        lines.append(
            f"| {sq.PAPER_COLUMNS[name]} | `{SWITCH_TEXT[name]}` | {sq.PAPER_INCEPTION_SCORES[name]} | "
            f"{row['mean']:.2f} ± {row['std']:.2f} | {per_seed} | {row['mean_split_std']:.2f} |"
        )
    lines += [
        "",
        f"Total CPU time {result['cpu_seconds'] / 60:.1f} min, wall {result['wall_seconds'] / 60:.1f} min "
        f"({config['processes']} processes of one thread).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="training seeds (--seed of each run)")
    parser.add_argument("--settings", nargs="+", default=list(sq.ABLATIONS), choices=list(sq.ABLATIONS))
    parser.add_argument("--epochs", type=int, default=sq.SETTINGS["digits_samples"].epochs, help="epochs per run")
    parser.add_argument("--is-samples", type=int, default=5000)
    parser.add_argument("--is-splits", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2, help="runs at once (one thread each)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / "digits_ablation.json")
    parser.add_argument("--work-dir", type=Path, default=None, help="run directories (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.epochs < 3:
        parser.error(f"--epochs: expected at least 3, got {args.epochs}")
    torch.set_num_threads(1)
    started, cpu_started = time.time(), time.process_time()
    children_started = resource.getrusage(resource.RUSAGE_CHILDREN)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="digits_ablation_"))
    work.mkdir(parents=True, exist_ok=True)

    classifier, accuracy = train_digits_classifier(seed=0)
    classifier_path = work / "digits_classifier.pt"
    torch.save(classifier.state_dict(), classifier_path)
    print(f"digits classifier: test accuracy {accuracy:.4f}", flush=True)
    real = real_scores(classifier, args.is_samples, args.is_splits, seed=0)

    decay = max(1, args.epochs // 3)
    jobs = []
    for seed in args.seeds:  # seeds outermost, so an interrupted benchmark has whole seeds
        for name in args.settings:
            command = [
                sys.executable, str(ROOT / "recipes" / "digits_samples.py"), *sq.ABLATIONS[name],
                "--seed", str(seed), "--epochs", str(args.epochs), "--lr-decay-epochs", str(decay),
                "--is-every", "10", "--is-samples", str(args.is_samples), "--is-splits", str(args.is_splits),
                "--is-classifier", str(classifier_path), "--output-dir", str(work / f"{name}_{seed}"), "--no-progress",
            ]
            jobs.append((name, seed, command))
    walls = run_all(jobs, args.processes, work)

    settings: Dict[str, Any] = {}
    for name in args.settings:
        runs = []
        for seed in args.seeds:
            summary = json.loads((work / f"{name}_{seed}" / "summary.json").read_text())
            metrics = summary["metrics"]
            runs.append(
                {
                    "seed": seed,
                    "final_score": metrics["inception_score"],
                    "final_split_std": metrics["inception_score_std"],
                    "history": metrics["inception_history"],
                    "techniques": metrics["techniques"],
                    "final_train_outputs": metrics["final_train_outputs"],
                    "wall_seconds": walls[(name, seed)],
                }
            )
        finals = [run["final_score"] for run in runs]
        settings[name] = {
            "paper_column": sq.PAPER_COLUMNS[name],
            "switches": sq.ABLATIONS[name],
            "paper_cifar10": sq.PAPER_INCEPTION_SCORES[name],
            "final_scores": finals,
            "mean": statistics.mean(finals),
            "std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "mean_split_std": statistics.mean(run["final_split_std"] for run in runs),
            "runs": runs,
        }

    png = args.output.with_suffix(".png")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    grid_runs = {
        sq.PAPER_COLUMNS[name]: work / f"{name}_{args.seeds[0]}"
        for name in ("our_methods", "no_minibatch_features")
        if name in args.settings
    }
    if grid_runs:
        sample_grid(grid_runs, args.epochs, png)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (time.process_time() - cpu_started) + (children.ru_utime - children_started.ru_utime) + (
        children.ru_stime - children_started.ru_stime
    )
    result = {
        "benchmark": "digits_ablation",
        "command": command_line(__file__, argv),
        "date": utc_now("%Y-%m-%d"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "config": {
            "seeds": args.seeds,
            "settings": args.settings,
            "epochs": args.epochs,
            "lr_decay_epochs": decay,
            "is_samples": args.is_samples,
            "is_splits": args.is_splits,
            "processes": args.processes,
            "digits_minibatch_kernels": sq.DIGITS.minibatch_kernels,
            "historical_averaging_weight": sq.HISTORICAL_WEIGHT,
            "real_target": sq.REAL_TARGET,
        },
        "classifier": {"seed": 0, "test_accuracy": accuracy, "test_examples": 500},
        "real_data": real,
        "settings": settings,
        "cpu_seconds": cpu,
        "wall_seconds": time.time() - started,
        "sample_grid": png.name if grid_runs else None,
    }
    table = markdown(result)
    write_results(result, args.output, table, header=False)
    print(table)
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
