"""ignite-igan: *Improved Techniques for Training GANs* (Salimans et al., 2016) for PyTorch-Ignite.

Import what you need from the submodules:

- :mod:`ignite_igan.functional`: the formulas as pure functions (``import ignite_igan.functional as F``).
- :mod:`ignite_igan.nn` and :mod:`ignite_igan.models`: layers and the paper's networks.
- :mod:`ignite_igan.handlers`: Ignite handlers to attach to your own engines.
- :mod:`ignite_igan.engines`, :mod:`ignite_igan.data`, :mod:`ignite_igan.optim`: ready-made training steps,
  semi-supervised data loading, the reference's optimizer and schedules.
- :mod:`ignite_igan.metrics` and :mod:`ignite_igan.logging`: the Inception Score and other metrics, TensorBoard.
- :mod:`ignite_igan.datasets`, :mod:`ignite_igan.checkpointing`, :mod:`ignite_igan.runs`, :mod:`ignite_igan.cli`:
  data sets, checkpoints, and what every training script needs around its step (seeds, device, output folder,
  resume, progress, summary). The experiments themselves are scripts in ``recipes/``, outside the package.

Nothing is imported here, so ``import ignite_igan.functional`` does not load the metrics' Inception network code.
"""

__version__ = "0.1.0"

__all__ = [
    "checkpointing",
    "cli",
    "data",
    "datasets",
    "engines",
    "functional",
    "handlers",
    "logging",
    "metrics",
    "models",
    "nn",
    "optim",
    "runs",
]
