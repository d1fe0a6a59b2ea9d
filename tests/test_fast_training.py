"""Speed without changing what is computed: evaluation outside the trajectory, device-resident data, sync-free
steps, multi-seed runs."""
import json
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
