"""Checkpoints that a killed run can resume from exactly.

Ignite's :class:`~ignite.handlers.Checkpoint` with a :class:`~ignite.handlers.DiskSaver` already writes
atomically (to a temporary file, then ``os.replace``). Two things are added here:

- :class:`RandomStates`, an object with ``state_dict``/``load_state_dict`` for the random number generators
  (torch CPU and CUDA, NumPy, Python) of *every* process, so that the noise and dropout after a resume are the
  ones an uninterrupted run would have drawn. Each process's state is gathered into the checkpoint and each
  process gets its own back.
- :func:`attach_checkpointing` keeps the two newest checkpoints: Ignite deletes the oldest file *before* it
  writes the new one, so with a single file a run killed between the two steps would have none.

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
"""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, global_step_from_engine

__all__ = [
    "RandomStates",
    "attach_checkpointing",
    "latest_checkpoint",
    "resume_from_checkpoint",
    "write_json_atomic",
]

CHECKPOINT_PREFIX = "checkpoint"


class RandomStates:
    """The random number generators' states of all processes, for ``Checkpoint``.

    ``state_dict()`` is collective under ``ignite.distributed`` (every process must call it, as ``Checkpoint``
    does): the per-process states are gathered, in rank order, so that the checkpoint written by rank 0 holds
    them all. ``load_state_dict`` restores the calling process's own entry.
    """

    @staticmethod
    def _local_state() -> Dict[str, Any]:
        kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        # Plain tensors and numbers only, so that checkpoints load with torch.load(weights_only=True).
        state: Dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)),
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def state_dict(self) -> Dict[str, Any]:
        local = self._local_state()
        if idist.get_world_size() == 1:
            return {"per_rank": [local]}
        payload = torch.frombuffer(bytearray(pickle.dumps(local)), dtype=torch.uint8)
        # all_gather needs equal lengths: pad to the longest state, keep each length to cut the padding off.
        length = torch.tensor([payload.numel()], dtype=torch.long)
        lengths = idist.all_gather(length).tolist()
        padded = torch.zeros(max(lengths), dtype=torch.uint8)
        padded[: payload.numel()] = payload
        gathered = idist.all_gather(padded.to(idist.device())).cpu().view(len(lengths), -1)
        states = [pickle.loads(gathered[r, : lengths[r]].numpy().tobytes()) for r in range(len(lengths))]
        return {"per_rank": states}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        states = state_dict["per_rank"]
        rank = idist.get_rank()
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


def attach_checkpointing(
    trainer: Engine,
    to_save: Mapping[str, Any],
    output_dir: Union[str, os.PathLike],
    event: Any = Events.EPOCH_COMPLETED,
    n_saved: int = 2,
) -> Checkpoint:
    """Saves ``to_save`` atomically into ``output_dir`` on ``event`` (every epoch by default).

    Files are named ``checkpoint_<epoch>.pt``. ``n_saved`` must be at least 2 so that a run killed while a
    checkpoint is being replaced still has the previous one.
    """
    if n_saved < 2:
        raise ValueError(f"n_saved must be >= 2 so that a killed run always keeps a checkpoint, got {n_saved}")
    checkpoint = Checkpoint(
        dict(to_save),
        DiskSaver(str(output_dir), atomic=True, require_empty=False, create_dir=True),
        filename_prefix="",
        filename_pattern=CHECKPOINT_PREFIX + "_{global_step}.{ext}",
        n_saved=n_saved,
        global_step_transform=global_step_from_engine(trainer, Events.EPOCH_COMPLETED),
    )
    trainer.add_event_handler(event, checkpoint)
    return checkpoint


def latest_checkpoint(output_dir: Union[str, os.PathLike]) -> Optional[Path]:
    """The checkpoint of the latest epoch in ``output_dir``, or None if there is none."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob(f"{CHECKPOINT_PREFIX}_*.pt"):
        match = re.fullmatch(rf"{CHECKPOINT_PREFIX}_(\d+)\.pt", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def resume_from_checkpoint(to_load: Mapping[str, Any], output_dir: Union[str, os.PathLike]) -> Optional[Path]:
    """Loads the latest checkpoint of ``output_dir`` into ``to_load``; returns its path, or None if none exists."""
    path = latest_checkpoint(output_dir)
    if path is None:
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    Checkpoint.load_objects(to_load=dict(to_load), checkpoint=state)
    return path


def write_json_atomic(path: Union[str, os.PathLike], data: Any) -> None:
    """Writes ``data`` as indented JSON through a temporary file and ``os.replace``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=_json_default)
            f.write("\n")
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write a {type(value).__name__} to JSON")
