"""Speed without changing what is computed: evaluation outside the trajectory, device-resident data, sync-free
steps, multi-seed runs."""
import json
from pathlib import Path

import pytest
import torch

from tests.test_recipes_ssl import run_recipe

ROOT = Path(__file__).resolve().parents[1]


def _weights(output_dir, epoch):
    state = torch.load(Path(output_dir) / "checkpoints" / f"checkpoint_{epoch}.pt", weights_only=True)
    return {f"{m}.{k}": v for m in ("generator", "discriminator") for k, v in state[m].items()}


@pytest.mark.slow
def test_evaluation_never_changes_the_trained_weights(tmp_path):
    common = ["--epochs", "2", "--iterations-per-epoch", "3", "--no-baseline", "--no-progress"]
    run_recipe("digits_ssl", *common, "--eval-every", "1", "--output-dir", tmp_path / "every1")
    run_recipe("digits_ssl", *common, "--eval-every", "2", "--output-dir", tmp_path / "every2")
    often, rarely = _weights(tmp_path / "every1", 2), _weights(tmp_path / "every2", 2)
    assert often.keys() == rarely.keys()
    for key in often:
        assert torch.equal(often[key], rarely[key]), f"{key} differs with --eval-every 1 and 2"


@pytest.mark.slow
def test_device_data_trains_the_same_weights_as_the_host_loader(tmp_path):
    common = ["--epochs", "2", "--iterations-per-epoch", "3", "--no-baseline", "--no-progress"]
    run_recipe("digits_ssl", *common, "--device-data", "--output-dir", tmp_path / "device")
    run_recipe("digits_ssl", *common, "--no-device-data", "--output-dir", tmp_path / "host")
    device, host = _weights(tmp_path / "device", 2), _weights(tmp_path / "host", 2)
    for key in host:
        assert torch.equal(device[key], host[key]), f"{key} differs between --device-data and --no-device-data"
    summaries = [json.loads((tmp_path / name / "summary.json").read_text())["metrics"] for name in ("device", "host")]
    assert summaries[0]["final_train_outputs"] == summaries[1]["final_train_outputs"]
    assert summaries[0]["test_error"] == summaries[1]["test_error"]


@pytest.mark.slow
def test_a_seed_of_a_multi_seed_run_is_the_run_that_seed_gets_alone(tmp_path):
    common = ["--epochs", "2", "--iterations-per-epoch", "2", "--no-baseline", "--no-progress"]
    many = run_recipe("digits_ssl", *common, "--seeds", "1-2", "--jobs", "2", "--output-dir", tmp_path / "many")
    run_recipe("digits_ssl", *common, "--seed", "2", "--seed-data", "2", "--output-dir", tmp_path / "alone")
    inside, alone = _weights(tmp_path / "many" / "seed2", 2), _weights(tmp_path / "alone", 2)
    for key in alone:
        assert torch.equal(inside[key], alone[key]), key
    table = json.loads((tmp_path / "many" / "seeds.json").read_text())
    errors = [table["per_seed"][str(seed)]["test_error"] for seed in (1, 2)]
    assert table["test_error"]["mean"] == sum(errors) / 2 and table["seeds"] == [1, 2]
    assert errors[1] == json.loads((tmp_path / "alone" / "summary.json").read_text())["metrics"]["test_error"]
    assert "mean ± std" in many.stdout and "seed 2" in many.stdout

    # Resuming a complete multi-seed run touches no file of its seeds and prints the same table.
    checkpoint = tmp_path / "many" / "seed1" / "checkpoints" / "checkpoint_2.pt"
    before = checkpoint.stat().st_mtime_ns
    again = run_recipe("digits_ssl", *common, "--seeds", "1-2", "--resume", "--output-dir", tmp_path / "many")
    assert checkpoint.stat().st_mtime_ns == before
    assert json.loads((tmp_path / "many" / "seeds.json").read_text())["per_seed"] == table["per_seed"]
    assert again.stdout.splitlines()[-5:-1] == many.stdout.splitlines()[-5:-1]


@pytest.mark.slow
def test_multi_seed_flags_are_checked(tmp_path):
    bad = run_recipe("digits_ssl", "--seeds", "3-1", "--output-dir", tmp_path / "x", check=False)
    assert bad.returncode == 2 and "--seeds" in bad.stderr and "1-10" in bad.stderr
    twice = run_recipe("digits_ssl", "--seeds", "1,1", "--output-dir", tmp_path / "x", check=False)
    assert twice.returncode == 2 and "each once" in twice.stderr
