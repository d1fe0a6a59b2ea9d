"""The README is the front page: its links resolve, its example runs and prints what it says, its measured numbers
are the ones in docs/RESULTS.md, and its Quick start is what CI runs (``.ci/run`` follows it)."""
import re
from pathlib import Path

import torch

from tests.test_docs import python_blocks, run_block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def readme() -> str:
    return README.read_text(encoding="utf-8")


def relative_links(text: str):
    return [target for target in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]


def test_every_relative_link_resolves():
    links = relative_links(readme())
    assert "docs/guides/runs.md" in links and "docs/RESULTS.md" in links  # the parser finds them
    broken = [target for target in links if not (ROOT / target.split("#")[0]).exists()]
    assert not broken, f"README links to files that do not exist: {broken}"


def test_the_link_check_catches_a_broken_link():
    text = "see [the guide](docs/guides/nope.md) and [the paper](https://arxiv.org/abs/1606.03498)"
    assert relative_links(text) == ["docs/guides/nope.md"]


def test_the_quick_start_is_what_ci_runs():
    quick = readme().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick.splitlines()]
    assert 'pip install -e ".[test]"' in commands and "python -m pytest" in commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]"' in ci and "\npython -m pytest\n" in ci


def test_the_readme_is_a_front_page():
    assert len(readme().splitlines()) <= 200


def test_the_example_runs_and_prints_what_it_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(README)
    assert len(blocks) == 1
    namespace = {"__name__": "readme_example"}
    run_block(blocks[0], namespace, "README.md[python block 0]")
    trainer = namespace["trainer"]
    assert trainer.state.historical_penalty_D > 0  # the handlers did their work
    averaged = namespace["averaging"].averaged_model
    assert not torch.equal(averaged[0].weight, namespace["netD"][0].weight)


def test_the_measured_numbers_are_the_results_page():
    results = (ROOT / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    table = readme().split("## Recipes and their measured results", 1)[1].split("\n## ", 1)[0]
    measured = [row.split("|")[3] for row in table.splitlines() if row.startswith("| `")]
    numbers = set().union(*(re.findall(r"\d+\.\d+ ± \d+\.\d+", cell) for cell in measured))
    assert len(numbers) >= 8
    missing = sorted(number for number in numbers if number not in results)
    assert not missing, f"README numbers not in docs/RESULTS.md: {missing}"
