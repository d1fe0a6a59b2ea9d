"""The README's "Attach to your own engine" snippets run, in order, in one namespace, so they cannot rot."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# Until the lead merges the section into README.md it lives in the notes file; then this becomes
# REPO_ROOT / "README.md".
README_PATH = REPO_ROOT / "README.md"
SECTION_HEADING = "## Attach to your own engine"


def section_code_blocks(text: str, heading: str) -> List[str]:
    """The ```python blocks between ``heading`` and the next heading of the same or a higher level."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    except StopIteration:
        raise AssertionError(f"{README_PATH} has no line {heading!r}") from None
    level = len(heading) - len(heading.lstrip("#"))
    end = len(lines)
    in_code = False
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"^(#+)\s", lines[i])
        if match and len(match.group(1)) <= level:
            end = i
            break
    section = "\n".join(lines[start:end])
    return [block for block in re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)]


def test_section_parser_stops_at_the_next_heading():
    text = (
        "# T\n## A\n```python\nx = 1\n# a comment, not a heading\n```\n### sub\n```python\ny = 2\n```\n"
        "## B\n```python\nz = 3\n```\n"
    )
    assert section_code_blocks(text, "## A") == ["x = 1\n# a comment, not a heading\n", "y = 2\n"]


def test_attach_snippets_run(tmp_path, monkeypatch):
    blocks = section_code_blocks(README_PATH.read_text(encoding="utf-8"), SECTION_HEADING)
    assert len(blocks) >= 6, f"expected the engine and one snippet per handler, found {len(blocks)} blocks"
    monkeypatch.chdir(tmp_path)  # the snippets write checkpoints to ./checkpoints
    namespace = {"__name__": "readme_snippets"}
    for index, block in enumerate(blocks):
        code = compile(block, f"{README_PATH.name}[python block {index}]", "exec")
        try:
            exec(code, namespace)
        except Exception as error:  # pragma: no cover - the message names the failing block
            pytest.fail(f"python block {index} of {SECTION_HEADING!r} failed: {error!r}\n{block}")

    trainer = namespace["trainer"]
    assert trainer.state.epoch == 3 and trainer.state.iteration == 12
    assert 0.9 <= trainer.state.real_target <= 1.0
    assert float(trainer.state.historical_penalty_D) > 0 and float(trainer.state.historical_penalty_G) > 0
    assert 0.0 < trainer.state.averaged_real_score < 1.0
    assert namespace["init_G"].done and namespace["init_D"].done
    assert torch.equal(namespace["netG"].reference_noise, namespace["reference"].reference)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
