"""Every example in the package's docstrings runs and prints what it says."""
import doctest
import importlib
import pkgutil

import pytest

import ignite_igan

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(ignite_igan.__path__, prefix="ignite_igan.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
