"""What every recipe's run does around its training step: seeds, device, progress, checkpoints, summary.

These helpers keep the recipes thin and identical in behaviour: each recipe builds its models, data and trainer
from the package's parts, then calls :func:`prepare_run` before and :func:`attach_run_handlers` after, and
:func:`write_summary` when the run ends.

- Seeds: ``torch``, NumPy and Python are seeded with ``seed + rank``, so processes draw different noise and a
  run with the same seed and process count repeats exactly.
- Device: ``--device`` if given, else ``ignite.distributed.device()`` (the process's GPU, or the CPU).
- Progress: Ignite's ``ProgressBar`` over running averages of the step's outputs (rank 0 only).
- Checkpoints: every epoch, atomically, the two newest kept, with every process's random states
  (:mod:`ignite_igan.checkpointing`); ``--resume`` continues from the newest.
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from ignite.metrics import RunningAverage

from ignite_igan.checkpointing import RandomStates, attach_checkpointing, resume_from_checkpoint, write_json_atomic

__all__ = ["prepare_run", "attach_run_handlers", "write_summary", "checkpoint_dir", "tensorboard_dir"]


def checkpoint_dir(args: argparse.Namespace) -> Path:
    return Path(args.output_dir) / "checkpoints"


def tensorboard_dir(args: argparse.Namespace) -> Path:
    return Path(args.output_dir) / "tensorboard"


def prepare_run(args: argparse.Namespace) -> torch.device:
    """Seeds every generator with ``args.seed + rank``, applies CPU settings, and returns the device to use.

    On the CPU, denormal numbers are flushed to zero (``torch.set_flush_denormal``), a guard against the slow
    denormal arithmetic that decaying activations and Adam moments can run into; results change by less than the
    smallest normal float32 (about 1e-38). On the digits step ``benchmarks/trainer_overhead.py`` measured no
    difference either way (no denormals appeared in 600 steps), so the guard costs nothing. ``args.threads``, if
    set, fixes the number of CPU threads: small networks are fastest on one (same benchmark).
    """
    rank = idist.get_rank()
    torch.manual_seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    random.seed(args.seed + rank)
    if args.device is not None:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device: got {args.device!r}, but CUDA is not available on this machine")
        if device.type == "cuda" and device.index is None and idist.get_world_size() > 1:
            device = idist.device()
    else:
        device = idist.device()
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if rank == 0:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    return device


def attach_run_handlers(
    trainer: Engine,
    args: argparse.Namespace,
    to_save: Mapping[str, Any],
    output_names: Iterable[str],
) -> Optional[Path]:
    """Progress bar, per-epoch checkpoints and resume; returns the checkpoint resumed from, if any.

    Call it after every handler whose state is in ``to_save`` is attached, and before ``trainer.run``.
    ``to_save`` gets the random states of every process added.
    """
    to_save = dict(to_save)
    to_save.setdefault("random_states", RandomStates())
    for name in output_names:
        RunningAverage(output_transform=_picker(name), alpha=0.98).attach(trainer, name)
    if idist.get_rank() == 0 and not args.no_progress:
        ProgressBar(persist=False).attach(trainer, metric_names="all")
    attach_checkpointing(trainer, to_save, checkpoint_dir(args))
    resumed = None
    if args.resume:
        resumed = resume_from_checkpoint(to_save, checkpoint_dir(args))
        if resumed is None:
            raise FileNotFoundError(
                f"--resume: no checkpoint in {str(checkpoint_dir(args))!r}; run once without --resume first"
            )
    return resumed


def _picker(name: str):
    def pick(output: Mapping[str, float]) -> float:
        return output[name]

    return pick


def write_summary(
    args: argparse.Namespace, metrics: Mapping[str, Any], started: float, extra: Optional[Dict[str, Any]] = None
) -> Optional[Path]:
    """Writes ``summary.json`` (configuration, seeds, metrics, time) into the output directory, on rank 0."""
    if idist.get_rank() != 0:
        return None
    config = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    summary = {
        "config": config,
        "seeds": {key: config[key] for key in ("seed", "seed_data") if key in config},
        "metrics": dict(metrics),
        "seconds": round(time.time() - started, 3),
        "world_size": idist.get_world_size(),
    }
    summary.update(extra or {})
    path = Path(args.output_dir) / "summary.json"
    write_json_atomic(path, summary)
    return path
