"""What a recipe does around its training step: seeds and device, the output folder, resume, progress, summary.

A recipe builds its data, networks, optimizers, trainer and handlers from the package's parts; :class:`Run` does the
rest, the same way for every recipe:

1. :meth:`Run.start`: checks the output folder and takes its lock, seeds ``torch``/NumPy/Python with
   ``seed + rank``, picks the device, and records the run's configuration in ``<output-dir>/run.json``.
2. :meth:`Run.attach`: progress (a bar on a terminal, log lines otherwise), a guard that stops training
   at the first non-finite loss, a checkpoint every epoch (atomic, checksummed, the two newest kept, with every
   process's random states), and, with ``--resume``, the newest usable checkpoint loaded.
3. :meth:`Run.finish`: ``summary.json``, the record marked complete, a short report on stdout, the lock released.

**The output folder** holds one run. Its record ``run.json`` says which experiment and configuration it holds and
how far it got (``training``, then ``baseline`` for recipes with a second phase, then ``complete``):

==========================================  ======================================================================
command                                     what happens
==========================================  ======================================================================
a fresh run into an empty (or new) folder   starts
a fresh run into a folder holding a run     refused: continue it with ``--resume``, or choose another folder
                                            (a run that stopped before its first checkpoint holds nothing to
                                            lose: a fresh run may start there)
``--resume`` of an unfinished run           continues from the newest usable checkpoint, exactly where it was
                                            (a run stopped in its second phase continues there, not in training)
``--resume`` of a complete run              says so and exits 0 without touching a file
``--resume --epochs N`` beyond the run's    refused, unless ``--extend`` says so: then training continues from
                                            the last state to epoch N
``--resume`` with a flag that changes the   refused, naming each flag with its recorded and its new value
experiment (``--lr``, ``--seed``, ...)      (device, threads, workers, progress and paths may change)
``--resume`` with another process count     refused (the random states are per process)
a second run while one is writing there     refused: the first holds the folder's lock (a dead holder's lock is
                                            free again: the operating system releases it with the process)
==========================================  ======================================================================

A corrupt newest checkpoint (truncated, empty, damaged: each has its SHA-256 beside it) is named in a warning and
the previous one is used (:func:`ignite_igan.checkpointing.load_latest_checkpoint`). An unwritable folder or a disk
without room for a checkpoint is an error that names the path before any training.

Example:
    >>> import argparse, tempfile, torch
    >>> from ignite.engine import Engine
    >>> args = argparse.Namespace(output_dir=tempfile.mkdtemp(), seed=1, device="cpu", threads=None, epochs=2,
    ...                           resume=False, extend=False, no_progress=True, lr=0.1)
    >>> run = Run(args, "demo")
    >>> device = run.start()
    >>> model = torch.nn.Linear(2, 1)
    >>> trainer = Engine(lambda engine, batch: {"loss": model(batch).square().mean().item()})
    >>> run.attach(trainer, {"model": model, "trainer": trainer}, output_names=["loss"])
    >>> _ = trainer.run([torch.ones(1, 2)] * 3, max_epochs=args.epochs)
    >>> path = run.finish({"loss": trainer.state.output["loss"]}, report=False)
    >>> run.record["status"], sorted(p.name for p in run.checkpoint_dir.glob("*.pt"))
    ('complete', ['checkpoint_1.pt', 'checkpoint_2.pt'])
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from ignite.utils import manual_seed

from ignite_igan.checkpointing import (
    RandomStates, RunIdentity, attach_checkpointing, clean_partial_writes, free_bytes, jsonable, list_checkpoints,
    load_latest_checkpoint, write_json_atomic,
)
from ignite_igan.validation import check_choice, check_int, check_int_list

__all__ = [
    "Run", "RunComplete", "RunFolderError", "NonFiniteLossError", "RESUMABLE_FLAGS", "ADDED_FLAGS", "changed_flags",
    "attach_nonfinite_guard", "attach_progress", "History", "read_record", "read_table", "multi_seed_folder",
    "format_seeds", "check_writable_folder", "check_free_space", "MULTI_SEED_KIND", "MULTI_SEED_TABLE",
]

#: Flags that may differ on ``--resume``, as they change where and how fast a run computes, not what it computes.
#: ``epochs`` may grow only with ``--extend``.
RESUMABLE_FLAGS = frozenset({
    "config", "data_dir", "device", "download", "epochs", "extend", "no_progress", "num_workers", "output_dir",
    "resume", "threads", "backend", "nproc_per_node",
})
RECORD_NAME = "run.json"
LOCK_NAME = ".lock"
SUMMARY_NAME = "summary.json"
PHASES = ("training", "baseline", "complete")


class RunFolderError(RuntimeError):
    """The output folder cannot take this run: it holds another run, is in use, unwritable or full."""


class RunComplete(Exception):
    """``--resume`` of a run that has finished: nothing to do (recipes exit with status 0)."""


class NonFiniteLossError(FloatingPointError):
    """A loss or output of the training step is NaN or infinite; training stopped at that iteration."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------------------
# The folder's lock
# --------------------------------------------------------------------------------------------------------------
class _FolderLock:
    """An exclusive ``flock`` on ``<folder>/.lock``, holding the holder's pid, host and start time.

    The operating system releases a ``flock`` when its process ends, however it ends, so a lock left by a killed
    run is free again at once (no stale lock to clean up). The file itself stays (empty) after release.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self) -> "_FolderLock":
        """Creates the folder where needed (:func:`check_writable_folder`) and takes the lock, else a
        :class:`RunFolderError` naming the holder."""
        import fcntl

        check_writable_folder(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip()
            os.close(fd)
            try:
                info = json.loads(holder)
                who = f"process {info['pid']} on {info['host']} (since {info['started']})"
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise RunFolderError(
                f"--output-dir {str(self.path.parent)!r} is in use by {who}: two runs in one folder would overwrite "
                "each other's checkpoints. Wait for it to finish, or choose another --output-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def __enter__(self) -> "_FolderLock":
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


# --------------------------------------------------------------------------------------------------------------
# Progress and the non-finite guard
# --------------------------------------------------------------------------------------------------------------
class _RunningAverages:
    """Exponential running averages (``avg = α·avg + (1 - α)·value``, started at the first value, as Ignite's
    ``RunningAverage``) of named outputs, published in ``engine.state.metrics`` as floats.

    Float outputs are published at every iteration. Outputs left on an accelerator are averaged there and
    published every ``publish_every`` iterations and at the end of every epoch: reading them is what makes the
    host wait for the device.
    """

    def __init__(self, names: Sequence[str], alpha: float = 0.98, publish_every: int = 100) -> None:
        self.names = list(names)
        self.alpha = alpha
        self.publish_every = publish_every
        self.average: Any = None  # a list of floats, or one tensor of all the averages on the outputs' device

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._publish)

    def _reset(self, engine: Engine) -> None:
        self.average = None

    def _update(self, engine: Engine) -> None:
        values = [engine.state.output[name] for name in self.names]
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        if not tensors:  # numbers, as Ignite's RunningAverage averages them
            self.average = values if self.average is None else [
                a * self.alpha + (1.0 - self.alpha) * v for a, v in zip(self.average, values)]
            self._publish(engine)
            return
        device = tensors[0].device
        new = torch.stack([torch.as_tensor(v, device=device).detach().float().reshape(()) for v in values])
        # All the averages in one vector: a few operations per iteration, whatever the number of outputs.
        self.average = new if self.average is None else torch.lerp(self.average, new, 1.0 - self.alpha)
        if device.type == "cpu" or engine.state.iteration % self.publish_every == 0:
            self._publish(engine)

    def _publish(self, engine: Engine) -> None:
        if self.average is None:
            return
        values = self.average if isinstance(self.average, list) else self.average.tolist()
        engine.state.metrics.update(zip(self.names, map(float, values)))


def attach_progress(
    trainer: Engine,
    output_names: Iterable[str],
    state_attributes: Sequence[str] = (),
    stream: Any = None,
    label: str = "epoch",
    line_event: Any = Events.EPOCH_COMPLETED,
) -> None:
    """Progress of ``trainer``: a bar on a terminal, else a line at each ``line_event`` (for log files).

    Both show running averages (α = 0.98) of ``output_names`` (keys of the step's output dict) and the
    ``engine.state`` attributes in ``state_attributes`` that exist (e.g. ``test_error``, set after evaluations).
    Without a terminal, carriage-return bars would fill a log file with one ever-growing line; a line per epoch, or
    per evaluation with ``line_event`` the evaluation's event (``epoch 3/20  iteration 1800  loss_labeled 0.113 ...
    test_error 0.2312  71.3 s``), reads well in ``tail``. Its time is that of the iterations since the previous line
    (Ignite's ``engine.state.times`` of each epoch: the iterations, not the epoch's handlers).

    Args:
        trainer: the engine.
        output_names: keys of the step's output to average and show.
        state_attributes: ``engine.state`` attributes to show when set.
        stream: where lines go (default ``sys.stderr``); a bar is used only if it is a terminal.
        label: the word that starts each line.
        line_event: when a line is printed without a terminal: every epoch by default, e.g.
            ``Events.EPOCH_COMPLETED(every=10)`` for the epochs a run evaluates at; ``None``: no lines (a short run
            whose result the caller prints).

    Example:
        >>> import io
        >>> trainer = Engine(lambda engine, batch: {"loss": 0.5})
        >>> stream = io.StringIO()
        >>> attach_progress(trainer, ["loss"], stream=stream, line_event=Events.EPOCH_COMPLETED(every=2))
        >>> _ = trainer.run([0, 1], max_epochs=4)
        >>> [line.split("  ")[:3] for line in stream.getvalue().splitlines()]
        [['epoch 2/4', 'iteration 4', 'loss 0.5'], ['epoch 4/4', 'iteration 8', 'loss 0.5']]
    """
    stream = sys.stderr if stream is None else stream
    names = list(output_names)
    _RunningAverages(names).attach(trainer)
    if getattr(stream, "isatty", lambda: False)():
        ProgressBar(persist=False).attach(trainer, metric_names=names, state_attributes=list(state_attributes))
        return
    if line_event is None:
        return
    seconds = [0.0]  # of the iterations since the previous line

    @trainer.on(Events.EPOCH_COMPLETED)
    def _time(engine: Engine) -> None:
        seconds[0] += engine.state.times[Events.EPOCH_COMPLETED.name] or 0.0

    @trainer.on(line_event)
    def _line(engine: Engine) -> None:
        state = engine.state
        shown = [(name, state.metrics.get(name)) for name in names]
        shown += [(name, getattr(state, name, None)) for name in state_attributes]
        parts = [f"{label} {state.epoch}/{state.max_epochs}", f"iteration {state.iteration}"]
        parts += [f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                  for name, value in shown if value is not None]
        parts.append(f"{seconds[0]:.1f} s")
        seconds[0] = 0.0
        print("  ".join(parts), file=stream, flush=True)


def _nonfinite_message(where: str, iteration: int, epoch: int, bad: Sequence[str]) -> str:
    return (
        f"{where}iteration {iteration} (epoch {epoch}) produced non-finite values: {', '.join(bad)}. Training "
        "stopped; the newest checkpoint is the last good state. Lower the learning rate, or check the data for NaN"
    )


def _items(output: Any) -> Iterable[Any]:
    return output.items() if isinstance(output, Mapping) else [("output", output)]


def attach_nonfinite_guard(
    trainer: Engine, where: str = "", check_every: int = 100, defer: Optional[bool] = None
) -> None:
    """Stops training with :class:`NonFiniteLossError` at the first iteration whose output holds NaN or inf.

    Attach it right after creating the trainer, before other handlers (Ignite calls them in order), so that no
    checkpoint is written after a bad iteration: the newest checkpoint stays the last good state. The error names
    the iteration, the epoch and each bad value.

    Outputs that are floats, or tensors on the CPU, are checked at every iteration. Outputs left on an accelerator
    (:func:`~ignite_igan.engines.outputs_on_device`) are not read at every iteration, which would make the host
    wait for the device: the device records the first bad iteration, and the host reads that record every
    ``check_every`` iterations, at the end of every epoch (before the checkpoint of that epoch is written) and at
    the end of the run. Training then stops at the next check, naming the first bad iteration; handlers between
    the two (the evaluation average, logging) may have seen the bad values, no checkpoint has.

    Args:
        trainer: the engine.
        where: a prefix for the message (e.g. ``"baseline: "``).
        check_every: iterations between reads of the device's record, >= 1.
        defer: record on the device and read every ``check_every`` iterations (True), or read every iteration
            (False); by default, deferred for tensors on an accelerator only.

    Example:
        >>> trainer = Engine(lambda engine, batch: {"loss": float("nan") if batch == 2 else 0.5})
        >>> attach_nonfinite_guard(trainer)
        >>> trainer.run([0, 1, 2, 3], max_epochs=1)
        Traceback (most recent call last):
        ...
        ignite_igan.experiments.runs.NonFiniteLossError: iteration 3 (epoch 1) produced non-finite values: loss = nan...
    """
    check_every = check_int("check_every", check_every, minimum=1)
    record: Dict[str, Any] = {"first_bad": -1}  # -1 or the first bad iteration; once recorded, a tensor on the device

    @trainer.on(Events.ITERATION_COMPLETED)
    def _check(engine: Engine) -> None:
        bad, deferred = [], []
        for name, value in _items(engine.state.output):
            if isinstance(value, float) and not math.isfinite(value):
                bad.append(f"{name} = {value}")
            elif isinstance(value, torch.Tensor) and value.is_floating_point():
                if defer or (defer is None and value.device.type != "cpu"):
                    deferred.append(value.detach().reshape(-1))
                elif not bool(torch.isfinite(value).all()):
                    bad.append(f"{name} = {value.detach().flatten()[:4].tolist()}")
        if bad:
            raise NonFiniteLossError(_nonfinite_message(where, engine.state.iteration, engine.state.epoch, bad))
        if deferred:
            finite = torch.isfinite(torch.cat(deferred)).all()
            first = record["first_bad"]
            # Queued on the device; nothing here waits for it. The first bad iteration is kept.
            record["first_bad"] = torch.where(finite | (first >= 0), first, engine.state.iteration)
            if engine.state.iteration % check_every == 0:
                _read(engine)

    def _read(engine: Engine) -> None:
        first = int(record["first_bad"])
        if first >= 0:
            now = ", ".join(f"{name} = {torch.as_tensor(v).detach().flatten()[:4].tolist()}"
                            for name, v in _items(engine.state.output))
            epoch = (first - 1) // max(engine.state.epoch_length or 1, 1) + 1
            raise NonFiniteLossError(_nonfinite_message(where, first, epoch, [f"(at iteration "
                                                                               f"{engine.state.iteration}: {now})"]))

    trainer.add_event_handler(Events.EPOCH_COMPLETED, _read)
    trainer.add_event_handler(Events.COMPLETED, _read)


# --------------------------------------------------------------------------------------------------------------
# The folder: its record, writability and space (shared with the multi-seed runs of ``seeds``)
# --------------------------------------------------------------------------------------------------------------
#: ``run.json``'s ``kind`` in the top folder of a multi-seed run (a single run's record has no ``kind``).
MULTI_SEED_KIND = "multi-seed"
#: The multi-seed run's table of every seed's results, in its top folder.
MULTI_SEED_TABLE = "seeds.json"


def new_record(experiment: str, config: Mapping[str, Any], epochs: int, **more: Any) -> Dict[str, Any]:
    """The record (``run.json``) of a run that starts: ``more`` says what kind (a multi-seed run's seeds, ...)."""
    return {"experiment": experiment, **more, "config": config, "epochs": epochs, "status": "training",
            "created": _now()}


def write_record(folder: Path, record: Dict[str, Any]) -> None:
    """Writes ``record`` (stamped ``updated`` now) to ``<folder>/run.json``, atomically."""
    record["updated"] = _now()
    write_json_atomic(Path(folder) / RECORD_NAME, record)


def read_record(folder: Path) -> Optional[Dict[str, Any]]:
    """``<folder>/run.json`` as a dict, or None where there is none; a damaged one is a :class:`RunFolderError`.

    Example:
        >>> import tempfile
        >>> read_record(Path(tempfile.mkdtemp())) is None
        True
    """
    path = Path(folder) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{str(path)!r} is not valid JSON ({error}); the run's record is damaged") from None
    except OSError as error:
        raise RunFolderError(f"{str(path)!r} cannot be read ({error.strerror or error})") from None
    if not isinstance(record, dict):
        raise RunFolderError(f"{str(path)!r} is not a run record of this package")
    return record


def multi_seed_folder(folder: Path, record: Optional[Mapping[str, Any]]) -> Optional[List[int]]:
    """The seeds of the multi-seed run in ``folder`` (``record`` is its ``run.json``, or None), [] where a folder
    of an earlier version holds one without saying which seeds; None where it holds no multi-seed run.

    Example:
        >>> multi_seed_folder(Path("runs/x"), {"kind": MULTI_SEED_KIND, "seeds": [1, 2]})
        [1, 2]
        >>> multi_seed_folder(Path("runs/x"), {"config": {"seed": 1}}) is None  # a single run's record
        True
    """
    if record is not None and record.get("kind") == MULTI_SEED_KIND:
        return [int(seed) for seed in record.get("seeds", [])]
    if record is None and (Path(folder) / MULTI_SEED_TABLE).is_file():  # made before multi-seed runs had a record
        try:
            return [int(seed) for seed in (read_table(folder) or {})["seeds"]]
        except (KeyError, TypeError, ValueError):  # a damaged table: which seeds is unknown
            return []
    return None


def read_table(folder: Path) -> Optional[Dict[str, Any]]:
    """``<folder>/seeds.json``, a multi-seed run's table, as a dict; None where there is none or it is damaged (the
    run then rebuilds it from its seeds' summaries).

    Example:
        >>> import tempfile
        >>> read_table(Path(tempfile.mkdtemp())) is None
        True
    """
    return _read_json_object(Path(folder) / MULTI_SEED_TABLE)


def _read_json_object(path: Path) -> Optional[Dict[str, Any]]:
    """The JSON object in ``path``; None where there is none, or it is damaged or not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def format_seeds(seeds: Sequence[int]) -> str:
    """The seeds as ``--seeds`` reads them, consecutive ones as ranges (the inverse of
    :func:`ignite_igan.experiments.seeds.parse_seeds`).

    Example:
        >>> format_seeds([1, 2, 3, 5, 8, 9])
        '1-3,5,8-9'
    """
    ranges: List[List[int]] = []
    for seed in check_int_list("seeds", seeds, minimum=0, unique=True, allow_empty=True):
        if ranges and seed == ranges[-1][1] + 1:
            ranges[-1][1] = seed
        else:
            ranges.append([seed, seed])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def check_writable_folder(folder: Path) -> None:
    """Creates ``folder`` where needed and writes a probe file there; else a :class:`RunFolderError` naming it.

    Example:
        >>> import tempfile
        >>> check_writable_folder(Path(tempfile.mkdtemp()) / "run")  # created, writable: no error
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--output-dir {str(folder)!r} is a file, not a folder; choose a folder's path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:  # gone when closed
            probe.write(b"x")
    except OSError as error:
        raise RunFolderError(
            f"--output-dir {str(folder)!r} is not writable ({error.strerror or error}); choose a folder you "
            "can write to"
        ) from None


def check_free_space(folder: Path, free: Optional[int], needed: int, why: str, todo: str = "") -> None:
    """A :class:`RunFolderError` where ``free`` bytes (None: unknown, no check) are fewer than ``needed``; ``why``
    says what needs them.

    Example:
        >>> check_free_space(Path("runs/x"), 2**20, 2**30, "two checkpoints need 1024 MiB")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ignite_igan.experiments.runs.RunFolderError: --output-dir 'runs/x' has 1 MiB free; two checkpoints need ...
    """
    if free is not None and free < needed:
        raise RunFolderError(
            f"--output-dir {str(folder)!r} has {free / 2**20:.0f} MiB free; {why}. Free some space{todo} or choose "
            "another --output-dir"
        )


#: Flags added to the recipes after their first recorded runs, with the values that do what the recipes did before
#: the flag existed. A record written before (its configuration lacks the key) was made with such a value: it
#: resumes when the flag has one of them now; another value is refused, saying so.
ADDED_FLAGS: Mapping[str, tuple] = {
    "allow_tf32": (False,),  # full float32 on GPUs
    "cuda_graph": (False,),  # the eager step
    "device_data": (None, False),  # the host loader; None may choose the device's, which draws the same batches
}


def changed_flags(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> List[str]:
    """How this command's configuration ``now`` differs from a run's ``recorded`` one, a phrase per flag in the
    words of the command line; a flag of :data:`ADDED_FLAGS` missing from an earlier version's record counts as
    the value it ran with.

    Example:
        >>> changed_flags({"lr": 0.003, "seed": 1}, {"lr": 0.001, "seed": 1, "cuda_graph": False})
        ['--lr: 0.003 in the run, 0.001 now']
    """
    phrases = []
    for key in sorted(set(recorded) | set(now)):
        flag, value = f"--{key.replace('_', '-')}", now.get(key)
        if key not in recorded and key in ADDED_FLAGS:  # a record from before the flag: its value of that time
            if value not in ADDED_FLAGS[key]:
                phrases.append(f"{flag}: not recorded (the run was started by an earlier version, before this flag, "
                               f"which ran as {' or '.join(map(repr, ADDED_FLAGS[key]))}), {value!r} now")
        elif recorded.get(key) == value:  # a flag absent on one side counts as None there
            continue
        elif key not in recorded:
            phrases.append(f"{flag}: not recorded (the run was started by an earlier version, before this flag), "
                           f"{value!r} now")
        elif key not in now:
            phrases.append(f"{flag}: {recorded[key]!r} in the run, and this version has no such flag")
        else:
            phrases.append(f"{flag}: {recorded[key]!r} in the run, {value!r} now")
    return phrases


def _check_resume_rules(
    folder: Path, record: Optional[Mapping[str, Any]], experiment: str, config: Mapping[str, Any], epochs: int,
    extend: bool, what: str = "run", more: Sequence[Tuple[Any, str]] = (),
) -> int:
    """The rules of a ``--resume`` shared by a single run and a multi-seed run (``what``): there is a run, of this
    experiment, with the flags it was started with, then the rules in ``more`` (``(refused, message)`` pairs), then
    the epochs: never fewer, more only with ``--extend``. Refuses with the first that holds; returns the recorded
    epochs."""
    folder_name = str(folder)
    if record is None:
        raise RunFolderError(f"--resume: {folder_name!r} holds no {what} to resume; run once without --resume first")
    recorded, changed = int(record["epochs"]), changed_flags(record.get("config", {}), config)
    rules = [
        (record.get("experiment") != experiment,
         f"--resume: {folder_name!r} holds a {record.get('experiment')!r} {what}, not {experiment!r}"),
        (changed, f"--resume: the flags differ from those the {what} in {folder_name!r} was started with, and the "
                  f"recorded ones are what its checkpoints hold: {'; '.join(changed)}. Resume with the recorded "
                  "values, or start a new run in another --output-dir"),
        *more,
        (epochs < recorded,
         f"--epochs: the {what} in {folder_name!r} is set to {recorded} epochs; a run cannot be shortened on resume "
         f"(got {epochs}). Resume with --epochs {recorded}"),
        (epochs > recorded and not extend,
         f"--epochs {epochs} is more than the {recorded} epochs the {what} in {folder_name!r} was started with; to "
         "train it further from its last state, add --extend"),
    ]
    for refused, message in rules:
        if refused:
            raise RunFolderError(message)
    return recorded


def _already_holds(folder: Path, what: str, resume: str = "--resume") -> RunFolderError:
    """The error of a fresh run into ``folder``, which holds ``what``."""
    return RunFolderError(
        f"--output-dir {str(folder)!r} already holds {what}. Continue it with {resume}, or choose another "
        "--output-dir (a fresh run never writes over another run's checkpoints)"
    )


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------
class Run:
    """One recipe run in its output folder (``args.output_dir``); see the module documentation.

    Args:
        args: the parsed command line. Read: ``output_dir``, ``seed``, ``device``, ``threads``, ``epochs``,
            ``resume``, ``extend``, ``no_progress``; every other attribute is part of the configuration that a
            resume must match (except :data:`RESUMABLE_FLAGS`).
        experiment: the recipe's name, recorded and checked on resume.

    Attributes:
        checkpoint_dir: ``<output-dir>/checkpoints``.
        tensorboard_dir: ``<output-dir>/tensorboard``, for the recipe's logger.
        summary_path: ``<output-dir>/summary.json``, written by :meth:`Run.finish`.
        record: the run's record (``run.json``), set by :meth:`Run.start`.
        resumed_from: the checkpoint :meth:`Run.attach` loaded, or None.
    """

    def __init__(self, args: argparse.Namespace, experiment: str) -> None:
        self.args = args
        self.experiment = experiment
        self.folder = Path(args.output_dir)
        self.checkpoint_dir = self.folder / "checkpoints"
        self.tensorboard_dir = self.folder / "tensorboard"
        self.summary_path = self.folder / SUMMARY_NAME
        self.record: Dict[str, Any] = {}
        self.resumed_from: Optional[Path] = None
        self.started = time.time()
        self._lock = _FolderLock(self.folder)
        self._trainer: Optional[Engine] = None

    # What the record says --------------------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        """How far the run has got, ``"training"``, ``"baseline"`` or ``"complete"``."""
        return self.record.get("status", "training")

    @property
    def results(self) -> Dict[str, Any]:
        """Results recorded by :meth:`enter_phase` (they survive a resume into a later phase)."""
        return dict(self.record.get("results", {}))

    def configuration(self) -> Dict[str, Any]:
        """The flags that define the experiment: every argument except :data:`RESUMABLE_FLAGS`, as JSON reads back."""
        return jsonable({key: value for key, value in sorted(vars(self.args).items()) if key not in RESUMABLE_FLAGS})

    # Start ------------------------------------------------------------------------------------------------------
    def start(self) -> torch.device:
        """Checks the folder and the flags, takes the lock, seeds, and returns the device; see the module docs.

        Raises:
            RunComplete: ``--resume`` of a complete run (nothing was touched).
            RunFolderError: the folder cannot take the run (the message says why and what to do).
        """
        record = self._claim_folder()
        manual_seed(self.args.seed + idist.get_rank())  # torch, NumPy and Python's random
        device = self._device()
        if device.type == "cpu":
            # Decaying activations and Adam moments can run into slow denormal arithmetic on a CPU; flushing them
            # to zero changes results by less than the smallest normal float32.
            torch.set_flush_denormal(True)
        if getattr(self.args, "threads", None):
            torch.set_num_threads(self.args.threads)
        # True float32 on GPUs unless --allow-tf32: the reference ran full float32, and TF32 changes the numbers
        # (PyTorch allows TF32 convolutions by default).
        allow = bool(getattr(self.args, "allow_tf32", False))
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow

        if record is None or not self.args.resume:
            # The run id is saved in every checkpoint: a resume loads only this run's.
            record = new_record(self.experiment, self.configuration(), self.args.epochs, run_id=uuid.uuid4().hex,
                                world_size=idist.get_world_size())
        elif self.args.epochs > int(record["epochs"]):  # --extend
            record = dict(record, epochs=self.args.epochs, status="training", extended=_now())
        self.record = record  # written when training starts (attach): a run that fails before leaves no record
        return device

    def _claim_folder(self) -> Optional[Dict[str, Any]]:
        """The folder's record, once the folder is checked for this run, locked and cleaned (on rank 0)."""
        record = self._read_record()
        # Read-only checks first (every process reads the same files, so all decide the same): a refused run
        # touches nothing. The fresh-run check is repeated under the lock, where no other run can start.
        if self.args.resume:
            self._check_resume(record)
        else:
            self._check_fresh(record)
        error = ""
        if idist.get_rank() == 0:
            try:
                self._lock.acquire()
                if not self.args.resume:
                    record = self._read_record()
                    self._check_fresh(record)
                clean_partial_writes(self.checkpoint_dir)
            except RunFolderError as failure:
                self._lock.release()
                error = str(failure)
        error = idist.broadcast(error, src=0, safe_mode=True)  # every process refuses, or none
        if error:
            raise RunFolderError(error)
        return record

    def _read_record(self) -> Optional[Dict[str, Any]]:
        record = read_record(self.folder)
        seeds = multi_seed_folder(self.folder, record)
        if seeds is not None:  # one run would write beside (or over) the seeds' table and folders
            listed = f"--seeds {format_seeds(seeds)}" if seeds else "--seeds <its seeds>"
            todo = (f"resume it as a whole with {listed} --resume (one seed k alone: --seed k --seed-data k "
                    f"--resume --output-dir {str(self.folder / 'seed<k>')!r})" if self.args.resume
                    else f"continue it with {listed} --resume, or choose another --output-dir")
            raise RunFolderError(
                f"--output-dir {str(self.folder)!r} holds a multi-seed run ({listed}), not a single run: {todo}")
        if record is not None and "config" not in record:
            raise RunFolderError(f"{str(self.folder / RECORD_NAME)!r} is not a run record of this package")
        return record

    def _check_resume(self, record: Optional[Dict[str, Any]]) -> None:
        """Every rule of a resume that can be checked from the folder alone (read-only, on every process)."""
        folder = str(self.folder)
        if record is None and list_checkpoints(self.checkpoint_dir):
            raise RunFolderError(
                f"--resume: {folder!r} holds checkpoints but no run record ({RECORD_NAME}): they were written by "
                "an older version of ignite-igan, whose configuration cannot be checked. Start the run again "
                "into a new --output-dir"
            )
        world_size = (record or {}).get("world_size")
        epochs = _check_resume_rules(
            self.folder, record, self.experiment, self.configuration(), self.args.epochs,
            getattr(self.args, "extend", False),
            more=[(world_size != idist.get_world_size(),
                   f"--resume: the run in {folder!r} ran in {world_size} process(es), this is "
                   f"{idist.get_world_size()}: every process's random state is checkpointed, so resume with the "
                   "same number of processes")])
        if record.get("status") == "complete" and self.args.epochs == epochs:
            raise RunComplete(
                f"the run in {folder!r} is complete ({epochs} epochs; summary in "
                f"{str(self.summary_path)!r}); nothing to do. To train it further, pass --extend with a larger --epochs"
            )

    def _check_fresh(self, record: Optional[Dict[str, Any]]) -> None:
        # A record without checkpoints is a run that stopped before its first epoch ended: nothing to lose.
        found = list_checkpoints(self.checkpoint_dir)
        if record is not None and (found or record.get("status") != "training"):
            raise _already_holds(self.folder, f"a {record.get('experiment')!r} run ({record.get('status')}, "
                                              f"{record.get('epochs')} epochs)")
        if found:
            raise _already_holds(self.folder, f"checkpoints ({', '.join(p.name for p in found[:3])})")

    def _device(self) -> torch.device:
        # The command line has checked that the device exists (ignite_igan.experiments.cli.device_name).
        if getattr(self.args, "device", None) is None:
            return idist.device()
        device = torch.device(self.args.device)
        if device.type == "cuda" and device.index is None and idist.get_world_size() > 1:
            return idist.device()  # "cuda" in several processes: each process its own GPU
        return device

    def _write_record(self) -> None:
        if idist.get_rank() == 0:
            write_record(self.folder, self.record)

    # Training ---------------------------------------------------------------------------------------------------
    def attach(
        self,
        trainer: Engine,
        to_save: Mapping[str, Any],
        output_names: Iterable[str],
        state_attributes: Sequence[str] = ("test_error",),
        progress_event: Any = Events.EPOCH_COMPLETED,
    ) -> Optional[Path]:
        """Progress, checkpoints, the disk-space check and, with ``--resume``, the checkpoint; returns its path.

        Call it after every handler whose state is in ``to_save`` is attached, and before ``trainer.run``; attach
        :func:`attach_nonfinite_guard` right after creating the trainer. ``to_save`` gets the random states of
        every process added. In a later phase (``baseline``) nothing is loaded: training is over. Without a
        terminal, the progress is a line at each ``progress_event`` (e.g. the evaluations'; see
        :func:`attach_progress`).
        """
        to_save = dict(to_save)
        to_save.setdefault("random_states", RandomStates())
        to_save.setdefault("trainer_output", _TrainerOutput(trainer))
        # A record written before run ids (an older version) gets one now; its old checkpoints carry none.
        legacy = "run_id" not in self.record
        self.record.setdefault("run_id", uuid.uuid4().hex)
        to_save["run_identity"] = RunIdentity(
            self.experiment, self.record["run_id"], self.record["config"], accept_unmarked=legacy
        )
        self._trainer = trainer
        if idist.get_rank() == 0 and not getattr(self.args, "no_progress", False):
            attach_progress(trainer, output_names, state_attributes, line_event=progress_event)
        else:
            _RunningAverages(list(output_names)).attach(trainer)
        self._check_space(to_save)
        self._write_record()
        attach_checkpointing(trainer, to_save, self.checkpoint_dir)
        if self.args.resume and self.phase == "training":
            self.resumed_from = load_latest_checkpoint(to_save, self.checkpoint_dir)
        return self.resumed_from

    @property
    def training_done(self) -> bool:
        """Whether the trainer of :meth:`attach` has already run all its epochs (a run resumed after its last
        checkpoint), or the run is past training."""
        return self.phase != "training" or self._trainer.state.epoch >= self.args.epochs

    def _check_space(self, to_save: Mapping[str, Any]) -> None:
        free = free_bytes(self.folder) if idist.get_rank() == 0 else None
        if free is None:  # another process, or a disk that cannot tell
            return
        size = sum(leaf.numel() * leaf.element_size() for name, obj in to_save.items()
                   if hasattr(obj, "state_dict") and not isinstance(obj, RandomStates)
                   for leaf in _tensors(obj.state_dict()))
        needed = int(1.5 * size) + (16 << 20)  # one new checkpoint written beside the kept ones, and some slack
        check_free_space(self.folder, free, needed, f"a checkpoint of this run takes about {size / 2**20:.0f} MiB "
                         f"and {needed / 2**20:.0f} MiB are needed to write one safely")

    def enter_phase(self, phase: str, results: Optional[Mapping[str, Any]] = None) -> None:
        """Records that the run has moved on to ``phase`` with ``results`` so far (a resume continues there)."""
        self.record["status"] = check_choice("phase", phase, PHASES)
        if results is not None:
            self.record["results"] = jsonable(dict(results))
        self._write_record()

    # Finish -----------------------------------------------------------------------------------------------------
    def finish(
        self,
        metrics: Mapping[str, Any],
        extra: Optional[Mapping[str, Any]] = None,
        report: bool = True,
        headline: Sequence[str] = (),
    ) -> Optional[Path]:
        """Writes ``summary.json``, marks the run complete, prints the report and releases the lock.

        Args:
            metrics: the run's final numbers.
            extra: more top-level entries of the summary (e.g. the paper's number).
            report: print the report to stdout (rank 0).
            headline: the report's first lines (the recipe's numbers in words); the paths follow.

        Returns:
            The summary's path on rank 0, else None.
        """
        rank0 = idist.get_rank() == 0
        if rank0:
            config = vars(self.args)
            summary = {
                "experiment": self.experiment,
                "config": config,
                "seeds": {key: config[key] for key in ("seed", "seed_data") if key in config},
                "metrics": dict(metrics),
                "seconds": round(time.time() - self.started, 3),
                "world_size": idist.get_world_size(),
                "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                **(extra or {}),
            }
            write_json_atomic(self.summary_path, jsonable(summary))
        self.record["status"] = "complete"
        self._write_record()
        if report and rank0:
            minutes, seconds = divmod(time.time() - self.started, 60)
            after = " (this process, after the resume)" if self.resumed_from else ""
            print("\n".join([
                *headline,
                f"  wall time    {int(minutes)} min {seconds:.0f} s{after}",
                f"  summary      {self.summary_path}",
                f"  checkpoints  {self.checkpoint_dir}",
                f"  TensorBoard  tensorboard --logdir {self.tensorboard_dir}",
            ]), flush=True)
        self.close()
        return self.summary_path if rank0 else None

    def close(self) -> None:
        """Releases the folder's lock (also done by :meth:`finish`; safe to call twice)."""
        self._lock.release()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()  # also when training fails: the folder is free again at once


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in a state dict (nested mappings and sequences)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (Mapping, list, tuple)):
        for item in value.values() if isinstance(value, Mapping) else value:
            yield from _tensors(item)


class _TrainerOutput:
    """The trainer's last output (``engine.state.output``) in the checkpoint.

    Ignite's ``Engine.state_dict`` leaves the output out, so a run resumed after its last checkpoint but before its
    summary would report none (``final_train_outputs: null``). Only tensors (moved to the CPU), numbers, strings
    and containers of them are kept, so that the checkpoint still loads with ``torch.load(weights_only=True)``.
    """

    #: Checkpoints written before this entry existed lack it: they still load (the output stays unknown).
    optional_in_checkpoint = True

    def __init__(self, trainer: Engine) -> None:
        self.trainer = trainer

    def state_dict(self) -> Dict[str, Any]:
        return {"output": _plain(self.trainer.state.output)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.trainer.state.output = state_dict["output"]


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return None  # anything else would make the checkpoint unloadable with weights_only=True


class History:
    """A run's evaluations in order (e.g. the score after every few epochs), checkpointed with the run.

    Put it in ``to_save``: a resumed run's summary then lists the evaluations of its earlier processes too.

    Example:
        >>> history = History()
        >>> history.append(epoch=10, iteration=5000, score=6.2)
        >>> History().load_state_dict(history.state_dict()) is None, history.last["score"]
        (True, 6.2)
    """

    def __init__(self) -> None:
        self.entries: List[Dict[str, Any]] = []

    def append(self, **entry: Any) -> None:
        self.entries.append(dict(entry))

    @property
    def last(self) -> Optional[Dict[str, Any]]:
        return self.entries[-1] if self.entries else None

    def state_dict(self) -> Dict[str, Any]:
        return {"entries": [dict(entry) for entry in self.entries]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        # What state_dict wrote into a checkpoint (checksummed, and checked to be this run's when loaded).
        self.entries = [dict(entry) for entry in state_dict["entries"]]
