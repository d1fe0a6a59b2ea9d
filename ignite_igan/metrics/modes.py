"""Putting a network in eval (or train) mode, optionally on another device, and restoring it exactly afterwards.

A module of its own, imported by the extractors, the metrics, the evaluators and the logger alike, so that none
of them has to import another for it (the metrics package's import graph has no cycle).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Union

import torch
from torch import nn

from ignite_igan.validation import check_choice

__all__ = ["evaluation_mode"]


def _module_device(module: nn.Module) -> Optional[torch.device]:
    devices = {t.device for t in list(module.parameters()) + list(module.buffers())}
    if len(devices) > 1:
        raise ValueError(
            f"module has parameters on several devices ({sorted(str(d) for d in devices)}); evaluation_mode can only "
            "move a module that lives on one device (pass device=None to leave it where it is)"
        )
    return devices.pop() if devices else None


@contextlib.contextmanager
def evaluation_mode(
    module: nn.Module, mode: str = "eval", device: Optional[Union[str, torch.device]] = None
) -> Iterator[nn.Module]:
    """Puts ``module`` in eval (or train) mode, optionally on ``device``, and restores everything on exit.

    On exit, every submodule gets back its own ``training`` flag (not just the top-level one), the module returns to
    its original device, and with ``mode="train"`` the buffers (e.g. BatchNorm running statistics, which a
    training-mode forward pass updates) are restored to their values on entry.

    Args:
        module: the network.
        mode: ``"eval"`` (default) or ``"train"``. Use ``"train"`` for generators whose BatchNorm layers must use
            the statistics of the current batch, as the reference's generators always do
            (:ref:`ref-generator-batch-norm`).
        device: move the module there for the duration (``None``: leave it where it is).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
        >>> with evaluation_mode(net):
        ...     net.training
        False
        >>> net.training
        True
    """
    check_choice("mode", mode, ("eval", "train"))
    flags = [(m, m.training) for m in module.modules()]
    original_device = _module_device(module) if device is not None else None
    # A training-mode pass updates buffers such as BatchNorm's running statistics: they are put back on exit.
    saved_buffers = [(b, b.detach().clone()) for b in module.buffers()] if mode == "train" else []
    try:
        if original_device is not None and torch.device(device) != original_device:
            module.to(device)
        module.train(mode == "train")
        yield module
    finally:
        if original_device is not None:
            module.to(original_device)
        for m, flag in flags:
            m.training = flag
        with torch.no_grad():
            for buffer, value in saved_buffers:
                buffer.copy_(value.to(buffer.device))
