"""Several seeds of one recipe in one command, each seed's run being exactly the run that seed gets alone.

The paper reports every semi-supervised number as the mean and spread over 10 seeds (:ref:`ref-seeds`: each run gets its
own ``seed`` and ``seed_data``). :func:`run_seeds` starts one process per seed, the recipe's own command with
``--seed k --seed-data k --output-dir <output-dir>/seed<k>``, at most ``jobs`` at a time, and gathers the seeds'
``summary.json`` into ``<output-dir>/seeds.json``. Each seed's folder is an ordinary run folder (its own record,
lock, checkpoints, TensorBoard log and summary), so:

- a seed's run is the run that seed gets alone: same labeled subset, data order, initialization and noise;
- ``--resume`` resumes every seed that has started (a complete one is left as it is) and starts the others;
- the seeds' processes share the machine as separate jobs do: on a 2-core CPU three seeds took 0.60x the time of
  one after another; on a GPU the device runs the processes' steps one after another, so a graph-captured step,
  which keeps the GPU busy, takes as long per seed with ten seeds as with one (2.68 ms per iteration on an H200).

Processes rather than one process with the seeds' parameters stacked: stacking would change every kernel a seed
runs (a seed's numbers would then depend on how many seeds run beside it), and a process per seed needs nothing from
the techniques, handlers or checkpoints; stacking is what would make seeds cheaper on a GPU. ``docs/RESULTS.md``
has the measured wall times.

Example:
    >>> parse_seeds("1-3,7")
    [1, 2, 3, 7]
    >>> without_flags(["--epochs", "5", "--seeds=1-3", "--jobs", "2"], ("--seeds", "--jobs"))
    ['--epochs', '5']
    >>> summarize({1: 0.25, 2: 0.35})["mean"]
    0.3
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from ignite_igan.checkpointing import write_json_atomic
from ignite_igan.experiments.cli import MAX_SEED
from ignite_igan.validation import check_int

__all__ = [
    "parse_seeds", "without_flags", "summarize", "run_seeds", "seed_folder", "default_jobs", "seed_table",
    "report_lines", "seeds_command", "SeedsFailed",
]


class SeedsFailed(RuntimeError):
    """One or more seeds' runs ended with an error; the message names each with its log."""


def parse_seeds(text: str) -> List[int]:
    """``--seeds``: comma-separated seeds and inclusive ranges (``"1-10"``, ``"1,3,5-7"``), each once.

    Raises:
        argparse.ArgumentTypeError: for anything else, naming what was expected.
    """
    seeds: List[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            low, high = int(low), int(high or low)
            if not 0 <= low <= high <= MAX_SEED:
                raise ValueError(part)
            seeds.extend(range(low, high + 1))
    except (AttributeError, ValueError):  # not text, or a part that is neither a seed nor a range low-high
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(
            f"expected seeds such as 1-10 or 1,3,5-7 (integers in [0, {MAX_SEED}], each once), got {text!r}"
        )
    return seeds


def without_flags(argv: Sequence[str], flags: Sequence[str]) -> List[str]:
    """``argv`` without the given value-taking flags (``--flag value`` or ``--flag=value``)."""
    out: List[str] = []
    is_value = False  # the item after a dropped flag is its value
    for item in argv:
        if not is_value and item not in flags and not item.startswith(tuple(flag + "=" for flag in flags)):
            out.append(item)
        is_value = not is_value and item in flags
    return out


def seed_folder(output_dir: Path, seed: int) -> Path:
    """Where seed ``seed`` of a multi-seed run lives: ``<output_dir>/seed<seed>``."""
    return Path(output_dir) / f"seed{seed}"


def summarize(values: Mapping[int, float]) -> Dict[str, Any]:
    """Mean and sample standard deviation (n - 1, as a spread over seeds is usually reported) of per-seed values."""
    numbers = [float(values[seed]) for seed in sorted(values)]
    if not numbers or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"values must be finite numbers, one per seed, got {dict(values)!r}")
    return {"seeds": sorted(values), "count": len(numbers), "mean": statistics.fmean(numbers),
            "std": statistics.stdev(numbers) if len(numbers) > 1 else 0.0}


def run_seeds(
    command: Sequence[str],
    seeds: Sequence[int],
    output_dir: Path,
    *,
    jobs: int,
    resume: bool = False,
    stream: Any = None,
) -> Dict[int, Dict[str, Any]]:
    """Runs ``command`` once per seed, at most ``jobs`` processes at a time, and returns each seed's summary.

    Args:
        command: the recipe's command for one run, without ``--seed``, ``--seed-data``, ``--output-dir`` or
            ``--resume`` (added per seed).
        seeds: the seeds; seed ``k`` runs with ``--seed k --seed-data k`` in :func:`seed_folder`.
        output_dir: the multi-seed run's folder.
        jobs: processes at a time, >= 1.
        resume: resume each seed's folder that holds a run (complete ones exit at once); start the others.
        stream: where the per-seed progress lines go (``sys.stdout`` by default).

    Returns:
        ``{seed: summary}`` of the seeds' ``summary.json``.

    Raises:
        SeedsFailed: if a seed's process exits with an error (the others are finished first); the message names
            each failed seed, its exit status and its log, ``<output_dir>/seed<k>.log``.
    """
    jobs = check_int("jobs", jobs, minimum=1)
    stream = sys.stdout if stream is None else stream
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    log_path = {seed: output_dir / f"seed{seed}.log" for seed in seeds}
    processes: List[subprocess.Popen] = []
    started = time.perf_counter()

    def run(seed: int) -> int:  # in one of the pool's ``jobs`` threads: starts the seed's process, waits for it
        folder = seed_folder(output_dir, seed)
        extra = ["--seed", str(seed), "--seed-data", str(seed), "--output-dir", str(folder)]
        if resume and (folder / "run.json").is_file():
            extra.append("--resume")
        with open(log_path[seed], "a") as log:
            processes.append(subprocess.Popen([*command, *extra], stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL))
            code = processes[-1].wait()
        elapsed = f"after {time.perf_counter() - started:.0f} s"
        outcome = f"failed (exit status {code}) {elapsed}; see {log_path[seed]}" if code else f"done {elapsed}"
        print(f"seed {seed}: {outcome}", file=stream, flush=True)
        return code

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        codes = dict(zip(seeds, pool.map(run, seeds)))
    finally:  # interrupted: the seeds' processes stop with it (each resumes from its newest checkpoint)
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()  # a no-op for a process that has ended
        pool.shutdown()
    failed = {seed: code for seed, code in codes.items() if code}
    if failed:
        raise SeedsFailed("; ".join(f"seed {seed} exited with status {code} (log: {log_path[seed]})"
                                    for seed, code in failed.items()))
    summaries = {}
    for seed in seeds:
        path = seed_folder(output_dir, seed) / "summary.json"
        if not path.is_file():
            raise SeedsFailed(f"seed {seed} ended without a summary ({path}); see {log_path[seed]}")
        summaries[seed] = json.loads(path.read_text())
    return summaries


def default_jobs(seeds: int, threads: Optional[int], accelerator: bool) -> int:
    """As many processes as seeds, up to one per ``threads`` CPU cores (each process drives its device from one
    core, on a GPU too)."""
    cores = os.cpu_count() or 1
    per_job = 1 if accelerator else max(1, threads or 1)
    return max(1, min(seeds, cores // per_job))


def seed_table(
    experiment: str,
    summaries: Mapping[int, Mapping[str, Any]],
    *,
    paper: Optional[str],
    jobs: int,
    wall_seconds: float,
    command: Sequence[str],
) -> Dict[str, Any]:
    """The multi-seed run's table (``seeds.json``): each seed's metrics and, for the test error, its count and the
    labeled-only baseline's error where every seed has them, the mean and std over the seeds (:func:`summarize`).

    Example:
        >>> runs = {1: {"metrics": {"test_error": 0.2, "test_error_count": 20, "test_examples": 100}},
        ...         2: {"metrics": {"test_error": 0.3, "test_error_count": 30, "test_examples": 100}}}
        >>> table = seed_table("demo", runs, paper=None, jobs=2, wall_seconds=1.0, command=["python", "demo.py"])
        >>> round(table["test_error"]["mean"], 6), table["test_error_count"]["std"] > 0
        (0.25, True)
    """
    per_seed = {seed: dict(summary["metrics"]) for seed, summary in summaries.items()}
    table: Dict[str, Any] = {"experiment": experiment, "seeds": list(per_seed), "jobs": jobs,
                             "wall_seconds": round(float(wall_seconds), 1), "paper": paper, "per_seed": per_seed,
                             "command": list(command)}
    for key in ("test_error", "test_error_count", "baseline_test_error"):
        if all(key in metrics for metrics in per_seed.values()):
            table[key] = summarize({seed: metrics[key] for seed, metrics in per_seed.items()})
    return table


def report_lines(table: Mapping[str, Any], path: Optional[Path] = None) -> List[str]:
    """The printed report of :func:`seed_table`: a line per seed, the mean ± std, the paper's number, the time."""
    per_seed = table["per_seed"]
    examples = next(iter(per_seed.values()))["test_examples"]
    lines = [f"{table['experiment']}: test error of the averaged discriminator after the last epoch, "
             f"{len(per_seed)} seeds"]
    for seed, metrics in per_seed.items():
        baseline = metrics.get("baseline_test_error")
        lines.append(f"  seed {seed:<4} {100 * metrics['test_error']:6.2f} %  ({metrics['test_error_count']:,} of "
                     f"{examples:,})" + (f"   labeled-only {100 * baseline:.2f} %" if baseline is not None else ""))
    error, count = table["test_error"], table["test_error_count"]
    lines.append(f"  mean ± std  {100 * error['mean']:.2f} ± {100 * error['std']:.2f} %  ({count['mean']:,.1f} ± "
                 f"{count['std']:,.1f} errors of {examples:,}; std with n - 1)")
    if "baseline_test_error" in table:
        base = table["baseline_test_error"]
        lines.append(f"  labeled-only {100 * base['mean']:.2f} ± {100 * base['std']:.2f} %")
    lines.append(f"  paper       {table['paper'] or 'no number for this setting'}")
    lines.append(f"  wall time   {table['wall_seconds']:.0f} s" + (f"; table {path}" if path is not None else ""))
    return lines


def seeds_command(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    program: Sequence[str],
    argv: Sequence[str],
    *,
    experiment: str,
    paper: Optional[str],
) -> Dict[str, Any]:
    """A recipe's ``--seeds``: runs ``program`` once per seed (:func:`run_seeds`), writes ``seeds.json`` and prints
    the table; errors end in ``parser.error`` / ``parser.exit``.

    Args:
        parser, args: the recipe's parser and parsed flags (``seeds``, ``jobs``, ``output_dir``, ``resume``,
            ``device``, ``threads``, ``config``, ``nproc_per_node``).
        program: the command that runs the recipe, e.g. ``[sys.executable, __file__, name]``.
        argv: the recipe's command-line arguments; the per-seed flags are replaced.
        experiment, paper: the experiment's name and the paper's number, for the table.

    Returns:
        The table written to ``<output_dir>/seeds.json``.
    """
    if args.config is not None and {"seeds", "jobs"} & set(json.loads(Path(args.config).read_text())):
        parser.error("--config: give --seeds and --jobs on the command line (each seed's run reads the config too)")
    if getattr(args, "nproc_per_node", None):
        parser.error("--seeds runs one process per seed; it does not combine with --nproc-per-node")
    # Each seed's command: this one without the flags run_seeds sets per seed. Its output goes to a log file, so
    # the recipe shows a line per epoch there (no terminal, no progress bar).
    own = without_flags(argv, ("--seeds", "--jobs", "--output-dir", "--seed", "--seed-data"))
    command = [*program, *(a for a in own if a != "--resume")]
    accelerator = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) != "cpu"
    jobs = args.jobs or default_jobs(len(args.seeds), args.threads, accelerator)
    print(f"{experiment}: {len(args.seeds)} seeds, {jobs} at a time, in {args.output_dir}", flush=True)
    started = time.time()
    try:
        summaries = run_seeds(command, args.seeds, args.output_dir, jobs=jobs, resume=args.resume)
    except SeedsFailed as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    table = seed_table(experiment, summaries, paper=paper, jobs=jobs, wall_seconds=time.time() - started,
                       command=command)
    path = Path(args.output_dir) / "seeds.json"
    write_json_atomic(path, table)
    print("\n".join(report_lines(table, path)), flush=True)
    return table
