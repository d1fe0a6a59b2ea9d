"""Benchmark 1: semi-supervised digits, the feature-matching GAN against two baselines.

On scikit-learn's digits with the package's fixed stratified split (``load_dataset("digits")``: 1,297 training and
500 test images, pixels / 16 in [0, 1]), for every number of labels and every seed ``s`` (labeled subset and
initialization both from ``s``: ``--seed s --seed-data s``), three methods see the same labeled examples:

1. **labeled only**: the digits discriminator trained on the labeled examples alone, for as many steps as the GAN
   run, with the same noise, init and evaluation average (the recipe's ``baseline_test_error``).
2. **LabelSpreading**: ``sklearn.semi_supervised.LabelSpreading``, transductive over the 1,297 training images (the
   labeled ones carry their label, the rest ``-1``), then ``predict`` on the 500 test images. Its kernel, width and
   clamping factor are chosen per run, without the test labels, by cross-validation on the labeled examples: fold
   ``j`` holds out the ``j``-th labeled example of every class (so every labeled example is held out once and each
   fold stays balanced), the other labeled examples and all unlabeled images are fitted, and the held-out
   examples are scored by their transductive labels. The grid (:data:`LS_GRID`) is ordered with scikit-learn's
   defaults first; the configuration with the fewest held-out errors wins, ties broken by the lower held-out
   log-loss, then by grid order. The two default configurations (rbf and knn) are also reported on their own.
3. **GAN**: the recipe ``recipes/digits_ssl.py`` with its defaults (feature matching, 200 epochs of 12 steps),
   scored with the evaluation-averaged discriminator after the last epoch (``test_error``); the test error of
   every epoch is kept in the JSON too.

Every GAN run is ``train`` of ``recipes/semi_supervised.py`` called in a worker process of a
``multiprocessing`` pool (``--workers``, spawn, one torch thread each, a fresh process per run), with its own
output directory in a temporary directory; the LabelSpreading runs go in the same pool after them.

Run from the repository root::

    python benchmarks/digits_ssl.py --output docs/results/digits_ssl.json

The JSON holds every raw number; the Markdown table is printed and written next to it (same name, ``.md``), with a
plot of test error against labels (``.png``). For diagnostic sweeps, ``--recipe-args`` passes flags to the recipe
(e.g. ``--recipe-args="--epochs 600"``), and ``--input-noise`` / ``--hidden-noise`` change the noise levels of the
digits discriminator (in the worker processes only; they are not recipe flags).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import multiprocessing
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from _harness import (  # first: it puts the repository root on sys.path (benchmarks/ is there already)
    ROOT, command_line, load_average, load_note, machine_info, utc_now, write_results,
)
from ignite_igan.experiments import cli
from ignite_igan.data import balanced_labeled_subset, dataset_labels
from ignite_igan.datasets import load_dataset

sys.path.insert(0, str(ROOT / "recipes"))
import semi_supervised  # noqa: E402  (recipes/semi_supervised.py)
from semi_supervised import build_parser, train  # noqa: E402

NUM_CLASSES = 10
MAX_ITER = 1000  # LabelSpreading's default of 30 iterations stops short of convergence for alpha 0.8

# LabelSpreading configurations searched by cross-validation on the labeled examples; sklearn's defaults first.
# The rbf widths bracket the default gamma = 20 (the median squared distance to the nearest training neighbour is
# about 1.1 on these [0, 1] pixels, so gamma 2..40 spans "many neighbours" to "nearly 1-NN").
LS_DEFAULT_RBF = {"kernel": "rbf", "gamma": 20.0, "alpha": 0.2}
LS_DEFAULT_KNN = {"kernel": "knn", "n_neighbors": 7, "alpha": 0.2}
LS_GRID: List[Dict[str, Any]] = [LS_DEFAULT_RBF, LS_DEFAULT_KNN] + [
    config
    for alpha in (0.2, 0.5, 0.8)
    for config in (
        [{"kernel": "rbf", "gamma": g, "alpha": alpha} for g in (2.0, 5.0, 10.0, 20.0, 40.0)]
        + [{"kernel": "knn", "n_neighbors": k, "alpha": alpha} for k in (3, 7, 10, 15)]
    )
    if config not in (LS_DEFAULT_RBF, LS_DEFAULT_KNN)
]


def config_text(config: Dict[str, Any]) -> str:
    width = f"gamma={config['gamma']:g}" if config["kernel"] == "rbf" else f"n_neighbors={config['n_neighbors']}"
    return f"{config['kernel']}, {width}, alpha={config['alpha']:g}"


# ---------------------------------------------------------------------------------------------------------------
# Work done in the pool's processes


def _arrays(train: bool) -> Tuple[np.ndarray, np.ndarray]:
    dataset = load_dataset("digits", train=train)
    x = np.stack([dataset[i][0].numpy() for i in range(len(dataset))]).astype(np.float64)
    return x, dataset_labels(dataset).numpy()


def _label_spreading(config: Dict[str, Any], x: np.ndarray, y_partial: np.ndarray):
    from sklearn.semi_supervised import LabelSpreading

    with warnings.catch_warnings():
        # knn graphs can leave a few images unreachable from every label; sklearn then divides 0 by 0 in
        # predict_proba and the argmax falls on class 0. That is its behaviour, counted as it comes.
        warnings.simplefilter("ignore", RuntimeWarning)
        return LabelSpreading(max_iter=MAX_ITER, **config).fit(x, y_partial)


def _predict(model, x: np.ndarray) -> Tuple[np.ndarray, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        proba = model.predict_proba(x)
    undefined = int(np.isnan(proba).any(axis=1).sum())
    return model.classes_[np.argmax(proba, axis=1)], undefined


def label_spreading_job(per_class: int, seed: int) -> Dict[str, Any]:
    """LabelSpreading on one labeled subset: CV selection over :data:`LS_GRID`, then the test error of each."""
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    threadpool_limits(1)  # one thread per run, as the GAN runs (BLAS and OpenMP would take every core)
    torch.set_num_threads(1)
    started = time.time()
    x_train, y_train = _arrays(train=True)
    x_test, y_test = _arrays(train=False)
    labeled = balanced_labeled_subset(y_train, per_class, seed=seed).numpy()  # the recipe's subset for seed_data
    folds = labeled.reshape(NUM_CLASSES, per_class).T  # fold j: the j-th labeled example of every class

    def partial(exclude: Optional[np.ndarray]) -> np.ndarray:
        y = np.full(len(y_train), -1, dtype=np.int64)
        keep = labeled if exclude is None else np.setdiff1d(labeled, exclude)
        y[keep] = y_train[keep]
        return y

    cv = []
    for config in LS_GRID:
        errors, log_loss = 0, 0.0
        for held in folds:
            model = _label_spreading(config, x_train, partial(held))
            dist = model.label_distributions_[held]
            errors += int((model.classes_[dist.argmax(axis=1)] != y_train[held]).sum())
            picked = dist[np.arange(len(held)), np.searchsorted(model.classes_, y_train[held])]
            log_loss -= float(np.log(np.clip(picked, 1e-12, None)).sum())
        cv.append({"config": config, "cv_errors": errors, "cv_log_loss": log_loss / len(labeled)})
    best = min(range(len(cv)), key=lambda i: (cv[i]["cv_errors"], cv[i]["cv_log_loss"], i))

    def evaluate(config: Dict[str, Any]) -> Dict[str, Any]:
        model = _label_spreading(config, x_train, partial(None))
        predicted, undefined = _predict(model, x_test)
        unlabeled = np.setdiff1d(np.arange(len(y_train)), labeled)
        return {
            "config": config,
            "test_error": float((predicted != y_test).mean()),
            "test_undefined": undefined,
            "transductive_error": float((model.transduction_[unlabeled] != y_train[unlabeled]).mean()),
        }

    return {
        "per_class": per_class,
        "seed": seed,
        "selected": evaluate(LS_GRID[best]),
        "default_rbf": evaluate(LS_DEFAULT_RBF),
        "default_knn": evaluate(LS_DEFAULT_KNN),
        "cv": cv,
        "seconds": time.time() - started,
    }


def _test_error_history(run_dir: Path) -> List[float]:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:  # the history is a diagnostic extra
        return []
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags().get("scalars", [])
    tag = next((t for t in ("test/error_averaged", "test/error") if t in tags), None)  # "test/error": older runs
    if tag is None:
        return []
    return [float(e.value) for e in events.Scalars(tag)]


def _override_discriminator_noise(input_noise: Optional[float], hidden_noise: Optional[float]) -> Dict[str, float]:
    """Swaps the digits setting's discriminator for one with other noise levels, in this worker process only.

    A diagnostic for the noise levels of the scaled MNIST networks, which are not recipe flags: the widths and
    every other part of ``models.digits_discriminator`` stay as they are. Returns the levels in effect.
    """
    from ignite_igan import models

    default = models.digits_discriminator()
    levels = {
        "input_noise": default.input_noise.sigma if input_noise is None else input_noise,
        "hidden_noise": default.hidden_noise[0].sigma if hidden_noise is None else hidden_noise,
    }
    if input_noise is not None or hidden_noise is not None:
        build = functools.partial(
            models.MNISTDiscriminator, in_features=default.in_features, num_classes=default.num_classes,
            hidden=default.hidden, **levels,
        )
        setting = semi_supervised.SETTINGS["digits_ssl"]
        semi_supervised.SETTINGS["digits_ssl"] = dataclasses.replace(setting, discriminator=build)
    return levels


def gan_job(
    per_class: int,
    seed: int,
    recipe_args: Sequence[str],
    work: str,
    input_noise: Optional[float] = None,
    hidden_noise: Optional[float] = None,
) -> Dict[str, Any]:
    """One run of the digits recipe in this process (one thread); its metrics and per-epoch test error."""
    torch.set_num_threads(1)
    noise = _override_discriminator_noise(input_noise, hidden_noise)
    run_dir = Path(work) / f"gan_{per_class}_{seed}"
    argv = [
        "--labels-per-class", str(per_class), "--seed", str(seed), "--seed-data", str(seed),
        "--threads", "1", "--no-progress", *recipe_args,
    ]
    args = cli.parse_args(build_parser("digits_ssl"), argv + ["--output-dir", str(run_dir)])
    started = time.time()
    metrics = train(0, args, "digits_ssl")
    seconds = time.time() - started
    return {
        "per_class": per_class,
        "seed": seed,
        "argv": argv,
        "test_error": float(metrics["test_error"]),
        "baseline_test_error": float(metrics["baseline_test_error"]) if "baseline_test_error" in metrics else None,
        "iterations": int(metrics["iterations"]),
        "epochs": int(args.epochs),
        "lr": float(args.lr),
        "ema_rate": float(args.ema_rate),
        "discriminator_noise": noise,
        "test_error_by_epoch": _test_error_history(run_dir),
        "seconds": seconds,
    }


def _run(job: Tuple[str, tuple]) -> Tuple[str, Dict[str, Any]]:
    kind, params = job
    return kind, (gan_job if kind == "gan" else label_spreading_job)(*params)


# ---------------------------------------------------------------------------------------------------------------
# Summary


def _stats(values: Sequence[float]) -> Dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,  # JSON has no NaN
        "values": list(values),
    }


METHODS = [
    ("labeled_only", "D on labeled only"),
    ("label_spreading", "LabelSpreading (CV-selected)"),
    ("label_spreading_rbf_default", "LabelSpreading (rbf, sklearn defaults)"),
    ("label_spreading_knn_default", "LabelSpreading (knn, sklearn defaults)"),
    ("gan", "GAN (feature matching, averaged D)"),
]


def summarize(gan: List[Dict[str, Any]], spreading: List[Dict[str, Any]], per_class_list: Sequence[int], seeds: Sequence[int]):
    table: Dict[str, Any] = {}
    for per_class in per_class_list:
        g = {r["seed"]: r for r in gan if r["per_class"] == per_class}
        s = {r["seed"]: r for r in spreading if r["per_class"] == per_class}
        row: Dict[str, Any] = {}
        if g:
            row["labeled_only"] = _stats([g[k]["baseline_test_error"] for k in seeds])
            row["gan"] = _stats([g[k]["test_error"] for k in seeds])
        if s:
            row["label_spreading"] = _stats([s[k]["selected"]["test_error"] for k in seeds])
            row["label_spreading_rbf_default"] = _stats([s[k]["default_rbf"]["test_error"] for k in seeds])
            row["label_spreading_knn_default"] = _stats([s[k]["default_knn"]["test_error"] for k in seeds])
            row["label_spreading_selected_configs"] = [config_text(s[k]["selected"]["config"]) for k in seeds]
        if g and s:
            diffs = [g[k]["test_error"] - s[k]["selected"]["test_error"] for k in seeds]
            row["gan_minus_label_spreading"] = _stats(diffs)
            row["gan_wins"] = sum(d < 0 for d in diffs)
            row["gan_beats_label_spreading"] = row["gan"]["mean"] < row["label_spreading"]["mean"]
        table[str(NUM_CLASSES * per_class)] = row
    return table


def _flags_text(config: Dict[str, Any]) -> str:
    flags = list(config["recipe_args"])
    for key in ("input_noise", "hidden_noise"):
        if config.get(key) is not None:
            flags += [f"--{key.replace('_', '-')}", f"{config[key]:g}"]
    return " ".join(flags)


def _pct(stats: Dict[str, Any]) -> str:
    if stats["std"] is None:
        return f"{100 * stats['mean']:.1f}"
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def markdown(result: Dict[str, Any]) -> str:
    config = result["config"]
    rows = result["table"]
    present = [(key, title) for key, title in METHODS if any(key in row for row in rows.values())]
    lines = [
        f"Test error (%) on the 500 digits test images, mean ± std (ddof 1) over seeds {config['seeds']} "
        f"(seed s: labeled subset and initialization from s).",
        "",
        "| labels | " + " | ".join(title for _, title in present) + " | GAN − LS (paired) | GAN better on |",
        "|---:|" + "---:|" * len(present) + "---:|---:|",
    ]
    for labels, row in rows.items():
        cells = [_pct(row[key]) if key in row else "–" for key, _ in present]
        paired = (
            ("+" if row["gan_minus_label_spreading"]["mean"] >= 0 else "") + _pct(row["gan_minus_label_spreading"])
            if "gan_minus_label_spreading" in row else "–"
        )
        wins = f"{row['gan_wins']}/{len(config['seeds'])} seeds" if "gan_wins" in row else "–"
        lines.append(f"| {labels} | " + " | ".join(cells) + f" | {paired} | {wins} |")
    lines.append("")
    lines.append("Per seed (%, in seed order):")
    lines.append("")
    for labels, row in rows.items():
        parts = [
            f"{title}: " + ", ".join(f"{100 * v:.1f}" for v in row[key]["values"]) for key, title in present if key in row
        ]
        lines.append(f"- {labels} labels: " + "; ".join(parts))
    if any("label_spreading_selected_configs" in row for row in rows.values()):
        lines += ["", "LabelSpreading configuration chosen by cross-validation on the labeled examples (per seed):", ""]
        for labels, row in rows.items():
            if "label_spreading_selected_configs" in row:
                lines.append(f"- {labels} labels: " + "; ".join(f"`{c}`" for c in row["label_spreading_selected_configs"]))
    gan_setup = result.get("gan_setup")
    if gan_setup:
        lines += [
            "",
            f"GAN and labeled-only runs: {gan_setup['epochs']} epochs, {gan_setup['iterations']} steps, "
            f"lr {gan_setup['lr']:g}, evaluation-average rate {gan_setup['ema_rate']:g}, discriminator noise "
            f"{gan_setup['discriminator_noise']['input_noise']:g} (input) / "
            f"{gan_setup['discriminator_noise']['hidden_noise']:g} (hidden)"
            + (f"; flags `{flags}`" if (flags := _flags_text(config)) else "; recipe defaults")
            + f"; {gan_setup['mean_seconds']:.0f} s per run on average (GAN + labeled-only, one thread).",
        ]
    lines += [
        "",
        f"Wall time {result['wall_seconds'] / 60:.1f} min with {config['workers']} worker processes of one thread; "
        f"{result['machine']['cpu']}, {result['machine']['logical_cpus']} logical CPUs, "
        + load_note(result["machine"]["load_start"], result["machine"]["load_end"], False),
    ]
    return "\n".join(lines) + "\n"


def plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = result["table"]
    labels = [int(k) for k in rows]
    figure, axis = plt.subplots(figsize=(5.0, 3.4))
    for offset, (key, title) in zip((-1.5, -0.5, 0.5, 1.5, 0.0), METHODS):
        if key in ("label_spreading_rbf_default", "label_spreading_knn_default") or not all(key in r for r in rows.values()):
            continue
        means = [100 * rows[str(n)][key]["mean"] for n in labels]
        stds = [100 * (rows[str(n)][key]["std"] or 0.0) for n in labels]
        axis.errorbar([n * (1 + 0.02 * offset) for n in labels], means, yerr=stds, marker="o", capsize=3, label=title)
    axis.set_xscale("log")
    axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axis.set_xticks(labels)
    axis.set_xticklabels([str(n) for n in labels])
    axis.set_xlabel("labeled examples")
    axis.set_ylabel("test error (%)")
    axis.set_title(f"digits, mean ± std over {len(result['config']['seeds'])} seeds")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seeds", type=cli.nonnegative_int, nargs="+", default=[1, 2, 3, 4, 5],
                        help="seeds; each is both --seed and --seed-data of a run")
    parser.add_argument("--labels", type=cli.positive_int, nargs="+", default=[20, 50, 100],
                        help="total labeled examples (multiples of 10: balanced over the classes)")
    parser.add_argument("--workers", type=cli.positive_int, default=2, help="runs at once (one thread each)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / "digits_ssl.json",
                        help="JSON of the raw numbers; the .md table and .png plot go next to it")
    parser.add_argument("--recipe-args", default="", help="extra flags for the recipe, e.g. '--epochs 400 --lr 1e-3'")
    parser.add_argument("--input-noise", type=float, default=None,
                        help="diagnostic: the discriminator's input noise std (default: the digits model's, 0.3)")
    parser.add_argument("--hidden-noise", type=float, default=None,
                        help="diagnostic: the discriminator's hidden noise std (default: the digits model's, 0.5)")
    parser.add_argument("--methods", nargs="+", choices=["gan", "label_spreading"], default=["gan", "label_spreading"],
                        help="which runs to make (gan also gives the labeled-only baseline)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    bad = [n for n in args.labels if n % NUM_CLASSES]
    if bad:
        parser.error(f"--labels: expected multiples of {NUM_CLASSES} (balanced labels), got {bad}")
    per_class_list = [n // NUM_CLASSES for n in args.labels]
    recipe_args = shlex.split(args.recipe_args)
    cli.parse_args(build_parser("digits_ssl"), recipe_args)  # fail now, not in a worker, on a bad recipe flag
    for flag, value in (("--input-noise", args.input_noise), ("--hidden-noise", args.hidden_noise)):
        if value is not None and not (value >= 0 and math.isfinite(value)):
            parser.error(f"{flag}: expected a finite number >= 0, got {value}")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds: expected distinct seeds, got {args.seeds}")
    args.output.parent.mkdir(parents=True, exist_ok=True)

    started = time.time()
    load_start = load_average()[0]
    jobs: List[Tuple[str, tuple]] = []
    with tempfile.TemporaryDirectory(prefix="digits_ssl_") as work:
        if "gan" in args.methods:  # the long runs first, most labels first
            jobs += [("gan", (k, s, recipe_args, work, args.input_noise, args.hidden_noise)) for k in sorted(per_class_list, reverse=True) for s in args.seeds]
        if "label_spreading" in args.methods:
            jobs += [("label_spreading", (k, s)) for k in per_class_list for s in args.seeds]
        results: Dict[str, List[Dict[str, Any]]] = {"gan": [], "label_spreading": []}
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(args.workers, len(jobs)), maxtasksperchild=1) as pool:
            for kind, record in pool.imap_unordered(_run, jobs):
                results[kind].append(record)
                text = (
                    f"GAN {100 * record['test_error']:.1f} %, labeled only {100 * record['baseline_test_error']:.1f} %"
                    if kind == "gan" else
                    f"LS {100 * record['selected']['test_error']:.1f} % ({config_text(record['selected']['config'])})"
                )
                print(f"[{(time.time() - started) / 60:5.1f} min] {NUM_CLASSES * record['per_class']} labels, "
                      f"seed {record['seed']}: {text}  ({record['seconds']:.0f} s)", flush=True)

    gan_setup = None
    if results["gan"]:
        first = results["gan"][0]
        gan_setup = {key: first[key] for key in ("epochs", "iterations", "lr", "ema_rate", "discriminator_noise")}
        gan_setup["mean_seconds"] = statistics.fmean(r["seconds"] for r in results["gan"])
    result = {
        "benchmark": "digits_ssl",
        "command": command_line(__file__, argv),
        "date": utc_now(),
        "config": {
            "seeds": args.seeds, "labels": args.labels, "workers": args.workers, "recipe_args": recipe_args,
            "input_noise": args.input_noise, "hidden_noise": args.hidden_noise,
            "methods": args.methods, "label_spreading_grid": LS_GRID, "label_spreading_max_iter": MAX_ITER,
        },
        "machine": {
            **machine_info(), "load_start": load_start, "load_end": load_average()[0],
            "sklearn": __import__("sklearn").__version__,
        },
        "gan_setup": gan_setup,
        "table": summarize(results["gan"], results["label_spreading"], per_class_list, args.seeds),
        "runs": {kind: sorted(records, key=lambda r: (r["per_class"], r["seed"])) for kind, records in results.items()},
        "wall_seconds": time.time() - started,
    }
    text = markdown(result)
    write_results(result, args.output, text, header=False, indent=1)
    if not args.no_plot:
        plot(result, args.output.with_suffix(".png"))
    print(text)
    return result


if __name__ == "__main__":
    main()
