"""Checkpoints that a killed run can resume from exactly, and that a damaged file cannot silently corrupt.

Ignite's :class:`~ignite.handlers.Checkpoint` decides *what* is saved and *when*; this module decides *how*:

- :class:`RandomStates`, an object with ``state_dict``/``load_state_dict`` for the random number generators
  (torch CPU and CUDA, NumPy, Python) of *every* process, so that the noise and dropout after a resume are the
  ones an uninterrupted run would have drawn. Each process's state is gathered into the checkpoint and each
  process gets its own back.
- :class:`ChecksummedSaver`, the save handler: each checkpoint is written to ``<name>.partial``, flushed to disk and
  renamed into place (a reader never sees half a file), then its SHA-256 goes into ``<name>.sha256`` beside it.
  After every save only the ``keep`` newest checkpoints of the folder remain (also those of earlier processes
  of a resumed run), and a write that fails (a full disk) removes its partial file and names the path, leaving
  the previous checkpoints as they were.
- :class:`RunIdentity`, saved in every checkpoint: the experiment, the run's id and a hash of its configuration.
- :func:`load_latest_checkpoint` checks the newest checkpoint against its checksum before loading it: a
  truncated, empty, overwritten or bit-flipped file is named in a warning and the previous one is used, and so is
  a checkpoint of another run or configuration (a file copied from another run folder, checksum and all); if none
  is usable, :class:`CheckpointError` names every file and what was wrong with it. Optimizer states are checked
  against their parameters before anything is loaded, and any failure to load names the file.

:func:`attach_checkpointing` keeps the two newest checkpoints: Ignite deletes the oldest file *before* it writes
the new one, so with a single file a run killed between the two steps would have none.

Example:
    >>> import tempfile, torch
    >>> from ignite.engine import Engine, Events
    >>> model = torch.nn.Linear(2, 1)
    >>> trainer = Engine(lambda engine, batch: None)
    >>> folder = tempfile.mkdtemp()
    >>> to_save = {"model": model, "trainer": trainer, "random_states": RandomStates()}
    >>> _ = attach_checkpointing(trainer, to_save, folder)
    >>> _ = trainer.run(range(3), max_epochs=2)
    >>> latest_checkpoint(folder).name
    'checkpoint_2.pt'
    >>> load_latest_checkpoint(to_save, folder).name  # verified against checkpoint_2.pt.sha256, then loaded
    'checkpoint_2.pt'
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, global_step_from_engine
from ignite.handlers.checkpoint import BaseSaveHandler

from ignite_igan.validation import check_int, check_optimizer_state

__all__ = [
    "RandomStates", "RunIdentity", "CheckpointError", "ChecksummedSaver", "attach_checkpointing",
    "clean_partial_writes", "free_bytes", "jsonable", "latest_checkpoint", "list_checkpoints",
    "load_latest_checkpoint", "verify_checkpoint", "write_json_atomic",
]

CHECKPOINT_PREFIX = "checkpoint"
CHECKSUM_SUFFIX = ".sha256"
PARTIAL_SUFFIX = ".partial"
PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """No checkpoint of a folder can be used, or one could not be written."""


# --------------------------------------------------------------------------------------------------------------
# What goes into a checkpoint besides the models: the random states and the run's identity
# --------------------------------------------------------------------------------------------------------------
class RandomStates:
    """The random number generators' states of all processes, for ``Checkpoint``.

    ``state_dict()`` is collective under ``ignite.distributed`` (every process must call it, as ``Checkpoint``
    does): the per-process states are gathered, in rank order, so that the checkpoint written by rank 0 holds
    them all. ``load_state_dict`` restores the calling process's own entry.

    Example:
        >>> states = RandomStates()
        >>> saved = states.state_dict()
        >>> first = torch.rand(2)
        >>> states.load_state_dict(saved)
        >>> torch.equal(torch.rand(2), first)
        True
    """

    @staticmethod
    def _local_state() -> Dict[str, Any]:
        kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        # Plain tensors and numbers only, so that checkpoints load with torch.load(weights_only=True).
        state: Dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": (
                kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)
            ),
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def state_dict(self) -> Dict[str, Any]:
        # A list in rank order: [state] in one process, each process's state (pickled across) under several.
        return {"per_rank": list(idist.all_gather(self._local_state()))}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        states, rank = state_dict["per_rank"], idist.get_rank()
        if rank >= len(states):
            raise ValueError(
                f"the checkpoint holds random states for {len(states)} process(es), but this is process {rank}: "
                "resume with the same number of processes"
            )
        state = states[rank]
        torch.set_rng_state(state["torch"])
        kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def config_sha256(config: Mapping[str, Any]) -> str:
    """SHA-256 of a configuration, as canonical JSON (sorted keys), so equal configurations hash alike."""
    text = json.dumps(dict(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RunIdentity:
    """The run a checkpoint belongs to: its experiment, its id and its configuration's hash.

    Put it in ``to_save`` (:class:`ignite_igan.experiments.runs.Run` does): every checkpoint then says whose it is, and
    :func:`load_latest_checkpoint` skips, naming it, a checkpoint of another run or configuration (a file copied
    from another run folder with its checksum), falling back to the newest one of this run.

    Args:
        experiment: the experiment's name.
        run_id: an id unique to the run (drawn when it starts, kept in its record).
        config: the configuration that defines the experiment (flags that change results).
        accept_unmarked: also accept checkpoints that carry no identity (written by a version before identities;
            only for a run started by that version).

    Example:
        >>> identity = RunIdentity("demo", "run-a", {"lr": 0.1})
        >>> identity.mismatch(RunIdentity("demo", "run-a", {"lr": 0.1}).state_dict()) is None
        True
        >>> print(identity.mismatch(RunIdentity("demo", "run-b", {"lr": 0.2}).state_dict()))
        belongs to another run (run id run-b, not run-a) with another configuration (flags hash ...)
    """

    def __init__(
        self, experiment: str, run_id: str, config: Mapping[str, Any], accept_unmarked: bool = False
    ) -> None:
        self.experiment = str(experiment)
        self.run_id = str(run_id)
        self.config_sha256 = config_sha256(config)
        self.accept_unmarked = bool(accept_unmarked)

    def state_dict(self) -> Dict[str, str]:
        return {"experiment": self.experiment, "run_id": self.run_id, "config_sha256": self.config_sha256}

    def mismatch(self, state: Any) -> Optional[str]:
        """Why the identity ``state`` (from a checkpoint) is not this run's, or None if it is."""
        if not isinstance(state, Mapping) or not {"experiment", "run_id", "config_sha256"} <= set(state):
            return "holds no valid run identity"
        problems = []
        if state["experiment"] != self.experiment:
            problems.append(f"of the experiment {state['experiment']!r}, not {self.experiment!r}")
        if state["run_id"] != self.run_id:
            problems.append(f"belongs to another run (run id {state['run_id']}, not {self.run_id})")
        if state["config_sha256"] != self.config_sha256:
            problems.append(f"another configuration (flags hash {str(state['config_sha256'])[:12]}, this run's "
                            f"{self.config_sha256[:12]})")
        return " with ".join(problems) if problems else None

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Checks ``state_dict`` against this run (nothing to restore).

        Raises:
            CheckpointError: the state is another run's.
        """
        problem = self.mismatch(state_dict)
        if problem is not None:
            raise CheckpointError(f"the checkpoint {problem}")


# --------------------------------------------------------------------------------------------------------------
# Writing: atomic files (checkpoints and JSON records alike), a checksum beside each checkpoint
# --------------------------------------------------------------------------------------------------------------
def _write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through ``<path>.partial``, fsync and rename, with the umask's permissions.

    A reader never sees half a file. On failure the partial file is removed and an :class:`OSError` naming the
    path, its cause and the free space is raised; the file at ``path`` (if any) is untouched.
    """
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        free = free_bytes(path.parent)
        detail = f"; {free / 2**20:.0f} MiB free there" if free is not None else ""
        raise OSError(
            error.errno,
            f"could not write {str(path)!r} ({len(data) / 2**20:.1f} MiB): {error.strerror or error}{detail}",
        ) from error


def free_bytes(folder: PathLike) -> Optional[int]:
    """The free space of the disk that holds ``folder``, or None if it cannot be told."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write a {type(value).__name__} to JSON")


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from a JSON file (what a value compared with a record's must be).

    Paths become text, NumPy numbers and one-element tensors numbers, tuples lists, and keys text.

    Example:
        >>> jsonable({"dir": Path("runs"), 1: (np.int64(2), 0.5)})
        {'dir': 'runs', '1': [2, 0.5]}
    """
    return json.loads(json.dumps(value, default=_json_default))


def write_json_atomic(path: PathLike, data: Any) -> None:
    """Writes ``data`` as indented JSON atomically (``.partial`` file, fsync, rename), like the checkpoints.

    Readers never see half a file, and the file gets the same permissions as the checkpoints (those of the umask).
    Keys are sorted as they are (a table keyed by seed lists seed 2 before seed 10), then written as text.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n"
    _write_atomic(path, text.encode("utf-8"))


def _sha256_path(path: Path) -> Path:
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def list_checkpoints(output_dir: PathLike) -> List[Path]:
    """The checkpoints ``checkpoint_<epoch>.pt`` of ``output_dir``, newest (highest epoch) first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"{CHECKPOINT_PREFIX}_(\d+)\.pt")
    found = [(int(match.group(1)), path) for path in folder.iterdir() if (match := pattern.fullmatch(path.name))]
    return [path for _, path in sorted(found, reverse=True)]


def latest_checkpoint(output_dir: PathLike) -> Optional[Path]:
    """The checkpoint of the latest epoch in ``output_dir`` (unverified), or None if there is none."""
    return next(iter(list_checkpoints(output_dir)), None)


class ChecksummedSaver(BaseSaveHandler):
    """Ignite save handler: atomic checkpoint files with a SHA-256 beside each, the ``keep`` newest kept.

    Only rank 0 writes (every process takes part in gathering the state, as Ignite's ``Checkpoint`` arranges).

    Args:
        dirname: the checkpoint folder (created if missing).
        keep: how many of the newest checkpoints stay in the folder after each save, counting the files of
            earlier processes of the same run (a resumed run does not leave its predecessor's files behind).
    """

    def __init__(self, dirname: PathLike, keep: int = 2) -> None:
        self.dirname = Path(dirname)
        self.keep = check_int("keep", keep, minimum=1)
        if idist.get_rank() == 0:
            self.dirname.mkdir(parents=True, exist_ok=True)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Optional[Mapping] = None) -> None:
        if idist.get_rank() != 0:
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        path = self.dirname / filename
        try:
            _write_atomic(path, data)
            _write_atomic(_sha256_path(path), f"{hashlib.sha256(data).hexdigest()}  {path.name}\n".encode())
        except OSError as error:
            raise CheckpointError(
                f"checkpoint not saved: {error}. The previous checkpoints in {str(self.dirname)!r} are intact; free "
                "some space (or fix the folder's permissions) and continue with --resume"
            ) from error
        for old in list_checkpoints(self.dirname)[self.keep :]:
            self.remove(old.name)

    def remove(self, filename: str) -> None:
        if idist.get_rank() == 0:
            path = self.dirname / filename
            path.unlink(missing_ok=True)  # missing: already pruned
            _sha256_path(path).unlink(missing_ok=True)


def attach_checkpointing(
    trainer: Engine,
    to_save: Mapping[str, Any],
    output_dir: PathLike,
    n_saved: int = 2,
) -> Checkpoint:
    """Saves ``to_save`` into ``output_dir`` after every epoch with a :class:`ChecksummedSaver`.

    Files are named ``checkpoint_<epoch>.pt``, each with ``checkpoint_<epoch>.pt.sha256`` (one per epoch: a
    checkpoint within an epoch would replace that epoch's file, so there is no other event to choose). ``n_saved``
    must be at least 2 so that a run killed while a checkpoint is being replaced still has the previous one; exactly the
    ``n_saved`` newest stay, however often the run was resumed.
    """
    n_saved = check_int("n_saved", n_saved, minimum=2, hint="so that a killed run always keeps a checkpoint")
    checkpoint = Checkpoint(
        dict(to_save),
        ChecksummedSaver(output_dir, keep=n_saved),
        filename_prefix="",
        filename_pattern=CHECKPOINT_PREFIX + "_{global_step}.{ext}",
        n_saved=n_saved,
        global_step_transform=global_step_from_engine(trainer, Events.EPOCH_COMPLETED),
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    return checkpoint


def clean_partial_writes(output_dir: PathLike) -> List[Path]:
    """Removes what interrupted checkpoint writes left in ``output_dir``; returns the removed paths.

    That is ``*.partial`` files and checksum files whose checkpoint is gone. Call it on rank 0 while holding the
    run folder's lock (no other process may be writing there).
    """
    folder = Path(output_dir)
    removed: List[Path] = []
    for path in folder.iterdir() if folder.is_dir() else ():
        orphan = path.name.endswith(CHECKSUM_SUFFIX) and not path.with_name(path.name[: -len(CHECKSUM_SUFFIX)]).exists()
        if path.name.endswith(PARTIAL_SUFFIX) or orphan:
            path.unlink()
            removed.append(path)
    return removed


# --------------------------------------------------------------------------------------------------------------
# Reading: the newest usable checkpoint, verified, of this run, fitting its objects
# --------------------------------------------------------------------------------------------------------------
def verify_checkpoint(path: PathLike) -> Optional[str]:
    """What is wrong with the checkpoint file ``path``, or None if its SHA-256 matches the one saved with it.

    A checkpoint without a checksum file (written by an older version, or by a run killed between the two
    renames) is reported as ``"no checksum"``: :func:`load_latest_checkpoint` still loads it if it unpickles.
    """
    path = Path(path)
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size == 0:
        return "empty file"
    checksum = _sha256_path(path)
    if not checksum.is_file():
        return "no checksum"
    expected = (checksum.read_text().split() or [""])[0]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        return f"SHA-256 mismatch ({size:,} bytes; the file was truncated, overwritten or damaged)"
    return None


def _read_checkpoint(path: Path, to_load: Mapping[str, Any]) -> Tuple[Optional[Mapping[str, Any]], Optional[str]]:
    """``(state, None)`` of a usable checkpoint (verified or without a checksum), else ``(None, problem)``."""
    problem = verify_checkpoint(path)
    if problem not in (None, "no checksum"):
        return None, problem
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to unpickle means an unusable file
        return None, f"cannot be loaded ({type(error).__name__}: {str(error)[:200]})"
    for key, identity in to_load.items():
        if not isinstance(identity, RunIdentity) or (key not in state and identity.accept_unmarked):
            continue
        if key not in state:
            return None, "records no run identity, so it cannot be shown to belong to this run (not resumed from)"
        mismatch = identity.mismatch(state[key])
        if mismatch is not None:
            return None, f"{mismatch}; not resumed from"
    return state, problem


def load_latest_checkpoint(to_load: Mapping[str, Any], output_dir: PathLike) -> Optional[Path]:
    """Loads the newest *usable* checkpoint of ``output_dir`` into ``to_load``; returns its path (None: no files).

    Each candidate, newest first, is checked against its checksum, must unpickle with
    ``torch.load(weights_only=True)`` and, when ``to_load`` holds a :class:`RunIdentity`, must belong to that run
    and configuration; a bad one is skipped with a ``UserWarning`` that names it and says what is wrong, and the
    next older one is tried. The skipped files stay where they are (a later save of the same epoch replaces them).
    The identity itself is checked, not loaded; an entry whose object has ``optional_in_checkpoint = True`` may be
    missing from the checkpoint (state added by a later version). Optimizer states are checked against their
    parameters (count and shapes) before anything is loaded.

    Raises:
        CheckpointError: there are checkpoints, but none is usable (the message lists each file and its problem),
            or the chosen one does not fit the objects of ``to_load`` (the message names the file and the entry).
    """
    candidates = list_checkpoints(output_dir)
    if not candidates:
        return None
    problems: List[str] = []
    for path in candidates:
        state, problem = _read_checkpoint(path, to_load)
        if state is None:
            problems.append(f"{path.name}: {problem}")
            continue
        if problem == "no checksum":
            warnings.warn(f"checkpoint {str(path)!r} has no checksum file; loading it unverified", UserWarning)
        if problems:
            warnings.warn(
                f"skipped unusable checkpoint(s) in {str(output_dir)!r}: {'; '.join(problems)}. Resuming from "
                f"{path.name} instead",
                UserWarning,
            )
        _load_objects(to_load, state, path)
        return path
    raise CheckpointError(
        f"no usable checkpoint in {str(output_dir)!r}: {'; '.join(problems)}. Start the run again (without "
        "--resume, into another --output-dir), or restore the files from a backup"
    )


def _load_objects(to_load: Mapping[str, Any], state: Mapping[str, Any], path: Path) -> None:
    """Loads ``state`` into ``to_load`` after checking what can be checked first; errors name ``path``."""
    objects = {
        key: obj
        for key, obj in to_load.items()
        if not isinstance(obj, RunIdentity) and (key in state or not getattr(obj, "optional_in_checkpoint", False))
    }
    missing = sorted(key for key in objects if key not in state)
    if missing:
        raise CheckpointError(
            f"checkpoint {str(path)!r} lacks {missing} (it holds {sorted(state)}); it was written by another "
            "script or version"
        )
    try:
        # Before anything is loaded: another model's optimizer state would otherwise load and fail at the first step.
        for key, obj in objects.items():
            if isinstance(obj, torch.optim.Optimizer):
                check_optimizer_state(f"checkpoint {str(path)!r}, entry {key!r}", obj, state[key])
    except ValueError as error:
        raise CheckpointError(str(error)) from None
    try:
        Checkpoint.load_objects(to_load=objects, checkpoint=dict(state))
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit this run's objects: {type(error).__name__}: {error}"
        ) from error
