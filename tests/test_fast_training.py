"""Speed without changing what is computed: evaluation outside the trajectory, device-resident data, sync-free
steps, multi-seed runs."""
from pathlib import Path

import torch

from tests.test_recipes_ssl import run_recipe

ROOT = Path(__file__).resolve().parents[1]


def _weights(output_dir, epoch):
    state = torch.load(Path(output_dir) / "checkpoints" / f"checkpoint_{epoch}.pt", weights_only=True)
    return {f"{m}.{k}": v for m in ("generator", "discriminator") for k, v in state[m].items()}


def test_evaluation_never_changes_the_trained_weights(tmp_path):
    common = ["--epochs", "2", "--iterations-per-epoch", "3", "--no-baseline", "--no-progress"]
    run_recipe("digits_ssl", *common, "--eval-every", "1", "--output-dir", tmp_path / "every1")
    run_recipe("digits_ssl", *common, "--eval-every", "2", "--output-dir", tmp_path / "every2")
    often, rarely = _weights(tmp_path / "every1", 2), _weights(tmp_path / "every2", 2)
    assert often.keys() == rarely.keys()
    for key in often:
        assert torch.equal(often[key], rarely[key]), f"{key} differs with --eval-every 1 and 2"
