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
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from _harness import ROOT, command_line, load_average, machine_info, utc_now, write_results  # noqa: E402

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


# --------------------------------------------------------------------------------------------------------------
# The classical baselines: LabelSpreading (knn, rbf) and logistic regression, selected by CV on the labels only
# --------------------------------------------------------------------------------------------------------------
NUM_CLASSES = 10
LS_MAX_ITER = 1000  # LabelSpreading's default 30 iterations stop short of convergence for alpha near 1
KNN_GRID = [{"n_neighbors": k, "alpha": a} for a in (0.2, 0.5, 0.8, 0.99) for k in (7, 15, 30)]  # sklearn's default first
RBF_SCALES = (0.25, 1.0, 4.0)  # gamma = scale / (median squared distance to the 7th nearest neighbour)
RBF_ALPHAS = (0.2, 0.8, 0.99)
RBF_UNLABELED = 5000  # the rbf kernel is a dense N x N matrix: labeled images plus this many unlabeled ones
LOGISTIC_C = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
CV_FOLDS = 5  # fold j holds out labeled images 2j and 2j + 1 of every class


def _arrays(data_dir: Path, train: bool):
    import numpy as np

    from ignite_igan.datasets import load_dataset

    dataset = load_dataset("fashion_mnist", data_dir, train=train)
    x = dataset.images.reshape(len(dataset), -1).numpy().astype(np.float64) / 255.0  # the recipe's scaling
    return x, dataset.labels.numpy()


class PrecomputedKernel:
    """A LabelSpreading kernel (callable) that serves precomputed weights for the fit and for ``predict``.

    scikit-learn rebuilds its knn graph (all pairwise distances of 60,000 images) on every ``fit``; cross-validation
    needs dozens of fits on the same images, so the graphs are built once and handed back here. With the knn
    weights (0/1 on the k nearest training images) the callable computes exactly what ``kernel="knn"`` computes:
    LabelSpreading's graph for the fit, and for ``predict`` the sum of the neighbours' label distributions.
    """

    def __init__(self, train_weights, test_weights):
        self.train_weights, self.test_weights = train_weights, test_weights  # (n, n) and (n, n_test)

    def __call__(self, x, y):
        if y.shape[0] == self.train_weights.shape[0] and y is x:
            return self.train_weights
        if y.shape[0] == self.test_weights.shape[1]:
            return self.test_weights
        raise ValueError(f"PrecomputedKernel: no weights for inputs of shapes {x.shape} and {y.shape}")


def _knn_indices(x_ref, x_query, k: int, exclude_self: bool = False):
    """Indices of the k nearest rows of ``x_ref`` for every row of ``x_query`` (Euclidean), nearest first."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k).fit(x_ref)
    return index.kneighbors(x_query, return_distance=False)


def _knn_weights(neighbors, k: int, n_ref: int):
    """0/1 matrix (n_query, n_ref) with ones on each row's k nearest."""
    import numpy as np
    from scipy import sparse

    n = neighbors.shape[0]
    rows = np.repeat(np.arange(n), k)
    return sparse.csr_matrix((np.ones(n * k), (rows, neighbors[:, :k].ravel())), shape=(n, n_ref))


def _spread(kernel, alpha: float, x, y_partial):
    import warnings

    from sklearn.semi_supervised import LabelSpreading

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and 0/0 warnings are counted in the results as they come
        return LabelSpreading(kernel=kernel, alpha=alpha, max_iter=LS_MAX_ITER).fit(x, y_partial)


def _cv_select(configs, fit_and_score, labeled, y):
    """Index of the config with the fewest held-out errors (then lower log-loss, then order) and all CV rows."""
    import numpy as np

    per_class = len(labeled) // NUM_CLASSES
    by_class = labeled.reshape(NUM_CLASSES, per_class)
    folds = [by_class[:, list(range(j, per_class, CV_FOLDS))].ravel() for j in range(CV_FOLDS)]
    rows = []
    for config in configs:
        errors, log_loss = 0, 0.0
        for held in folds:
            proba = fit_and_score(config, np.setdiff1d(labeled, held), held)
            errors += int((proba.argmax(axis=1) != y[held]).sum())
            log_loss -= float(np.log(np.clip(proba[np.arange(len(held)), y[held]], 1e-12, None)).sum())
        rows.append({"config": config, "cv_errors": errors, "cv_log_loss": log_loss / len(labeled)})
    best = min(range(len(rows)), key=lambda i: (rows[i]["cv_errors"], rows[i]["cv_log_loss"], i))
    return best, rows


def _distributions(model, index):
    import numpy as np

    dist = np.asarray(model.label_distributions_[index], dtype=np.float64)
    return np.nan_to_num(dist, nan=1.0 / NUM_CLASSES)


def label_spreading_knn(x, y, pool, labeled, x_test, y_test) -> Dict[str, Any]:
    """knn LabelSpreading over the images ``pool`` (labeled ones included), CV-selected, scored on the test set."""
    import numpy as np

    k_max = max(c["n_neighbors"] for c in KNN_GRID)
    started = time.time()
    xp = np.ascontiguousarray(x[pool])
    train_nn = _knn_indices(xp, xp, k_max)
    test_nn = _knn_indices(xp, x_test, k_max)
    graph_s = time.time() - started
    position = {int(i): p for p, i in enumerate(pool)}
    lab_pos = np.array([position[int(i)] for i in labeled])
    y_pool = y[pool]

    def fit(config, keep):
        k = config["n_neighbors"]
        kernel = PrecomputedKernel(_knn_weights(train_nn, k, len(pool)), _knn_weights(test_nn, k, len(pool)).T.tocsr())
        y_partial = np.full(len(pool), -1)
        y_partial[keep] = y_pool[keep]
        return _spread(kernel, config["alpha"], xp, y_partial)

    best, rows = _cv_select(KNN_GRID, lambda c, keep, held: _distributions(fit(c, keep), held), lab_pos, y_pool)

    def evaluate(config):
        model = fit(config, lab_pos)
        predicted = model.predict(x_test)
        return {"config": config, "test_error": float((predicted != y_test).mean())}

    return {"selected": evaluate(KNN_GRID[best]), "default": evaluate(KNN_GRID[0]), "cv": rows,
            "pool": len(pool), "graph_seconds": graph_s, "seconds": time.time() - started}


def label_spreading_rbf(x, y, pool, labeled, x_test, y_test) -> Dict[str, Any]:
    """rbf LabelSpreading over ``pool`` (a few thousand images: the kernel is dense), CV-selected."""
    import numpy as np
    from sklearn.metrics.pairwise import euclidean_distances

    started = time.time()
    xp = np.ascontiguousarray(x[pool])
    train_d2 = euclidean_distances(xp, xp, squared=True)
    test_d2 = euclidean_distances(xp, x_test, squared=True)
    scale = float(np.median(np.sort(train_d2, axis=1)[:, 7]))  # column 0 is the image itself
    configs = [{"gamma": g / scale, "gamma_scale": g, "alpha": a} for a in RBF_ALPHAS for g in RBF_SCALES]
    position = {int(i): p for p, i in enumerate(pool)}
    lab_pos = np.array([position[int(i)] for i in labeled])
    y_pool = y[pool]

    def fit(config, keep):
        kernel = PrecomputedKernel(np.exp(-config["gamma"] * train_d2), np.exp(-config["gamma"] * test_d2))
        y_partial = np.full(len(pool), -1)
        y_partial[keep] = y_pool[keep]
        return _spread(kernel, config["alpha"], xp, y_partial)

    best, rows = _cv_select(configs, lambda c, keep, held: _distributions(fit(c, keep), held), lab_pos, y_pool)
    model = fit(configs[best], lab_pos)
    with np.errstate(all="ignore"):
        proba = np.nan_to_num(model.predict_proba(x_test), nan=1.0 / NUM_CLASSES)
    predicted = model.classes_[proba.argmax(axis=1)]
    return {"selected": {"config": configs[best], "test_error": float((predicted != y_test).mean())}, "cv": rows,
            "pool": len(pool), "median_sq_distance_7nn": scale, "seconds": time.time() - started}


def logistic_regression(x, y, labeled, x_test, y_test) -> Dict[str, Any]:
    """Multinomial logistic regression on the labeled images alone, C chosen by the same CV."""
    from sklearn.linear_model import LogisticRegression

    configs = [{"C": c} for c in LOGISTIC_C]

    def fit(config, keep):
        return LogisticRegression(C=config["C"], max_iter=5000).fit(x[keep], y[keep])

    best, rows = _cv_select(configs, lambda c, keep, held: fit(c, keep).predict_proba(x[held]), labeled, y)
    model = fit(configs[best], labeled)
    return {"selected": {"config": configs[best], "test_error": float((model.predict(x_test) != y_test).mean())},
            "cv": rows}


def classical_job(data_dir: Path, seed: int, unlabeled: Optional[int]) -> Dict[str, Any]:
    """Every classical method for one labeled subset (seed) and one unlabeled pool size (None: all 60,000)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from ignite_igan.data import balanced_labeled_subset, unlabeled_pool

    threadpool_limits(1)
    x, y = _arrays(data_dir, train=True)
    x_test, y_test = _arrays(data_dir, train=False)
    labeled = balanced_labeled_subset(y, 10, seed=seed).numpy()
    pool = np.arange(len(y)) if unlabeled is None else unlabeled_pool(len(y), labeled, unlabeled, seed=seed).numpy()
    result: Dict[str, Any] = {"seed": seed, "unlabeled": len(pool)}
    result["label_spreading_knn"] = label_spreading_knn(x, y, pool, labeled, x_test, y_test)
    if unlabeled is None:
        rbf_pool = unlabeled_pool(len(y), labeled, len(labeled) + RBF_UNLABELED, seed=seed).numpy()
        result["label_spreading_rbf"] = label_spreading_rbf(x, y, rbf_pool, labeled, x_test, y_test)
        result["logistic_regression"] = logistic_regression(x, y, labeled, x_test, y_test)
    return result


def check_precomputed_kernel() -> None:
    """PrecomputedKernel with knn weights must give what sklearn's own ``kernel="knn"`` gives (checked each run)."""
    import numpy as np
    from sklearn.semi_supervised import LabelSpreading

    rng = np.random.default_rng(0)
    x, y, x_test = rng.random((300, 8)), rng.integers(0, NUM_CLASSES, 300), rng.random((50, 8))
    y_partial = np.where(np.arange(300) < 60, y, -1)
    reference = LabelSpreading(kernel="knn", n_neighbors=7, alpha=0.5, max_iter=LS_MAX_ITER).fit(x, y_partial)
    kernel = PrecomputedKernel(_knn_weights(_knn_indices(x, x, 7), 7, 300),
                               _knn_weights(_knn_indices(x, x_test, 7), 7, 300).T.tocsr())
    ours = _spread(kernel, 0.5, x, y_partial)
    if not (np.allclose(ours.label_distributions_, reference.label_distributions_, atol=1e-12)
            and np.allclose(ours.predict_proba(x_test), reference.predict_proba(x_test), atol=1e-12)):
        raise AssertionError("PrecomputedKernel does not reproduce LabelSpreading(kernel='knn')")


def run_classical_jobs(args: argparse.Namespace) -> None:
    check_precomputed_kernel()
    jobs = [(seed, None) for seed in args.seeds] + [(s, u) for s in args.seeds[:2] for u in args.regime_sizes]
    for seed, unlabeled in jobs:
        path = args.work_dir / f"classical_seed{seed}_unl{'all' if unlabeled is None else unlabeled}.json"
        if path.is_file():
            continue
        print(f"classical: seed {seed}, unlabeled {unlabeled or 'all'} ...", flush=True)
        result = classical_job(args.data_dir, seed, unlabeled)
        path.write_text(json.dumps(result, indent=1))
        print(path, json.dumps({k: v["selected"]["test_error"] for k, v in result.items() if isinstance(v, dict)
                                and "selected" in v}), flush=True)


# --------------------------------------------------------------------------------------------------------------
# Speed: threads, and how close the step is to the machine's matmul rate
# --------------------------------------------------------------------------------------------------------------
def build_step(data_dir: Path, seed: int = 1):
    """The recipe's trainer and data (the paper's MNIST setting on Fashion-MNIST), without the run scaffolding."""
    sys.path.insert(0, str(ROOT / "recipes"))
    import semi_supervised  # recipes/semi_supervised.py: its setting table is the recipe's configuration

    from ignite_igan.data import SemiSupervisedLoader, balanced_labeled_subset, dataset_labels, init_batch
    from ignite_igan.datasets import load_dataset
    from ignite_igan.engines import create_semi_supervised_trainer
    from ignite_igan.nn import data_dependent_init
    from ignite_igan.optim import ReferenceAdam

    setting = semi_supervised.SETTINGS["fashion_mnist_ssl"]
    torch.manual_seed(seed)
    train_set = load_dataset("fashion_mnist", data_dir, train=True)
    labeled = balanced_labeled_subset(dataset_labels(train_set), 10, seed=seed)
    loader = SemiSupervisedLoader(train_set, labeled, batch_size=100, seed=seed)
    generator, discriminator = setting.generator(), setting.discriminator()
    data_dependent_init(discriminator, init_batch(train_set, 500, seed))
    d_opt = ReferenceAdam(discriminator.parameters(), lr=setting.lr, betas=(0.5, 0.999))
    g_opt = ReferenceAdam(generator.parameters(), lr=setting.lr, betas=(0.5, 0.999))
    trainer = create_semi_supervised_trainer(generator, discriminator, d_opt, g_opt,
                                             feature_matching_distance=setting.fm_distance)
    return trainer, loader


def time_step(data_dir: Path, threads: int, iterations: int, warmup: int = 20) -> float:
    """Seconds per training iteration of the recipe's step with ``threads`` torch threads (data loading included)."""
    torch.set_num_threads(threads)
    from ignite.engine import Events

    trainer, loader = build_step(data_dir)
    marks: Dict[str, float] = {}
    # The clock starts after `warmup` iterations (first-call costs and cold caches), stops after the last.
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=warmup), lambda e: marks.update(start=time.perf_counter()))
    trainer.run(loader, max_epochs=1, epoch_length=warmup + iterations)
    return (time.perf_counter() - marks["start"]) / iterations


def _competitor(data_dir: str, seconds: float) -> None:
    """A second process doing the same work on one thread (the 'busy machine' condition)."""
    torch.set_num_threads(1)
    trainer, loader = build_step(Path(data_dir), seed=2)
    step, end = trainer._process_function, time.time() + seconds
    while time.time() < end:
        for batch in loader:  # epoch after epoch until the time is up
            step(trainer, batch)
            if time.time() >= end:
                break


def step_flops(data_dir: Path) -> Dict[str, Any]:
    """Matmul FLOPs of one iteration (counted by torch's FlopCounterMode) and the matmul shapes it ran."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    shapes: List[tuple] = []

    class Shapes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket).split(".")[-1]
            if name in ("mm", "addmm", "bmm"):
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                shapes.append((name, tuple(tuple(t.shape) for t in tensors)))
            return func(*args, **(kwargs or {}))

    torch.set_num_threads(1)
    trainer, loader = build_step(data_dir)
    batches, step = iter(loader), trainer._process_function
    step(trainer, next(batches))
    batch = next(batches)
    with FlopCounterMode(display=False) as counter, Shapes():
        step(trainer, batch)
    return {"flops": int(counter.get_total_flops()), "matmuls": shapes}


def matmul_rate(shapes: List[tuple], repeats: int = 20) -> Dict[str, float]:
    """Single-thread FLOP/s of (a) the step's own matmuls replayed alone and (b) a 1024x1024x1024 product."""
    torch.set_num_threads(1)
    operands = []
    flops = 0
    for name, dims in shapes:
        if name == "addmm":
            dims = dims[1:]
        a, b = torch.randn(*dims[0][-2:]), torch.randn(*dims[1][-2:])
        operands.append((a, b))
        flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
    for a, b in operands:
        a.mm(b)
    started = time.perf_counter()
    for _ in range(repeats):
        for a, b in operands:
            a.mm(b)
    replay = (time.perf_counter() - started) / repeats
    big = torch.randn(1024, 1024)
    big.mm(big)
    started = time.perf_counter()
    for _ in range(5):
        big.mm(big)
    square = (time.perf_counter() - started) / 5
    return {"step_matmuls_seconds": replay, "step_matmuls_flops": flops, "step_matmuls_flops_per_s": flops / replay,
            "square_1024_flops_per_s": 2 * 1024**3 / square}


def run_speed(args: argparse.Namespace) -> None:
    import multiprocessing

    result: Dict[str, Any] = {"iterations": args.speed_iterations, "rounds": {}}
    context = multiprocessing.get_context("spawn")
    # Two rounds, alternating 1 and 2 threads, so that a change in the machine's load hits both; the faster of
    # each condition's rounds is reported (interference only ever slows a step down).
    for condition in ("idle", "busy"):
        rival = None
        if condition == "busy":
            rival = context.Process(target=_competitor, args=(str(args.data_dir), 10_000.0))
            rival.start()
            time.sleep(8)  # the rival is loading data and warming up
        try:
            for threads in (1, 2, 1, 2):
                seconds = time_step(args.data_dir, threads, args.speed_iterations)
                result["rounds"].setdefault(f"{condition}_{threads}_threads_s", []).append(seconds)
        finally:
            if rival is not None:
                rival.terminate()
                rival.join()
    for key, values in result["rounds"].items():
        result[key] = min(values)
    counted = step_flops(args.data_dir)
    result["step_flops"] = counted["flops"]
    result["matmul_count"] = len(counted["matmuls"])
    result.update(matmul_rate(counted["matmuls"]))
    result["achieved_flops_per_s"] = counted["flops"] / result["idle_1_threads_s"]
    result["fraction_of_square_matmul_rate"] = result["achieved_flops_per_s"] / result["square_1024_flops_per_s"]
    result["fraction_of_own_matmul_rate"] = result["achieved_flops_per_s"] / result["step_matmuls_flops_per_s"]
    result["machine"] = dict(machine_info(), load_average=load_average(), date=utc_now())
    path = args.work_dir / "speed.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "matmuls"}, indent=1), flush=True)


# --------------------------------------------------------------------------------------------------------------
# Report: the table, the curves, the regime study
# --------------------------------------------------------------------------------------------------------------
def _curve(run_dir: Path) -> List[List[float]]:
    """``[[iteration, test error], ...]`` of a run, from its TensorBoard events (also of a run still going)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags().get("scalars", [])
    tag = next((t for t in ("test/error_averaged", "test/error") if t in tags), None)  # "test/error": older runs
    if tag is None:
        return []
    return sorted({int(e.step): float(e.value) for e in events.Scalars(tag)}.items())


def _stats(values: Sequence[float]) -> Dict[str, float]:
    import statistics

    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def collect(args: argparse.Namespace) -> Dict[str, Any]:
    """Every finished run of the work folder in one report (runs still going contribute their curve so far)."""
    work, iterations = args.work_dir, args.epochs * ITERATIONS_PER_EPOCH
    report: Dict[str, Any] = {"seeds": {}, "regime": {}, "long": None, "speed": None, "iterations": iterations}
    for seed in args.seeds:
        run_dir = work / gan_run_name(seed, None, args.epochs)
        classical = work / f"classical_seed{seed}_unlall.json"
        if not (run_dir / "summary.json").is_file() or not classical.is_file():
            continue
        gan = json.loads((run_dir / "summary.json").read_text())["metrics"]
        other = json.loads(classical.read_text())
        row = {"gan": gan["test_error"], "labeled_only": gan.get("baseline_test_error"),
               "label_spreading_knn": other["label_spreading_knn"]["selected"]["test_error"],
               "label_spreading_knn_config": other["label_spreading_knn"]["selected"]["config"],
               "label_spreading_rbf": other["label_spreading_rbf"]["selected"]["test_error"],
               "label_spreading_rbf_config": other["label_spreading_rbf"]["selected"]["config"],
               "logistic_regression": other["logistic_regression"]["selected"]["test_error"],
               "logistic_regression_config": other["logistic_regression"]["selected"]["config"],
               "curve": _curve(run_dir), "seconds": json.loads((run_dir / "summary.json").read_text())["seconds"]}
        baselines = [row[k] for k in ("labeled_only", "label_spreading_knn", "label_spreading_rbf",
                                      "logistic_regression") if row[k] is not None]
        row["best_baseline"] = min(baselines)
        row["gan_beats_every_baseline"] = row["gan"] < row["best_baseline"]
        below = [step for step, error in row["curve"] if error < row["best_baseline"]]
        row["first_iteration_below_every_baseline"] = below[0] if below else None
        report["seeds"][str(seed)] = row
    for size in list(args.regime_sizes) + [None]:
        for seed in args.seeds[:2]:
            if size is None:
                run_dir = work / gan_run_name(seed, None, args.epochs)
            else:
                run_dir = work / gan_run_name(seed, size, iterations // (size // 100))
            classical = work / f"classical_seed{seed}_unl{'all' if size is None else size}.json"
            if not (run_dir / "summary.json").is_file() or not classical.is_file():
                continue
            gan = json.loads((run_dir / "summary.json").read_text())["metrics"]
            ls = json.loads(classical.read_text())["label_spreading_knn"]["selected"]["test_error"]
            full = work / f"classical_seed{seed}_unlall.json"  # logistic regression never sees unlabeled images
            logistic = json.loads(full.read_text())["logistic_regression"]["selected"]["test_error"] \
                if full.is_file() else None
            curve = _curve(run_dir)
            below = [step for step, error in curve if error < ls]
            below_both = [step for step, error in curve if error < min(ls, logistic if logistic else 1.0)]
            report["regime"].setdefault(str(size or 60000), {})[str(seed)] = {
                "gan": gan["test_error"], "label_spreading_knn": ls, "logistic_regression": logistic,
                "curve": curve, "first_iteration_below_label_spreading": below[0] if below else None,
                "first_iteration_below_both": below_both[0] if below_both else None}
    long_dir = work / gan_run_name(args.seeds[0], None, args.long_epochs)
    if args.long_epochs and long_dir.is_dir():
        report["long"] = {"epochs_planned": args.long_epochs, "finished": (long_dir / "summary.json").is_file(),
                          "curve": _curve(long_dir)}
    if (work / "speed.json").is_file():
        report["speed"] = json.loads((work / "speed.json").read_text())
    rows = list(report["seeds"].values())
    if rows:
        report["summary"] = {key: _stats([r[key] for r in rows if r[key] is not None])
                             for key in ("gan", "labeled_only", "label_spreading_knn", "label_spreading_rbf",
                                         "logistic_regression")}
        report["gan_beats_every_baseline_on_every_seed"] = all(r["gan_beats_every_baseline"] for r in rows)
    return report


def _pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def markdown(report: Dict[str, Any], command: str) -> str:
    lines = [f"Command: `{command}`  ", f"Date: {utc_now()}; {machine_info()['cpu']}; one torch thread per run.", "",
             f"Test error (%) on the 10,000 test images, 100 labels, after {report['iterations']:,} iterations "
             "(the GAN's averaged discriminator after its last epoch; never the best epoch).", "",
             "| seed | GAN | labeled only | LabelSpreading knn | LabelSpreading rbf | logistic regression | GAN beats "
             "all | first iteration below all |", "|---|---:|---:|---:|---:|---:|---|---:|"]
    for seed, r in report["seeds"].items():
        lines.append(f"| {seed} | {_pct(r['gan'])} | {_pct(r['labeled_only'])} | {_pct(r['label_spreading_knn'])} | "
                     f"{_pct(r['label_spreading_rbf'])} | {_pct(r['logistic_regression'])} | "
                     f"{'yes' if r['gan_beats_every_baseline'] else 'no'} | "
                     f"{r['first_iteration_below_every_baseline'] or '—'} |")
    if report.get("summary"):
        m = report["summary"]
        lines.append("| mean ± std | " + " | ".join(
            f"{100 * m[k]['mean']:.2f} ± {100 * m[k]['std']:.2f}" for k in
            ("gan", "labeled_only", "label_spreading_knn", "label_spreading_rbf", "logistic_regression")) + " | "
            f"{'yes, every seed' if report['gan_beats_every_baseline_on_every_seed'] else 'not on every seed'} | |")
        lines += ["", "Settings chosen by cross-validation on the labeled images: " + "; ".join(
            f"seed {seed}: knn {r['label_spreading_knn_config']}, rbf gamma x{r['label_spreading_rbf_config']['gamma_scale']:g} "
            f"alpha {r['label_spreading_rbf_config']['alpha']}, logistic C {r['logistic_regression_config']['C']:g}"
            for seed, r in report["seeds"].items()) + "."]
    if report["regime"]:
        lines += ["", f"Regime: test error (%) after {report['iterations']:,} iterations against the unlabeled "
                  "pool (labeled images included), GAN vs LabelSpreading (knn, CV-selected), seeds 1 and 2:", "",
                  "| unlabeled images | seed | GAN | LabelSpreading knn | logistic regression (labels only) | GAN "
                  "first below LabelSpreading | GAN first below both |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for size in sorted(report["regime"], key=int):
            for seed, r in report["regime"][size].items():
                lines.append(f"| {int(size):,} | {seed} | {_pct(r['gan'])} | {_pct(r['label_spreading_knn'])} | "
                             f"{_pct(r['logistic_regression'])} | "
                             f"{r['first_iteration_below_label_spreading'] or 'not within the run'} | "
                             f"{r['first_iteration_below_both'] or 'not within the run'} |")
        lines.append("")
        lines.append("(iterations at which the GAN's test error, evaluated about every 1,200 iterations for the "
                     "smaller pools and every 600 for the full set, was first below the baseline)")
    if report["long"] and report["long"]["curve"]:
        step, error = report["long"]["curve"][-1]
        lines += ["", f"The long run (seed {report.get('long_seed', 1)}, planned {report['long']['epochs_planned']} "
                  f"epochs, {'finished' if report['long']['finished'] else 'still running when this was written'}): "
                  f"{100 * error:.2f} % at iteration {step:,}."]
    if report["speed"]:
        sp = report["speed"]
        lines += ["", "Speed of the recipe's training step (one iteration: D on 100 labeled + 100 unlabeled + 100 "
                  "generated, then the G step), seconds per iteration, the faster of two alternating rounds:", "",
                  "| | 1 thread | 2 threads |", "|---|---:|---:|",
                  f"| idle machine | {sp['idle_1_threads_s']:.3f} | {sp['idle_2_threads_s']:.3f} |",
                  f"| a second process busy | {sp['busy_1_threads_s']:.3f} | {sp['busy_2_threads_s']:.3f} |", "",
                  f"One iteration is {sp['step_flops'] / 1e9:.2f} GFLOP of matrix products ({sp['matmul_count']} "
                  f"products, counted by torch's FlopCounterMode): {sp['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s on "
                  f"one thread, {100 * sp['fraction_of_own_matmul_rate']:.0f} % of the rate of the same products "
                  f"run alone ({sp['step_matmuls_flops_per_s'] / 1e9:.1f} GFLOP/s) and "
                  f"{100 * sp['fraction_of_square_matmul_rate']:.0f} % of a 1024x1024x1024 product's "
                  f"({sp['square_1024_flops_per_s'] / 1e9:.1f} GFLOP/s). Load average during the measurement: "
                  f"{sp['machine']['load_average'][0]:.1f}."]
    return "\n".join(lines) + "\n"


def plot(report: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (seed, r) in enumerate(report["seeds"].items()):
        steps, errors = zip(*r["curve"]) if r["curve"] else ((), ())
        left.plot(steps, [100 * e for e in errors], color=colors[i], label=f"GAN, seed {seed}")
        for key, style in (("label_spreading_knn", "--"), ("logistic_regression", ":")):
            left.axhline(100 * r[key], color=colors[i], linestyle=style, linewidth=0.8)
    if report["long"] and report["long"]["curve"]:
        steps, errors = zip(*report["long"]["curve"])
        left.plot(steps, [100 * e for e in errors], color="black", linewidth=0.8, label="GAN, seed 1, long run")
    left.set_xlabel("iteration")
    left.set_ylabel("test error (%)")
    left.set_title("Fashion-MNIST, 100 labels (dashed: LabelSpreading knn, dotted: logistic regression)", fontsize=8)
    left.legend(fontsize=7)
    for size in sorted(report["regime"], key=int):
        for seed, r in report["regime"][size].items():
            right.scatter(int(size), 100 * r["gan"], color=colors[0], marker="o")
            right.scatter(int(size), 100 * r["label_spreading_knn"], color=colors[1], marker="s")
    right.scatter([], [], color=colors[0], marker="o", label="GAN")
    right.scatter([], [], color=colors[1], marker="s", label="LabelSpreading knn")
    right.set_xscale("log")
    right.set_xticks([2000, 8000, 60000], ["2,000", "8,000", "60,000"])
    right.minorticks_off()
    right.set_xlabel("unlabeled images (labeled included)")
    right.set_ylabel("test error (%)")
    right.set_title(f"after {report['iterations']:,} iterations, seeds 1 and 2", fontsize=8)
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_report(args: argparse.Namespace) -> None:
    report = collect(args)
    report["machine"] = machine_info()
    command = command_line(__file__, sys.argv[1:])
    text = markdown(report, command)
    print(text)
    if args.output is not None:
        write_results(report, args.output, text, header=False)
        if report["seeds"] or report["regime"]:
            plot(report, args.output.with_suffix(".png"))


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
    parser.add_argument("--stage", choices=["gan", "classical", "speed", "report", "all"], default="all")
    parser.add_argument("--speed-iterations", type=int, default=100, help="timed iterations of the speed stage")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.stage in ("gan", "all"):
        run_gan_jobs(args)
    if args.stage in ("classical", "all"):
        run_classical_jobs(args)
    if args.stage in ("speed", "all"):
        run_speed(args)
    if args.stage in ("report", "all"):
        run_report(args)


if __name__ == "__main__":
    main()
