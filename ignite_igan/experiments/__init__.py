"""The recipes' scaffolding: what the scripts in ``recipes/`` need around their training step.

Kept apart from the library, as torchvision keeps its training scripts' helpers in ``references/``: nothing in
``ignite_igan`` outside this subpackage imports it, so a user who attaches the techniques to their own engine never
needs it.

- :mod:`ignite_igan.experiments.runs`: run folders, resume, progress, the non-finite guard, the summary.
- :mod:`ignite_igan.experiments.seeds`: several seeds of a recipe in one command, and their table.
- :mod:`ignite_igan.experiments.cli`: the recipes' shared flags and their checks.
- :mod:`ignite_igan.experiments.scoring`: sample scores (Inception Score, FID, a digits classifier's score)
  during training.
"""

__all__ = ["cli", "runs", "scoring", "seeds"]
