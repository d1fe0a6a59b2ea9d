"""The mixture recipe run as a user runs it, the experiment it assembles, and the package's mixture parts.

The recipe's runs are short (tens of iterations) but real: every technique switch on, the reference's
data-dependent init of the minibatch layer, the mode-coverage metric after every epoch, TensorBoard, checkpoints
and the summary. The networks (:mod:`ignite_igan.models`), the data stream (:mod:`ignite_igan.data`) and the
batch-mean init of the minibatch layer (:mod:`ignite_igan.nn`) are tested from the package.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import numpy as np

from ignite_igan.data import MixtureStream
from ignite_igan.logging import read_hparams
from ignite_igan.metrics.mode_coverage import grid_mixture, mode_coverage, ring_mixture
from ignite_igan.models import MixtureDiscriminator, MixtureGenerator
from ignite_igan.nn import MinibatchDiscrimination, data_dependent_init, minibatch_batch_mean_init
from tests.hold_after_checkpoint import kill_after_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "mixture.py"
sys.path.insert(0, str(ROOT / "recipes"))
import mixture as recipe  # noqa: E402 (recipes/mixture.py, imported as a module)
from mixture import MixtureConfig, create_experiment  # noqa: E402
# Every stateful part is exercised: all four techniques, the minibatch layer's data-dependent init.
RUN = [
    "--mixture", "ring", "--all-techniques", "--minibatch-init", "data", "--init-samples", "200",
    "--epochs", "3", "--iterations-per-epoch", "40", "--decay-epochs", "2", "--eval-samples", "500",
    "--generator-hidden", "32", "--discriminator-hidden", "32",
]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run_recipe(*args, check=True):
    result = subprocess.run(
        [sys.executable, str(RECIPE), *map(str, args)], capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mixture failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _summary(output_dir):
    return json.loads((Path(output_dir) / "summary.json").read_text())


def _parameters(output_dir, epoch):
    state = torch.load(Path(output_dir) / "checkpoints" / f"checkpoint_{epoch}.pt", weights_only=True)
    return {f"{model}.{k}": v for model in ("generator", "discriminator") for k, v in state[model].items()}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted run, with the progress bar on (as a user sees it)."""
    out = tmp_path_factory.mktemp("mixture") / "straight"
    result = run_recipe(*RUN, "--output-dir", out)
    return out, result


def test_recipe_runs_for_real_and_writes_everything(straight):
    out, result = straight
    assert "epoch 3/3  iteration 120" in result.stderr  # the progress: a line per epoch when not on a terminal
    assert "modes " in result.stderr  # with the epoch's mode coverage
    assert "mixture ring: minibatch_discrimination, feature_matching" in result.stdout  # the report

    summary = _summary(out)
    metrics = summary["metrics"]
    assert summary["iterations"] == 120 and summary["seeds"] == {"seed": 1}
    assert summary["techniques"] == [
        "minibatch_discrimination", "feature_matching", "label_smoothing", "historical_averaging"
    ]
    assert summary["config"]["mixture"] == "ring" and summary["config"]["minibatch_init"] == "data"
    assert len(metrics["counts"]) == 8 and sum(metrics["counts"]) == round(metrics["high_quality"] * 500)
    assert 0 <= metrics["modes"] <= metrics["modes_any"] <= 8 and metrics["min_count"] == 4
    # KL(p || uniform) of the recorded histogram, in NumPy (log 8 when no sample is of high quality).
    counts = np.asarray(metrics["counts"], dtype=np.float64)
    p = counts[counts > 0] / counts.sum() if counts.sum() else None
    expected_kl = float((p * np.log(8 * p)).sum()) if p is not None else float(np.log(8))
    assert metrics["kl"] == pytest.approx(expected_kl, rel=1e-6, abs=1e-9)
    assert (out / "samples.png").stat().st_size > 1000
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["checkpoint_2.pt", "checkpoint_3.pt"]

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {
        "training/loss_discriminator", "training/loss_generator", "training/real_target",
        "training/historical_penalty_d", "training/historical_penalty_g", "d_optimizer/lr/group_0",
        "coverage/coverage", "coverage/coverage_any", "coverage/coverage_high_quality", "coverage/coverage_kl",
    }
    assert expected <= scalars, expected - scalars
    per_epoch = events.Scalars("coverage/coverage_any")
    assert [e.step for e in per_epoch] == [40, 80, 120]
    assert per_epoch[-1].value == metrics["modes_any"]  # the last epoch's score is the summary's
    assert events.Tags()["images"] == ["samples"]
    # The learning rate decays linearly over the last two epochs: 1, 1, then 1/2.
    lrs = {e.step: e.value for e in events.Scalars("d_optimizer/lr/group_0")}
    assert lrs[40] == pytest.approx(1e-3) and lrs[120] == pytest.approx(5e-4)
    # the HParams row: the resolved switches and the final coverage (also as scalars at the last iteration)
    for key in ("modes", "modes_any", "high_quality", "kl"):
        (event,) = events.Scalars(f"final/{key}")
        assert event.step == 120 and event.value == pytest.approx(metrics[key]), key
    hparams = read_hparams(out / "tensorboard")
    assert hparams["experiment"] == "mixture" and hparams["mixture"] == "ring" and hparams["epochs"] == 3
    assert hparams["feature_matching"] == 1 and hparams["decay_epochs"] == 2 and hparams["seed"] == 1
    assert "data_scale" not in hparams  # None (the mixture's extent) has no HParams type


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters(straight, tmp_path):
    expected_dir, _ = straight
    killed = tmp_path / "killed"
    kill_after_checkpoint(RECIPE, [*RUN, "--no-progress", "--output-dir", killed], epoch=1, marker=tmp_path / "held",
                          env=_env(), cwd=ROOT)
    assert (killed / "checkpoints" / "checkpoint_1.pt").is_file() and not (killed / "summary.json").exists()
    assert json.loads((killed / "run.json").read_text())["status"] == "training"

    resumed = run_recipe(*RUN, "--no-progress", "--output-dir", killed, "--resume")
    assert resumed.returncode == 0
    expected, got = _parameters(expected_dir, 3), _parameters(killed, 3)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert _summary(killed)["metrics"] == _summary(expected_dir)["metrics"]
    assert _summary(killed)["resumed_from"].endswith("checkpoint_1.pt")  # killed at a known point: no race


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--mixture", "spiral"], "--mixture: invalid choice: 'spiral'"),
        (["--epochs", "0"], "--epochs: expected a positive integer, got '0'"),
        (["--real-target", "1.5"], "--real-target: expected a number in (0, 1], got '1.5'"),
        (["--real-target", "1"], "real_target must be in (0.0, 1.0), got 1.0"),
        (["--historical-weight", "-1"], "--historical-weight: expected a finite number >= 0, got '-1'"),
        (["--minibatch-kernels", "0"], "--minibatch-kernels: expected a positive integer, got '0'"),
        (["--feature-matching", "--generator-loss", "minimax"], "--generator-loss minimax conflicts with --feature-matching"),
        (["--all-techniques", "--generator-loss", "minimax"], "--generator-loss minimax conflicts with --feature-matching"),
        (["--epochs", "2", "--decay-epochs", "3"], "--lr-decay-epochs must be <= --epochs (2), got 3"),
        # the batch size is checked once, by MixtureConfig, in every setting
        (["--minibatch-discrimination", "--batch-size", "1"], "batch_size must be >= 2, got 1"),
        (["--minibatch-init", "median"], "--minibatch-init: invalid choice: 'median'"),
        (["--data-scale", "0"], "--data-scale"),
    ],
)
def test_bad_flags_fail_before_anything_runs(argv, expected, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        recipe.main([*argv, "--output-dir", str(tmp_path / "never")])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_resume_without_a_checkpoint_says_so(tmp_path):
    result = run_recipe("--resume", "--output-dir", tmp_path / "empty", "--epochs", "1", "--no-progress", check=False)
    assert result.returncode == 2
    assert "holds no run to resume" in result.stderr and "run once without --resume first" in result.stderr


def test_config_checks_name_the_argument():
    with pytest.raises(ValueError, match="mixture must be one of .* got 'spiral'"):
        MixtureConfig(mixture="spiral")
    with pytest.raises(ValueError, match=r"real_target must be in \(0.0, 1.0\), got 1.0"):
        MixtureConfig(real_target=1.0)
    with pytest.raises(TypeError, match="feature_matching must be a bool"):
        MixtureConfig(feature_matching=1)
    with pytest.raises(ValueError, match="minibatch_init must be one of"):
        MixtureConfig(minibatch_init="reference")
    with pytest.raises(TypeError, match="config must be a MixtureConfig"):
        create_experiment({"mixture": "ring"})
    with pytest.raises(ValueError, match=r"data_scale must be in \(0.0, inf\), got -2.0"):
        MixtureConfig(data_scale=-2.0)


def test_stream_resumes_with_the_same_batches():
    stream = MixtureStream(ring_mixture(), batch_size=7, seed=3)
    iterator = iter(stream)
    next(iterator)
    state = {key: value.clone() for key, value in stream.state_dict().items()}
    expected = [next(iterator) for _ in range(3)]
    fresh = MixtureStream(ring_mixture(), batch_size=7, seed=99)
    fresh.load_state_dict(state)
    got = [batch for batch, _ in zip(fresh, range(3))]
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    other_rank = next(iter(MixtureStream(ring_mixture(), batch_size=7, seed=3, rank=1)))
    assert not torch.equal(other_rank, next(iter(MixtureStream(ring_mixture(), batch_size=7, seed=3))))


def test_settings_share_the_generator_and_the_data_for_a_seed():
    """Paired seeds: every setting starts from the same generator and sees the same real batches."""
    built = []
    for switches in ({}, {"minibatch_discrimination": True}, {"feature_matching": True, "historical_averaging": True}):
        torch.manual_seed(5)
        experiment = create_experiment(MixtureConfig(seed=5, generator_hidden=16, discriminator_hidden=16, **switches))
        built.append((experiment.generator.state_dict(), next(iter(experiment.data))))
    for state, batch in built[1:]:
        assert all(torch.equal(state[k], built[0][0][k]) for k in state)
        assert torch.equal(batch, built[0][1])


def test_evaluator_scores_the_samples_of_evaluate():
    torch.manual_seed(0)
    experiment = create_experiment(
        MixtureConfig(epochs=1, iterations_per_epoch=3, decay_epochs=0, eval_samples=300, generator_hidden=16,
                      discriminator_hidden=16)
    )
    experiment.run()
    direct = mode_coverage(experiment.samples(), experiment.mixture.centers, experiment.mixture.std)
    metrics = experiment.evaluator().run()
    assert metrics["coverage"] == direct["modes"] and metrics["coverage_any"] == direct["modes_any"]
    assert metrics["coverage_high_quality"] == direct["high_quality"] and metrics["coverage_kl"] == direct["kl"]


def test_discriminator_features_are_what_feature_matching_compares():
    disc = MixtureDiscriminator(hidden=8, layers=2, minibatch_kernels=4, minibatch_kernel_dim=2)
    x = torch.randn(6, 2)
    logits, features = disc(x, return_features=True)
    assert features.shape == (6, 8 + 4)
    assert torch.allclose(logits, disc.out(features).squeeze(1))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2\), got \(6, 3\)"):
        disc(torch.randn(6, 3))


def test_reference_init_blinds_the_minibatch_layer_to_a_collapse_wider_than_a_mode():
    """Why the recipe leaves the minibatch layer's scale alone by default (module documentation).

    After the reference's init on real ring data, a generated batch collapsed onto one region of std 0.3 (fifteen
    times a mode's std, but a fraction of the distance between modes) gets the same minibatch features as a batch
    spread over the whole plane: none, because every distance is many kernel lengths. At the layer's init-time
    scale the same collapsed batch lights the features up.
    """
    mixture = ring_mixture()
    g = torch.Generator().manual_seed(0)
    collapsed = mixture.centers[0].float() + 0.3 * torch.randn(100, 2, generator=g)
    spread = 3 * torch.randn(100, 2, generator=g)

    def minibatch_features(disc, x):
        return disc.minibatch(disc.body(x))[:, -disc.minibatch.num_kernels:] - disc.minibatch.bias

    torch.manual_seed(0)
    disc = MixtureDiscriminator(hidden=128, layers=2, minibatch_kernels=5, minibatch_kernel_dim=3)
    with torch.no_grad():
        at_init = minibatch_features(disc, collapsed).mean(), minibatch_features(disc, spread).mean()
        data_dependent_init(disc, mixture.sample(500, generator=g))
        after = minibatch_features(disc, collapsed).mean(), minibatch_features(disc, spread).mean()
    assert at_init[0] > 2 * at_init[1] and at_init[0] > 50.0  # a collapse stands out at the init-time scale
    assert after[0] < 0.05 and after[1] < 0.05  # after the reference's init both look alike: no signal


def test_networks_work_in_units_of_the_data_scale():
    """The discriminator sees x / s and the generator emits s times its last layer; by default s is the mixture's
    largest absolute centre coordinate (ring 2, grid 4), and data_scale overrides it."""
    torch.manual_seed(0)
    raw, scaled = MixtureDiscriminator(hidden=8, layers=2), MixtureDiscriminator(hidden=8, layers=2, scale=4.0)
    scaled.load_state_dict(raw.state_dict())
    x = torch.randn(5, 2)
    assert torch.allclose(scaled(x), raw(x / 4.0))
    gen_raw, gen_scaled = MixtureGenerator(z_dim=3, hidden=8, layers=2), MixtureGenerator(z_dim=3, hidden=8, layers=2, scale=4.0)
    gen_scaled.load_state_dict(gen_raw.state_dict())
    z = torch.randn(5, 3)
    assert torch.allclose(gen_scaled(z), 4.0 * gen_raw(z))
    small = dict(generator_hidden=8, discriminator_hidden=8)
    for config, expected in (
        (MixtureConfig(mixture="ring", **small), 2.0),
        (MixtureConfig(mixture="grid", **small), 4.0),
        (MixtureConfig(mixture="grid", data_scale=1.0, **small), 1.0),
    ):
        experiment = create_experiment(config)
        assert experiment.generator.scale == expected and experiment.discriminator.scale == expected
    with pytest.raises(ValueError, match=r"scale must be > 0, got 0.0"):
        MixtureGenerator(scale=0.0)


def test_batch_mean_init_sets_the_mean_pairwise_distance_against_numpy():
    """NumPy oracle from the definition: M = body(x / s) T; every kernel's mean L1 distance over the ordered pairs
    i != j becomes 2, and the bias centres o[i, b] = sum_{j != i} exp(-d[i, j, b]) on the batch."""
    torch.manual_seed(0)
    disc = MixtureDiscriminator(hidden=16, layers=2, minibatch_kernels=4, minibatch_kernel_dim=3, scale=4.0).double()
    x = grid_mixture().sample(60, generator=torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        before = minibatch_batch_mean_init(disc.minibatch, disc.body(x / disc.scale))
    with torch.no_grad():
        h = disc.body(x / 4.0).numpy()
        t = disc.minibatch.projection().numpy()
    m = np.einsum("na,abc->nbc", h, t)
    d = np.abs(m[:, None] - m[None, :]).sum(axis=3)  # (N, N, B)
    n = len(x)
    mean = d.sum(axis=(0, 1)) / (n * (n - 1))
    np.testing.assert_allclose(mean, 2.0, rtol=1e-10)
    o = np.exp(-d).sum(axis=1) - 1.0
    np.testing.assert_allclose(disc.minibatch.bias.detach().numpy(), -o.mean(axis=0), rtol=1e-10)
    assert before.shape == (4,) and bool((before > 0).all()) and not torch.allclose(before, torch.full((4,), 2.0).double())
    features = disc(x, return_features=True)[1][:, -4:].detach().numpy()
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-10)
    with pytest.raises(TypeError, match="layer must be a MinibatchDiscrimination, got NoneType"):
        minibatch_batch_mean_init(MixtureDiscriminator(hidden=4, layers=1).minibatch, x)  # no minibatch layer
    with pytest.raises(ValueError, match="at least 2 examples"):
        minibatch_batch_mean_init(disc.minibatch, disc.body(x[:1] / disc.scale))
    with pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(\d+x2 and 16x\d+\)"):
        minibatch_batch_mean_init(disc.minibatch, x)  # the points, not what feeds the layer
    with pytest.raises(ValueError, match="target must be > 0"):
        minibatch_batch_mean_init(disc.minibatch, disc.body(x / disc.scale), target=0.0)


def test_batch_mean_init_does_not_depend_on_what_feeds_the_layer():
    """The init reads only the features it is given: a bare layer on arbitrary features, a zero-distance kernel
    refused, and any target."""
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(5, num_kernels=2, kernel_dim=3)
    features = 10.0 * torch.randn(30, 5)
    minibatch_batch_mean_init(layer, features, target=0.5)
    m = (features @ layer.projection().flatten(1)).view(30, 2, 3)
    mean = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(dim=3).sum(dim=(0, 1)) / (30 * 29)
    torch.testing.assert_close(mean, torch.full((2,), 0.5))
    torch.testing.assert_close(layer(features)[:, 5:].mean(dim=0), torch.zeros(2), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="see identical examples"):
        minibatch_batch_mean_init(layer, torch.ones(4, 5))


def test_batch_mean_init_runs_in_the_experiment():
    torch.manual_seed(0)
    config = MixtureConfig(mixture="grid", minibatch_discrimination=True, minibatch_init="batch_mean",
                           init_samples=100, generator_hidden=16, discriminator_hidden=16, epochs=1,
                           iterations_per_epoch=2, decay_epochs=0)
    experiment = create_experiment(config)
    layer = experiment.discriminator.minibatch
    assert not torch.equal(layer.log_weight_scale.detach(), torch.zeros_like(layer.log_weight_scale))
    assert experiment.run().iteration == 2
