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


def test_every_metric_shows_how_to_attach_it():
    """Each Ignite metric of the package has a runnable example that attaches it to an engine, as Ignite's own
    metrics' docs do (the examples run in test_docstring_examples above)."""
    from ignite.metrics import Metric

    import ignite_igan.metrics as metrics

    found = [obj for obj in vars(metrics).values() if isinstance(obj, type) and issubclass(obj, Metric)]
    assert {cls.__name__ for cls in found} >= {"InceptionScore", "FID", "SemiSupervisedError", "ModeCoverage"}
    for cls in found:
        examples = [example.source for test in doctest.DocTestFinder().find(cls, cls.__name__)
                    if test.name == cls.__name__ for example in test.examples]
        assert any(".attach(" in source for source in examples), f"{cls.__name__}'s example does not attach it"
