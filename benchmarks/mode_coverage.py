"""Mode coverage on the 2-D ring of 8 and grid of 25 Gaussians: a vanilla GAN against each technique.

For every mixture, setting and seed the script trains ``create_experiment`` of ``recipes/mixture.py`` (with the
recipe's defaults: the same networks and the same number of iterations for every setting),
then scores 2,500 samples from fixed noise with :func:`ignite_igan.metrics.mode_coverage.mode_coverage`:

* ``modes``: modes with at least 20 high-quality samples (within 3 std of the centre); ``modes_any``: at least one;
* ``high_quality``: the share of high-quality samples; ``kl``: KL(mode histogram || uniform), nats.

Settings (each technique alone, then all four together):

* ``vanilla``: non-saturating GAN;
* ``minibatch_discrimination``: minibatch layer (B=5 kernels of C=3 dimensions) at its init-time scale;
  both networks work in units of the mixture's extent (``data_scale``: ring 2, grid 4) in every setting;
* ``feature_matching``, ``label_smoothing`` (real target 0.9), ``historical_averaging`` (λ=0.01, both players);
* ``all``: the four together;
* ``md_reference_init`` (diagnostic, ring only by default): minibatch discrimination with the reference's
  data-dependent init of the layer on 500 real examples;
* ``md_batch_mean_init`` (optional, by ``--settings``): minibatch discrimination with ``minibatch_init="batch_mean"``
  (mean pairwise distance 2 on 500 real examples).

Seeds are paired: a seed gives every setting the same generator initialization and the same real batches.
Runs go to ``--workers`` processes with one thread each. The JSON holds every run's numbers (with the per-mode
counts); the Markdown table (same name, ``.md``) gives mean ± std over the seeds; one PNG per mixture shows every
run's samples (a row per setting, a column per seed).

Run from the repository root::

    python benchmarks/mode_coverage.py --output docs/results/mode_coverage.json
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch

from _harness import ROOT, command_line, cpu_model, load_average, utc_now, write_results  # benchmarks/ is on sys.path

sys.path.insert(0, str(ROOT / "recipes"))
from mixture import MIXTURES, MixtureConfig, create_experiment, data_scale  # noqa: E402

from ignite_igan.metrics.mode_coverage import benchmark_mixture  # noqa: E402

SETTINGS: Dict[str, Dict[str, Any]] = {
    "vanilla": {},
    "minibatch_discrimination": {"minibatch_discrimination": True},
    "feature_matching": {"feature_matching": True},
    "label_smoothing": {"label_smoothing": True},
    "historical_averaging": {"historical_averaging": True},
    "all": {
        "minibatch_discrimination": True,
        "feature_matching": True,
        "label_smoothing": True,
        "historical_averaging": True,
    },
    "md_reference_init": {"minibatch_discrimination": True, "minibatch_init": "data"},
    "md_batch_mean_init": {"minibatch_discrimination": True, "minibatch_init": "batch_mean"},
}
GOAL = {"ring": 8, "grid": 24}  # modes with >= 20 of 2,500 samples, at >= 80 % high quality
GOAL_HIGH_QUALITY = 0.8


def _names(text: str, allowed: Sequence[str], flag: str) -> List[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{flag}: expected names from {list(allowed)}, got {text!r}")
    return names


def _seeds(text: str) -> List[int]:
    try:
        seeds = [int(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds: expected comma-separated integers >= 0, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds: expected distinct integers >= 0, got {text!r}")
    return seeds


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = MixtureConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixtures", default="ring,grid", help="comma-separated: ring, grid")
    parser.add_argument(
        "--settings",
        default="vanilla,minibatch_discrimination,feature_matching,label_smoothing,historical_averaging,all",
        help=f"comma-separated from {list(SETTINGS)}",
    )
    parser.add_argument(
        "--diagnostic-mixtures",
        default="ring",
        help="mixtures that also run md_reference_init ('' for none)",
    )
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (paired across settings)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs per run")
    parser.add_argument(
        "--iterations-per-epoch", type=int, default=defaults.iterations_per_epoch, help="iterations per epoch"
    )
    parser.add_argument("--decay-epochs", type=int, default=None, help="LR decay epochs (default: half of --epochs)")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes, one thread each")
    parser.add_argument("--output", type=Path, default=Path("docs/results/mode_coverage.json"))
    parser.add_argument("--plot-dpi", type=int, default=55, help="resolution of the PNGs")
    args = parser.parse_args(argv)
    try:
        args.mixtures = _names(args.mixtures, MIXTURES, "--mixtures")
        args.settings = _names(args.settings, list(SETTINGS), "--settings")
        args.diagnostic_mixtures = (
            _names(args.diagnostic_mixtures, MIXTURES, "--diagnostic-mixtures") if args.diagnostic_mixtures else []
        )
        args.seeds = _seeds(args.seeds)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    for name in ("epochs", "iterations_per_epoch", "workers", "plot_dpi"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    if args.decay_epochs is None:
        args.decay_epochs = args.epochs // 2
    if not 0 <= args.decay_epochs <= args.epochs:
        parser.error(f"--decay-epochs: expected 0..{args.epochs}, got {args.decay_epochs}")
    return args


def one_run(job: Tuple[str, str, int, Dict[str, Any]]) -> Dict[str, Any]:
    """Trains one (mixture, setting, seed) in this process with one thread; returns its scores and samples."""
    mixture, setting, seed, overrides = job
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as the recipes do on the CPU (ignite_igan.experiments.runs.Run.start)
    torch.manual_seed(seed)
    config = MixtureConfig(mixture=mixture, seed=seed, **SETTINGS[setting], **overrides)
    experiment = create_experiment(config, device="cpu")
    started = time.perf_counter()
    experiment.run()
    seconds = time.perf_counter() - started
    samples = experiment.samples()
    result = experiment.evaluate()
    return {
        "mixture": mixture,
        "setting": setting,
        "seed": seed,
        "seconds": round(seconds, 2),
        "iterations": experiment.trainer.state.iteration,
        "modes": result["modes"],
        "modes_any": result["modes_any"],
        "high_quality": result["high_quality"],
        "kl": result["kl"],
        "counts": result["counts"],
        "goal_met": result["modes"] >= GOAL[mixture] and result["high_quality"] >= GOAL_HIGH_QUALITY,
        "samples": samples.tolist(),
    }


def _cost(job: Tuple[str, str, int, Dict[str, Any]]) -> int:
    switches = SETTINGS[job[1]]
    return 4 * bool(switches.get("minibatch_discrimination")) + bool(switches.get("feature_matching"))


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: List[Dict[str, Any]], mixtures: Sequence[str], settings: Sequence[str]) -> Dict[str, Any]:
    table: Dict[str, Any] = {}
    for mixture in mixtures:
        by_setting = {}
        for setting in settings:
            chosen = sorted((r for r in runs if r["mixture"] == mixture and r["setting"] == setting), key=lambda r: r["seed"])
            if not chosen:
                continue
            row = {key: _mean_std([r[key] for r in chosen]) for key in ("modes", "modes_any", "high_quality", "kl", "seconds")}
            row["goal_met"] = sum(r["goal_met"] for r in chosen)
            row["seeds"] = len(chosen)
            by_setting[setting] = row
        table[mixture] = by_setting
    return table


def paired_comparison(runs: List[Dict[str, Any]], mixture: str, setting: str) -> Dict[str, int]:
    """Per seed: does ``setting`` cover more modes (>= 20 samples) than the vanilla GAN on the same seed?"""
    vanilla = {r["seed"]: r for r in runs if r["mixture"] == mixture and r["setting"] == "vanilla"}
    better = worse = same = 0
    for r in runs:
        if r["mixture"] != mixture or r["setting"] != setting or r["seed"] not in vanilla:
            continue
        difference = r["modes"] - vanilla[r["seed"]]["modes"]
        better += difference > 0
        worse += difference < 0
        same += difference == 0
    return {"more_modes": better, "fewer_modes": worse, "same": same}


def markdown(result: Dict[str, Any]) -> str:
    lines = []
    config = result["config"]
    for mixture, rows in result["table"].items():
        total = GOAL[mixture]
        modes = 8 if mixture == "ring" else 25
        lines.append(
            f"**{mixture}** ({modes} modes; {config['iterations']} iterations of batch {config['batch_size']} per run, "
            f"{len(result['config']['seeds'])} paired seeds; mean ± std)\n"
        )
        lines.append(
            "| setting | modes (≥ 20 of 2,500) | modes (≥ 1) | high quality | KL(modes ‖ uniform) | "
            f"goal met (≥ {total} modes, ≥ 80 % HQ) | more modes than vanilla (same seed) | s / run |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for setting, row in rows.items():
            paired = result["paired"][mixture].get(setting)
            paired_text = "—" if paired is None else f"{paired['more_modes']}/{row['seeds']}"
            lines.append(
                f"| {setting} | {row['modes'][0]:.1f} ± {row['modes'][1]:.1f} | {row['modes_any'][0]:.1f} ± "
                f"{row['modes_any'][1]:.1f} | {100 * row['high_quality'][0]:.1f} ± {100 * row['high_quality'][1]:.1f} % | "
                f"{row['kl'][0]:.3f} ± {row['kl'][1]:.3f} | {row['goal_met']}/{row['seeds']} | {paired_text} | "
                f"{row['seconds'][0]:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(runs: List[Dict[str, Any]], mixture: str, settings: Sequence[str], seeds: Sequence[int], path: Path, dpi: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [s for s in settings if any(r["mixture"] == mixture and r["setting"] == s for r in runs)]
    figure, axes = plt.subplots(len(rows), len(seeds), figsize=(1.9 * len(seeds), 2.0 * len(rows)), squeeze=False)
    target = benchmark_mixture(mixture)
    for i, setting in enumerate(rows):
        for j, seed in enumerate(seeds):
            ax = axes[i][j]
            found = [r for r in runs if r["mixture"] == mixture and r["setting"] == setting and r["seed"] == seed]
            if not found:
                ax.axis("off")
                continue
            r = found[0]
            title = f"{r['modes']}/{r['modes_any']} modes, {100 * r['high_quality']:.0f}% HQ"
            target.plot(torch.tensor(r["samples"]), ax=ax, title=title)
            if j == 0:
                ax.set_ylabel(setting.replace("_", "\n"), fontsize=8)
    figure.suptitle(f"{mixture}: rows = settings, columns = seeds {list(seeds)}; red circles = 3 std", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> Dict[str, Any]:
    args = parse_args(argv)
    overrides = {
        "epochs": args.epochs,
        "iterations_per_epoch": args.iterations_per_epoch,
        "decay_epochs": args.decay_epochs,
    }
    jobs = [
        (mixture, setting, seed, overrides)
        for mixture in args.mixtures
        for setting in args.settings + (["md_reference_init"] if mixture in args.diagnostic_mixtures else [])
        for seed in args.seeds
    ]
    jobs.sort(key=_cost, reverse=True)  # the slow (minibatch) runs first, so the pool ends together
    started = time.time()
    context = multiprocessing.get_context("spawn")
    runs: List[Dict[str, Any]] = []
    with context.Pool(args.workers) as pool:
        for run in pool.imap_unordered(one_run, jobs):
            runs.append(run)
            print(
                f"[{time.time() - started:6.0f} s] {run['mixture']:4s} {run['setting']:26s} seed {run['seed']}: "
                f"modes {run['modes']:2d} (any {run['modes_any']:2d}), HQ {100 * run['high_quality']:5.1f} %, "
                f"KL {run['kl']:.3f}, {run['seconds']:.0f} s",
                flush=True,
            )
    wall = time.time() - started
    runs.sort(key=lambda r: (r["mixture"], list(SETTINGS).index(r["setting"]), r["seed"]))
    settings = args.settings + (["md_reference_init"] if args.diagnostic_mixtures else [])
    defaults = dataclasses.asdict(MixtureConfig(**overrides))
    result: Dict[str, Any] = {
        "date": utc_now(),
        "command": command_line(__file__, argv),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "load_average_at_end": load_average(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "wall_seconds": round(wall, 1),
        "config": {
            **{k: v for k, v in defaults.items() if k not in ("mixture", "seed")},
            "iterations": args.epochs * args.iterations_per_epoch,
            "seeds": args.seeds,
            "workers": args.workers,
            "threads_per_worker": 1,
            "settings": {name: SETTINGS[name] for name in settings},
            "resolved_data_scale": {
                m: data_scale(MixtureConfig(mixture=m, **overrides), benchmark_mixture(m)) for m in args.mixtures
            },
        },
        "goal": {"modes": GOAL, "min_count": 20, "high_quality": GOAL_HIGH_QUALITY},
        "table": summarize(runs, args.mixtures, settings),
        "paired": {m: {s: paired_comparison(runs, m, s) for s in settings if s != "vanilla"} for m in args.mixtures},
        "runs": [{k: v for k, v in r.items() if k != "samples"} for r in runs],
    }
    table = markdown(result)
    write_results(result, args.output, table + "\n", header=False, indent=1)
    for mixture in args.mixtures:
        path = args.output.with_name(f"{args.output.stem}_{mixture}.png")
        plot(runs, mixture, settings, args.seeds, path, args.plot_dpi)
    print(table)
    print(f"wall time {wall:.0f} s; JSON {args.output}")
    return result


if __name__ == "__main__":
    main()
