"""ignite-igan: *Improved Techniques for Training GANs* (Salimans et al., 2016) for PyTorch-Ignite.

Import what you need from the submodules:

- :mod:`ignite_igan.functional`: the formulas as pure functions (``import ignite_igan.functional as F``).
- :mod:`ignite_igan.nn` and :mod:`ignite_igan.models`: layers and the paper's networks.
- :mod:`ignite_igan.handlers`: Ignite handlers to attach to your own engines.
- :mod:`ignite_igan.engines`, :mod:`ignite_igan.data`, :mod:`ignite_igan.optim`: ready-made training steps,
  semi-supervised data loading, the reference's optimizer and schedules.
- :mod:`ignite_igan.metrics` and :mod:`ignite_igan.logging`: the Inception Score and other metrics, TensorBoard.
- :mod:`ignite_igan.datasets`, :mod:`ignite_igan.checkpointing`: real data sets through torchvision, checkpoints
  with exact resume.
- :mod:`ignite_igan.experiments`: the recipes' scaffolding (run folders, several seeds in one command, the command
  line, scoring during training), kept apart from the library. The experiments themselves are scripts in
  ``recipes/``, outside the package. Which module holds what, and which way the imports go: docs/guides/layout.md.

Nothing is imported here, so ``import ignite_igan.functional`` does not load the metrics' Inception network code.
"""

__version__ = "0.1.0"

__all__ = [
    "checkpointing",
    "data",
    "datasets",
    "engines",
    "experiments",
    "functional",
    "handlers",
    "logging",
    "metrics",
    "models",
    "nn",
    "optim",
]
