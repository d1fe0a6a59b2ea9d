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
CUDA. A negative number is a flag's value, not an unknown option: ``--lr -inf`` and ``--lr -1e-3`` reach ``--lr``'s
own check, which says what it expects.

``--help`` shows each flag's default once (a switch is off unless given), a usage line with the flags that matter
first, and the rest in groups (:data:`GROUPS`). Where the recipes once named one idea differently, the clearer name
is the flag and the other an alias that still parses (``--lr-decay-epochs`` / ``--decay-epochs``); a config file
may use either name as its key.

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
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import ignite.distributed as idist
import torch

from ignite_igan.validation import check_int, check_real

__all__ = [
    "RecipeArgumentParser", "RecipeHelpFormatter", "GROUPS", "MAIN_FLAGS", "recipe_parser", "parse_args", "launch",
    "launch_recipe", "add_score_arguments", "check_data_dir",
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
    "CPU threads per process (default: {}; never far from the fastest for these small networks; on a 2-core machine "
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


#: The groups of a recipe's ``--help``, in their order; a recipe adds its flags to them with
#: :meth:`RecipeArgumentParser.group`, and a group no recipe flag uses is not shown.
GROUPS = ("data", "techniques", "networks", "training", "evaluation", "several seeds", "output and resume",
          "device and speed", "distributed")

#: What argparse must take for a number, not an option, after a flag: ``-1``, ``-0.5``, ``-.5``, ``-1e-3``,
#: ``-inf``, ``-infinity``, ``-nan`` (any case), i.e. the negative numbers ``float()`` reads.
_NEGATIVE_NUMBER = re.compile(r"^-(?:(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|inf(?:inity)?|nan)$", re.IGNORECASE)


def _type_metavar(action: argparse.Action) -> str:
    """A flag's value in ``--help``: N for an integer, X for a number, PATH for a path, else the flag's name."""
    kind = {int: "int", float: "float"}.get(action.type) or getattr(action.type, "kind", None)
    return {"int": "N", "float": "X"}.get(kind) or ("PATH" if action.type is Path else action.dest.upper())


class RecipeHelpFormatter(argparse.HelpFormatter):
    """``--help`` with each flag's default shown once, as ``(default: X)``, where it says something.

    A help text that already states its default (it contains the word "default") is left as it is; a switch
    (``store_true``, ``store_false``) is off unless given, so it shows none; a ``--x/--no-x`` switch shows
    ``(default: on)`` or ``(default: off)``; a default of None shows nothing (its help says what happens). Values
    are named by kind (``N``: integer, ``X``: number, ``PATH``) unless the flag gives a ``metavar``.

    Example:
        >>> parser = argparse.ArgumentParser(prog="demo", formatter_class=RecipeHelpFormatter)
        >>> _ = parser.add_argument("--epochs", type=positive_int, default=3, help="training epochs")
        >>> _ = parser.add_argument("--resume", action="store_true", help="continue the run")
        >>> print(parser.format_help())  # doctest: +NORMALIZE_WHITESPACE
        usage: demo [-h] [--epochs N] [--resume]
        <BLANKLINE>
        options:
          -h, --help  show this help message and exit
          --epochs N  training epochs (default: 3)
          --resume    continue the run
        <BLANKLINE>
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if isinstance(action, argparse.BooleanOptionalAction):  # Python 3.9 and 3.10 append this themselves
            text = text.replace(" (default: %(default)s)", "")
        if "default" in text.lower() or action.default is None or action.default is argparse.SUPPRESS:
            return text
        if isinstance(action, argparse.BooleanOptionalAction):
            return f"{text} (default: {'on' if action.default else 'off'})"
        if action.nargs == 0:  # a switch: off unless given
            return text
        return text + " (default: %(default)s)"

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        return _type_metavar(action)


class RecipeArgumentParser(argparse.ArgumentParser):
    """The recipes' ``ArgumentParser``: their help format, a short usage line, groups by title, negative values.

    - ``--help`` uses :class:`RecipeHelpFormatter`; its usage line names only ``main_flags`` (the flags that
      matter first), and the groups of :data:`GROUPS` follow with every flag.
    - :meth:`group` returns the group of a title, so a recipe adds its flags where the shared ones are.
    - A negative number after a flag is its value (``--lr -inf``, ``--lr -1e-3``): argparse alone takes only
      ``-1`` and ``-0.5`` for numbers and refuses the others with "expected one argument", before the flag's
      own check could say what it expects. (``--lr=-inf`` works with any parser.)

    Args:
        *args: as ``ArgumentParser``'s.
        main_flags: the flags of the usage line, in its order (flags this parser lacks are left out).
        **kwargs: as ``ArgumentParser``'s; ``formatter_class`` defaults to :class:`RecipeHelpFormatter`.

    Example:
        >>> parser = RecipeArgumentParser(prog="demo", main_flags=["--lr"])
        >>> _ = parser.group("training").add_argument("--lr", type=positive_float, default=0.1, help="rate")
        >>> _ = parser.group("output and resume").add_argument("--resume", action="store_true", help="resume")
        >>> print(parser.format_usage().strip())
        usage: demo [-h] [--lr X] [more flags: --help]
        >>> parser.exit_on_error = False  # raise instead of printing the usage and exiting with status 2
        >>> parser.parse_args(["--lr", "-inf"])
        Traceback (most recent call last):
        ...
        argparse.ArgumentError: argument --lr: expected a finite number > 0, got '-inf'
    """

    def __init__(self, *args: Any, main_flags: Sequence[str] = (), **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", RecipeHelpFormatter)
        super().__init__(*args, **kwargs)
        self.main_flags = list(main_flags)
        # argparse reads an argument that this matches as a value, not an option (while no flag looks like a
        # negative number, as here). The attribute is argparse's own, set in its __init__ in every Python version
        # this package supports; a matcher that knows floats' spellings of negative numbers is all that changes.
        self._negative_number_matcher = _NEGATIVE_NUMBER
        self._groups_by_title: Dict[str, Any] = {}
        for title in GROUPS:
            self.group(title)

    def group(self, title: str, description: Optional[str] = None) -> Any:
        """The argument group of ``title`` (made at the end if it is not one of :data:`GROUPS`); ``description``,
        where given, is shown under its title."""
        if title not in self._groups_by_title:
            self._groups_by_title[title] = self.add_argument_group(title)
        if description is not None:
            self._groups_by_title[title].description = description
        return self._groups_by_title[title]

    def _usage_line(self, more: str) -> Optional[str]:
        if not self.main_flags:
            return self.usage
        by_flag = {option: action for action in self._actions for option in action.option_strings}
        words = [_flag_usage(by_flag[flag]) for flag in ["-h"] + self.main_flags if flag in by_flag] + [more]
        # Wrapped as argparse wraps its own usage: continuation lines start under the first flag.
        prefix = len("usage: ")  # the formatter writes it before the first line
        indent = " " * (prefix + len(self.prog) + 1)
        width = max(shutil.get_terminal_size().columns - 2, 40)
        lines: List[str] = [self.prog]
        for word in words:
            if len(lines[-1]) + (prefix if len(lines) == 1 else 0) + 1 + len(word) > width:
                lines.append(indent + word)
            else:
                lines[-1] += " " + word
        return "\n".join(lines).replace("%", "%%")

    def format_usage(self) -> str:
        """The usage line of an error message: the main flags, then where the others are."""
        return self._with_usage("[more flags: --help]", super().format_usage)

    def format_help(self) -> str:
        """``--help``: ``ArgumentParser.format_help`` with the short usage line; the groups list every flag."""
        return self._with_usage("[more flags below]", super().format_help)

    def _with_usage(self, more: str, format_text: Callable[[], str]) -> str:
        """``format_text()`` of argparse with the short usage line in place of the parser's own."""
        usage, self.usage = self.usage, self._usage_line(more)
        try:
            return format_text()
        finally:
            self.usage = usage


def _flag_usage(action: argparse.Action) -> str:
    """A flag as argparse's usage line writes it: ``[--resume]``, ``[--epochs N]``, ``[--baseline | --no-baseline]``.

    Written here rather than taken from argparse's private ``HelpFormatter._format_actions_usage``, whose name and
    output (colour codes from Python 3.14) are not a stable API.
    """
    if action.nargs == 0:
        flag = " | ".join(action.option_strings) if isinstance(action, argparse.BooleanOptionalAction) \
            else action.option_strings[0]
    elif action.metavar is not None:
        flag = f"{action.option_strings[0]} {action.metavar}"
    elif action.choices is not None:
        flag = f"{action.option_strings[0]} {{{','.join(map(str, action.choices))}}}"
    else:
        flag = f"{action.option_strings[0]} {_type_metavar(action)}"
    return f"[{flag}]"


#: The shared flags of every recipe's usage line (those a recipe lacks are left out); a recipe adds its own.
MAIN_FLAGS = ("--data-dir", "--download", "--epochs", "--labels-per-class", "--seed", "--seed-data", "--device",
              "--output-dir", "--resume", "--config")


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
    iterations_per_epoch_help: str = "cut each epoch short (smoke tests; default: the whole data set)",
    main_flags: Sequence[str] = (),
) -> RecipeArgumentParser:
    """A :class:`RecipeArgumentParser` with the flags every recipe shares; the recipe adds its own switches to it.

    The shared flags go to the groups of :data:`GROUPS` ("data", "training", "output and resume", "device and
    speed", "distributed"); ``--config`` stays beside ``--help``. The usage line names :data:`MAIN_FLAGS`, then
    ``main_flags``.

    Args:
        description: the recipe's ``--help`` text.
        epochs: default number of epochs (the paper's).
        labels_per_class: default labels per class (the paper's), or None for a recipe without labels.
        data_dir: default data directory, or None for a recipe whose data ships with the package.
        batch_size: default batch size (100 for every paper experiment).
        output_dir: default output directory (None: ``runs/<the description's first word>``).
        threads: default number of CPU threads per process (None: torch's default). Small networks run faster on
            one thread: a second one costs more in synchronization than it saves (``benchmarks/trainer_overhead.py``).
        iterations_per_epoch: default of ``--iterations-per-epoch`` (None: one pass over the data set).
        iterations_per_epoch_help: its help text, for recipes whose data have no natural epoch.
        main_flags: the recipe's own flags for the usage line, after the shared ones.

    Example:
        >>> parser = recipe_parser("demo", epochs=3, labels_per_class=None, data_dir=None)
        >>> args = parse_args(parser, ["--epochs", "2"])
        >>> args.epochs, args.seed, str(args.output_dir), args.resume
        (2, 1, 'runs/demo', False)
    """
    parser = RecipeArgumentParser(description=description, main_flags=list(MAIN_FLAGS) + list(main_flags))
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="JSON file of flag values, the keys the flags' names with _ (flags given here win)")
    data, training = parser.group("data"), parser.group("training")
    output, speed, distributed = parser.group("output and resume"), parser.group("device and speed"), \
        parser.group("distributed")
    if data_dir is not None:
        data.add_argument("--data-dir", type=Path, default=Path(data_dir), metavar="DIR",
                          help="where the data set is (or goes)")
        data.add_argument("--download", action="store_true", help="download the data set with torchvision if missing")
    if labels_per_class is not None:
        data.add_argument("--labels-per-class", type=positive_int, default=labels_per_class,
                          help="labeled examples per class")
        data.add_argument("--seed-data", type=seed_int, default=1, help="seed of the labeled subset")
    training.add_argument("--epochs", type=positive_int, default=epochs, help="training epochs")
    training.add_argument("--iterations-per-epoch", type=positive_int, default=iterations_per_epoch,
                          help=iterations_per_epoch_help)
    training.add_argument("--seed", type=seed_int, default=1, help="seed of initialization, noise and shuffling")
    training.add_argument("--batch-size", type=positive_int, default=batch_size, help="batch size of each sub-batch")
    output.add_argument("--output-dir", type=Path, default=Path(output_dir or "runs/" + description.split()[0].lower()),
                        metavar="DIR", help="the run's folder: checkpoints, TensorBoard logs, summary.json")
    output.add_argument("--resume", action="store_true",
                        help="continue the run in --output-dir from its newest checkpoint (a complete run: nothing "
                        "to do)")
    output.add_argument("--extend", action="store_true",
                        help="with --resume and a larger --epochs: train a run further than the epochs it was started "
                        "with")
    output.add_argument("--no-progress", action="store_true",
                        help="no progress bar or progress lines (logs and the report stay)")
    speed.add_argument("--device", type=device_name, default=None,
                       help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    speed.add_argument("--threads", type=positive_int, default=threads, help=(
        "CPU threads per process (default: torch's choice, one per core)" if threads is None
        else _THREADS_HELP.format(threads)))
    speed.add_argument("--num-workers", type=nonnegative_int, default=0, help="data loader worker processes")
    speed.add_argument("--allow-tf32", action="store_true",
                       help="let GPUs compute float32 matrix products and convolutions in TF32 (faster, ~1e-3 "
                       "relative error); off by default: the reference ran true float32")
    distributed.add_argument("--backend", default=None, choices=["nccl", "gloo"],
                             help="distributed backend, for torchrun or --nproc-per-node (default: nccl on CUDA "
                             "devices, else gloo)")
    distributed.add_argument("--nproc-per-node", type=positive_int, default=None,
                             help="spawn this many processes through ignite.distributed (prefer torchrun for several "
                             "machines)")
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


def _config_keys(parser: argparse.ArgumentParser) -> Dict[str, Tuple[argparse.Action, Optional[bool]]]:
    """The keys a config file may hold: each flag's destination, and each of its names with ``_`` for ``-``.

    Maps a key to its action and, for a switch's name that is not its destination, what ``true`` under that key
    stores (``no_verify_checksums: true`` is ``--no-verify-checksums`` given, whatever the destination is called);
    None where the value is stored as it is.
    """
    keys: Dict[str, Tuple[argparse.Action, Optional[bool]]] = {}
    for action in parser._actions:
        if action.dest in ("help", "config"):
            continue
        keys[action.dest] = (action, None)
        for option in action.option_strings:
            key = option.lstrip("-").replace("-", "_")
            if not option.startswith("--") or key == action.dest:
                continue
            if action.nargs != 0:
                keys[key] = (action, None)
            else:  # a switch: what it stores (--x/--no-x stores whether its name lacks the "no-")
                keys[key] = (action, not option.startswith("--no-") if action.const is None else action.const)
    return keys


def _read_config(parser: argparse.ArgumentParser, path: Path) -> Dict[str, Any]:
    if not path.is_file():
        parser.error(f"--config: no such file {str(path)!r}")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        parser.error(f"--config: {str(path)!r} is not valid JSON ({error})")
    if not isinstance(values, dict):
        parser.error(f"--config: {str(path)!r} must hold a JSON object of flag values, got a {type(values).__name__}")
    keys = _config_keys(parser)
    unknown = sorted(set(values) - set(keys))
    if unknown:
        dests = sorted({action.dest for action, _ in keys.values()})
        parser.error(f"--config: unknown key(s) {unknown} in {str(path)!r}; the keys are the flags' names with _, "
                     f"e.g. {dests[:5]}")
    defaults: Dict[str, Any] = {}
    given: Dict[str, str] = {}
    for key, value in values.items():
        action, flag_value = keys[key]
        if action.dest in given:  # two names of one flag (an alias, or --x and --no-x)
            parser.error(f"--config: keys {given[action.dest]!r} and {key!r} set the same flag; keep one of them")
        given[action.dest] = key
        value = _config_value(parser, action, key, value)
        defaults[action.dest] = value if flag_value is None else (flag_value if value else not flag_value)
    return defaults


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
        The argument group ("evaluation" of a :class:`RecipeArgumentParser`, else a new group "score").

    Example:
        >>> parser = recipe_parser("demo", epochs=10, labels_per_class=None, data_dir=None)
        >>> _ = add_score_arguments(parser, every=5, samples=1000, digits=True)
        >>> args = parse_args(parser, ["--is-every", "2"])
        >>> args.is_every, args.is_samples, args.is_splits, args.is_seed, args.is_classifier
        (2, 1000, 10, 0, None)
    """
    e = parser.group("evaluation") if isinstance(parser, RecipeArgumentParser) else parser.add_argument_group("score")
    e.add_argument("--is-every", type=nonnegative_int, default=every,
                   help="epochs between scores (and after the last); 0: no score")
    e.add_argument("--is-samples", type=positive_int, default=samples, help="samples per score")
    e.add_argument("--is-splits", type=positive_int, default=10, help="contiguous splits (10 in the paper)")
    e.add_argument("--is-seed", type=seed_int, default=0, help="seed of the scored samples' noise")
    if digits:
        e.add_argument("--is-classifier", type=Path, default=None, metavar="FILE",
                       help="a DigitsClassifier state dict to score with (default: train one with seed 0, ~6 s)")
    else:
        e.add_argument("--is-network", choices=["inception-v3-compat", "torchvision"], default="inception-v3-compat",
                       help="the paper's 2015 TensorFlow Inception, or torchvision's (lower scores; comparison only)")
        e.add_argument("--inception-weights", type=Path, default=None, metavar="FILE",
                       help="a local weights file of --is-network, for offline machines (default: download once)")
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
