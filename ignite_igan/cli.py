"""The command line shared by the recipes: common flags, config files, checks, and the distributed launch.

Every recipe takes the same core flags (data directory, ``--download``, epochs, labels per class, the two seeds of
the reference, device, output directory, ``--resume``, ``--config``), adds its own switches, and runs through
:func:`launch`, which hands the work to ``ignite.distributed.Parallel``: one process normally, one per GPU under
``torchrun``, or ``--nproc-per-node`` processes spawned by Ignite itself.

A config file (JSON) holds the same keys as the flags (with ``_`` for ``-``); flags given on the command line win.

Example:
    >>> parser = recipe_parser("demo", epochs=300, labels_per_class=10, data_dir=None)
    >>> args = parse_args(parser, ["--epochs", "2", "--seed", "3"])
    >>> args.epochs, args.seed, args.seed_data, args.labels_per_class
    (2, 3, 1, 10)
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import ignite.distributed as idist
import torch

__all__ = ["recipe_parser", "parse_args", "launch", "positive_int", "nonnegative_int", "positive_float", "fraction"]


def _typed(check: Callable[[float], bool], convert: Callable[[str], Any], expected: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected
    return parse


positive_int = _typed(lambda v: v > 0, int, "a positive integer")
nonnegative_int = _typed(lambda v: v >= 0, int, "an integer >= 0")
positive_float = _typed(lambda v: v > 0, float, "a number > 0")
fraction = _typed(lambda v: 0 < v <= 1, float, "a number in (0, 1]")


def recipe_parser(
    description: str,
    *,
    epochs: int,
    labels_per_class: Optional[int],
    data_dir: Optional[str] = "data",
    batch_size: int = 100,
    output_dir: Optional[str] = None,
    threads: Optional[int] = None,
    iterations_per_epoch: Optional[int] = None,
    iterations_per_epoch_help: str = "cut each epoch short (smoke tests); the default is the whole data set",
) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the flags every recipe shares; the recipe adds its own switches to it.

    Args:
        description: the recipe's ``--help`` text.
        epochs: default number of epochs (the paper's).
        labels_per_class: default labels per class (the paper's), or None for a recipe without labels.
        data_dir: default data directory, or None for a recipe whose data ships with the package.
        batch_size: default batch size (100 for every paper experiment).
        output_dir: default output directory.
        threads: default number of CPU threads per process (None: torch's default). Small networks run faster on
            one thread: a second one costs more in synchronization than it saves (``benchmarks/trainer_overhead.py``).
        iterations_per_epoch: default of ``--iterations-per-epoch`` (None: one pass over the data set).
        iterations_per_epoch_help: its help text, for recipes whose data have no natural epoch.
    """
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    group = parser.add_argument_group("common")
    group.add_argument("--config", type=Path, default=None, help="JSON file of flag values (flags given here win)")
    if data_dir is not None:
        group.add_argument("--data-dir", type=Path, default=Path(data_dir), help="where the data set is (or goes)")
        group.add_argument("--download", action="store_true", help="download the data set with torchvision if missing")
    group.add_argument("--epochs", type=positive_int, default=epochs, help="training epochs")
    group.add_argument(
        "--iterations-per-epoch", type=positive_int, default=iterations_per_epoch, help=iterations_per_epoch_help
    )
    if labels_per_class is not None:
        group.add_argument("--labels-per-class", type=positive_int, default=labels_per_class, help="labeled examples per class")
        group.add_argument("--seed-data", type=nonnegative_int, default=1, help="seed of the labeled subset")
    group.add_argument("--seed", type=nonnegative_int, default=1, help="seed of initialization, noise and shuffling")
    group.add_argument("--batch-size", type=positive_int, default=batch_size, help="batch size of each sub-batch")
    group.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    group.add_argument("--output-dir", type=Path, default=Path(output_dir or "runs/" + description.split()[0].lower()))
    group.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in --output-dir")
    group.add_argument("--num-workers", type=nonnegative_int, default=0, help="data loader worker processes")
    group.add_argument(
        "--threads", type=positive_int, default=threads, help="CPU threads per process (default: torch's choice)"
    )
    group.add_argument(
        "--backend",
        default=None,
        choices=["nccl", "gloo"],
        help="distributed backend; set automatically under torchrun, or with --nproc-per-node",
    )
    group.add_argument(
        "--nproc-per-node",
        type=positive_int,
        default=None,
        help="spawn this many processes through ignite.distributed (prefer torchrun for several machines)",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar (logs stay)")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses ``argv``, taking defaults from ``--config`` where one is given."""
    args = parser.parse_args(argv)
    if args.config is not None:
        if not args.config.is_file():
            parser.error(f"--config: no such file {str(args.config)!r}")
        try:
            values: Dict[str, Any] = json.loads(args.config.read_text())
        except json.JSONDecodeError as error:
            parser.error(f"--config: {args.config} is not valid JSON ({error})")
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"--config: unknown keys {unknown}; expected flag names such as {sorted(known - {'help'})[:6]}")
        # Re-parse with the file's values as defaults: the type checks of each flag apply to them too.
        parser.set_defaults(**{key: _as_flag_text(parser, key, value) for key, value in values.items()})
        args = parser.parse_args(argv)
    return args


def _as_flag_text(parser: argparse.ArgumentParser, key: str, value: Any) -> Any:
    for action in parser._actions:
        if action.dest == key and action.type is not None and not isinstance(value, bool):
            return action.type(str(value))
    return value


def launch(main: Callable[..., Any], args: argparse.Namespace, *extra: Any) -> None:
    """Runs ``main(local_rank, args, *extra)`` in every process through ``ignite.distributed.Parallel``.

    Under ``torchrun`` the backend is taken from ``--backend`` (default: nccl with CUDA, gloo without) and the
    process group from torchrun's environment; with ``--nproc-per-node`` Ignite spawns the processes; otherwise
    the run is a single process.
    """
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)
    backend = args.backend
    if backend is None and (under_torchrun or args.nproc_per_node):
        backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
    kwargs: Dict[str, Any] = {}
    if args.nproc_per_node and not under_torchrun:
        kwargs["nproc_per_node"] = args.nproc_per_node
    with idist.Parallel(backend=backend, **kwargs) as parallel:
        parallel.run(main, args, *extra)
