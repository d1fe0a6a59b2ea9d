"""The command line shared by the recipes: common flags, config files, checks, and the distributed launch.

Every recipe takes the same core flags (data directory, ``--download``, epochs, labels per class, the two seeds of
the reference, device, output directory, ``--resume``, ``--config``), adds its own switches, and runs through
:func:`launch`, which hands the work to ``ignite.distributed.Parallel``: one process normally, one per GPU under
``torchrun``, or ``--nproc-per-node`` processes spawned by Ignite itself.

A config file (JSON object) holds the same keys as the flags (with ``_`` for ``-``); flags given on the command line
win. Its values are checked as strictly as the command line's: each must have the type its flag takes (a JSON
``true``/``false`` for a switch, a number for a numeric flag, one of the choices for a choice), in the flag's range;
an unknown key or a file that is not a JSON object is an error naming the key or the file.

Every flag's range is checked when the command line is parsed, so a run never fails later on a value the parser
accepted: seeds fit NumPy's 32-bit seeds, ``--device`` names a device this machine has, ``--backend nccl`` needs
CUDA.

Example:
    >>> parser = recipe_parser("demo", epochs=300, labels_per_class=10, data_dir=None)
    >>> args = parse_args(parser, ["--epochs", "2", "--seed", "3"])
    >>> args.epochs, args.seed, args.seed_data, args.labels_per_class
    (2, 3, 1, 10)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import ignite.distributed as idist
import torch

from ignite_igan.validation import check_int, check_real

__all__ = [
    "recipe_parser", "parse_args", "launch", "launch_recipe", "add_score_arguments", "check_data_dir",
    "dataclass_from_args", "positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "fraction",
    "seed_int", "ema_rate", "init_examples", "device_name", "MAX_SEED",
]


#: Seeds are used as ``seed + rank`` by NumPy, whose seeds must be below 2**32; this leaves room for 1,024 ranks.
MAX_SEED = 2**32 - 1 - 1024


def _number(kind: type, expected: str, **bounds: Any) -> Callable[[str], Any]:
    """An argparse ``type``: the text as a ``kind`` (int or float) within ``bounds`` (:mod:`ignite_igan.validation`'s),
    else an error that says what was ``expected``."""
    check = check_int if kind is int else check_real

    def parse(text: str) -> Any:
        try:
            return check("value", kind(text), **bounds)
        except ValueError:  # not a number of that kind (ArgumentTypeError is a ValueError too), or out of range
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    parse.__name__ = expected
    parse.kind = kind.__name__  # what a config file must hold for such a flag
    return parse


positive_int = _number(int, "a positive integer", minimum=1)
nonnegative_int = _number(int, "an integer >= 0", minimum=0)
positive_float = _number(float, "a finite number > 0", minimum=0.0, low_open=True)
nonnegative_float = _number(float, "a finite number >= 0", minimum=0.0)
fraction = _number(float, "a number in (0, 1]", minimum=0.0, maximum=1.0, low_open=True)
seed_int = _number(int, f"an integer in [0, {MAX_SEED}]", minimum=0, maximum=MAX_SEED)
#: An evaluation-average rate is the weight of the new weights (the reference's 1e-4); above 0.5 the "average"
#: would follow the live weights, the mistake of passing another library's decay (0.9999) here.
ema_rate = _number(float, "a rate in (0, 0.5] (the weight of the new weights; the reference uses 1e-4, i.e. a decay "
                   "of 0.9999)", minimum=0.0, maximum=0.5, low_open=True)
#: The data-dependent init needs a standard deviation per unit, so at least two examples.
init_examples = _number(int, "an integer >= 2 (the init computes a standard deviation)", minimum=2)

#: ``--threads``' help where a recipe sets a default (measured: docs/RESULTS.md).
_THREADS_HELP = (
    "CPU threads per process (default {}: never far from the fastest for these small networks; on a 2-core machine "
    "two threads ran the MNIST-network step 1.8x faster when idle but 2.9x slower than one thread when another "
    "process was busy; docs/RESULTS.md)"
)


def device_name(text: str) -> str:
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N`` (``mps`` where available), a device this machine has."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        problem = f"expected cpu, cuda or cuda:N, got {text!r}"
    elif device.type == "cuda" and not torch.cuda.is_available():
        problem = f"got {text!r}, but CUDA is not available on this machine (use cpu)"
    elif device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        problem = f"got {text!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        problem = f"got {text!r}, but MPS is not available on this machine"
    else:
        return text
    raise argparse.ArgumentTypeError(problem)


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
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument_group("common").add_argument
    add("--config", type=Path, default=None, help="JSON file of flag values (flags given here win)")
    if data_dir is not None:
        add("--data-dir", type=Path, default=Path(data_dir), help="where the data set is (or goes)")
        add("--download", action="store_true", help="download the data set with torchvision if missing")
    add("--epochs", type=positive_int, default=epochs, help="training epochs")
    add("--iterations-per-epoch", type=positive_int, default=iterations_per_epoch, help=iterations_per_epoch_help)
    if labels_per_class is not None:
        add("--labels-per-class", type=positive_int, default=labels_per_class, help="labeled examples per class")
        add("--seed-data", type=seed_int, default=1, help="seed of the labeled subset")
    add("--seed", type=seed_int, default=1, help="seed of initialization, noise and shuffling")
    add("--batch-size", type=positive_int, default=batch_size, help="batch size of each sub-batch")
    add("--device", type=device_name, default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    add("--output-dir", type=Path, default=Path(output_dir or "runs/" + description.split()[0].lower()))
    add("--resume", action="store_true",
        help="continue the run in --output-dir from its newest checkpoint (a complete run: nothing to do)")
    add("--extend", action="store_true",
        help="with --resume and a larger --epochs: train a run further than the epochs it was started with")
    add("--num-workers", type=nonnegative_int, default=0, help="data loader worker processes")
    add("--threads", type=positive_int, default=threads, help=(
        "CPU threads per process (default: torch's choice, one per core)" if threads is None
        else _THREADS_HELP.format(threads)))
    add("--backend", default=None, choices=["nccl", "gloo"],
        help="distributed backend; set automatically under torchrun, or with --nproc-per-node")
    add("--nproc-per-node", type=positive_int, default=None,
        help="spawn this many processes through ignite.distributed (prefer torchrun for several machines)")
    add("--no-progress", action="store_true", help="no progress bar or per-epoch lines (logs stay)")
    add("--allow-tf32", action="store_true",
        help="let GPUs compute float32 matrix products and convolutions in TF32 (faster, ~1e-3 relative error); "
        "off by default: the reference ran true float32")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses ``argv``, taking defaults from ``--config`` where one is given, and checks flags that go together.

    The config file's values are checked like the command line's (see the module documentation); errors end in
    ``parser.error`` naming the key, the value and what was expected.
    """
    args = parser.parse_args(argv)
    if args.config is not None:
        parser.set_defaults(**_read_config(parser, args.config))
        args = parser.parse_args(argv)
    if getattr(args, "extend", False) and not getattr(args, "resume", False):
        parser.error("--extend: extends a run, so it goes with --resume")
    if getattr(args, "backend", None) == "nccl" and not torch.cuda.is_available():
        parser.error("--backend nccl needs CUDA, which this machine does not have; use --backend gloo")
    if getattr(args, "backend", None) == "nccl" and getattr(args, "device", None) == "cpu":
        parser.error("--backend nccl runs on GPUs only, but --device is cpu; use --backend gloo")
    return args


def _read_config(parser: argparse.ArgumentParser, path: Path) -> Dict[str, Any]:
    if not path.is_file():
        parser.error(f"--config: no such file {str(path)!r}")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        parser.error(f"--config: {str(path)!r} is not valid JSON ({error})")
    if not isinstance(values, dict):
        parser.error(f"--config: {str(path)!r} must hold a JSON object of flag values, got a {type(values).__name__}")
    actions = {action.dest: action for action in parser._actions if action.dest not in ("help", "config")}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        parser.error(f"--config: unknown key(s) {unknown} in {str(path)!r}; the keys are the flags' names with _, "
                     f"e.g. {sorted(actions)[:5]}")
    return {key: _config_value(parser, actions[key], key, value) for key, value in values.items()}


#: What a config file must hold for a flag of each kind: the JSON types, and their name in the error.
_JSON_KINDS = {"int": ((int,), "an integer"), "float": ((int, float), "a number"), "str": ((str,), "a string")}


def _config_value(parser: argparse.ArgumentParser, action: argparse.Action, key: str, value: Any) -> Any:
    """A config file's ``value`` for the flag of ``action``, checked and converted as the command line's would be."""
    where = f"--config: key {key!r}"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            parser.error(f"{where} must be true or false (a JSON boolean), got {value!r}")
        return value
    if action.nargs not in (None, "?"):
        parser.error(f"{where}: list-valued flags cannot be set from a config file")
    if value is None:
        return None
    kinds = {int: "int", float: "float"}
    types, what = _JSON_KINDS[kinds.get(action.type) or getattr(action.type, "kind", "str")]
    if isinstance(value, bool) or not isinstance(value, types):
        parser.error(f"{where} must be {what}, got {value!r}")
    converted = value
    if action.type is not None:
        try:
            converted = action.type(str(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
            parser.error(f"{where}: {error}")
    if action.choices is not None and converted not in action.choices:
        parser.error(f"{where} must be one of {list(action.choices)}, got {value!r}")
    return converted


def add_score_arguments(parser: argparse.ArgumentParser, every: int, samples: int, digits: bool = False) -> Any:
    """Adds the group of flags that score a generator with the Inception score while it trains.

    ``--is-every`` (epochs between scores, and after the last; 0: none), ``--is-samples``, ``--is-splits`` (10 in
    the paper) and ``--is-seed`` (the scored samples' noise); then the network: for 8x8 digits
    ``--is-classifier`` (a :class:`~ignite_igan.models.DigitsClassifier` state dict; default: train one), else
    ``--is-network`` (the paper's TensorFlow Inception or torchvision's) and ``--inception-weights`` (a local
    weights file). They are what :func:`ignite_igan.experiments.scoring.score_network` and
    :func:`ignite_igan.experiments.scoring.attach_periodic_score` take.

    Args:
        parser: the recipe's parser.
        every: the default of ``--is-every``.
        samples: the default of ``--is-samples``.
        digits: score with a digits classifier instead of an Inception network.

    Returns:
        The argument group.

    Example:
        >>> parser = recipe_parser("demo", epochs=10, labels_per_class=None, data_dir=None)
        >>> _ = add_score_arguments(parser, every=5, samples=1000, digits=True)
        >>> args = parse_args(parser, ["--is-every", "2"])
        >>> args.is_every, args.is_samples, args.is_splits, args.is_seed, args.is_classifier
        (2, 1000, 10, 0, None)
    """
    e = parser.add_argument_group("score")
    e.add_argument("--is-every", type=nonnegative_int, default=every,
                   help="epochs between scores (and after the last); 0: no score")
    e.add_argument("--is-samples", type=positive_int, default=samples, help="samples per score")
    e.add_argument("--is-splits", type=positive_int, default=10, help="contiguous splits (10 in the paper)")
    e.add_argument("--is-seed", type=seed_int, default=0, help="seed of the scored samples' noise")
    if digits:
        e.add_argument("--is-classifier", type=Path, default=None,
                       help="a DigitsClassifier state dict to score with (default: train one with seed 0, ~6 s)")
    else:
        e.add_argument("--is-network", choices=["inception-v3-compat", "torchvision"], default="inception-v3-compat",
                       help="the paper's 2015 TensorFlow Inception, or torchvision's (lower scores; comparison only)")
        e.add_argument("--inception-weights", type=Path, default=None,
                       help="a local weights file of --is-network (offline machines); default: download once")
    return e


def check_data_dir(parser: argparse.ArgumentParser, args: argparse.Namespace, dataset: str) -> None:
    """Refuses a ``--data-dir`` that does not exist (unless ``--download``), naming the files ``dataset`` needs.

    A parser without ``--data-dir`` (a data set that needs no files) passes.

    Example:
        >>> parser = recipe_parser("demo", epochs=1, labels_per_class=None, data_dir="data")
        >>> args = parse_args(parser, ["--data-dir", "/no/such/dir"])
        >>> check_data_dir(parser, args, "cifar10")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    from ignite_igan.datasets import EXPECTED_LAYOUTS

    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None and not args.download and not data_dir.is_dir():
        layout = EXPECTED_LAYOUTS[dataset].replace("<dir>", str(data_dir))
        parser.error(f"--data-dir: {str(data_dir)!r} does not exist; expected the files {layout}. Pass --download "
                     "to fetch them with torchvision, or point --data-dir at a copy")


def dataclass_from_args(cls: Any, args: argparse.Namespace, **overrides: Any) -> Any:
    """An instance of the dataclass ``cls`` whose fields are the parsed flags of the same names; ``overrides`` (the
    values a recipe resolves itself, e.g. a default that depends on another flag) win.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class Config:
        ...     epochs: int = 1
        ...     seed: int = 0
        >>> parser = recipe_parser("demo", epochs=10, labels_per_class=None, data_dir=None)
        >>> dataclass_from_args(Config, parse_args(parser, ["--epochs", "3"]), seed=7)
        Config(epochs=3, seed=7)
    """
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name not in overrides}
    return cls(**values, **overrides)


def launch(main: Callable[..., Any], args: argparse.Namespace, *extra: Any) -> None:
    """Runs ``main(local_rank, args, *extra)`` in every process through ``ignite.distributed.Parallel``.

    Under ``torchrun`` the backend is taken from ``--backend`` (default: nccl with CUDA, gloo without) and the
    process group from torchrun's environment; with ``--nproc-per-node`` Ignite spawns the processes; otherwise
    the run is a single process, without the launcher's log lines.
    """
    import logging

    from ignite.utils import setup_logger

    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)
    backend = args.backend
    if backend is None and (under_torchrun or args.nproc_per_node):
        backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
    nproc_per_node = None if under_torchrun else args.nproc_per_node  # torchrun has started the processes
    # One process: Ignite's launcher would log "- Run '<function train at 0x...>' in 1 processes" and "End of run"
    # around the run's own lines, which tells a user nothing. Its logger is set up as Ignite sets it up, quieted for
    # the run and given its level back after. With several processes its lines (backend, process count) stay.
    launcher_log = setup_logger("ignite.distributed.launcher.Parallel") if backend is None else None
    level = launcher_log.level if launcher_log is not None else None
    if launcher_log is not None:
        launcher_log.setLevel(logging.WARNING)
    try:
        with idist.Parallel(backend=backend, nproc_per_node=nproc_per_node) as parallel:
            parallel.run(main, args, *extra)
    finally:
        if launcher_log is not None:
            launcher_log.setLevel(level)


def launch_recipe(
    parser: argparse.ArgumentParser, args: argparse.Namespace, main: Callable[..., Any], *extra: Any
) -> None:
    """:func:`launch` with the errors a user can act on turned into messages instead of tracebacks.

    - ``--resume`` of a complete run (:class:`~ignite_igan.experiments.runs.RunComplete`): the message, exit status 0.
    - A missing or unreadable data set, a refused output folder, no usable checkpoint, a bad value: the message
      after ``<prog>: error:``, exit status 2 (as argparse's own errors).
    - A non-finite loss (:class:`~ignite_igan.experiments.runs.NonFiniteLossError`): the message, exit status 1.
    """
    from ignite_igan.checkpointing import CheckpointError
    from ignite_igan.datasets import DatasetNotFoundError
    from ignite_igan.experiments.runs import NonFiniteLossError, RunComplete, RunFolderError

    try:
        launch(main, args, *extra)
    except RunComplete as done:
        print(f"{parser.prog}: {done}")
    except (DatasetNotFoundError, RunFolderError, CheckpointError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except NonFiniteLossError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
