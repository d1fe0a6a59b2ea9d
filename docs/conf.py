"""Sphinx configuration of the ignite-igan documentation: the API reference from the docstrings (autodoc, Google
style through napoleon) and the guides in Markdown (MyST). ``tests/test_docs.py`` builds it with warnings as
errors on every test run."""
import os
import re
import sys

from docutils import nodes

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # the package of this checkout, even where another copy is installed

import ignite_igan  # noqa: E402

project = "ignite-igan"
author = "The ignite-igan developers"
copyright = "the ignite-igan developers, MIT license"
version = release = ignite_igan.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# docs/results/*.md are the benchmarks' raw tables, as the benchmarks write them: result_tables.md includes them all
# (one page of the site), so they are not pages of their own.
exclude_patterns = ["_build", "results/*.md", "Thumbs.db", ".DS_Store"]

# Google-style docstrings; "Example:" sections stay doctest blocks (tests/test_doctests.py runs them).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # a NamedTuple's fields are documented once, by autodoc
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True,
                           "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"

# Each module's page opens with summary tables (autosummary), its main classes first; each main class has a page of
# its own, written by autosummary from docs/_templates/autosummary/class.rst into docs/api/generated/ (committed:
# the build only writes a page that is missing, for a class newly added to a table).
autosummary_generate = True
templates_path = ["_templates"]

#: Methods every torch layer defines for torch's own use; shown only where our class documents its own.
TORCH_BOILERPLATE = {"forward", "extra_repr", "reset_parameters", "training", "dump_patches", "call_super_init"}

# Every reference to our own objects must resolve (a broken one fails the build under -W); references into
# PyTorch, Ignite, NumPy and the standard library cannot be resolved offline (no intersphinx inventories), so
# only those are let through.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|ignite|nn|Events|numpy|np|scipy|tensorboard|torchvision|argparse|pathlib|os|typing|collections|"
               r"dataclasses|contextlib|types|weakref|abc|enum|functools|io|json|random)(\..*)?"),
    (r"py:.*", r"(Tensor|Module|Engine|Events|State|Optimizer|Dataset|DataLoader|Sampler|Path|Namespace|"
               r"ArgumentParser|Generator|device|dtype|Metric|EMAHandler|Checkpoint|TensorboardLogger|"
               r"SummaryWriter|ndarray|PathLike|CallableEventWithFilter|EventsList|BaseSaveHandler|"
               r"ProgressBar|RunningAverage|BaseHandler|DistributedDataParallel|NotComputableError|Dropout|BatchNorm|"
               r"Any|Optional|Union|Callable|"
               r"Iterable|Iterator|Mapping|Sequence|Dict|List|Tuple|Set|FrozenSet|Type|Literal)"),
    (r"py:class", r"(int|float|str|bool|bytes|dict|list|tuple|set|frozenset|object|type|None|NoneType|callable|"
                  r"optional|Ellipsis|slice|range|Exception|ValueError|TypeError|RuntimeError|OSError|"
                  r"FileNotFoundError|KeyError|FloatingPointError)"),
]

# Private helpers: the bases of public classes (show-inheritance) and the type aliases of signatures.
nitpick_ignore_regex += [
    (r"py:class", r"(.*\.)?_\w+"),
    (r"py:class", r"(Inputs|IndexLike|FeaturesFn|RealSource|NoiseFn|PathLike)"),
]

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3  # GitHub's anchors, so RESULTS.md's "#section" links work in the site too

html_theme = "alabaster"
html_title = f"ignite-igan {release}"
html_static_path = []


def _resolve_short_python_names(app, env, node, contnode):
    """A short name in a docstring (``:func:`to_uint8``` in ``ignite_igan.metrics.extractors``) may name an object
    documented under the package that re-exports it (``ignite_igan.metrics.to_uint8``): look it up as a name
    ending with the target, as a leading dot would (``:func:`.to_uint8```). Several matches still warn, and no
    match stays a missing reference."""
    if node.get("refdomain") != "py" or node.get("refspecific"):
        return None
    node["refspecific"] = True
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], node["reftarget"], node, contnode)


def _skip_torch_boilerplate(app, what, name, obj, skip, options):
    """Leaves out ``forward``, ``extra_repr``, ... of a layer unless the layer's own code documents them (a
    discriminator's ``forward(x, return_features=False)`` is its API; a layer's ``extra_repr`` is not)."""
    if name in TORCH_BOILERPLATE and not getattr(obj, "__doc__", None):
        return True
    return None


def _label_reference_links(app, doctree, docname):
    """A link to a section of the Reference facts page reads "reference: <section>" (``(:ref:`ref-adam`)`` in a
    docstring shows "(reference: Adam with the epsilon inside the square root)"), so that it is not taken for the
    paper's section of the same name."""
    if docname == "reference":
        return
    for node in doctree.findall(nodes.reference):
        to_reference_facts = re.search(r"(^|/)reference\.html#ref-", node.get("refuri", ""))
        if to_reference_facts and not node.astext().startswith("reference"):
            node.insert(0, nodes.Text("reference: "))


def setup(app):
    app.connect("missing-reference", _resolve_short_python_names)
    app.connect("autodoc-skip-member", _skip_torch_boilerplate)
    app.connect("doctree-resolved", _label_reference_links)
