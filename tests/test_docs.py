"""The documentation site (``docs/``) is built on every test run, as a user would build it: Sphinx with warnings as
errors and nitpicky references, so a broken cross-reference, a malformed docstring or a page left out of the table
of contents fails here. The guides' Python examples run: those of the attach, metrics and DCGAN guides in
``tests/test_guide_snippets.py`` (with their names and tags checked), every other guide's here, with the output
that a ``print(...)  # expected`` line announces compared (``...`` matches anything). The docstrings' examples run
in ``tests/test_doctests.py``, so the build does not run them a second time.
"""
from __future__ import annotations

import ast
import contextlib
import doctest
import importlib
import importlib.util
import io
import os
import pkgutil
import posixpath
import re
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Dict, List, Set

import pytest

import ignite_igan

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: The guides whose snippets tests/test_guide_snippets.py runs and checks.
CHECKED_ELSEWHERE = {"guides/attach.md", "guides/metrics.md", "guides/dcgan.md"}
BUILD_TIMEOUT_S = 300


def sphinx_build(source: Path, output: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "-n", "--keep-going", "-q", "-E",
               "-c", str(DOCS), *options, str(source), str(output)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("myst_parser", reason="the docs extra is not installed: pip install -e '.[docs]'")
    output = tmp_path_factory.mktemp("site")
    started = time.monotonic()
    result = sphinx_build(DOCS, output)
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"the docs do not build cleanly:\n{result.stdout}\n{result.stderr}"
    print(f"docs built in {seconds:.1f} s")
    return output


def test_the_site_builds_with_warnings_as_errors(site):
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    guides = {f"guides/{p.stem}.html" for p in (DOCS / "guides").glob("*.md")}
    assert {"index.html", "RESULTS.html", "api/index.html"} | guides <= pages
    modules = {f"api/{p.stem}.html" for p in (DOCS / "api").glob("*.rst")}
    assert modules <= pages
    # RESULTS.md stays where it is and is a page of the site, its images with it
    assert "Reproducing the paper" in (site / "RESULTS.html").read_text(encoding="utf-8")
    assert list((site / "_images").glob("*.png"))


def autosummary_names(page: Path) -> List[str]:
    """The names in the summary tables (``.. autosummary::``) of an API page, in order, without ``~`` and path."""
    names, in_table = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith(".. "):
            in_table = line.startswith(".. autosummary::")
        elif in_table and line.startswith("   ") and not line.strip().startswith(":") and line.strip():
            names.append(line.strip().lstrip("~").split(".")[-1])
    return names


def page_module(page: Path) -> str:
    return re.search(r"^\.\. automodule:: (\S+)", page.read_text(encoding="utf-8"), re.M).group(1)


def test_every_api_page_opens_with_a_summary_of_its_whole_module():
    for page in sorted((DOCS / "api").glob("*.rst")):
        if page.stem in ("index", "experiments"):
            continue
        module = importlib.import_module(page_module(page))
        names = autosummary_names(page)
        assert sorted(names) == sorted(module.__all__), f"{page.name}: the summary tables list {names}"
    # the metrics page names its four metrics first, each with a page of its own, helpers after
    first = autosummary_names(DOCS / "api" / "metrics.rst")[:4]
    assert first == ["InceptionScore", "FID", "SemiSupervisedError", "ModeCoverage"]


def test_main_classes_have_their_own_page_without_torch_boilerplate(site):
    for name in ["metrics.InceptionScore", "metrics.FID", "metrics.SemiSupervisedError", "metrics.ModeCoverage",
                 "nn.MinibatchDiscrimination", "handlers.EvaluationAveraging", "models.CIFARDiscriminator"]:
        assert (site / "api" / "generated" / f"ignite_igan.{name}.html").is_file(), name
    documented = set().union(*(names for kind, names in _inventory(site).items() if kind.startswith("py:")))
    # a layer's undocumented forward / extra_repr are torch's boilerplate; a discriminator's documented forward
    # (return_features) is its API
    boilerplate = sorted(name for name in documented if name.rsplit(".", 1)[-1] in ("extra_repr", "dump_patches"))
    assert not boilerplate
    assert "ignite_igan.nn.GaussianNoise.forward" not in documented
    # a docstring's citation is a link to its section of the Reference facts page, marked as such
    page = (site / "api" / "generated" / "ignite_igan.nn.MinibatchDiscrimination.html").read_text(encoding="utf-8")
    assert re.search(r'href="\.\./\.\./reference\.html#ref-minibatch-discrimination">reference: ', page)
    assert "ignite_igan.models.CIFARDiscriminator.forward" in documented


def test_no_garbled_fields_and_nothing_loaded_from_the_internet(site):
    """napoleon reads a property's "words: more words" first line as "type: description" and prints a "Type"
    field with half the sentence; the math extension loads MathJax from a CDN. Neither may happen."""
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(encoding="utf-8")
        assert ">Type<" not in html, f"{page.relative_to(site)}: a property's docstring read as 'type: text'"
        assert not re.search(r"<script[^>]+src=\"(https?:)?//", html), f"{page.relative_to(site)} loads a script"


def test_the_raw_result_tables_are_part_of_the_site(site):
    """docs/results/*.md stay as the benchmarks write them; result_tables.md includes every one of them."""
    page = (DOCS / "result_tables.md").read_text(encoding="utf-8")
    included = set(re.findall(r"^```\{include\} results/(\S+\.md)$", page, re.M))
    assert included == {p.name for p in (DOCS / "results").glob("*.md")}
    html = (site / "result_tables.html").read_text(encoding="utf-8")
    assert "LabelSpreading (CV-selected)" in html  # a table of docs/results/digits_ssl.md, rendered
    assert 'href="result_tables.html#digits-ssl"' in (site / "RESULTS.html").read_text(encoding="utf-8")


def test_the_guides_link_their_names_to_the_api_pages(site):
    """Each guide links the classes and functions it uses to their API pages (MyST roles such as {class}`...`, which
    the nitpicky build resolves), the metrics guide every metric it describes."""
    for guide in sorted((DOCS / "guides").glob("*.md")):
        html = (site / "guides" / f"{guide.stem}.html").read_text(encoding="utf-8")
        assert 'href="../api/' in html, f"guides/{guide.name} links nothing to the API reference"
    html = (site / "guides" / "metrics.html").read_text(encoding="utf-8")
    for name in ["InceptionScore", "FID", "SemiSupervisedError", "ModeCoverage"]:
        assert f'href="../api/generated/ignite_igan.metrics.{name}.html' in html, name


def _reference_titles() -> Set[str]:
    """The section titles of docs/reference.md, the page the code's "docs/reference.md, <title>" pointers name."""
    lines = (DOCS / "reference.md").read_text(encoding="utf-8").splitlines()
    return {re.sub(r"^#+ ", "", lines[i + 1]) for i, line in enumerate(lines) if re.match(r"^\(ref-[\w-]+\)=$", line)}


def test_citations_name_what_a_reader_can_follow():
    """Docstrings and comments cite the reference facts page (a :ref: to one of its sections, or a plain
    "docs/reference.md, <section title>"), never notes a reader does not have: no "spec §x", no "pitfall N", no
    internal issue numbers in the docs."""
    titles = _reference_titles()
    assert len(titles) >= 20
    sources = [*ROOT.glob("ignite_igan/**/*.py"), *ROOT.glob("recipes/*.py"), *DOCS.glob("*.md"),
               *DOCS.glob("guides/*.md")]
    unfollowable, unknown = [], []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT).as_posix()
        for pattern in (r"\bspec §", r"\bpitfall \d", r"\bissue \d+\b", r"\bissue #\d"):
            unfollowable += [f"{where}: {m.group(0)!r}" for m in re.finditer(pattern, text, re.I)]
        for m in re.finditer(r"docs/reference\.md, ([^)\n;:]+)", text):
            if not any(title.startswith(m.group(1).strip()) for title in titles):
                unknown.append(f"{where}: {m.group(1)!r}")
    assert not unfollowable, f"citations a reader cannot follow: {unfollowable}"
    assert not unknown, f"pointers to no section of docs/reference.md: {unknown}"


def _inventory(site: Path) -> Dict[str, Set[str]]:
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", posixpath.join)
    items = inventory.data if hasattr(inventory, "data") else inventory
    return {kind: set(entries) for kind, entries in items.items()}


def public_modules() -> List[str]:
    names = ["ignite_igan"] + [name for _, name, _ in pkgutil.walk_packages(ignite_igan.__path__, "ignite_igan.")]
    return sorted(name for name in names if not any(part.startswith("_") for part in name.split(".")))


def test_every_public_name_of_every_module_is_in_the_reference(site):
    inventory = _inventory(site)
    documented = set().union(*(names for kind, names in inventory.items() if kind.startswith("py:")))
    missing = []
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None)
        assert names is not None, f"{module_name} has no __all__"
        for name in names:
            attribute = getattr(module, name, None)
            submodule = attribute is None or isinstance(attribute, types.ModuleType)  # not a function of that name
            if hasattr(module, "__path__") and submodule and importlib.util.find_spec(f"{module_name}.{name}"):
                if f"{module_name}.{name}" not in inventory.get("py:module", set()):  # a package's submodules
                    missing.append(f"{module_name}.{name}")
                continue
            obj = getattr(module, name)
            # documented here, or where the same object is documented under another name: the package that
            # re-exports it (ignite_igan.metrics.FID) or the module it comes from (ignite_igan.metrics.extractors)
            homes = public_modules()
            if not any(f"{home}.{name}" in documented and getattr(importlib.import_module(home), name, None) is obj
                       for home in homes):
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public names missing from the API reference: {missing}"
    assert len(documented) > 300  # the inventory was read


def test_a_broken_reference_fails_the_build(tmp_path):
    pytest.importorskip("sphinx", reason="the docs extra is not installed")
    pytest.importorskip("myst_parser", reason="the docs extra is not installed")
    source = tmp_path / "source"
    source.mkdir()
    (source / "index.md").write_text(
        "# Broken\n\n```{py:function} ignite_igan.logging.log_hparams()\n```\n\n"
        "See {func}`ignite_igan.logging.log_hparams` and {func}`ignite_igan.logging.no_such_function`.\n")
    result = sphinx_build(source, tmp_path / "out")
    assert result.returncode != 0
    assert "reference target not found: ignite_igan.logging.no_such_function" in result.stderr
    assert "ignite_igan.logging.log_hparams " not in result.stderr  # only the missing one is named


# ---------------------------------------------------------------------------------------------------------------
# The guides' examples
# ---------------------------------------------------------------------------------------------------------------
def python_blocks(path: Path) -> List[str]:
    blocks, lines, i = [], path.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append("\n".join(lines[i + 1 : end]) + "\n")
            i = end
        i += 1
    return blocks


def pages_with_examples() -> List[str]:
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "_build" not in p.parts)
    return [page for page in pages if page not in CHECKED_ELSEWHERE and not page.startswith("results/")
            and python_blocks(DOCS / page)]


def run_block(code: str, namespace: dict, where: str) -> None:
    """Runs ``code`` statement by statement; a ``print(...)  # expected`` line must print what it says."""
    lines = code.splitlines()
    for statement in ast.parse(code).body:
        source = "\n".join(lines[statement.lineno - 1 : statement.end_lineno])
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(compile(source, where, "exec"), namespace)
        expected = re.search(r"^print\(.*\)\s+#\s*(.+)$", source.strip())
        if expected:
            want, got = expected.group(1).strip(), output.getvalue().strip()
            assert doctest._ellipsis_match(want, got), f"{where}: {source!r} printed {got!r}, the page says {want!r}"


@pytest.mark.parametrize("page", pages_with_examples())
def test_guide_examples_run_and_print_what_they_say(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write (run folders, logs) write here
    namespace: dict = {"__name__": f"docs_{Path(page).stem}"}
    for index, block in enumerate(python_blocks(DOCS / page)):
        run_block(block, namespace, f"docs/{page}[python block {index}]")


def test_every_guide_example_is_run_by_a_test():
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if not p.match("results/*.md"))
    with_code = {page for page in pages if python_blocks(DOCS / page)}
    assert with_code <= set(pages_with_examples()) | CHECKED_ELSEWHERE
    assert {"guides/runs.md"} <= set(pages_with_examples())  # the collection finds the examples


def test_a_wrong_printed_value_is_caught():
    with pytest.raises(AssertionError, match="printed '3', the page says '4'"):
        run_block("print(1 + 2)  # 4\n", {}, "example")
    run_block("print({'a': 1, 'b': 2})  # {'a': 1, ...}\n", {}, "example")


def test_files_the_docs_name_exist():
    """Every ``recipes/*.py`` and ``benchmarks/*.py`` the guides and the README name is there to run."""
    texts = [p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *DOCS.rglob("*.md")]]
    named = set().union(*(re.findall(r"\b((?:recipes|benchmarks)/\w+\.py)\b", text) for text in texts))
    assert {"recipes/digits_ssl.py", "recipes/semi_supervised.py"} <= named
    assert not sorted(path for path in named if not (ROOT / path).is_file())
