"""The import order of the package (docs/guides/layout.md): each layer imports only itself and the layers before it.

Read from the source with :mod:`ast` (no module is imported), so a new upward import fails here with the file and
the line, before it becomes an import cycle or a library that needs the recipes' scaffolding.
"""
import ast
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ignite_igan"

# The layers of docs/guides/layout.md, first to last.
LAYERS = [
    {"validation"},
    {"functional", "_fast_paths"},
    {"nn"},
    {"models", "digits_classifier", "optim", "datasets"},
    {"data", "device_data"},
    {"handlers", "engines", "metrics", "checkpointing"},
    {"logging"},
    {"experiments"},
]
LAYER = {name: index for index, names in enumerate(LAYERS) for name in names}

# The one upward import, deferred to a constructor: MixtureStream (data) checks that its mixture is a
# GaussianMixture2D, which is defined beside the mode-coverage metric that scores samples of it.
ALLOWED = {("data", "metrics")}


def _top_level(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imported(path: Path, root: Path = PACKAGE) -> Iterator[Tuple[int, str]]:
    """(line, top-level module of ignite_igan) for every import of the package in ``path`` (a file below ``root``)."""
    package = path.relative_to(root.parent).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ignite_igan" and len(parts) > 1:
                    yield node.lineno, parts[1]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            parts = base + (node.module.split(".") if node.module else [])
            if not parts or parts[0] != "ignite_igan":
                continue
            if len(parts) > 1:
                yield node.lineno, parts[1]
            else:  # from ignite_igan import functional as F
                for alias in node.names:
                    yield node.lineno, alias.name


def _modules() -> Dict[Path, str]:
    return {path: _top_level(path) for path in sorted(PACKAGE.rglob("*.py")) if path.name != "__init__.py"
            or path.parent != PACKAGE}


def test_every_module_has_a_layer():
    unplaced = sorted({module for module in _modules().values()} - set(LAYER))
    assert not unplaced, f"add these modules to a layer of LAYERS and of docs/guides/layout.md: {unplaced}"


@pytest.mark.parametrize("path", sorted(_modules()), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_imports_go_to_earlier_layers(path):
    module = _modules()[path]
    upward = [
        f"{path.relative_to(PACKAGE)}:{line} imports ignite_igan.{target}"
        for line, target in _imported(path)
        if target in LAYER and LAYER[target] > LAYER[module] and (module, target) not in ALLOWED
    ]
    assert not upward, f"imports against the layer order of docs/guides/layout.md: {upward}"


def test_the_check_finds_upward_imports(tmp_path):
    """The check itself: planted absolute and relative upward imports in copies of two modules are found."""
    root = tmp_path / "ignite_igan"
    (root / "handlers").mkdir(parents=True)
    functional = root / "functional.py"
    functional.write_text((PACKAGE / "functional.py").read_text(encoding="utf-8")
                          + "\nfrom ignite_igan.experiments import runs\nfrom ignite_igan import nn\n", encoding="utf-8")
    base = root / "handlers" / "base.py"
    base.write_text("from ..logging import attach_tensorboard\nfrom .data_init import DataDependentInitialization\n",
                    encoding="utf-8")
    assert [t for _, t in _imported(functional, root) if LAYER[t] > LAYER["functional"]] == ["experiments", "nn"]
    assert [t for _, t in _imported(base, root)] == ["logging", "handlers"]
