"""Several seeds of one recipe in one command, each seed's run being exactly the run that seed gets alone.

The paper reports every semi-supervised number as the mean and spread over 10 seeds (:ref:`ref-seeds`: each run gets its
own ``seed`` and ``seed_data``). :func:`run_seeds` starts one process per seed, the recipe's own command with
``--seed k --seed-data k --output-dir <output-dir>/seed<k>``, at most ``jobs`` at a time, and gathers the seeds'
``summary.json`` into ``<output-dir>/seeds.json``. Each seed's folder is an ordinary run folder (its own record,
lock, checkpoints, TensorBoard log and summary), so:

- a seed's run is the run that seed gets alone: same labeled subset, data order, initialization and noise;
- ``--resume`` resumes every seed that has started, starts the others and leaves complete ones alone;
- the seeds' processes share the machine as separate jobs do: on a 2-core CPU three seeds took 0.60x the time of
  one after another; on a GPU the device runs the processes' steps one after another, so a graph-captured step,
  which keeps the GPU busy, takes as long per seed with ten seeds as with one (2.68 ms per iteration on an H200).

**The top folder is a run folder too** (:func:`seeds_command`), with a single run's promises: its ``run.json``
records the experiment, the seeds, the configuration and the epochs (``kind: "multi-seed"``); the parent process
holds the folder's lock while the seeds run, so a second multi-seed run there is refused at once; a single run
into it, or ``--seeds`` into a single run's folder, is refused; ``--resume`` checks the flags, the epochs and the
seed list against the record (a longer list, or more epochs, only with ``--extend``), and on a complete run touches
no file. SIGTERM or Ctrl-C to the parent stops every seed's process (each resumes from its newest checkpoint) and
prints how to resume; a failed seed's last log lines, and any checkpoint fallback inside a seed, are printed by the
parent.

Processes rather than one process with the seeds' parameters stacked: stacking would change every kernel a seed
runs (a seed's numbers would then depend on how many seeds run beside it), and a process per seed needs nothing from
the techniques, handlers or checkpoints; stacking is what would make seeds cheaper on a GPU. ``docs/RESULTS.md``
has the measured wall times.

Example:
    >>> parse_seeds("1-3,7")
    [1, 2, 3, 7]
    >>> format_seeds([1, 2, 3, 7])
    '1-3,7'
    >>> without_flags(["--epochs", "5", "--seeds=1-3", "--jobs", "2"], ("--seeds", "--jobs"))
    ['--epochs', '5']
    >>> summarize({1: 0.25, 2: 0.35})["mean"]
    0.3
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ignite_igan.checkpointing import free_bytes, jsonable, list_checkpoints, write_json_atomic
from ignite_igan.experiments import runs
from ignite_igan.experiments.cli import MAX_SEED
from ignite_igan.experiments.runs import RunFolderError, format_seeds
from ignite_igan.validation import (
    check_bool, check_int, check_int_list, check_mapping, check_path, check_real, check_string, check_strings,
    describe,
)

__all__ = [
    "parse_seeds", "format_seeds", "without_flags", "summarize", "run_seeds", "seed_folder", "default_jobs",
    "seed_table", "report_lines", "check_seed_flags", "seeds_command", "SeedsFailed", "SeedsStopped",
]

#: The flags :func:`seeds_command` sets per seed or reads itself: not part of the multi-seed run's configuration.
PER_SEED_FLAGS = frozenset({"seeds", "jobs", "seed", "seed_data"})
#: Lines of a failed seed's log that the parent prints.
TAIL_LINES = 5
_FALLBACK = re.compile(r"\b\w*Warning: (.*checkpoint.*)$")


class SeedsFailed(RuntimeError):
    """One or more seeds' runs ended with an error or without a summary; the message names each, with the last
    lines of its log. ``failed`` maps each such seed to its reason."""

    def __init__(self, message: str, failed: Optional[Mapping[int, str]] = None) -> None:
        super().__init__(message)
        self.failed = dict(failed or {})


class SeedsStopped(KeyboardInterrupt):
    """The parent was interrupted (Ctrl-C, SIGTERM); every seed's process has been stopped. ``signal`` names it."""

    def __init__(self, message: str, signal_number: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signal = signal.Signals(signal_number)


class _Terminated(KeyboardInterrupt):
    """Raised in the main thread by the parent's SIGTERM handler."""


def _seed_list(name: str, seeds: Any) -> List[int]:
    return check_int_list(name, seeds, minimum=0, maximum=MAX_SEED, unique=True)


# --------------------------------------------------------------------------------------------------------------
# The seeds, the command line
# --------------------------------------------------------------------------------------------------------------
def parse_seeds(text: str) -> List[int]:
    """``--seeds``: comma-separated seeds and inclusive ranges (``"1-10"``, ``"1,3,5-7"``), each once.

    Raises:
        argparse.ArgumentTypeError: for text that names no such list, naming what was expected.
        ignite_igan.validation.ArgumentTypeError: ``text`` is not a string.
    """
    check_string("text", text, allow_empty=True)
    seeds: List[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            low, high = int(low), int(high or low)
            if not 0 <= low <= high <= MAX_SEED:
                raise ValueError(part)
            seeds.extend(range(low, high + 1))
    except ValueError:  # a part that is neither a seed nor a range low-high
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(
            f"expected seeds such as 1-10 or 1,3,5-7 (integers in [0, {MAX_SEED}], each once), got {text!r}"
        )
    return seeds


def without_flags(argv: Sequence[str], flags: Sequence[str]) -> List[str]:
    """``argv`` without the given value-taking flags (``--flag value`` or ``--flag=value``).

    Example:
        >>> without_flags(["--epochs", "5", "--seeds=1-3", "--jobs", "2"], ["--seeds", "--jobs"])
        ['--epochs', '5']
    """
    argv = check_strings("argv", argv, allow_empty=True, example="['--epochs', '5']")
    flags = check_strings("flags", flags, allow_empty=True, example="['--seeds', '--jobs']")
    out: List[str] = []
    is_value = False  # the item after a dropped flag is its value
    for item in argv:
        if not is_value and item not in flags and not item.startswith(tuple(flag + "=" for flag in flags)):
            out.append(item)
        is_value = not is_value and item in flags
    return out


def _canonical_argv(parser: argparse.ArgumentParser, argv: Sequence[str]) -> List[str]:
    """``argv`` with each abbreviated flag (``--job 2``, which argparse accepts) written out (``--jobs 2``)."""
    options, out = [option for action in parser._actions for option in action.option_strings], []
    for index, item in enumerate(argv):
        if item == "--":
            return out + list(argv[index:])
        name, eq, value = item.partition("=")
        if item.startswith("--") and name not in options:
            matches = [option for option in options if option.startswith(name)]
            item = matches[0] + eq + value if len(matches) == 1 else item
        out.append(item)
    return out


def _given(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set:
    """The destinations of the flags given on the command line (not those from defaults or ``--config``)."""
    unset = object()
    # argparse sets a default only where the namespace lacks the attribute: what is still unset was not given.
    probe = argparse.Namespace(**{action.dest: unset for action in parser._actions})
    parser.parse_args(list(argv), namespace=probe)
    return {dest for dest, value in vars(probe).items() if value is not unset}


def _config_file_keys(args: argparse.Namespace) -> set:
    # (cli.parse_args has read and checked the file already)
    path = getattr(args, "config", None)
    return set(runs._read_json_object(path) or {}) if path is not None else set()


def check_seed_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str]) -> None:
    """Refuses, through ``parser.error``, the flags that ``--seeds`` overrides or that mean nothing without it:
    ``--seed`` / ``--seed-data`` with ``--seeds`` (seed k runs with ``--seed k --seed-data k``), ``--jobs``
    without ``--seeds``, and ``--seeds`` / ``--jobs`` in a ``--config`` file (each seed's run reads it too).

    Example:
        >>> from ignite_igan.experiments import cli
        >>> parser = cli.recipe_parser("demo", epochs=1, labels_per_class=10, data_dir=None)
        >>> _ = parser.add_argument("--seeds", type=parse_seeds)
        >>> _ = parser.add_argument("--jobs", type=int)
        >>> check_seed_flags(parser, parser.parse_args(["--seeds", "1-3"]), ["--seeds", "1-3"])  # accepted
        >>> check_seed_flags(parser, parser.parse_args(["--seeds", "1-3", "--seed", "4"]), ["--seeds", "1-3", "--seed",
        ...                  "4"])  # prints "demo: error: --seed: --seeds sets each seed's --seed ..." to stderr
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    given, in_config = _given(parser, check_strings("argv", argv, allow_empty=True)), _config_file_keys(args)
    if getattr(args, "seeds", None) is None:
        if getattr(args, "jobs", None) is not None:
            where = "--jobs" if "jobs" in given else "--config: key 'jobs'"
            parser.error(f"{where}: sets how many seeds run at a time, so it goes with --seeds (e.g. --seeds 1-10 "
                         "--jobs 2); a run of one seed is one process: drop --jobs")
        return
    if {"seeds", "jobs"} & in_config:
        parser.error("--config: give --seeds and --jobs on the command line (each seed's run reads the config too)")
    for dest in ("seed", "seed_data"):
        flag = "--" + dest.replace("_", "-")
        where = flag if dest in given else f"--config: key {dest!r}" if dest in in_config else None
        if where is not None:
            parser.error(f"{where}: --seeds sets each seed's --seed and --seed-data (seed k runs with --seed k "
                         f"--seed-data k), so {flag} would be ignored; drop it, or run one seed without --seeds")
    if getattr(args, "nproc_per_node", None):
        parser.error("--seeds runs one process per seed; it does not combine with --nproc-per-node")


def seed_folder(output_dir: Path, seed: int) -> Path:
    """Where seed ``seed`` of a multi-seed run lives: ``<output_dir>/seed<seed>``.

    Example:
        >>> seed_folder(Path("runs/digits_ssl"), 3).as_posix()
        'runs/digits_ssl/seed3'
    """
    return _seed_dir(check_path("output_dir", output_dir), check_int("seed", seed, minimum=0, maximum=MAX_SEED))


def _seed_dir(output_dir: Path, seed: int) -> Path:  # seed_folder without its checks, for seeds already checked
    return output_dir / f"seed{seed}"


# --------------------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------------------
def summarize(values: Mapping[int, float]) -> Dict[str, Any]:
    """Mean and sample standard deviation (n - 1, as a spread over seeds is usually reported) of per-seed values.

    Args:
        values: ``{seed: value}``, at least one, each a finite real number (Python or NumPy).

    Returns:
        ``{"seeds": sorted seeds, "count": n, "mean": mean, "std": sample std (0.0 for one seed)}``.

    Example:
        >>> summarize({2: 0.30, 1: 0.20})
        {'seeds': [1, 2], 'count': 2, 'mean': 0.25, 'std': 0.07071067811865474}
    """
    check_mapping("values", values, "a mapping of seed to a finite number")
    seeds = sorted(check_int(f"values key {describe(seed)}", seed) for seed in values)
    numbers = [check_real(f"values[{seed}]", values[seed]) for seed in sorted(values)]
    return {"seeds": seeds, "count": len(numbers), "mean": statistics.fmean(numbers),
            "std": statistics.stdev(numbers) if len(numbers) > 1 else 0.0}


def seed_table(
    experiment: str,
    summaries: Mapping[int, Mapping[str, Any]],
    *,
    paper: Optional[str],
    jobs: int,
    wall_seconds: float,
    command: Sequence[str],
) -> Dict[str, Any]:
    """The multi-seed run's table (``seeds.json``): each seed's metrics and, for the test error, its count, the live
    discriminator's error and the labeled-only baseline's error where every seed has them, the mean and std over the
    seeds (:func:`summarize`).

    Args:
        experiment: the experiment's name.
        summaries: ``{seed: summary}``, each a run's ``summary.json`` (a mapping with a ``"metrics"`` mapping).
        paper: the paper's number, or None.
        jobs: processes at a time, >= 1.
        wall_seconds: the command's wall time, >= 0.
        command: the command of one seed, a sequence of strings.

    Example:
        >>> runs = {1: {"metrics": {"test_error": 0.2, "test_error_count": 20, "test_examples": 100}},
        ...         2: {"metrics": {"test_error": 0.3, "test_error_count": 30, "test_examples": 100}}}
        >>> table = seed_table("demo", runs, paper=None, jobs=2, wall_seconds=1.0, command=["python", "demo.py"])
        >>> round(table["test_error"]["mean"], 6), table["test_error_count"]["std"] > 0
        (0.25, True)
    """
    check_string("experiment", experiment)
    check_string("paper", paper, allow_none=True, allow_empty=True)
    jobs = check_int("jobs", jobs, minimum=1)
    wall_seconds = check_real("wall_seconds", wall_seconds, minimum=0.0)
    command = check_strings("command", command, example="['python', 'recipes/digits_ssl.py']")
    check_mapping("summaries", summaries, "a mapping of seed to its summary.json")
    _seed_list("summaries (its keys, the seeds)", list(summaries))
    per_seed = {}
    for seed, summary in summaries.items():
        metrics = summary.get("metrics") if isinstance(summary, Mapping) else None
        check_mapping(f"summaries[{seed}]['metrics']", metrics, "the run's metrics (a summary.json's 'metrics')")
        per_seed[int(seed)] = dict(metrics)
    table: Dict[str, Any] = {"experiment": experiment, "seeds": list(per_seed), "jobs": jobs,
                             "wall_seconds": round(wall_seconds, 1), "paper": paper, "per_seed": per_seed,
                             "command": command}
    for key in ("test_error", "test_error_count", "test_error_live", "baseline_test_error"):
        if all(key in metrics for metrics in per_seed.values()):
            table[key] = summarize({seed: metrics[key] for seed, metrics in per_seed.items()})
    return table


def report_lines(table: Mapping[str, Any], path: Optional[Path] = None) -> List[str]:
    """The printed report of :func:`seed_table`: a line per seed, the mean ± std, the paper's number, the time."""
    check_mapping("table", table, "a table of seed_table()")
    path = check_path("path", path, allow_none=True)
    missing = [key for key in ("experiment", "per_seed", "test_error", "test_error_count", "wall_seconds")
               if key not in table or (key == "per_seed" and not table[key])]
    if missing:  # (a seed's metrics without a test error: a KeyError naming it)
        raise ValueError(f"table must be a table of seed_table() (with the seeds' test errors); it lacks {missing}")
    per_seed = table["per_seed"]
    examples = next(iter(per_seed.values()))["test_examples"]
    lines = [f"{table['experiment']}: test error of the averaged discriminator after the last epoch, "
             f"{len(per_seed)} seeds"]
    for seed, metrics in per_seed.items():
        live, baseline = metrics.get("test_error_live"), metrics.get("baseline_test_error")
        lines.append(f"  seed {seed:<4} {100 * metrics['test_error']:6.2f} %  ({metrics['test_error_count']:,} of "
                     f"{examples:,})" + (f"   live {100 * live:.2f} %" if live is not None else "")
                     + (f"   labeled-only {100 * baseline:.2f} %" if baseline is not None else ""))
    error, count = table["test_error"], table["test_error_count"]
    lines.append(f"  mean ± std  {100 * error['mean']:.2f} ± {100 * error['std']:.2f} %  ({count['mean']:,.1f} ± "
                 f"{count['std']:,.1f} errors of {examples:,}; std with n - 1)")
    # The discriminator as trained beside its average, and the labeled-only baseline, where every seed has them.
    for key, label in (("test_error_live", "live       "), ("baseline_test_error", "labeled-only")):
        if key in table:
            lines.append(f"  {label} {100 * table[key]['mean']:.2f} ± {100 * table[key]['std']:.2f} %")
    lines.append(f"  paper       {table.get('paper') or 'no number for this setting'}")
    lines.append(f"  wall time   {table['wall_seconds']:.0f} s" + (f"; table {path}" if path is not None else ""))
    return lines


# --------------------------------------------------------------------------------------------------------------
# The seeds' processes
# --------------------------------------------------------------------------------------------------------------
def default_jobs(seeds: int, threads: Optional[int], accelerator: bool) -> int:
    """As many processes as seeds, up to one per ``threads`` CPU cores (each process drives its device from one
    core, on a GPU too).

    Example:
        >>> default_jobs(1, threads=1, accelerator=False)  # one seed: one process, on any machine
        1
    """
    seeds = check_int("seeds", seeds, minimum=1)
    threads = check_int("threads", threads, minimum=1, allow_none=True)
    accelerator = check_bool("accelerator", accelerator)
    cores = os.cpu_count() or 1
    per_job = 1 if accelerator else max(1, threads or 1)
    return max(1, min(seeds, cores // per_job))


def _seed_record(folder: Path) -> Optional[Dict[str, Any]]:
    try:
        return runs.read_record(folder)
    except RunFolderError:
        return None  # the seed's own run says what is wrong with it


def _log_news(path: Path, offset: int) -> Tuple[List[str], List[str]]:
    """The last lines that the seed's process wrote to its log (after ``offset``), and its checkpoint warnings."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return [], []
    # A progress bar's carriage returns: only the last state of each line.
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.splitlines()]
    lines = [line for line in lines if line.strip()]
    warned = [match.group(1) for line in lines if (match := _FALLBACK.search(line))]
    return [line[:300] for line in lines[-TAIL_LINES:]], list(dict.fromkeys(warned))


def _ended(code: int, summary: Path) -> str:
    """How a seed's process that failed ended: its signal or exit status, or (status 0) without ``summary``."""
    if code == 0:
        return f"ended without a summary ({summary})"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


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

    The folder ``output_dir`` is locked while the seeds run (a second call into it is refused at once). Seed ``k``'s
    process writes to ``<output_dir>/seed<k>.log``; when it ends, the parent prints a line, with the last lines of
    the log where it failed, and any checkpoint warning found there (a corrupt checkpoint that was skipped).
    SIGTERM (in the main thread) or Ctrl-C stops every seed's process, then raises :class:`SeedsStopped`.

    Args:
        command: the recipe's command for one run, a sequence of strings, without ``--seed``, ``--seed-data``,
            ``--output-dir``, ``--resume`` or ``--extend`` (added per seed).
        seeds: the seeds, each once, integers in ``[0, MAX_SEED]``; seed ``k`` runs with ``--seed k --seed-data k``
            in :func:`seed_folder`.
        output_dir: the multi-seed run's folder.
        jobs: processes at a time, >= 1.
        resume: resume each seed's folder that holds a run (with ``--resume``, and ``--extend`` where the command's
            ``--epochs`` exceed the seed's recorded ones); start the others as fresh runs.
        stream: where the per-seed progress lines go (``sys.stdout`` by default).

    Returns:
        ``{seed: summary}`` of the seeds' ``summary.json``.

    Raises:
        SeedsFailed: if a seed's process exits with an error or without a summary (the others are finished first);
            the message names each, how it ended, its log and the log's last lines.
        SeedsStopped: interrupted; every seed's process has ended.
        RunFolderError: ``output_dir`` is a file, not writable, or in use by another multi-seed run.

    Example:
        >>> import io, tempfile
        >>> script = ("import json, pathlib, sys; out = pathlib.Path(sys.argv[sys.argv.index('--output-dir') + 1]); "
        ...           "out.mkdir(parents=True); seed = int(sys.argv[sys.argv.index('--seed') + 1]); "
        ...           "(out / 'summary.json').write_text(json.dumps({'metrics': {'test_error': seed / 10}}))")
        >>> summaries = run_seeds([sys.executable, "-c", script], [1, 2], tempfile.mkdtemp(), jobs=2,
        ...                       stream=io.StringIO())
        >>> {seed: summary["metrics"]["test_error"] for seed, summary in summaries.items()}
        {1: 0.1, 2: 0.2}
    """
    command = check_strings("command", command, example="[sys.executable, 'recipes/digits_ssl.py', '--epochs', '5']")
    seeds = _seed_list("seeds", seeds)
    output_dir = check_path("output_dir", output_dir)
    jobs = check_int("jobs", jobs, minimum=1)
    resume = check_bool("resume", resume)
    with runs._FolderLock(output_dir):
        return _run_seeds(command, seeds, output_dir, jobs, resume, sys.stdout if stream is None else stream)


def _epochs(command: Sequence[str]) -> Optional[int]:
    """The ``--epochs`` of ``command``, None where it has none (or none that is an integer)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--epochs", type=lambda text: int(text) if text.isdigit() else None)
    return parser.parse_known_args(command)[0].epochs


def _run_seeds(
    command: List[str], seeds: List[int], output_dir: Path, jobs: int, resume: bool, stream: Any,
    epochs: Optional[int] = None,
) -> Dict[int, Dict[str, Any]]:
    """:func:`run_seeds` once its arguments are checked and the folder is locked by the caller."""
    epochs = _epochs(command) if epochs is None else epochs
    log_path = {seed: output_dir / f"seed{seed}.log" for seed in seeds}
    guard, stopping = threading.Lock(), threading.Event()
    processes: Dict[int, subprocess.Popen] = {}
    ended: Dict[int, Tuple[Optional[str], List[str]]] = {}  # how each seed failed (None: it did not), its log's tail
    started = time.perf_counter()

    def say(line: str) -> None:
        with guard:
            print(line, file=stream, flush=True)

    def run(seed: int) -> None:  # in one of the pool's ``jobs`` threads: starts the seed's process, waits for it
        folder = _seed_dir(output_dir, seed)
        extra = ["--seed", str(seed), "--seed-data", str(seed), "--output-dir", str(folder)]
        record = _seed_record(folder) if resume else None
        if record is not None:  # a seed that never started (no record) starts as a fresh run
            extra.append("--resume")
            if epochs is not None and int(record.get("epochs", epochs)) < epochs:
                extra.append("--extend")
        with guard:
            if stopping.is_set():
                return
            with open(log_path[seed], "a") as log:
                offset = log.tell()
                processes[seed] = subprocess.Popen([*command, *extra], stdout=log, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL)
        code = processes[seed].wait()
        tail, warned = _log_news(log_path[seed], offset)
        # Ctrl-C in a terminal reaches the seeds too; one may end before the parent's main thread has seen it.
        interrupted = code in (-signal.SIGINT, 128 + signal.SIGINT) or (tail and tail[-1] == "KeyboardInterrupt")
        if stopping.wait(timeout=2.0) if interrupted else stopping.is_set():
            return  # stopped by the parent: reported once, by the parent
        summary = folder / runs.SUMMARY_NAME
        ended[seed] = (None if code == 0 and summary.is_file() else _ended(code, summary), tail)
        say(_outcome(seed, *ended[seed], warned, f"after {time.perf_counter() - started:.0f} s", log_path[seed]))

    previous = _raise_on_sigterm()
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(run, seed) for seed in seeds]
        for future in futures:
            future.result()
    except BaseException as error:  # interrupted (or a thread failed): the seeds' processes stop with it
        _stop(processes, guard, stopping, pool)
        if isinstance(error, KeyboardInterrupt):
            number = signal.SIGTERM if isinstance(error, _Terminated) else signal.SIGINT
            raise SeedsStopped(
                f"stopped by {signal.Signals(number).name}: every seed's process has been stopped (each resumes "
                "from its newest checkpoint)", number) from None
        raise
    finally:
        pool.shutdown()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    failed = {seed: outcome for seed, outcome in ended.items() if outcome[0] is not None}
    if failed:
        raise _failures(failed, len(seeds), log_path)
    return {seed: json.loads((seed_folder(output_dir, seed) / runs.SUMMARY_NAME).read_text()) for seed in seeds}


def _raise_on_sigterm() -> Any:
    """In the main thread: SIGTERM raises :class:`_Terminated` there (the seeds are then stopped as on Ctrl-C);
    returns the handler it replaced, None elsewhere."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Terminated()

    return signal.signal(signal.SIGTERM, on_sigterm)


def _outcome(seed: int, how: Optional[str], tail: List[str], warned: List[str], elapsed: str, log: Path) -> str:
    """The parent's lines on a seed that ended: done, or how it failed with the end of its log; any fallback it
    logged."""
    lines = [f"seed {seed}: done {elapsed}"] if how is None else \
        [f"seed {seed}: failed ({how}) {elapsed}; log {log}:", *(f"    {line}" for line in tail)]
    lines += [f"seed {seed}: warning in its log: {text}" for text in warned]
    return "\n".join(lines)


def _failures(failed: Mapping[int, Tuple[str, List[str]]], count: int, log_path: Mapping[int, Path]) -> SeedsFailed:
    """The error of a multi-seed run whose seeds in ``failed`` (``{seed: (how it ended, log tail)}``) failed."""
    reasons = {seed: how + (f"; its log ({log_path[seed]}) ends with:\n" + "\n".join(f"    {line}" for line in tail)
                            if tail else f"; log {log_path[seed]}") for seed, (how, tail) in failed.items()}
    return SeedsFailed(f"{len(failed)} of {count} seed(s) failed:\n" +
                       "\n".join(f"  seed {seed}: {reason}" for seed, reason in reasons.items()), reasons)


def _stop(processes: Dict[int, subprocess.Popen], guard: threading.Lock, stopping: threading.Event,
          pool: ThreadPoolExecutor) -> None:
    """Stops every seed's process and waits for each to end; a second Ctrl-C or SIGTERM meanwhile is ignored."""
    main = threading.current_thread() is threading.main_thread()
    saved = [(number, signal.signal(number, signal.SIG_IGN)) for number in (signal.SIGINT, signal.SIGTERM)] if main \
        else []
    try:
        with guard:
            stopping.set()  # no seed starts after this
            running = list(processes.values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in running:
            process.terminate()  # a no-op for a process that has ended
        for process in running:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        for number, handler in saved:
            signal.signal(number, handler)


# --------------------------------------------------------------------------------------------------------------
# The multi-seed run: its folder, record and command
# --------------------------------------------------------------------------------------------------------------
class _NothingToDo(Exception):
    """``--resume`` of a complete multi-seed run: the message, and its stored table."""

    def __init__(self, message: str, table: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.table = table


def _configuration(args: argparse.Namespace) -> Dict[str, Any]:
    """What defines the multi-seed run: what defines each seed's run (``Run.configuration``), less the seed."""
    return jsonable({key: value for key, value in sorted(vars(args).items())
                     if key not in runs.RESUMABLE_FLAGS and key not in PER_SEED_FLAGS})


def _complete_summary(folder: Path, epochs: int) -> Optional[Dict[str, Any]]:
    """The summary of the seed run in ``folder`` where it is complete at ``epochs`` epochs, else None."""
    record = _seed_record(folder)
    if record is None or record.get("status") != "complete" or record.get("epochs") != epochs:
        return None
    summary = runs._read_json_object(folder / runs.SUMMARY_NAME)
    return summary if summary is not None and isinstance(summary.get("metrics"), dict) else None


def _plan(folder: Path, args: argparse.Namespace, experiment: str) -> Dict[str, Any]:
    """Every rule of the multi-seed run that can be checked from the folder alone (read-only): the record to
    write, the seeds of the table and the seeds' summaries that are complete already.

    Raises:
        RunFolderError: the folder cannot take this multi-seed run (the message says why and what to do).
        _NothingToDo: ``--resume`` of a complete multi-seed run.
    """
    given, where, fmt = list(args.seeds), str(folder), runs.format_seeds
    if folder.exists() and not folder.is_dir():  # before any rule that would read it as a run folder
        runs.check_writable_folder(folder)
    config = _configuration(args)
    record = runs.read_record(folder)
    recorded = runs.multi_seed_folder(folder, record)
    if recorded is None and (record is not None or list_checkpoints(folder / "checkpoints")):
        single = "run's checkpoints" if record is None else \
            f"{record.get('experiment')!r} run ({record.get('status')}, {record.get('epochs')} epochs)"
        raise RunFolderError(
            f"--output-dir {where!r} holds a single {single}, not a multi-seed run: --seeds needs a folder of its own. "
            "Choose another --output-dir (that run continues without --seeds, with --resume)")
    # A stat per seed folder that exists only (a long seed list costs one listing of the folder).
    present = _seed_folders_present(folder, dict.fromkeys(given + (recorded or [])))
    seed_records = {seed: _seed_record(_seed_dir(folder, seed)) for seed in present}
    started = [seed for seed, seed_record in seed_records.items()
               if seed_record is not None or list_checkpoints(_seed_dir(folder, seed) / "checkpoints")]
    table = runs.read_table(folder)
    if args.resume:
        return _plan_resume(folder, args, experiment, record, recorded, seed_records, started, table)
    holds = [seed for seed in started if list_checkpoints(_seed_dir(folder, seed) / "checkpoints")]
    if recorded is not None and (holds or (record or {}).get("status") == "complete" or table is not None):
        listed = fmt(recorded) if recorded else fmt(given)
        status = (record or {}).get("status", "made by an earlier version")
        raise runs._already_holds(folder, f"a multi-seed run (seeds {listed}, {status})", f"--seeds {listed} --resume")
    if holds:
        raise runs._already_holds(_seed_dir(folder, holds[0]), f"a run (--seeds would start seed {holds[0]} there)")
    record = runs.new_record(experiment, config, args.epochs, kind=runs.MULTI_SEED_KIND, seeds=given)
    return {"record": record, "seeds": given, "complete": {}}


def _plan_resume(folder: Path, args: argparse.Namespace, experiment: str, record: Optional[Dict[str, Any]],
                 recorded: Optional[List[int]], seed_records: Mapping[int, Optional[Dict[str, Any]]],
                 started: List[int], table: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """:func:`_plan` for ``--resume``: the record (or, in a folder of an earlier version, what its seeds' records
    and table say) against this command."""
    given, where, fmt = list(args.seeds), str(folder), runs.format_seeds
    config, extend = _configuration(args), bool(getattr(args, "extend", False))
    if record is None and (recorded is not None or started):  # an earlier version's: its seeds' records say what
        record = _earlier_record(args, experiment, recorded, seed_records, started, table, config)
    recorded = (record or {}).get("seeds", [])
    given_set, recorded_set = set(given), set(recorded)
    missing, added = [s for s in recorded if s not in given_set], [s for s in given if s not in recorded_set]
    epochs = runs._check_resume_rules(folder, record, experiment, config, args.epochs, extend, "multi-seed run", [
        (missing, f"--seeds {fmt(given)}: the multi-seed run in {where!r} has seeds {fmt(recorded)}, and its table "
                  f"is over every one of them: resume with --seeds {fmt(recorded + added)}"
                  + (" --extend" if added else "")),
        (added and not extend,
         f"--seeds {fmt(given)} adds seed(s) {fmt(added)} to the multi-seed run in {where!r} (seeds "
         f"{fmt(recorded)}); to add them, pass --extend, or resume with --seeds {fmt(recorded)}"),
    ])
    seeds = recorded + added
    complete = {seed: summary for seed in _seed_folders_present(folder, seeds)
                if (summary := _complete_summary(_seed_dir(folder, seed), args.epochs)) is not None}
    if (len(complete) == len(seeds) and record.get("status", "complete") == "complete" and table is not None
            and table.get("seeds") == seeds):
        raise _NothingToDo(
            f"the multi-seed run in {where!r} is complete (seeds {fmt(seeds)}, {epochs} epochs; table in "
            f"{str(folder / runs.MULTI_SEED_TABLE)!r}); nothing to do. To add seeds, pass them with --extend; to "
            "train further, --extend with a larger --epochs", table)
    new = dict(record, seeds=seeds, epochs=args.epochs, status="training")
    if added or args.epochs > epochs:
        new["extended"] = runs._now()
    return {"record": new, "seeds": seeds, "complete": complete}


def _earlier_record(args: argparse.Namespace, experiment: str, recorded: Optional[List[int]],
                    seed_records: Mapping[int, Optional[Dict[str, Any]]], started: List[int],
                    table: Optional[Dict[str, Any]], config: Dict[str, Any]) -> Dict[str, Any]:
    """The record of a multi-seed folder made by an earlier version (no top ``run.json``), from its seeds' records
    and table."""
    first = next((seed_records[seed] for seed in started if seed_records[seed] is not None), None) or {}
    return {"kind": runs.MULTI_SEED_KIND, "experiment": first.get("experiment", experiment),
            "seeds": recorded or list(args.seeds),  # its table's seeds; without a table, those asked for now
            "config": {key: value for key, value in first.get("config", config).items() if key not in PER_SEED_FLAGS},
            "epochs": max((int(r.get("epochs", args.epochs)) for r in seed_records.values() if r), default=args.epochs),
            "status": "training" if table is None else "complete", "created": runs._now()}


def _seed_folders_present(folder: Path, seeds: Any) -> List[int]:
    """The seeds, in order, whose folder ``seed<k>`` exists in ``folder`` (one listing, not a look-up per seed)."""
    try:
        names = {entry.name for entry in os.scandir(folder) if entry.is_dir()}
    except OSError:  # no folder yet (or not a folder: said later, by the writability check)
        return []
    return [seed for seed in seeds if f"seed{seed}" in names]


def _check_space(folder: Path, seeds: Sequence[int], checkpoint_bytes: Optional[int]) -> None:
    """A multi-seed run's disk estimate: each seed that has no checkpoint yet keeps two (as a single run does)."""
    present = _seed_folders_present(folder, seeds)
    newest = {seed: list_checkpoints(_seed_dir(folder, seed) / "checkpoints")[:1] for seed in present}
    fresh = [seed for seed in seeds if not newest.get(seed)]
    written = [paths[0].stat().st_size for paths in newest.values() if paths]
    size = max(written) if written else checkpoint_bytes
    if not fresh or size is None:
        return
    per_seed = 2 * size + (16 << 20)  # the two newest checkpoints kept, and some slack (logs, TensorBoard)
    needed = len(fresh) * per_seed
    runs.check_free_space(
        folder, free_bytes(folder), needed,
        f"{len(fresh):,} seed(s) start here, each keeping two checkpoints of about {size / 2**20:.1f} MiB, so about "
        f"{needed / 2**30:.2f} GiB are needed", todo=", run fewer seeds (--seeds)")


def _resume_command(program: Sequence[str], argv: Sequence[str]) -> str:
    """The command a user types to resume: ``python <script> ... --resume``."""
    def short(item: str) -> str:
        relative = os.path.relpath(item) if os.path.isabs(item) and os.path.exists(item) else item
        return item if relative.startswith("..") else relative

    program = ["python", *map(short, program[1:])] if program and program[0] == sys.executable else list(program)
    own = [item for item in argv if item not in ("--resume", "--extend")]
    return shlex.join([*program, *own, "--resume"])


def seeds_command(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    program: Sequence[str],
    argv: Sequence[str],
    *,
    experiment: str,
    paper: Optional[str],
    checkpoint_bytes: Optional[int] = None,
    stream: Any = None,
) -> Optional[Dict[str, Any]]:
    """A recipe's ``--seeds``: checks the folder and the flags, runs ``program`` once per seed (:func:`run_seeds`)
    under the folder's lock, writes ``seeds.json`` and the record, and prints the table; errors end in
    ``parser.error`` / ``parser.exit`` (status 2 for a refused folder or flag, 1 for failed seeds, 130 / 143 when
    stopped by Ctrl-C / SIGTERM, each with what to do).

    Args:
        parser, args: the recipe's parser and parsed flags (``seeds``, ``jobs``, ``output_dir``, ``resume``,
            ``extend``, ``epochs``, ``device``, ``threads``, ``config``, ``nproc_per_node``).
        program: the command that runs the recipe, e.g. ``[sys.executable, __file__, name]``.
        argv: the recipe's command-line arguments; the per-seed flags are replaced.
        experiment, paper: the experiment's name and the paper's number, for the record and the table.
        checkpoint_bytes: about how large one seed's checkpoint is, for the disk estimate before the seeds start
            (None: measured from a seed's checkpoint where one exists, else no estimate).
        stream: where the progress lines and the table go (``sys.stdout`` by default).

    Returns:
        The table written to (or, for a complete run, read from) ``<output_dir>/seeds.json``.
    """
    check_string("experiment", experiment)
    check_string("paper", paper, allow_none=True, allow_empty=True)
    program = check_strings("program", program, example="[sys.executable, __file__, name]")
    checkpoint_bytes = check_int("checkpoint_bytes", checkpoint_bytes, minimum=0, allow_none=True)
    stream = sys.stdout if stream is None else stream
    argv = _canonical_argv(parser, check_strings("argv", argv, allow_empty=True))
    check_seed_flags(parser, args, argv)
    # Each seed's command: this one without the flags run_seeds sets per seed. Its output goes to a log file, so
    # the recipe shows a line per evaluation there (no terminal, no progress bar).
    own = without_flags(argv, ("--seeds", "--jobs", "--output-dir", "--seed", "--seed-data"))
    command = [*program, *(a for a in own if a not in ("--resume", "--extend"))]
    folder, prog = Path(args.output_dir), parser.prog
    accelerator = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) != "cpu"
    jobs = args.jobs or default_jobs(len(args.seeds), args.threads, accelerator)
    try:
        _plan(folder, args, experiment)  # read-only: a refused or complete run touches nothing
        with runs._FolderLock(folder):
            plan = _plan(folder, args, experiment)  # again under the lock: no other run can start meanwhile
            _check_space(folder, [seed for seed in plan["seeds"] if seed not in plan["complete"]], checkpoint_bytes)
            table = _run_plan(parser, args, plan, command, jobs, stream, experiment, paper,
                              _resume_command(program, argv))
    except _NothingToDo as done:  # (under the lock: completed by the run that held it a moment ago)
        print(f"{prog}: {done}", file=stream, flush=True)
        table = dict(done.table)
        if not {"per_seed", "test_error", "test_error_count"} <= set(table):
            return table
    except RunFolderError as error:
        parser.exit(2, f"{prog}: error: {error}\n")
    print("\n".join(report_lines(table, folder / runs.MULTI_SEED_TABLE)), file=stream, flush=True)
    return table


def _run_plan(parser: argparse.ArgumentParser, args: argparse.Namespace, plan: Mapping[str, Any],
              command: List[str], jobs: int, stream: Any, experiment: str, paper: Optional[str],
              resume_with: str) -> Dict[str, Any]:
    """Under the folder's lock: records the run, runs the seeds that are not complete, then writes the table and
    marks the record complete; a failed or stopped run ends in ``parser.exit`` with the command that resumes it."""
    folder, prog, record = Path(args.output_dir), parser.prog, plan["record"]
    runs.write_record(folder, record)
    print(f"{experiment}: {len(plan['seeds'])} seeds, {jobs} at a time, in {folder}" +
          (f" ({len(plan['complete'])} complete already)" if plan["complete"] else ""), file=stream, flush=True)
    started = time.time()
    try:
        summaries = _run_seeds(command, [seed for seed in plan["seeds"] if seed not in plan["complete"]], folder,
                               jobs, bool(args.resume), stream, epochs=args.epochs)
    except SeedsFailed as error:
        parser.exit(1, f"{prog}: error: {error}\nThe other seeds are kept; once the cause is fixed, resume "
                       f"with: {resume_with}\n")
    except SeedsStopped as stopped:
        parser.exit(128 + stopped.signal, f"\n{prog}: {stopped}. Resume with: {resume_with}\n")
    summaries.update(plan["complete"])
    table = seed_table(experiment, {seed: summaries[seed] for seed in plan["seeds"]}, paper=paper, jobs=jobs,
                       wall_seconds=time.time() - started, command=command)
    write_json_atomic(folder / runs.MULTI_SEED_TABLE, table)
    runs.write_record(folder, dict(record, status="complete"))
    return table
