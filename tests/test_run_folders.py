"""Runs never lose or silently change work: run folders, resume, corrupt checkpoints, locks, full disks.

Every test runs the digits recipe (``recipes/semi_supervised.py``) for a few tiny epochs in this process and
checks what is on disk afterwards: files, their hashes, the final parameters against an uninterrupted run.
"""
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import semi_supervised  # noqa: E402  (recipes/semi_supervised.py)

TINY = ["--epochs", "2", "--iterations-per-epoch", "2", "--batch-size", "20", "--init-examples", "40",
        "--no-progress", "--no-baseline"]


def run(out, *flags, tiny=TINY):
    """The digits recipe in this process; returns its exit status (0 when main returns)."""
    flags = list(tiny) + [str(f) for f in flags]
    for flag in ("--epochs", "--baseline"):  # a flag given again replaces the tiny default
        if flags.count(flag) > 1:
            index = flags.index(flag)
            del flags[index : index + 2]
    try:
        semi_supervised.main("digits_ssl", flags + ["--output-dir", str(out)])
    except SystemExit as stop:
        return stop.code
    return 0


def snapshot(folder):
    """Every file under ``folder`` with its size, modification time and SHA-256."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(Path(folder).rglob("*")) if p.is_file()
    }


def final_parameters(folder, epoch):
    state = torch.load(Path(folder) / "checkpoints" / f"checkpoint_{epoch}.pt", weights_only=True)
    return {f"{m}.{k}": v for m in ("generator", "discriminator", "evaluation_average") for k, v in
            (state[m].items() if m != "evaluation_average" else state[m]["averaged_model"].items())}


def assert_same_parameters(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def stop_after_epoch(monkeypatch, epoch):
    """The next run stops right after its checkpoint of ``epoch``, as a killed run would."""
    real = semi_supervised.Run.attach

    def attach_then_stop(self, trainer, *args, **kwargs):
        resumed = real(self, trainer, *args, **kwargs)
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=epoch), lambda engine: engine.terminate())
        return resumed

    monkeypatch.setattr(semi_supervised.Run, "attach", attach_then_stop)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 3-epoch run, the reference for every resume."""
    out = tmp_path_factory.mktemp("straight")
    assert run(out, "--epochs", "3") == 0
    return out


# --------------------------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------------------------
def test_resume_of_a_complete_run_says_so_and_touches_no_file(straight, capsys):
    before = snapshot(straight)
    time.sleep(0.01)
    assert run(straight, "--epochs", "3", "--resume") == 0
    assert "is complete (3 epochs" in capsys.readouterr().out
    assert snapshot(straight) == before


def test_extending_a_complete_run_needs_extend_and_continues_exactly(straight, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(out) == 0  # 2 epochs, complete
    assert run(out, "--epochs", "3", "--resume") == 2
    error = capsys.readouterr().err
    assert "--epochs 3 is more than the 2 epochs" in error and "add --extend" in error
    assert run(out, "--epochs", "3", "--resume", "--extend") == 0
    assert_same_parameters(final_parameters(out, 3), final_parameters(straight, 3))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["iterations"] == 6
    assert summary["metrics"]["test_error"] == json.loads((straight / "summary.json").read_text())["metrics"]["test_error"]
    assert run(out, "--epochs", "2", "--resume") == 2  # a run is never shortened


def test_killed_run_resumes_exactly_and_keeps_two_checkpoints(straight, tmp_path, monkeypatch):
    out = tmp_path / "run"
    for epoch in (1, 2):  # stopped after epoch 1, resumed, stopped after epoch 2, resumed to the end
        with monkeypatch.context() as patch:
            stop_after_epoch(patch, epoch)
            assert run(out, "--epochs", "3", *(["--resume"] if epoch > 1 else [])) == 0
        assert json.loads((out / "run.json").read_text())["status"] == "training"
        assert not (out / "summary.json").exists()
    assert run(out, "--epochs", "3", "--resume") == 0
    assert_same_parameters(final_parameters(out, 3), final_parameters(straight, 3))
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["checkpoint_2.pt", "checkpoint_3.pt"]
    assert json.loads((out / "summary.json").read_text())["resumed_from"].endswith("checkpoint_2.pt")


def test_a_run_stopped_in_the_baseline_resumes_into_the_baseline(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    assert run(reference, "--baseline") == 0
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        patch.setattr(semi_supervised, "labeled_only_baseline", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run(out, "--baseline")
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "baseline" and record["results"]["iterations"] == 4
    checkpoints = snapshot(out / "checkpoints")
    assert run(out, "--baseline", "--resume") == 0
    assert snapshot(out / "checkpoints") == checkpoints  # training did not run again
    ours, theirs = (json.loads((p / "summary.json").read_text())["metrics"] for p in (out, reference))
    assert ours["baseline_test_error"] == theirs["baseline_test_error"]
    assert ours["test_error"] == theirs["test_error"]


@pytest.mark.parametrize("flags, named", [
    (["--lr", "0.001"], "--lr: 0.003 in the run, 0.001 now"),
    (["--seed", "2", "--labels-per-class", "5"], "--labels-per-class: 10 in the run, 5 now; --seed: 1 in the run, 2 now"),
    (["--ema-reference"], "--ema-reference: False in the run, True now"),
])
def test_resume_with_flags_that_change_the_experiment_is_refused(tmp_path, monkeypatch, capsys, flags, named):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 1)
        assert run(out) == 0
    before = snapshot(out)
    assert run(out, "--resume", *flags) == 2
    assert named in capsys.readouterr().err
    assert snapshot(out) == before
    # Flags that do not change the experiment may differ.
    assert run(out, "--resume", "--threads", "2", "--num-workers", "0", "--device", "cpu") == 0


def test_resume_with_another_number_of_processes_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 1)
        assert run(out) == 0
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps(dict(record, world_size=2)))
    assert run(out, "--resume") == 2
    assert "ran in 2 process(es), this is 1" in capsys.readouterr().err


def test_checkpoints_of_an_older_version_are_refused_clearly(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(out) == 0
    (out / "run.json").unlink()
    assert run(out, "--resume") == 2
    assert "no run record" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------
# Run folders
# --------------------------------------------------------------------------------------------------------------
def test_a_fresh_run_never_writes_into_another_runs_folder(straight, capsys):
    before = snapshot(straight)
    assert run(straight, "--epochs", "3", "--lr", "0.001") == 2
    error = capsys.readouterr().err
    assert "already holds a 'digits_ssl' run" in error and "--resume" in error and "another --output-dir" in error
    assert snapshot(straight) == before


def test_a_run_that_failed_before_its_first_checkpoint_leaves_the_folder_usable(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(semi_supervised, "attach_tensorboard", lambda *a, **k: (_ for _ in ()).throw(OSError("boom")))
        with pytest.raises(OSError):
            run(out)
    assert run(out) == 0


def test_a_second_run_is_refused_while_the_first_holds_the_folder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, json, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, json.dumps({'pid': os.getpid(), 'host': 'here', "
         "'started': 'now'}).encode()); print('locked', flush=True); time.sleep(60)",
         str(out / ".lock")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run(out) == 2
        error = capsys.readouterr().err
        assert f"is in use by process {holder.pid} on here" in error
        assert not (out / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert run(out) == 0  # the dead holder's lock is free: no stale lock to remove by hand


def test_partial_checkpoint_writes_are_removed_when_a_run_starts(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 1)
        assert run(out) == 0
    (out / "checkpoints" / "checkpoint_2.pt.partial").write_bytes(b"half a checkpoint")
    assert run(out, "--resume") == 0
    assert not list((out / "checkpoints").glob("*.partial"))


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_corrupt_newest_checkpoint_is_named_and_the_previous_one_used(straight, tmp_path, monkeypatch, damage):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 2)
        assert run(out, "--epochs", "3") == 0
    newest = out / "checkpoints" / "checkpoint_2.pt"
    data = bytearray(newest.read_bytes())
    if damage == "truncated":
        newest.write_bytes(bytes(data[: len(data) // 3]))
    else:
        data[len(data) // 2] ^= 0x55
        newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"checkpoint_2\.pt: .*Resuming from checkpoint_1\.pt"):
        assert run(out, "--epochs", "3", "--resume") == 0
    assert_same_parameters(final_parameters(out, 3), final_parameters(straight, 3))


def test_no_usable_checkpoint_is_an_error_naming_the_files(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 1)
        assert run(out) == 0
    (out / "checkpoints" / "checkpoint_1.pt").write_bytes(b"")
    assert run(out, "--resume") == 2
    error = capsys.readouterr().err
    assert "no usable checkpoint" in error and "checkpoint_1.pt: empty file" in error


def test_an_unwritable_output_folder_is_named_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert run(blocker / "run") == 2
    assert f"--output-dir {str(blocker / 'run')!r} is not writable" in capsys.readouterr().err


def test_a_full_disk_is_named_before_training(tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 20, 9 << 20, 1 << 20))
    out = tmp_path / "run"
    assert run(out) == 2
    error = capsys.readouterr().err
    assert f"--output-dir {str(out)!r} has 1 MiB free" in error and "MiB are needed" in error
    assert not list(out.glob("checkpoints/*.pt"))


# --------------------------------------------------------------------------------------------------------------
# Non-finite values
# --------------------------------------------------------------------------------------------------------------
def test_a_nan_loss_stops_training_and_the_last_good_checkpoint_stays_newest(tmp_path, monkeypatch, capsys):
    real = semi_supervised.create_semi_supervised_trainer

    def poisoned(*args, **kwargs):
        trainer = real(*args, **kwargs)
        step = trainer._process_function

        def step_with_nan(engine, batch):
            output = step(engine, batch)
            return dict(output, loss_labeled=float("nan")) if engine.state.iteration == 5 else output

        trainer._process_function = step_with_nan
        return trainer

    monkeypatch.setattr(semi_supervised, "create_semi_supervised_trainer", poisoned)
    out = tmp_path / "run"
    assert run(out, "--epochs", "4") == 1
    error = capsys.readouterr().err
    assert "iteration 5 (epoch 3) produced non-finite values: loss_labeled = nan" in error
    found = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    assert found == ["checkpoint_1.pt", "checkpoint_2.pt"]
    state = torch.load(out / "checkpoints" / "checkpoint_2.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["evaluation_average"]["averaged_model"].values()
               if v.is_floating_point())
    assert json.loads((out / "run.json").read_text())["status"] == "training"  # --resume continues from epoch 2


# --------------------------------------------------------------------------------------------------------------
# Checkpoints belong to their run
# --------------------------------------------------------------------------------------------------------------
def _plant(checkpoint, folder):
    """Copies ``checkpoint`` with its checksum into ``folder``, as a user copying run folders around would."""
    for suffix in ("", ".sha256"):
        source = Path(str(checkpoint) + suffix)
        (Path(folder) / source.name).write_bytes(source.read_bytes())


def test_a_checkpoint_of_another_configuration_is_named_and_never_trained_on(straight, tmp_path, monkeypatch):
    other = tmp_path / "other"
    assert run(other, "--epochs", "3", "--labels-per-class", "5") == 0
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 1)
        assert run(out, "--epochs", "3") == 0
    _plant(other / "checkpoints" / "checkpoint_2.pt", out / "checkpoints")  # newer than ours, checksum valid
    with pytest.warns(UserWarning, match=r"checkpoint_2\.pt: belongs to another run .* with another configuration "
                                         r".*Resuming from checkpoint_1\.pt"):
        assert run(out, "--epochs", "3", "--resume") == 0
    assert json.loads((out / "summary.json").read_text())["resumed_from"].endswith("checkpoint_1.pt")
    assert_same_parameters(final_parameters(out, 3), final_parameters(straight, 3))
    assert json.loads((out / "summary.json").read_text())["metrics"]["labels"] == 100  # not the other run's 50


def test_a_checkpoint_of_another_run_with_the_same_flags_is_refused(straight, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 1)
        assert run(out, "--epochs", "3") == 0
    for ours in (out / "checkpoints").glob("checkpoint_1.pt*"):
        ours.unlink()
    _plant(straight / "checkpoints" / "checkpoint_3.pt", out / "checkpoints")
    before = snapshot(out / "checkpoints")
    assert run(out, "--epochs", "3", "--resume") == 2
    error = capsys.readouterr().err
    assert "no usable checkpoint" in error and "checkpoint_3.pt: belongs to another run (run id" in error
    assert "another configuration" not in error  # same flags: only the run id tells them apart
    assert snapshot(out / "checkpoints") == before


def test_a_run_killed_after_its_last_checkpoint_resumes_to_the_uninterrupted_summary(straight, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        def killed(self, *args, **kwargs):  # the last checkpoint is written; the summary never is
            raise KeyboardInterrupt

        patch.setattr(semi_supervised.Run, "finish", killed)
        with pytest.raises(KeyboardInterrupt):
            run(out, "--epochs", "3")
    assert (out / "checkpoints" / "checkpoint_3.pt").is_file() and not (out / "summary.json").exists()
    assert run(out, "--epochs", "3", "--resume") == 0
    resumed = json.loads((out / "summary.json").read_text())
    expected = json.loads((straight / "summary.json").read_text())
    # What describes the process rather than the run may differ: its wall time, the checkpoint it started from,
    # the --resume flag it was given, and the folder (the two runs cannot share one).
    assert resumed.pop("resumed_from").endswith("checkpoint_3.pt") and expected.pop("resumed_from") is None
    resumed.pop("seconds"), expected.pop("seconds")
    assert resumed["config"].pop("resume") is True and expected["config"].pop("resume") is False
    assert resumed["config"].pop("output_dir") == str(out) and expected["config"].pop("output_dir") == str(straight)
    assert resumed.keys() == expected.keys()
    for key in expected:
        assert resumed[key] == expected[key], key
    outputs = resumed["metrics"]["final_train_outputs"]
    assert set(outputs) >= {"loss_labeled", "loss_unlabeled", "loss_generator"}  # not lost to the resume


# --- added by tests: a checkpoint that records no run identity ---


def test_resume_refuses_checkpoints_that_record_no_run_identity(tmp_path, monkeypatch, capsys):
    """The record has a run id, so its checkpoints must carry it: an unmarked one may be another run's."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 1)
        assert run(out, "--epochs", "3") == 0
    path = out / "checkpoints" / "checkpoint_1.pt"
    state = torch.load(path, weights_only=True)
    del state["run_identity"]
    torch.save(state, path)
    (out / "checkpoints" / "checkpoint_1.pt.sha256").write_text(
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  checkpoint_1.pt\n")
    before = snapshot(out / "checkpoints")
    assert run(out, "--epochs", "3", "--resume") == 2
    error = capsys.readouterr().err
    assert "no usable checkpoint" in error and "checkpoint_1.pt: records no run identity" in error
    assert snapshot(out / "checkpoints") == before
