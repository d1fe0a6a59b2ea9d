"""Run folders and checkpoints written by earlier versions resume, and a checkpoint without its checksum warns.

- A checkpoint whose ``.sha256`` is missing loads, with a warning, also when the run's identity is checked.
- A final checkpoint without the trainer's output (older checkpoints lack it) resumes to a summary.
- A run folder of the previous version, whose record lacks the flags added since, resumes to the numbers of an
  uninterrupted run; a resume asking for another value of such a flag is refused, saying what differs.

The recipe runs in this process on the digits, for a few tiny epochs, as in ``tests/test_run_folders.py``.
"""
import hashlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from ignite_igan.checkpointing import RunIdentity, attach_checkpointing, load_latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import semi_supervised  # noqa: E402  (recipes/semi_supervised.py)

TINY = ["--iterations-per-epoch", "2", "--batch-size", "20", "--init-examples", "40", "--no-progress", "--no-baseline"]

#: ``run.json`` of ``digits_ssl`` with the TINY flags and ``--epochs 2``, as the previous version wrote it (commit
#: 748b37f): no run id, and no ``cuda_graph`` (the flag came later); its checkpoints hold no run identity and no
#: trainer output.
PREVIOUS_RECORD = {
    "config": {
        "allow_tf32": False, "amp": "off", "baseline": False, "batch_size": 20, "compile": False, "device_data": None,
        "ema_rate": 0.001, "ema_reference": False, "eval_every": 1, "feature_matching_distance": "mean_squared",
        "generator_loss": "feature_matching", "image_every": 1000, "init_examples": 40, "iterations_per_epoch": 2,
        "jobs": None, "labels_per_class": 10, "lr": 0.003, "lr_decay_epochs": 0, "seed": 1, "seed_data": 1,
        "seeds": None, "unlabeled_examples": None, "unlabeled_weight": 1.0,
    },
    "created": "2026-12-07T17:23:18+00:00",
    "epochs": 2,
    "experiment": "digits_ssl",
    "status": "complete",
    "updated": "2026-12-07T17:23:49+00:00",
    "world_size": 1,
}
#: What the previous version's checkpoints lacked.
ADDED_ENTRIES = ("run_identity", "trainer_output")


def run(out, *flags):
    """The digits recipe in this process; returns its exit status (0 when main returns)."""
    try:
        semi_supervised.main("digits_ssl", TINY + [str(f) for f in flags] + ["--output-dir", str(out)])
    except SystemExit as stop:
        return stop.code
    return 0


def rewrite_checkpoint(path, drop):
    """Rewrites the checkpoint ``path`` without the entries ``drop``, with a matching checksum."""
    state = torch.load(path, weights_only=True)
    for key in drop:
        del state[key]
    torch.save(state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n")


def parameters(folder, epoch):
    state = torch.load(Path(folder) / "checkpoints" / f"checkpoint_{epoch}.pt", weights_only=True)
    return {f"{m}.{k}": v for m in ("generator", "discriminator") for k, v in state[m].items()}


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    assert run(out, "--epochs", "2") == 0
    return out


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    """An uninterrupted 3-epoch run, the reference of the extended one."""
    out = tmp_path_factory.mktemp("three")
    assert run(out, "--epochs", "3") == 0
    return out


# --------------------------------------------------------------------------------------------------------------
# A checkpoint without its checksum
# --------------------------------------------------------------------------------------------------------------
def test_a_checkpoint_without_its_checksum_loads_with_a_warning_beside_the_identity_check(tmp_path):
    model = torch.nn.Linear(2, 1)
    trainer = Engine(lambda engine, batch: None)
    identity = RunIdentity("demo", "run-a", {"lr": 0.1})
    attach_checkpointing(trainer, {"model": model, "trainer": trainer, "run_identity": identity}, tmp_path)
    trainer.run(range(2), max_epochs=2)
    (tmp_path / "checkpoint_2.pt.sha256").unlink()
    saved = {key: value.clone() for key, value in model.state_dict().items()}
    with torch.no_grad():
        model.weight.zero_()
    fresh = Engine(lambda engine, batch: None)
    to_load = {"model": model, "trainer": fresh, "run_identity": RunIdentity("demo", "run-a", {"lr": 0.1})}
    with pytest.warns(UserWarning, match=r"checkpoint_2\.pt' has no checksum file; loading it unverified"):
        assert load_latest_checkpoint(to_load, tmp_path).name == "checkpoint_2.pt"
    assert torch.equal(model.weight, saved["weight"]) and fresh.state.epoch == 2
    # With its checksum back, it loads without a word.
    (tmp_path / "checkpoint_2.pt.sha256").write_text(
        f"{hashlib.sha256((tmp_path / 'checkpoint_2.pt').read_bytes()).hexdigest()}  checkpoint_2.pt\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_latest_checkpoint(to_load, tmp_path)


# --------------------------------------------------------------------------------------------------------------
# Checkpoints and run folders of the previous version
# --------------------------------------------------------------------------------------------------------------
def test_a_final_checkpoint_without_the_trainer_output_resumes_to_a_summary(two_epochs, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(two_epochs, out)
    (out / "summary.json").unlink()
    rewrite_checkpoint(out / "checkpoints" / "checkpoint_2.pt", ["trainer_output"])
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps(dict(record, status="training")))  # killed before its summary
    assert run(out, "--epochs", "2", "--resume") == 0
    ours, theirs = (json.loads((folder / "summary.json").read_text()) for folder in (out, two_epochs))
    assert ours["metrics"]["final_train_outputs"] is None  # unknown, not made up
    assert ours["metrics"]["test_error"] == theirs["metrics"]["test_error"]
    assert ours["metrics"]["iterations"] == 4


def _previous_version_folder(two_epochs, out):
    """``two_epochs`` as the previous version left it: its record, and checkpoints without the later entries."""
    shutil.copytree(two_epochs, out)
    (out / "run.json").write_text(json.dumps(PREVIOUS_RECORD, indent=2))
    for path in (out / "checkpoints").glob("checkpoint_*.pt"):
        rewrite_checkpoint(path, ADDED_ENTRIES)
    return out


def test_a_run_folder_of_the_previous_version_resumes_exactly(two_epochs, three_epochs, tmp_path):
    out = _previous_version_folder(two_epochs, tmp_path / "run")
    assert run(out, "--epochs", "3", "--resume", "--extend") == 0
    ours, theirs = parameters(out, 3), parameters(three_epochs, 3)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["epochs"] == 3
    assert record["config"] == PREVIOUS_RECORD["config"]  # the configuration its checkpoints were made with


def test_a_flag_added_since_is_named_when_the_resume_asks_for_another_value(two_epochs, tmp_path, capsys):
    out = _previous_version_folder(two_epochs, tmp_path / "run")
    record = dict(PREVIOUS_RECORD, config={k: v for k, v in PREVIOUS_RECORD["config"].items() if k != "allow_tf32"})
    (out / "run.json").write_text(json.dumps(record))  # a record from before --allow-tf32, too
    before = (out / "run.json").read_bytes()
    assert run(out, "--epochs", "3", "--resume", "--extend", "--allow-tf32") == 2
    error = capsys.readouterr().err
    assert ("--allow-tf32: not recorded (the run was started by an earlier version, before this flag, which ran as "
            "False), True now") in error
    assert "cuda-graph" not in error  # the flag nobody changed is not blamed
    assert (out / "run.json").read_bytes() == before
    assert run(out, "--epochs", "3", "--resume", "--extend") == 0  # without it, the run resumes
