"""Per-iteration cost of our semi-supervised trainer against a hand-written PyTorch loop.

Everything runs in one process on scikit-learn's digits with the digits recipe's models and settings
(:func:`~ignite_igan.models.digits_generator`, :func:`~ignite_igan.models.digits_discriminator` after data-dependent
init on 500 training images, :class:`~ignite_igan.optim.ReferenceAdam` with lr 3e-3 and betas (0.5, 0.999),
batches of 100 labeled / 100 unlabeled / 100 unlabeled from a :class:`~ignite_igan.data.SemiSupervisedLoader` with
10 labels per class, mean-squared feature matching, one generator step).

**Part 1: overhead.** Every timed run starts from the same snapshot of models, optimizer moments and random state
and trains ``--epochs`` epochs of the same pre-built batches (one epoch of the loader: 12 batches) with

* ``loop``: a hand-written loop doing the same math with the same objects: the three discriminator passes, the
  losses of :mod:`ignite_igan.functional`, ``backward(inputs=...)`` restricted to the stepping player (as a careful
  hand-written loop does; it saves the discriminator's weight gradients in the generator step), ReferenceAdam,
  and the two losses read back as Python floats each iteration (what a loop prints);
* ``loop+outputs``: the same loop, also computing the trainer's reported numbers (train error, D(x), D(G(z)) and the
  four losses) and copying them to Python floats in one transfer, as the trainer's default ``output_transform``;
* ``step_fn``: the trainer's process function (``create_semi_supervised_trainer(...)._process_function``) called in
  a plain ``for`` loop, without Ignite's ``Engine``;
* ``engine``: ``trainer.run(batches, max_epochs=...)``, the trainer as a user runs it.

The differences say what costs what: ``loop+outputs - loop`` is the reported numbers, ``step_fn - loop+outputs``
the step's own structure (batch handling, ``autocast`` context, the player objects), ``engine - step_fn`` Ignite's
event loop. The variants run in alternating order (ABCD, DCBA, ...); the table gives the median time per iteration,
the ratio of medians to ``loop``, and the median of the per-round paired ratios with a bootstrap 95 % interval.
Before timing, every variant is run once from the snapshot and must end with parameters **bit-identical** to the
hand-written loop's: all of them compute exactly the same thing.

**Part 2: where the overhead is.** Fixed per-iteration costs are hard to see next to a 20-30 ms step on a shared
machine, so they are measured where they dominate: (a) the four variants again with batches of
``--small-batch-size`` (4), where the step is mostly per-operation overhead, so the differences in microseconds are
the same fixed costs as at batch 100; (b) Ignite's ``Engine`` with a process function that does nothing, against
a ``for`` loop calling the same function: the event loop's own cost per iteration.

**Part 3: with the data loader.** ``engine`` and ``loop`` both reading their batches from the same
:class:`~ignite_igan.data.SemiSupervisedLoader` (reset to epoch 0 before each run, so both see the same batches),
and the loader alone.

**Part 4: CPU settings.** The trainer (``engine``) under denormal flushing on/off (``torch.set_flush_denormal``) and
1/2 threads (``torch.set_num_threads``), alternating between the four settings, from two states: right after
initialization, and after ``--train-iterations`` iterations of training without flushing (so that whatever denormal
numbers training produces are in the weights and the optimizer's moments; their count is reported). It runs in this
process (OpenMP's wait policy as the environment sets it; by default threads spin while waiting) and again in a
subprocess with ``OMP_WAIT_POLICY=passive`` (``--no-passive-omp`` skips it), because spinning threads behave very
differently on a machine whose cores are busy with other jobs.

Run from the repository root::

    python benchmarks/trainer_overhead.py --output docs/results/trainer_overhead.json

The JSON holds every raw time; the Markdown tables are printed and written next to it (same name, ``.md``).
Times on a machine shared with other jobs vary from run to run: compare the ratios, measured side by side.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from _harness import (  # first: it puts the repository root on sys.path (benchmarks/ is there already)
    alternating, command_line, load_average, load_note, machine_info, utc_now, write_results,
)
from ignite_igan import functional as F
from ignite_igan.data import SemiSupervisedLoader, balanced_labeled_subset, dataset_labels
from ignite_igan.datasets import load_dataset
from ignite_igan.engines import create_semi_supervised_trainer
from ignite_igan.models import digits_discriminator, digits_generator
from ignite_igan.nn import data_dependent_init
from ignite_igan.optim import ReferenceAdam

OVERHEAD_VARIANTS = ("loop", "loop+outputs", "step_fn", "engine")
LOADER_VARIANTS = ("loop/loader", "engine/loader")
SETTINGS = (("flush", 1), ("flush", 2), ("no flush", 1), ("no flush", 2))


# --------------------------------------------------------------------------------------------------------------
# The experiment: models, data, snapshot
# --------------------------------------------------------------------------------------------------------------
class Setup:
    """The digits recipe's models, optimizers, trainer and batches, with a snapshot to restart every run from."""

    def __init__(self, args: argparse.Namespace, batch_size: int, max_batches: Optional[int] = None) -> None:
        torch.manual_seed(args.seed)
        self.dataset = load_dataset("digits", train=True)
        labeled = balanced_labeled_subset(dataset_labels(self.dataset), args.labels_per_class, seed=args.seed)
        self.loader = SemiSupervisedLoader(self.dataset, labeled, batch_size=batch_size, seed=args.seed)
        self.batches = [tuple(batch) for batch in self.loader][:max_batches]  # pre-built, one epoch at most
        self.loader.set_epoch(0)
        self.generator = digits_generator()
        self.discriminator = digits_discriminator()
        init = torch.stack([self.dataset[i][0] for i in range(min(500, len(self.dataset)))])
        data_dependent_init(self.discriminator, init)
        self.g_optimizer = ReferenceAdam(self.generator.parameters(), lr=args.lr, betas=(0.5, 0.999))
        self.d_optimizer = ReferenceAdam(self.discriminator.parameters(), lr=args.lr, betas=(0.5, 0.999))
        self.trainer = create_semi_supervised_trainer(
            self.generator,
            self.discriminator,
            self.d_optimizer,
            self.g_optimizer,
            feature_matching_distance="mean_squared",
        )
        self.step_fn = self.trainer._process_function
        self.g_params = [p for p in self.generator.parameters() if p.requires_grad]
        self.d_params = [p for p in self.discriminator.parameters() if p.requires_grad]
        # One step so that the optimizers have their moments (the snapshot then restores tensors in place of tensors).
        self.step_fn(self.trainer, self.batches[0])
        self.snapshot = self.take_snapshot()

    def take_snapshot(self) -> Dict[str, Any]:
        return {
            "generator": copy.deepcopy(self.generator.state_dict()),
            "discriminator": copy.deepcopy(self.discriminator.state_dict()),
            "g_optimizer": copy.deepcopy(self.g_optimizer.state_dict()),
            "d_optimizer": copy.deepcopy(self.d_optimizer.state_dict()),
        }

    def restore(self, snapshot: Dict[str, Any], seed: int) -> None:
        self.generator.load_state_dict(snapshot["generator"])
        self.discriminator.load_state_dict(snapshot["discriminator"])
        # Optimizer.load_state_dict keeps the given tensors (no copy) and the steps update them in place: copy, or
        # the snapshot itself would train along.
        self.g_optimizer.load_state_dict(copy.deepcopy(snapshot["g_optimizer"]))
        self.d_optimizer.load_state_dict(copy.deepcopy(snapshot["d_optimizer"]))
        self.generator.train()
        self.discriminator.train()
        self.loader.set_epoch(0)
        torch.manual_seed(seed)

    def parameters(self) -> List[torch.Tensor]:
        return [p.detach().clone() for p in list(self.generator.parameters()) + list(self.discriminator.parameters())]


# --------------------------------------------------------------------------------------------------------------
# The hand-written loop
# --------------------------------------------------------------------------------------------------------------
def hand_step(s: Setup, batch: Sequence[torch.Tensor], outputs: bool) -> Any:
    """One semi-supervised iteration written out by hand; the same operations, in the same order, as the trainer."""
    x_lab, y_lab, x_unl, x_unl2 = batch
    gen, disc = s.generator, s.discriminator
    n = x_unl.shape[0]

    with torch.no_grad():
        x_fake = gen(gen.sample_noise(n))
    logits_lab = disc(x_lab)
    logits_unl = disc(x_unl)
    logits_fake = disc(x_fake)
    loss_lab, loss_unl = F.semi_supervised_losses(logits_lab, y_lab, logits_unl, logits_fake, check_labels=False)
    loss_d = loss_lab + 1.0 * loss_unl
    s.d_optimizer.zero_grad(set_to_none=True)
    loss_d.backward(inputs=s.d_params)
    s.d_optimizer.step()

    x_gen = gen(gen.sample_noise(n))
    _, features_fake = disc(x_gen, return_features=True)
    with torch.no_grad():
        _, features_real = disc(x_unl2, return_features=True)
    loss_g = F.feature_matching_loss(features_real, features_fake, distance="mean_squared")
    s.g_optimizer.zero_grad(set_to_none=True)
    loss_g.backward(inputs=s.g_params)
    s.g_optimizer.step()

    if not outputs:
        return loss_d.item(), loss_g.item()
    with torch.no_grad():
        values = {
            "loss_labeled": loss_lab.detach(),
            "loss_unlabeled": loss_unl.detach(),
            "loss_discriminator": loss_d.detach(),
            "loss_generator": loss_g.detach(),
            "train_error": (logits_lab.argmax(dim=1) != y_lab).float().mean(),
            "D_x": torch.sigmoid(F.gan_logit(logits_unl)).mean(),
            "D_G_z": torch.sigmoid(F.gan_logit(logits_fake)).mean(),
        }
    return dict(zip(values, torch.stack([v.float() for v in values.values()]).tolist()))


def run_variant(s: Setup, variant: str, epochs: int) -> int:
    """Trains ``epochs`` epochs with ``variant``; returns the number of iterations."""
    if variant == "loop":
        for _ in range(epochs):
            for batch in s.batches:
                hand_step(s, batch, outputs=False)
    elif variant == "loop+outputs":
        for _ in range(epochs):
            for batch in s.batches:
                hand_step(s, batch, outputs=True)
    elif variant == "step_fn":
        for _ in range(epochs):
            for batch in s.batches:
                s.step_fn(s.trainer, batch)
    elif variant == "engine":
        s.trainer.run(s.batches, max_epochs=epochs)
    elif variant == "loop/loader":
        for _ in range(epochs):
            for batch in s.loader:
                hand_step(s, batch, outputs=False)
    elif variant == "engine/loader":
        s.trainer.run(s.loader, max_epochs=epochs)
    elif variant == "loader":
        for _ in range(epochs):
            for _batch in s.loader:
                pass
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return epochs * len(s.batches)


def check_identical(s: Setup, variants: Sequence[str], epochs: int, seed: int) -> Dict[str, bool]:
    """Runs every variant once from the snapshot with the same seed; all must give the loop's parameters exactly."""
    s.restore(s.snapshot, seed)
    run_variant(s, "loop" if "loop" in variants else "loop/loader", epochs)
    expected = s.parameters()
    result = {}
    for variant in variants:
        s.restore(s.snapshot, seed)
        run_variant(s, variant, epochs)
        got = s.parameters()
        result[variant] = all(torch.equal(a, b) for a, b in zip(expected, got))
        if not result[variant]:
            raise AssertionError(
                f"variant {variant!r} ends with other parameters than the hand-written loop: the benchmark would "
                "compare different computations"
            )
    return result


# --------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------
def time_alternating(
    s: Setup,
    variants: Sequence[str],
    rounds: int,
    epochs: int,
    snapshot: Dict[str, Any],
    before_run: Optional[Callable[[str], None]] = None,
    variant_of: Callable[[str], str] = lambda label: label,
) -> Dict[str, List[float]]:
    """Seconds per iteration of each variant, one run per variant per round, alternating the order every round.

    ``variants`` are labels; ``variant_of`` maps a label to the variant that runs (``before_run`` applies the rest).
    """
    def before(variant: str, round_index: int) -> None:
        if before_run is not None:
            before_run(variant)
        s.restore(snapshot, seed=1000 + round_index)

    runs = {v: functools.partial(run_variant, s, variant_of(v), epochs) for v in variants}
    seconds, iterations = alternating(runs, rounds, before=before)
    return {v: [t / n for t, n in zip(seconds[v], iterations[v])] for v in variants}


def paired_ratio(numerator: List[float], denominator: List[float], seed: int = 0) -> Dict[str, float]:
    """Median of the per-round ratios and a bootstrap 95 % interval of that median."""
    ratios = np.asarray(numerator) / np.asarray(denominator)
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(ratios, size=(2000, ratios.size), replace=True), axis=1)
    return {
        "median": float(np.median(ratios)),
        "ci95_low": float(np.percentile(boots, 2.5)),
        "ci95_high": float(np.percentile(boots, 97.5)),
    }


def summarize(times: Dict[str, List[float]], baseline: str) -> Dict[str, Dict[str, Any]]:
    base = statistics.median(times[baseline])
    out = {}
    for variant, values in times.items():
        out[variant] = {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
            "ratio_of_medians": statistics.median(values) / base,
            "paired_ratio": paired_ratio(values, times[baseline]),
        }
    return out


def denormal_counts(s: Setup) -> Dict[str, int]:
    tiny = torch.finfo(torch.float32).tiny

    def count(tensors: List[torch.Tensor]) -> int:
        return int(sum(int(((t.abs() > 0) & (t.abs() < tiny)).sum()) for t in tensors if t.is_floating_point()))

    params = list(s.generator.parameters()) + list(s.discriminator.parameters())
    moments = [
        value
        for optimizer in (s.g_optimizer, s.d_optimizer)
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    ]
    return {
        "parameters": count(params),
        "parameter_values": int(sum(p.numel() for p in params)),
        "adam_moments": count(moments),
        "adam_moment_values": int(sum(m.numel() for m in moments)),
    }


def apply_setting(flush: str, threads: int) -> None:
    torch.set_flush_denormal(flush == "flush")
    torch.set_num_threads(threads)


def time_cpu_settings(s: Setup, args: argparse.Namespace, snapshot: Dict[str, Any]) -> Dict[str, List[float]]:
    names = [f"{flush}, {threads} thread{'s' if threads > 1 else ''}" for flush, threads in SETTINGS]
    by_name = dict(zip(names, SETTINGS))

    def before(name: str) -> None:
        apply_setting(*by_name[name])
        # A few untimed iterations under the new setting (thread pool, caches), then the run restarts from the snapshot.
        s.restore(snapshot, seed=0)
        for batch in s.batches[:2]:
            s.step_fn(s.trainer, batch)

    try:
        return time_alternating(s, names, args.settings_rounds, args.settings_epochs, snapshot, before_run=before,
                                variant_of=lambda label: "engine")
    finally:
        apply_setting("flush" if args.flush else "no flush", args.threads)


def ignite_loop_cost(iterations_per_epoch: int, epochs: int, rounds: int) -> Dict[str, List[float]]:
    """Seconds per iteration of Ignite's ``Engine`` and of a ``for`` loop, around a process function doing nothing."""
    from ignite.engine import Engine

    def nothing(engine: Any, batch: Any) -> None:
        return None

    engine = Engine(nothing)
    data = list(range(iterations_per_epoch))
    times: Dict[str, List[float]] = {"Engine.run": [], "for loop": []}
    for _ in range(rounds):
        start = time.perf_counter()
        engine.run(data, max_epochs=epochs)
        times["Engine.run"].append((time.perf_counter() - start) / (epochs * len(data)))
        start = time.perf_counter()
        for _ in range(epochs):
            for batch in data:
                nothing(engine, batch)
        times["for loop"].append((time.perf_counter() - start) / (epochs * len(data)))
    return times


def cpu_settings_part(args: argparse.Namespace) -> Dict[str, Any]:
    """Part 4 in this process: the four settings, alternating, from the initial and from a trained state."""
    s = Setup(args, args.batch_size)
    result: Dict[str, Any] = {
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(not set: OpenMP's default, threads spin)"),
        "states": {},
    }
    states = [("after init", s.snapshot)]
    if args.train_iterations:
        print(f"part 4: training {args.train_iterations} iterations without flushing ...", file=sys.stderr, flush=True)
        apply_setting("no flush", 1)
        s.restore(s.snapshot, seed=99)
        for i in range(args.train_iterations):
            s.step_fn(s.trainer, s.batches[i % len(s.batches)])
        states.append((f"after {args.train_iterations} iterations", s.take_snapshot()))
    for state, snapshot in states:
        s.restore(snapshot, seed=0)
        counts = denormal_counts(s)
        print(f"part 4 ({result['omp_wait_policy']}): {state}: {args.settings_rounds} rounds ...", file=sys.stderr,
              flush=True)
        times = time_cpu_settings(s, args, snapshot)
        result["states"][state] = {"denormals": counts, "per_iteration_s": times,
                                   "summary": summarize(times, "flush, 1 thread")}
    return result


def cpu_settings_subprocess(args: argparse.Namespace, env_updates: Dict[str, str]) -> Dict[str, Any]:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--_settings-worker",
        "--settings-rounds", str(args.settings_rounds), "--settings-epochs", str(args.settings_epochs),
        "--train-iterations", str(args.train_iterations), "--batch-size", str(args.batch_size),
        "--labels-per-class", str(args.labels_per_class), "--lr", str(args.lr), "--seed", str(args.seed),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env_updates})
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"settings worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    sys.stderr.write(done.stderr)
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------------
def _ms(value: float) -> str:
    return f"{value * 1e3:.2f} ms"


def _ratio(entry: Dict[str, Any]) -> str:
    p = entry["paired_ratio"]
    return f"{entry['ratio_of_medians']:.3f} | {p['median']:.3f} [{p['ci95_low']:.3f}, {p['ci95_high']:.3f}]"


def _variant_rows(summary: Dict[str, Any], baseline: str, absolute: bool = False) -> List[str]:
    base = summary[baseline]["median_s"]
    rows = []
    for variant, entry in summary.items():
        extra = f" | {(entry['median_s'] - base) * 1e6:+.0f} µs" if absolute else ""
        rows.append(
            f"| `{variant}` | {_ms(entry['median_s'])} ({_ms(entry['min_s'])}–{_ms(entry['max_s'])}) | "
            f"{_ratio(entry)}{extra} |"
        )
    return rows


def _settings_table(block: Dict[str, Any], rounds: int) -> List[str]:
    lines = [
        f"OpenMP wait policy: {block['omp_wait_policy']}; {rounds} alternating rounds per state.",
        "",
        "| state | setting | per iteration, median (min–max) | ratio of medians to `flush, 1 thread` "
        "| paired ratio, median [95 % CI] |",
        "|---|---|---:|---:|---:|",
    ]
    for state, entry_block in block["states"].items():
        for name, entry in entry_block["summary"].items():
            lines.append(
                f"| {state} | {name} | {_ms(entry['median_s'])} ({_ms(entry['min_s'])}–{_ms(entry['max_s'])}) | "
                f"{_ratio(entry)} |"
            )
    lines.append("")
    for state, entry_block in block["states"].items():
        d = entry_block["denormals"]
        lines.append(
            f"- {state}: {d['parameters']} denormal parameters of {d['parameter_values']}, {d['adam_moments']} "
            f"denormal Adam moments of {d['adam_moment_values']}."
        )
    return lines


def markdown(report: Dict[str, Any]) -> str:
    meta = report["meta"]
    header = (
        "| variant | per iteration, median (min–max) | ratio of medians to `{}` | paired ratio, median [95 % CI] |"
    )
    lines = [
        f"Digits semi-supervised step (batches of {meta['batch_size']} labeled / {meta['batch_size']} unlabeled / "
        f"{meta['batch_size']} unlabeled, {meta['labels_per_class']} labels per class, feature matching, one generator "
        f"step); {meta['cpu']}, {meta['logical_cpus']} logical CPUs; torch {meta['torch']}, ignite {meta['ignite']}; "
        + load_note(meta["load_average_start"][0], meta["load_average_end"][0], True),
        "",
    ]
    if report.get("overhead"):
        lines += [
            f"**1. Overhead** ({meta['threads']} thread{'s' if meta['threads'] > 1 else ''}, denormal flushing "
            f"{'on' if meta['flush'] else 'off'}, {meta['rounds']} alternating rounds of {meta['epochs']} epoch(s) of "
            f"{meta['iterations_per_epoch']} iterations; every variant ends with parameters bit-identical to the "
            "loop's):",
            "",
            header.format("loop"),
            "|---|---:|---:|---:|",
            *_variant_rows(report["overhead"]["summary"], "loop"),
        ]
    if report.get("fixed_costs"):
        fixed = report["fixed_costs"]
        lines += [
            "",
            f"**2a. Fixed costs** (batches of {meta['small_batch_size']}, where the step is mostly per-operation "
            f"overhead; {meta['small_rounds']} alternating rounds of {meta['small_iterations']} iterations):",
            "",
            header.format("loop") + " difference of medians |",
            "|---|---:|---:|---:|---:|",
            *_variant_rows(fixed["summary"], "loop", absolute=True),
            "",
            "**2b. Ignite's event loop** (process function that does nothing): "
            + ", ".join(f"`{name}` {statistics.median(v) * 1e6:.1f} µs"
                        for name, v in report["ignite_loop_per_iteration_s"].items())
            + " per iteration (median).",
        ]
    if report.get("loader"):
        lines += [
            "",
            f"**3. With the SemiSupervisedLoader** ({meta['loader_rounds']} alternating rounds, same batches for "
            "both):",
            "",
            header.format("loop/loader"),
            "|---|---:|---:|---:|",
            *_variant_rows(report["loader"]["summary"], "loop/loader"),
            f"| loader alone | {_ms(statistics.median(report['loader']['loader_alone_s']))} | | |",
        ]
    for key, title in (("cpu_settings", "4. CPU settings"), ("cpu_settings_omp_passive", "4'. CPU settings")):
        if report.get(key):
            lines += ["", f"**{title}** (the trainer, `engine`, {meta['settings_epochs']} epoch(s) per run):", ""]
            lines += _settings_table(report[key], meta["settings_rounds"])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Per-iteration time of the semi-supervised trainer (Ignite Engine) against a hand-written loop "
        "doing the same math on the digits models and data, alternating runs; where the difference comes from; "
        "and the effect of denormal flushing and thread count on the digits step.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the raw numbers; the Markdown "
                        "table goes next to it with the suffix .md")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for parts 1-3 (the digits recipe's 1)")
    parser.add_argument("--flush", action=argparse.BooleanOptionalAction, default=True,
                        help="flush denormals in parts 1-3 (the recipes do on the CPU)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs (of 12 iterations) per timed run, part 1, 3")
    parser.add_argument("--rounds", type=int, default=80, help="alternating rounds of part 1 (0: skip)")
    parser.add_argument("--small-batch-size", type=int, default=4, help="batch size of part 2a")
    parser.add_argument("--small-iterations", type=int, default=12, help="iterations per timed run of part 2a")
    parser.add_argument("--small-rounds", type=int, default=40, help="alternating rounds of part 2a (0: skip 2)")
    parser.add_argument("--loader-rounds", type=int, default=20, help="alternating rounds of part 3 (0: skip)")
    parser.add_argument("--settings-rounds", type=int, default=4, help="alternating rounds per state of part 4 "
                        "(0: skip)")
    parser.add_argument("--settings-epochs", type=int, default=1, help="epochs per timed run of part 4")
    parser.add_argument("--train-iterations", type=int, default=600, help="training iterations without flushing "
                        "before the second state of part 4 (the digits recipe runs 2,400; 0: skip that state)")
    parser.add_argument("--passive-omp", action=argparse.BooleanOptionalAction, default=True,
                        help="repeat part 4 in a subprocess with OMP_WAIT_POLICY=passive")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--_settings-worker", dest="settings_worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("threads", "epochs", "settings_epochs", "batch_size", "small_batch_size", "small_iterations",
                 "labels_per_class"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("rounds", "small_rounds", "loader_rounds", "settings_rounds", "train_iterations"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    apply_setting("flush" if args.flush else "no flush", args.threads)
    if args.settings_worker:  # internal: part 4 in a fresh process with another environment
        print(json.dumps(cpu_settings_part(args)))
        return 0
    import ignite

    meta = {
        "date": utc_now(),
        "command": command_line(__file__, argv),
        **machine_info(),
        "ignite": ignite.__version__,
        "threads": torch.get_num_threads(),
        "flush": bool(args.flush),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        **{name: getattr(args, name) for name in (
            "epochs", "rounds", "small_batch_size", "small_iterations", "small_rounds", "loader_rounds",
            "settings_rounds", "settings_epochs", "train_iterations", "batch_size", "labels_per_class", "lr", "seed")},
        "load_average_start": load_average(),
    }
    report: Dict[str, Any] = {"meta": meta}
    s = Setup(args, args.batch_size)
    meta["iterations_per_epoch"] = len(s.batches)

    if args.rounds:
        print("part 1: checking that every variant computes the same parameters ...", file=sys.stderr, flush=True)
        identical = check_identical(s, OVERHEAD_VARIANTS, epochs=1, seed=123)
        print(f"part 1: {args.rounds} rounds of {', '.join(OVERHEAD_VARIANTS)} ...", file=sys.stderr, flush=True)
        times = time_alternating(s, OVERHEAD_VARIANTS, args.rounds, args.epochs, s.snapshot)
        report["overhead"] = {"identical_parameters": identical, "per_iteration_s": times,
                              "summary": summarize(times, "loop")}

    if args.small_rounds:
        small = Setup(args, args.small_batch_size, max_batches=args.small_iterations)
        identical = check_identical(small, OVERHEAD_VARIANTS, epochs=1, seed=123)
        print(f"part 2: {args.small_rounds} rounds at batch size {args.small_batch_size} ...", file=sys.stderr,
              flush=True)
        times = time_alternating(small, OVERHEAD_VARIANTS, args.small_rounds, 1, small.snapshot)
        report["fixed_costs"] = {"identical_parameters": identical, "per_iteration_s": times,
                                 "summary": summarize(times, "loop")}
        report["ignite_loop_per_iteration_s"] = ignite_loop_cost(12, 200, 5)

    if args.loader_rounds:
        identical = check_identical(s, LOADER_VARIANTS, epochs=1, seed=321)
        print(f"part 3: {args.loader_rounds} rounds with the loader ...", file=sys.stderr, flush=True)
        times = time_alternating(s, LOADER_VARIANTS + ("loader",), args.loader_rounds, args.epochs, s.snapshot)
        loader_alone = times.pop("loader")
        report["loader"] = {"identical_parameters": identical, "per_iteration_s": times,
                            "summary": summarize(times, "loop/loader"), "loader_alone_s": loader_alone}
    del s

    if args.settings_rounds:
        report["cpu_settings"] = cpu_settings_part(args)
        if args.passive_omp and os.environ.get("OMP_WAIT_POLICY", "").lower() != "passive":
            report["cpu_settings_omp_passive"] = cpu_settings_subprocess(args, {"OMP_WAIT_POLICY": "passive"})

    meta["load_average_end"] = load_average()
    table = markdown(report)
    print(table)
    write_results(report, args.output, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
