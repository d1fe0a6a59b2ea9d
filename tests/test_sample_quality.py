"""The sample-quality experiment (``recipes/cifar10_samples.py`` and its digits setting).

- The CIFAR-10 recipe runs end to end on small files in CIFAR-10's real pickled-batch format, read by torchvision.
- The digits setting runs end to end with the score on; the score in its summary equals a NumPy recomputation
  from the checkpointed generator, the scoring noise and the classifier (the wiring of range, noise and splits),
  also when two processes under torchrun train and score.
- Each ablation switch changes the built networks and handlers as the paper's table says.
- A run stopped right after its first checkpoint and resumed ends with the parameters of an uninterrupted run.
- Bad flags and missing files fail at startup with a clear message.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import TensorDataset

from ignite_igan import models
from ignite_igan.datasets import load_dataset
from ignite_igan.logging import read_hparams
from ignite_igan.nn import GaussianNoise, MinibatchDiscrimination, ScaleFreeBatchNorm, VirtualBatchNorm
from tests.datafiles import write_cifar10

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "recipes"))
import sample_quality as sq  # noqa: E402  (the recipe, recipes/sample_quality.py)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _events(log_dir):
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def _summary(output_dir):
    return json.loads((output_dir / "summary.json").read_text())


# ---------------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------------
def test_cifar10_recipe_runs_on_real_format_files(tmp_path):
    write_cifar10(tmp_path / "data", per_batch=20, n_test=10)
    out = tmp_path / "run"
    sq.main(
        "cifar10_samples",
        [
            "--data-dir", str(tmp_path / "data"), "--no-verify-checksums", "--epochs", "1",
            "--iterations-per-epoch", "2", "--batch-size", "8", "--init-examples", "16", "--is-every", "0",
            "--log-every", "1", "--output-dir", str(out), "--no-progress",
        ],
    )
    summary = _summary(out)
    assert summary["metrics"]["iterations"] == 2
    assert summary["metrics"]["techniques"] == {
        "minibatch_features": True, "generator_normalization": "virtual", "real_target": 0.9, "labels": True,
        "historical_averaging_weight": 0.0,
    }
    assert summary["config"]["verify_checksums"] is False and summary["seeds"] == {"seed": 1}
    assert (out / "checkpoints" / "checkpoint_1.pt").is_file()
    events = _events(out / "tensorboard")
    assert {"training/loss_discriminator", "training/loss_labeled", "training/real_target"} <= set(
        events.Tags()["scalars"]
    )
    assert "generated" in events.Tags()["images"]


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    """A digits classifier after one epoch: confident enough that the score is far from its minimum 1."""
    model, accuracy = models.train_digits_classifier(seed=0, epochs=1)
    assert accuracy > 0.5
    path = tmp_path_factory.mktemp("classifier") / "classifier.pt"
    torch.save(model.state_dict(), path)
    return path


def _inception_score_oracle(probabilities, splits):
    scores = []
    for part in np.array_split(probabilities, splits):
        marginal = part.mean(axis=0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(marginal)), axis=1))))
    return np.mean(scores), np.std(scores)


def _oracle_score_of_checkpoint(checkpoint, classifier_path, samples, seed, splits):
    """Recomputes the score from a checkpoint: same noise, uint8 rounding, classifier, contiguous splits."""
    state = torch.load(checkpoint, weights_only=True)
    generator = models.digits_generator(normalization="virtual")
    generator.load_state_dict(state["generator"])
    classifier = models.load_digits_classifier(classifier_path)
    with torch.no_grad():
        z = generator.sample_noise(samples, generator=torch.Generator().manual_seed(seed))
        images = torch.cat([generator(chunk) for chunk in z.split(100)])
        pixels = torch.round(images.double() * 255) / 255
        probabilities = torch.softmax(classifier(pixels.float()).double(), dim=1).numpy()
    return _inception_score_oracle(probabilities, splits)


def test_digits_run_scores_its_generator_as_a_numpy_oracle_does(tmp_path, classifier_file):
    classifier_path = classifier_file
    out = tmp_path / "run"
    sq.main(
        "digits_samples",
        [
            "--epochs", "2", "--iterations-per-epoch", "2", "--is-every", "1", "--is-samples", "250",
            "--is-splits", "5", "--is-seed", "3", "--is-classifier", str(classifier_path), "--output-dir", str(out),
            "--no-progress",
        ],
    )
    metrics = _summary(out)["metrics"]
    assert [entry["epoch"] for entry in metrics["inception_history"]] == [1, 2]  # every epoch, once at the end

    mean, std = _oracle_score_of_checkpoint(out / "checkpoints" / "checkpoint_2.pt", classifier_path, 250, 3, 5)
    # Barely trained generators draw near-identical digits, so the score is close to its minimum 1: compare the
    # part above 1 (about the mean KL), where a wrong range, noise or split would show.
    assert mean - 1 > 1e-3
    assert metrics["inception_score"] - 1 == pytest.approx(mean - 1, rel=1e-3)
    assert metrics["inception_score_std"] == pytest.approx(std, rel=1e-2)
    events = _events(out / "tensorboard")
    assert events.Scalars("samples/is")[-1].value == pytest.approx(mean, rel=1e-5)
    # the HParams row: configuration, techniques and the final score (also as scalars at the last iteration)
    assert events.Scalars("final/inception_score")[0].value == pytest.approx(metrics["inception_score"], rel=1e-6)
    assert [e.step for e in events.Scalars("final/iterations")] == [4]
    hparams = read_hparams(out / "tensorboard")
    assert hparams["experiment"] == "digits_samples" and hparams["epochs"] == 2 and hparams["seed"] == 1
    assert hparams["lr"] == pytest.approx(3e-3) and hparams["generator_normalization"] == "virtual"
    assert hparams["is_samples"] == 250 and hparams["minibatch_features"] == 1  # TensorBoard stores bools as 0/1


@pytest.mark.slow
def test_two_processes_under_torchrun_train_and_score_as_one_scorer(tmp_path, classifier_file):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
        str(ROOT / "recipes" / "digits_samples.py"), "--epochs", "1", "--iterations-per-epoch", "2",
        "--is-every", "1", "--is-samples", "300", "--is-seed", "4", "--is-classifier", str(classifier_file),
        "--output-dir", str(out), "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = _summary(out)
    assert summary["world_size"] == 2 and summary["metrics"]["iterations"] == 2
    # Each process scored its block of the 300 samples; gathered in rank order they make the single-process score.
    mean, _ = _oracle_score_of_checkpoint(out / "checkpoints" / "checkpoint_1.pt", classifier_file, 300, 4, 10)
    assert mean - 1 > 1e-3
    assert summary["metrics"]["inception_score"] - 1 == pytest.approx(mean - 1, rel=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# Each switch changes the built pieces
# ---------------------------------------------------------------------------------------------------------------
def _build(name, flags):
    name = f"{name}_samples"
    setting = sq.SETTINGS[name]
    args = sq.build_parser(name).parse_args(list(flags) + ["--no-progress"])
    if name == "digits_samples":
        data = load_dataset("digits")
    else:
        images = torch.rand(24, 3, 32, 32) * 2 - 1
        data = TensorDataset(images, torch.arange(24) % 10)
        args.batch_size = 8
    torch.manual_seed(0)
    return sq.build(setting, args, data, torch.device("cpu"))


def _has(module, kind):
    return any(isinstance(m, kind) for m in module.modules())


def test_default_is_the_papers_our_methods_on_cifar10():
    experiment = _build("cifar10", [])
    gen, disc = experiment.generator, experiment.discriminator
    assert gen.normalization == "virtual" and _has(gen, VirtualBatchNorm) and not _has(gen, ScaleFreeBatchNorm)
    assert experiment.handlers["vbn_reference"].size == 8  # the batch size
    assert experiment.to_save["vbn_reference"] is experiment.handlers["vbn_reference"]
    # spec §3.3: Gaussian input noise 0.2, 100 kernels of 5 dimensions on the 192 pooled features, K = 10.
    assert isinstance(disc.trunk[0], GaussianNoise) and disc.trunk[0].sigma == 0.2
    assert (disc.minibatch.in_features, disc.minibatch.num_kernels, disc.minibatch.kernel_dim) == (192, 100, 5)
    assert disc.num_classes == 10 and experiment.conditional
    assert experiment.handlers["label_smoothing"].real_target == 0.9
    assert experiment.trainer.state.real_target == 0.9
    assert "historical_averaging_d" not in experiment.handlers
    # Both players' reference Adam with beta1 0.5 and the CIFAR schedule min(3 - epoch/400, 1) over 1200 epochs.
    for optimizer in (experiment.d_optimizer, experiment.g_optimizer):
        assert optimizer.param_groups[0]["lr"] == 3e-4 and optimizer.param_groups[0]["betas"] == (0.5, 0.999)
    schedule = experiment.handlers["lr_schedule"].lr_lambda
    assert [schedule(e) for e in (0, 799, 800, 1000, 1199)] == pytest.approx([1, 1, 1, 0.5, 0.0025])
    assert experiment.handlers["init_discriminator"].inputs.shape == (24, 3, 32, 32)  # min(500, data set size)
    assert "init_generator" in experiment.to_save and "init_discriminator" in experiment.to_save


@pytest.mark.parametrize("name", ["cifar10", "digits"])
def test_each_ablation_switch_changes_what_the_table_says(name):
    base = _build(name, [])
    assert _has(base.discriminator, MinibatchDiscrimination) and _has(base.generator, VirtualBatchNorm)

    bn = _build(name, ["--batch-norm"])
    assert _has(bn.generator, ScaleFreeBatchNorm) and not _has(bn.generator, VirtualBatchNorm)
    assert "vbn_reference" not in bn.handlers and "vbn_reference" not in bn.to_save
    assert _has(bn.discriminator, MinibatchDiscrimination) and "label_smoothing" in bn.handlers

    ls = _build(name, ["--no-label-smoothing"])
    assert "label_smoothing" not in ls.handlers and not hasattr(ls.trainer.state, "real_target")
    assert ls.techniques["real_target"] == 1.0

    labels = _build(name, ["--no-labels"])
    assert labels.discriminator.num_classes == 1 and not labels.conditional
    assert _has(labels.discriminator, MinibatchDiscrimination) and "label_smoothing" in labels.handlers

    ha = _build(name, ["--no-labels", "--historical-averaging", "--historical-averaging-weight", "0.05"])
    assert ha.discriminator.num_classes == 1
    assert ha.handlers["historical_averaging_d"].model is ha.discriminator
    assert ha.handlers["historical_averaging_d"].optimizer is ha.d_optimizer
    assert ha.handlers["historical_averaging_g"].model is ha.generator
    assert ha.handlers["historical_averaging_g"].optimizer is ha.g_optimizer
    assert ha.handlers["historical_averaging_g"].weight == 0.05
    assert {"historical_averaging_d", "historical_averaging_g"} <= set(ha.to_save)
    assert "historical_averaging_d" not in base.handlers

    mbf = _build(name, ["--no-minibatch-features"])
    assert not _has(mbf.discriminator, MinibatchDiscrimination) and mbf.discriminator.num_classes == 10
    assert _has(mbf.generator, VirtualBatchNorm)


def test_digits_minibatch_discriminator_and_vbn_generator():
    experiment = _build("digits", [])
    disc = experiment.discriminator
    layer = disc.minibatch
    assert (layer.in_features, layer.num_kernels, layer.kernel_dim) == (64, 32, 5)
    assert disc.classifier.in_features == 64 + 32
    # Each VBN sample is independent of the rest of its batch, and the reference noise is part of the state.
    gen = experiment.generator
    gen.set_reference(gen.sample_noise(10))
    z = gen.sample_noise(4)
    assert torch.allclose(gen(z)[:1], gen(z[:1]), atol=1e-6)
    assert "reference_noise" in gen.state_dict()
    # The minibatch features react to the rest of the batch: duplicate rows change an example's logits.
    disc.eval()
    x = torch.rand(6, 64)
    assert not torch.allclose(disc(x)[:1], disc(torch.cat([x[:1], x[:1].expand(5, -1)]))[:1])


@pytest.mark.parametrize("flags, labeled", [([], True), (["--no-labels"], False)])
def test_one_iteration_steps_d_once_and_g_three_times_with_or_without_the_class_loss(flags, labeled):
    experiment = _build("digits", flags + ["--iterations-per-epoch", "1"])
    experiment.trainer.run(experiment.loader, max_epochs=1, epoch_length=1)
    output = experiment.trainer.state.output
    assert ("loss_labeled" in output) == labeled and ("train_error" in output) == labeled

    def steps(optimizer):
        return {int(state["step"]) for state in optimizer.state.values()}

    assert steps(experiment.d_optimizer) == {1} and steps(experiment.g_optimizer) == {3}
    assert experiment.handlers["init_discriminator"].done


# ---------------------------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------------------------
def _stop_after_first_checkpoint(monkeypatch):
    """Makes the next run stop right after its first checkpoint is written, as a killed run would."""
    real = sq.Run.attach

    def attach_then_stop(run, trainer, *args, **kwargs):
        resumed = real(run, trainer, *args, **kwargs)  # the checkpoint handler comes first on EPOCH_COMPLETED
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda engine: engine.terminate())
        return resumed

    monkeypatch.setattr(sq.Run, "attach", attach_then_stop)


def test_resumed_run_ends_with_the_parameters_of_an_uninterrupted_run(tmp_path, monkeypatch):
    flags = [
        "--epochs", "2", "--iterations-per-epoch", "3", "--is-every", "0", "--historical-averaging", "--no-progress",
    ]
    sq.main("digits_samples", flags + ["--output-dir", str(tmp_path / "straight")])

    with monkeypatch.context() as patch:
        _stop_after_first_checkpoint(patch)
        sq.main("digits_samples", flags + ["--output-dir", str(tmp_path / "resumed")])
    assert not (tmp_path / "resumed" / "checkpoints" / "checkpoint_2.pt").exists()
    torch.manual_seed(1234)  # a new process would start from another random state
    sq.main("digits_samples", flags + ["--output-dir", str(tmp_path / "resumed"), "--resume"])
    assert _summary(tmp_path / "resumed")["resumed_from"].endswith("checkpoint_1.pt")

    straight = torch.load(tmp_path / "straight" / "checkpoints" / "checkpoint_2.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "checkpoint_2.pt", weights_only=True)
    compared = 0
    for key in ("generator", "discriminator", "vbn_reference"):
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), f"{key}.{name}"
            compared += 1
    for key in ("d_optimizer", "g_optimizer"):
        for index, state in straight[key]["state"].items():
            assert torch.equal(state["exp_avg"], resumed[key]["state"][index]["exp_avg"]), f"{key}.{index}"
    for key in ("historical_averaging_d", "historical_averaging_g"):
        for name, value in straight[key]["averages"].items():
            assert torch.equal(value, resumed[key]["averages"][name]), f"{key}.{name}"
    assert compared > 10 and straight["trainer"]["iteration"] == resumed["trainer"]["iteration"] == 6
    # Not vacuous: the second epoch moved the weights.
    first = torch.load(tmp_path / "resumed" / "checkpoints" / "checkpoint_1.pt", weights_only=True)
    assert not torch.equal(first["generator"]["output.bias"], straight["generator"]["output.bias"])


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, flags, message",
    [
        ("cifar10", ["--data-dir", "{tmp}/missing"], "--data-dir"),
        ("cifar10", ["--data-dir", "{tmp}", "--is-every", "0"], "CIFAR-10 was not found"),
        ("digits", ["--real-target", "1.5"], "--real-target: expected a number in (0, 1]"),
        ("digits", ["--is-seed", str(2**40)], "--is-seed: expected an integer in [0,"),
        ("digits", ["--real-target", "0.8", "--no-label-smoothing"], "--real-target has no effect"),
        ("digits", ["--historical-averaging-weight", "0.1"], "needs --historical-averaging"),
        ("digits", ["--batch-norm", "--vbn-reference-size", "16"], "--vbn-reference-size has no effect"),
        ("digits", ["--is-samples", "5"], "--is-samples: expected at least --is-splits=10"),
        ("digits", ["--is-every", "-1"], "--is-every: expected an integer >= 0"),
        ("digits", ["--batch-size", "1"], "--batch-size: expected at least 2"),
        ("digits", ["--is-classifier", "{tmp}/none.pt"], "--is-classifier: no such file"),
        ("digits", ["--is-every", "0", "--resume"], "holds no run to resume"),
        ("cifar10", ["--data-dir", "{tmp}", "--inception-weights", "{tmp}/none.pth"], "--inception-weights: no such"),
    ],
)
def test_bad_flags_fail_with_a_clear_message(tmp_path, capsys, name, flags, message):
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    with pytest.raises(SystemExit) as raised:
        sq.main(f"{name}_samples", flags + ["--output-dir", str(tmp_path / "out"), "--no-progress"])
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_unusable_score_network_fails_before_training(tmp_path, capsys):
    write_cifar10(tmp_path / "data", per_batch=20, n_test=10)
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not the Inception weights")
    with pytest.raises(SystemExit) as raised:
        sq.main(
            "cifar10_samples",
            ["--data-dir", str(tmp_path / "data"), "--no-verify-checksums", "--inception-weights", str(weights),
             "--output-dir", str(tmp_path / "out"), "--no-progress"],
        )
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert "the score's network (inception-v3-compat) is not available" in error and "SHA-256" in error
    assert not (tmp_path / "out" / "checkpoints").exists()  # nothing was trained


def test_a_classifier_file_of_another_network_is_refused(tmp_path, capsys):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(SystemExit):
        sq.main("digits_samples", ["--is-classifier", str(path), "--output-dir", str(tmp_path / "out"), "--no-progress"])
    assert "is not a DigitsClassifier state dict" in capsys.readouterr().err
