"""The trainers' steps: which parameters each step changes, the losses against functional, options, errors."""
import copy
import warnings

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import RunningAverage
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from ignite_igan import functional as F
from ignite_igan.data import SemiSupervisedBatch, SemiSupervisedLoader
from ignite_igan.engines import create_gan_trainer, create_semi_supervised_trainer, gan_step, semi_supervised_step
from ignite_igan.handlers import OneSidedLabelSmoothing
from ignite_igan.models import CIFARDiscriminator, CIFARGenerator
from ignite_igan.optim import ReferenceAdam



@pytest.fixture(autouse=True)
def _one_thread():
    """The models here are tiny: one intra-op thread is faster than two fighting over a busy machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SSL_KEYS = {"loss_labeled", "loss_unlabeled", "loss_discriminator", "loss_generator", "train_error", "D_x", "D_G_z"}


class TinyD(nn.Module):
    """A deterministic discriminator that records each forward call: (batch size, grad enabled, features?)."""

    def __init__(self, in_features=4, hidden=6, num_classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, num_classes)
        self.frozen = nn.Parameter(torch.ones(hidden), requires_grad=False)  # like a frozen weight-norm gain
        self.calls = []

    def forward(self, x, return_features=False):
        self.calls.append((x.shape[0], torch.is_grad_enabled(), return_features))
        features = self.body(x) * self.frozen
        logits = self.head(features)
        return (logits, features) if return_features else logits


class TinyG(nn.Module):
    def __init__(self, z_dim=2, out_features=4):
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Linear(z_dim, out_features)
        self.calls = []

    def sample_noise(self, n, generator=None, device=None):
        return torch.rand(n, self.z_dim, generator=generator, device=device)

    def forward(self, z):
        self.calls.append(torch.is_grad_enabled())
        return self.net(z)


def _params(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _batch(n_lab=4, n_unl=6, in_features=4, num_classes=3):
    return SemiSupervisedBatch(
        torch.randn(n_lab, in_features),
        torch.arange(n_lab) % num_classes,
        torch.randn(n_unl, in_features),
        torch.randn(n_unl, in_features),
    )


def _players(num_classes=3, lr=1e-2):
    gen, disc = TinyG(), TinyD(num_classes=num_classes)
    d_opt = ReferenceAdam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    g_opt = ReferenceAdam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    return gen, disc, d_opt, g_opt


class _FixedNoise:
    """noise_fn that hands out pre-drawn batches, so that a test can replay the step."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.used = []

    def __call__(self, n):
        z = self.batches.pop(0)
        assert z.shape[0] == n
        self.used.append(z)
        return z


# ---------------------------------------------------------------------------------------------------------------
# Semi-supervised trainer
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("generator_loss", ["feature_matching", "minimax"])
def test_semi_supervised_steps_change_only_their_player(generator_loss):
    gen, disc, d_opt, g_opt = _players()
    steps = 1 if generator_loss == "feature_matching" else 3
    trainer = create_semi_supervised_trainer(
        gen, disc, d_opt, g_opt, generator_loss=generator_loss, generator_steps=steps
    )
    snapshots = {"start": (_params(gen), _params(disc))}

    def after_d_step(optimizer, args, kwargs):
        snapshots["after_d"] = (_params(gen), _params(disc))
        assert all(p.grad is None for p in gen.parameters())  # generated samples were constants
        snapshots["d_grads"] = [p.grad.clone() for p in disc.parameters() if p.requires_grad]

    g_snaps = []
    d_opt.register_step_post_hook(after_d_step)
    g_opt.register_step_post_hook(lambda o, a, k: g_snaps.append((_params(gen), _params(disc))))
    out = trainer.run([_batch()], max_epochs=1).output

    start_g, start_d = snapshots["start"]
    mid_g, mid_d = snapshots["after_d"]
    assert _equal(mid_g, start_g)  # D step: generator untouched
    changed = [k for k in start_d if not torch.equal(start_d[k], mid_d[k])]
    assert sorted(changed) == ["body.0.bias", "body.0.weight", "head.bias", "head.weight"]  # not the frozen gain
    assert len(g_snaps) == steps
    previous_g = mid_g
    for g_params, d_params in g_snaps:
        assert _equal(d_params, mid_d)  # G steps: discriminator untouched
        assert not torch.equal(g_params["net.weight"], previous_g["net.weight"])
        previous_g = g_params
    # the G steps' backward passes did not touch the discriminator's gradients
    assert all(torch.equal(a, p.grad) for a, p in zip(snapshots["d_grads"], [p for p in disc.parameters() if p.requires_grad]))
    assert disc.frozen.grad is None
    assert set(out) == SSL_KEYS and all(isinstance(v, float) for v in out.values())


def test_semi_supervised_forward_passes():
    gen, disc, d_opt, g_opt = _players()
    trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt)
    trainer.run([_batch(n_lab=4, n_unl=6)], max_epochs=1)
    # D step: three separate passes (labeled, unlabeled, generated); G step: fake features with gradient, real
    # features without.
    assert disc.calls == [(4, True, False), (6, True, False), (6, True, False), (6, True, True), (6, False, True)]
    assert gen.calls == [False, True]  # samples for the D step are drawn under no_grad


@pytest.mark.parametrize(
    "generator_loss, distance, steps, weight",
    [
        ("feature_matching", "squared_l2", 1, 1.0),
        ("feature_matching", "mean_absolute", 1, 0.5),
        ("feature_matching", "mean_squared", 2, 1.0),
        ("minimax", "squared_l2", 3, 1.0),
    ],
)
@pytest.mark.parametrize("plain_engine", [False, True], ids=["trainer", "step"])
def test_semi_supervised_losses_match_functional(generator_loss, distance, steps, weight, plain_engine):
    gen, disc, d_opt, g_opt = _players()
    gen0, disc0 = copy.deepcopy(gen), copy.deepcopy(disc)
    noise = _FixedNoise(torch.rand(1 + steps, 6, 2).unbind(0))
    options = dict(generator_loss=generator_loss, feature_matching_distance=distance, generator_steps=steps,
                   unlabeled_weight=weight, noise_fn=noise)
    if plain_engine:  # the public step in an Engine of its own: the same step, outputs left as tensors
        trainer = Engine(semi_supervised_step(gen, disc, d_opt, g_opt, **options))
    else:
        trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt, **options)
    disc_after_d, gens_before_g = [], []
    d_opt.register_step_post_hook(lambda o, a, k: disc_after_d.append(copy.deepcopy(disc)))
    g_opt.register_step_pre_hook(lambda o, a, k: gens_before_g.append(copy.deepcopy(gen)))
    batch = _batch()
    out = trainer.run([batch], max_epochs=1).output

    x_lab, y_lab, x_unl, x_unl2 = batch
    z = noise.used
    with torch.no_grad():
        l_lab, l_unl, l_fake = disc0(x_lab), disc0(x_unl), disc0(gen0(z[0]))
        loss_lab, loss_unl = F.semi_supervised_losses(l_lab, y_lab, l_unl, l_fake)
        d1 = disc_after_d[0]
        g_losses = []
        for k in range(steps):
            fake = gens_before_g[k](z[1 + k])
            if generator_loss == "feature_matching":
                g_losses.append(F.feature_matching_loss(d1(x_unl2, True)[1], d1(fake, True)[1], distance))
            else:
                g_losses.append(F.minimax_generator_loss(d1(fake)))
    expected = {
        "loss_labeled": loss_lab,
        "loss_unlabeled": loss_unl,
        "loss_discriminator": loss_lab + weight * loss_unl,
        "loss_generator": torch.stack(g_losses).mean(),
        "train_error": (l_lab.argmax(1) != y_lab).float().mean(),
        "D_x": torch.sigmoid(F.gan_logit(l_unl)).mean(),
        "D_G_z": torch.sigmoid(F.gan_logit(l_fake)).mean(),
    }
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert float(out[key]) == pytest.approx(float(value), rel=1e-6, abs=1e-7), key
        assert isinstance(out[key], Tensor if plain_engine else float), key

    # and the discriminator's update is one ReferenceAdam step on that loss
    replay = copy.deepcopy(disc0)
    replay_opt = ReferenceAdam(replay.parameters(), lr=1e-2, betas=(0.5, 0.999))
    lab, unl = F.semi_supervised_losses(replay(x_lab), y_lab, replay(x_unl), replay(gen0(z[0]).detach()))
    (lab + weight * unl).backward()
    replay_opt.step()
    for p, q in zip(replay.parameters(), d1.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_semi_supervised_reads_real_target_from_engine_state():
    gen, disc, d_opt, g_opt = _players()
    disc0, gen0 = copy.deepcopy(disc), copy.deepcopy(gen)
    noise = _FixedNoise(torch.rand(2, 6, 2).unbind(0))
    trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt, noise_fn=noise)
    OneSidedLabelSmoothing(real_target=0.8).attach(trainer)
    batch = _batch()
    out = trainer.run([batch], max_epochs=1).output
    with torch.no_grad():
        smoothed = F.one_sided_label_smoothing_loss(
            F.gan_logit(disc0(batch.x_unlabeled)), F.gan_logit(disc0(gen0(noise.used[0]))), real_target=0.8
        )
    # the unlabeled loss keeps the reference's halves: 0.5 real + 0.5 fake
    assert out["loss_unlabeled"] == pytest.approx(0.5 * float(smoothed), rel=1e-6)


def test_semi_supervised_trains_paper_models_with_the_loader():
    # A shrunken CIFAR minibatch-discrimination setting: 3 minimax generator steps, loader without second batch.
    gen = CIFARGenerator(widths=(16, 8, 4))
    disc = CIFARDiscriminator(widths=(8, 16), input_corruption="noise", minibatch_kernels=5, minibatch_kernel_dim=3)
    d_opt = ReferenceAdam(disc.parameters(), lr=3e-4, betas=(0.5, 0.999))
    g_opt = ReferenceAdam(gen.parameters(), lr=3e-4, betas=(0.5, 0.999))
    data = TensorDataset(torch.rand(24, 3, 32, 32) * 2 - 1, torch.arange(24) % 10)
    loader = SemiSupervisedLoader(data, labeled_indices=range(10), batch_size=8, seed=0, generator_batch=False)
    trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt, generator_loss="minimax", generator_steps=3)
    RunningAverage(output_transform=lambda out: out["loss_generator"]).attach(trainer, "loss_generator")
    state = trainer.run(loader, max_epochs=1)
    assert state.iteration == 3 and set(state.output) == SSL_KEYS
    assert all(torch.isfinite(torch.tensor(v)) for v in state.output.values())
    assert "loss_generator" in state.metrics
    assert all(g_opt.state[p]["step"] == 9 for p in gen.parameters() if p.requires_grad)


def test_models_are_put_back_in_training_mode():
    gen, disc, d_opt, g_opt = _players()
    trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt)

    @trainer.on(Events.ITERATION_COMPLETED)
    def evaluate(engine):
        disc.eval()
        gen.eval()

    seen = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(None))
    disc.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    trainer.run([_batch(), _batch()], max_epochs=1)
    assert [s for s in seen if s is not None] == [True] * 10


# ---------------------------------------------------------------------------------------------------------------
# GAN trainer
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("generator_loss", ["non_saturating", "minimax", "feature_matching"])
@pytest.mark.parametrize("conditional", [False, True])
def test_gan_trainer_losses_and_players(generator_loss, conditional):
    num_classes = 3 if conditional else 1
    gen, disc, d_opt, g_opt = _players(num_classes=num_classes)
    gen0, disc0 = copy.deepcopy(gen), copy.deepcopy(disc)
    noise = _FixedNoise(torch.rand(2, 5, 2).unbind(0))
    trainer = create_gan_trainer(
        gen, disc, d_opt, g_opt, generator_loss=generator_loss, conditional=conditional, class_weight=0.7,
        noise_fn=noise,
    )
    OneSidedLabelSmoothing(real_target=0.9).attach(trainer)
    disc_after_d, gen_before_g = [], []
    d_opt.register_step_post_hook(lambda o, a, k: disc_after_d.append(copy.deepcopy(disc)))
    g_opt.register_step_pre_hook(lambda o, a, k: gen_before_g.append(copy.deepcopy(gen)))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]) % num_classes
    out = trainer.run([(x, y)], max_epochs=1).output

    with torch.no_grad():
        l_real, l_fake = disc0(x), disc0(gen0(noise.used[0]))
        loss_d = F.one_sided_label_smoothing_loss(F.gan_logit(l_real), F.gan_logit(l_fake), real_target=0.9)
        if conditional:
            loss_lab = nn.functional.cross_entropy(l_real, y)
            loss_d = loss_d + 0.7 * loss_lab
        d1, fake = disc_after_d[0], gen_before_g[0](noise.used[1])
        if generator_loss == "feature_matching":
            loss_g = F.feature_matching_loss(d1(x, True)[1], d1(fake, True)[1])
        elif generator_loss == "minimax":
            loss_g = F.minimax_generator_loss(d1(fake))
        else:
            loss_g = -torch.log(torch.sigmoid(F.gan_logit(d1(fake)))).mean()
    assert out["loss_discriminator"] == pytest.approx(float(loss_d), rel=1e-6)
    assert out["loss_generator"] == pytest.approx(float(loss_g), rel=1e-5)
    assert out["D_x"] == pytest.approx(float(torch.sigmoid(F.gan_logit(l_real)).mean()), rel=1e-6)
    assert out["D_G_z"] == pytest.approx(float(torch.sigmoid(F.gan_logit(l_fake)).mean()), rel=1e-6)
    expected_keys = {"loss_discriminator", "loss_generator", "D_x", "D_G_z"}
    if conditional:
        expected_keys |= {"loss_labeled", "train_error"}
        assert out["loss_labeled"] == pytest.approx(float(loss_lab), rel=1e-6)
        assert out["train_error"] == pytest.approx(float((l_real.argmax(1) != y).float().mean()))
    assert set(out) == expected_keys
    # D's step left G alone and G's step left D alone
    assert _equal(_params(gen_before_g[0]), _params(gen0))
    assert _equal(_params(disc), _params(d1))
    assert not _equal(_params(gen), _params(gen0)) and not _equal(_params(d1), _params(disc0))


def test_gan_trainer_real_target_argument_and_plain_tensor_batches():
    gen, disc, d_opt, g_opt = _players(num_classes=1)
    disc0, gen0 = copy.deepcopy(disc), copy.deepcopy(gen)
    noise = _FixedNoise(torch.rand(2, 5, 2).unbind(0))
    trainer = create_gan_trainer(gen, disc, d_opt, g_opt, real_target=0.75, noise_fn=noise)
    x = torch.randn(5, 4)
    out = trainer.run([x], max_epochs=1).output
    with torch.no_grad():
        expected = F.one_sided_label_smoothing_loss(disc0(x), disc0(gen0(noise.used[0])), real_target=0.75)
    assert out["loss_discriminator"] == pytest.approx(float(expected), rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Options: AMP, compile, output transform
# ---------------------------------------------------------------------------------------------------------------
def test_bf16_autocast_runs_the_forward_passes_in_bfloat16():
    gen, disc, d_opt, g_opt = _players()
    dtypes = []
    disc.head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt, amp="bf16", device="cpu")
    out = trainer.run([_batch(), _batch()], max_epochs=1).output
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert trainer.state.d_scaler is None and trainer.state.g_scaler is None  # bfloat16 needs no loss scaling
    assert all(p.dtype == torch.float32 for p in disc.parameters())


def test_fp16_uses_a_grad_scaler_per_player():
    gen, disc, d_opt, g_opt = _players()
    start = _params(disc)
    trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt, amp="fp16", device="cpu")
    assert isinstance(trainer.state.d_scaler, torch.amp.GradScaler)
    assert trainer.state.g_scaler is not trainer.state.d_scaler
    out = trainer.run([_batch(), _batch()], max_epochs=1).output
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert "scale" in trainer.state.d_scaler.state_dict()
    assert not _equal(start, _params(disc))


def test_compile_gives_the_eager_result():
    def run(compile_option):
        torch.manual_seed(0)
        gen, disc, d_opt, g_opt = _players()
        trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt, compile=compile_option)
        torch.manual_seed(1)
        batches = [_batch(), _batch()]
        out = trainer.run(batches, max_epochs=1).output
        return out, _params(disc), _params(gen)

    eager = run(False)
    compiled = run({"backend": "aot_eager"})
    assert compiled[0] == pytest.approx(eager[0], rel=1e-6)
    for a, b in ((eager[1], compiled[1]), (eager[2], compiled[2])):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_output_transform_can_keep_tensors():
    gen, disc, d_opt, g_opt = _players()
    trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt, output_transform=lambda out: out)
    out = trainer.run([_batch()], max_epochs=1).output
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in out.values())


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(generator_loss="wasserstein"), ValueError,
         r"generator_loss must be one of \('feature_matching', 'minimax'\), got 'wasserstein'"),
        (dict(feature_matching_distance="l3"), ValueError, r"feature_matching_distance must be one of .*'l3'"),
        (dict(generator_steps=0), ValueError, r"generator_steps must be >= 1, got 0"),
        (dict(unlabeled_weight=-1.0), ValueError, r"unlabeled_weight must be >= 0, got -1.0"),
        (dict(unlabeled_weight=float("nan")), ValueError, r"unlabeled_weight must be >= 0"),
        (dict(real_target=1.5), ValueError, r"real_target must be in \(0, 1\], got 1.5"),
        (dict(amp="fp8"), ValueError, r"amp must be .*got 'fp8'"),
        (dict(compile="yes"), TypeError, r"compile must be a bool or a mapping"),
        (dict(fake_batch_size=0), ValueError, r"fake_batch_size must be >= 1 or None, got 0"),
    ],
)
def test_semi_supervised_bad_arguments(kwargs, error, match):
    gen, disc, d_opt, g_opt = _players()
    with pytest.raises(error, match=match):
        create_semi_supervised_trainer(gen, disc, d_opt, g_opt, **kwargs)


def test_bad_models_and_optimizers():
    gen, disc, d_opt, g_opt = _players()
    with pytest.raises(ValueError, match="d_optimizer and g_optimizer must be two optimizers"):
        create_semi_supervised_trainer(gen, disc, d_opt, d_opt)
    with pytest.raises(TypeError, match="discriminator must be a torch.nn.Module, got function"):
        create_gan_trainer(gen, lambda x: x, d_opt, g_opt)
    frozen = torch.optim.SGD([nn.Parameter(torch.zeros(1), requires_grad=False)], lr=0.1)
    with pytest.raises(ValueError, match="g_optimizer has no parameter that requires a gradient"):
        create_semi_supervised_trainer(gen, disc, d_opt, frozen)
    plain_gen = nn.Linear(2, 4)
    with pytest.raises(TypeError, match=r"generator must have a sample_noise\(\) method.*noise_fn=.*got Linear"):
        create_gan_trainer(plain_gen, disc, d_opt, torch.optim.SGD(plain_gen.parameters(), lr=0.1))
    trainer = create_gan_trainer(
        plain_gen, disc, d_opt, torch.optim.SGD(plain_gen.parameters(), lr=0.1), noise_fn=lambda n: torch.rand(n, 2)
    )
    assert trainer.run([torch.randn(3, 4)], max_epochs=1).output["loss_generator"] > 0
    with pytest.raises(ValueError, match="class_weight must be >= 0, got -0.5"):
        create_gan_trainer(gen, disc, d_opt, g_opt, class_weight=-0.5)


def test_bad_batches():
    gen, disc, d_opt, g_opt = _players()
    trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt)
    x_lab, y_lab, x_unl, _ = _batch()
    with pytest.raises(ValueError, match=r"feature matching needs the second unlabeled batch.*generator_batch=True"):
        trainer.run([SemiSupervisedBatch(x_lab, y_lab, x_unl, None)], max_epochs=1)
    trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt)
    with pytest.raises(ValueError, match=r"not enough values to unpack \(expected 4, got 2\)"):  # Python's own
        trainer.run([(x_lab, y_lab)], max_epochs=1)
    trainer = create_gan_trainer(gen, disc, d_opt, g_opt, conditional=True)
    with pytest.raises(TypeError, match=r"y must be a tensor of class indices, got NoneType"):
        trainer.run([x_lab], max_epochs=1)


def test_public_steps_check_their_labels_and_options_on_their_own():
    gen, disc, d_opt, g_opt = _players(num_classes=3)
    step = semi_supervised_step(gen, disc, d_opt, g_opt)
    x_lab, y_lab, x_unl, x_unl2 = _batch()
    start = _params(disc)
    with pytest.raises(ValueError, match=r"y_labeled must hold class indices in \[0, 3\).*got the label 5"):
        Engine(step).run([(x_lab, torch.tensor([0, 1, 5, 2]), x_unl, x_unl2)], max_epochs=1)
    assert _equal(start, _params(disc))
    step.labels.enabled = False  # labels checked elsewhere: the loss's own error (on the CPU)
    with pytest.raises(IndexError, match="out of bounds"):
        Engine(step).run([(x_lab, torch.tensor([0, 1, 5, 2]), x_unl, x_unl2)], max_epochs=1)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 3\).*got the label -1"):
        Engine(gan_step(gen, disc, d_opt, g_opt, class_weight=0.5)).run([(x_lab, y_lab - 1)], max_epochs=1)
    with pytest.raises(ValueError, match="class_weight must be >= 0 or None, got -1.0"):
        gan_step(gen, disc, d_opt, g_opt, class_weight=-1.0)
    with pytest.raises(ValueError, match=r"generator_loss must be one of \('non_saturating', 'minimax', 'feature_matching'\)"):
        gan_step(gen, disc, d_opt, g_opt, generator_loss="wasserstein")


def test_gan_step_with_class_weight_equals_the_conditional_trainer():
    runs = []
    for plain_engine in (False, True):
        torch.manual_seed(0)
        gen, disc, d_opt, g_opt = _players(num_classes=3)
        if plain_engine:
            trainer = Engine(gan_step(gen, disc, d_opt, g_opt, class_weight=0.7, generator_steps=2))
        else:
            trainer = create_gan_trainer(gen, disc, d_opt, g_opt, conditional=True, class_weight=0.7,
                                         generator_steps=2)
        torch.manual_seed(1)
        batches = [(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])) for _ in range(3)]
        out = trainer.run(batches, max_epochs=1).output
        runs.append(({k: float(v) for k, v in out.items()}, _params(gen), _params(disc)))
    (out, g, d), (plain_out, plain_g, plain_d) = runs
    assert out == plain_out and set(out) == {"loss_discriminator", "loss_generator", "D_x", "D_G_z", "loss_labeled",
                                             "train_error"}
    assert _equal(g, plain_g) and _equal(d, plain_d)


# ---------------------------------------------------------------------------------------------------------------
# Optimizers that do not step their player's parameters
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factory", [create_semi_supervised_trainer, create_gan_trainer])
def test_swapped_or_foreign_optimizers_are_refused(factory):
    gen, disc, d_opt, g_opt = _players()
    with pytest.raises(ValueError, match=r"d_optimizer must step the discriminator's parameters, but it holds 2 parameter\(s\) of the generator \('net.weight', 'net.bias'\): are d_optimizer and g_optimizer swapped\?"):
        factory(gen, disc, g_opt, d_opt)
    stale = TinyD()  # e.g. an optimizer built for a model that was then re-created
    with pytest.raises(ValueError, match=r"d_optimizer must step only the discriminator's parameters, but it holds 5 parameter\(s\) of neither model"):
        factory(gen, disc, torch.optim.SGD(stale.parameters(), lr=0.1), g_opt)
    mixed = torch.optim.SGD([*gen.parameters(), disc.head.weight], lr=0.1)
    with pytest.raises(ValueError, match=r"g_optimizer must step the generator's parameters, but it holds 1 parameter\(s\) of the discriminator \('head.weight'\)"):
        factory(gen, disc, d_opt, mixed)


def test_optimizer_missing_trainable_parameters_warns():
    gen, disc, d_opt, g_opt = _players()
    partial = ReferenceAdam(disc.body.parameters(), lr=1e-2)
    with pytest.warns(UserWarning, match=r"d_optimizer does not step 2 trainable parameter\(s\) of the discriminator \('head.weight', 'head.bias'\)"):
        create_semi_supervised_trainer(gen, disc, partial, g_opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the frozen gain of TinyD is not trainable: not missing
        create_gan_trainer(gen, disc, d_opt, g_opt)


def test_optimizer_check_sees_through_data_parallel_wrappers():
    gen, disc, d_opt, g_opt = _players()
    wrapped_gen, wrapped_disc = nn.DataParallel(gen), nn.DataParallel(disc)  # no GPU: calls the module itself
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer = create_semi_supervised_trainer(wrapped_gen, wrapped_disc, d_opt, g_opt, noise_fn=gen.sample_noise)
    with pytest.raises(ValueError, match="d_optimizer must step the discriminator's parameters.*swapped"):
        create_semi_supervised_trainer(wrapped_gen, wrapped_disc, g_opt, d_opt, noise_fn=gen.sample_noise)
    before = _params(gen)
    trainer.run([_batch()], max_epochs=1)
    assert not _equal(before, _params(gen))


def test_optimizer_check_unwraps_distributed_data_parallel(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        gen, disc, d_opt, g_opt = _players()
        ddp_gen = nn.parallel.DistributedDataParallel(gen)
        ddp_disc = nn.parallel.DistributedDataParallel(disc)
        create_gan_trainer(ddp_gen, ddp_disc, d_opt, g_opt)
        with pytest.raises(ValueError, match=r"d_optimizer must step the discriminator's parameters.*generator \('net.weight'"):
            create_gan_trainer(ddp_gen, ddp_disc, g_opt, d_opt)
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------------------
# Labels outside [0, K)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad_label", [3, -1, 7])
@pytest.mark.parametrize("device", [None, "cpu"])
def test_semi_supervised_labels_outside_the_classes_are_refused(bad_label, device):
    gen, disc, d_opt, g_opt = _players(num_classes=3)
    trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt, device=device)
    x_lab, y_lab, x_unl, x_unl2 = _batch()
    y_lab = y_lab.clone()
    y_lab[2] = bad_label
    start = _params(disc)
    with pytest.raises(ValueError, match=rf"y_labeled must hold class indices in \[0, 3\) \(the discriminator has K=3 class logits\), got the label {bad_label}"):
        trainer.run([SemiSupervisedBatch(x_lab, y_lab, x_unl, x_unl2)], max_epochs=1)
    assert _equal(start, _params(disc))  # refused before any step


def test_semi_supervised_labels_from_a_custom_prepare_batch_are_checked_too():
    gen, disc, d_opt, g_opt = _players(num_classes=3)
    trainer = create_semi_supervised_trainer(
        gen, disc, d_opt, g_opt, prepare_batch=lambda batch, device, non_blocking: (*batch[:1], batch[1] + 1, *batch[2:])
    )
    with pytest.raises(ValueError, match=r"y_labeled must hold class indices in \[0, 3\).*got the label 3"):
        trainer.run([_batch(n_lab=3)], max_epochs=1)
    x_lab, y_lab, x_unl, x_unl2 = _batch()
    # a fresh engine per failing run: an engine stopped by an exception would not run its epoch again
    with pytest.raises(TypeError, match=r"y_labeled must be an integer tensor of class indices, got dtype torch.float32"):
        create_semi_supervised_trainer(gen, disc, d_opt, g_opt).run(
            [SemiSupervisedBatch(x_lab, y_lab.float(), x_unl, x_unl2)], max_epochs=1
        )
    with pytest.raises(TypeError, match=r"y_labeled must be a tensor of class indices, got list"):
        create_semi_supervised_trainer(gen, disc, d_opt, g_opt).run(
            [SemiSupervisedBatch(x_lab, y_lab.tolist(), x_unl, x_unl2)], max_epochs=1
        )


@pytest.mark.parametrize("bad_label", [3, -2])
def test_conditional_gan_labels_outside_the_classes_are_refused(bad_label):
    gen, disc, d_opt, g_opt = _players(num_classes=3)
    trainer = create_gan_trainer(gen, disc, d_opt, g_opt, conditional=True, device="cpu")
    start = _params(disc)
    with pytest.raises(ValueError, match=rf"y must hold class indices in \[0, 3\).*got the label {bad_label}"):
        trainer.run([(torch.randn(4, 4), torch.tensor([0, 1, bad_label, 2]))], max_epochs=1)
    assert _equal(start, _params(disc))
    with pytest.raises(TypeError, match=r"y must be an integer tensor of class indices, got dtype torch.float32"):
        create_gan_trainer(gen, disc, d_opt, g_opt, conditional=True).run(
            [(torch.randn(4, 4), torch.tensor([0.0, 1.0, 2.0, 0.0]))], max_epochs=1
        )
    # unconditional: the labels are not used, so not checked
    plain = create_gan_trainer(gen, disc, d_opt, g_opt)
    plain.run([(torch.randn(4, 4), torch.tensor([0, 1, bad_label, 2]))], max_epochs=1)


def test_bf16_autocast_with_the_paper_layers():
    # The weight-normalized, minibatch and batch-norm layers see bfloat16 activations with float32 weights
    # under autocast: their dtype check must let that through.
    gen = CIFARGenerator(widths=(16, 8, 4))
    disc = CIFARDiscriminator(widths=(8, 16), input_corruption="noise", minibatch_kernels=5, minibatch_kernel_dim=3)
    d_opt = ReferenceAdam(disc.parameters(), lr=3e-4, betas=(0.5, 0.999))
    g_opt = ReferenceAdam(gen.parameters(), lr=3e-4, betas=(0.5, 0.999))
    data = TensorDataset(torch.rand(16, 3, 32, 32) * 2 - 1, torch.arange(16) % 10)
    loader = SemiSupervisedLoader(data, labeled_indices=range(10), batch_size=8, seed=0, generator_batch=False)
    trainer = create_semi_supervised_trainer(
        gen, disc, d_opt, g_opt, generator_loss="minimax", amp="bf16", device="cpu"
    )
    state = trainer.run(loader, max_epochs=1)
    assert all(torch.isfinite(torch.tensor(v)) for v in state.output.values())
    assert all(p.dtype == torch.float32 for p in disc.parameters())


def test_label_range_cache_only_for_the_same_unmodified_tensor(monkeypatch):
    # Device-resident labels are read back once per tensor (CPU tensors are never cached: reading them is free).
    from ignite_igan.engines import _ClassLabels

    reads = []
    aminmax = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda t: reads.append(t) or aminmax(t))
    check = _ClassLabels("y")
    labels = torch.tensor([0, 4, 2])
    assert check._device_range(labels) == (0, 4) and len(reads) == 1
    assert check._device_range(labels) == (0, 4) and len(reads) == 1  # the same tensor: not read again
    assert check._device_range(labels.clone()) == (0, 4) and len(reads) == 2  # another tensor, same values: read
    labels[0] = 9  # modified in place: the version counter moves
    assert check._device_range(labels) == (2, 9) and len(reads) == 3
