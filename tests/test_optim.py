"""ReferenceAdam against a NumPy oracle of the reference update (spec §1.2), and the reference LR schedules."""
import copy

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from ignite_igan.optim import (
    EpochLRScheduler,
    ReferenceAdam,
    cifar10_lr_factor,
    linear_decay_factor,
    svhn_lr_factor,
)


def numpy_reference_adam(params, grads_per_step, lr, beta1, beta2=0.999):
    """adam_updates of mnist_svhn_cifar10/nn.py, written from spec §1.2 in float64 NumPy."""
    params = [p.copy() for p in params]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            m1[i] = beta1 * m1[i] + (1.0 - beta1) * g
            m2[i] = beta2 * m2[i] + (1.0 - beta2) * g**2
            m1_hat = m1[i] / (1.0 - beta1**t)
            m2_hat = m2[i] / (1.0 - beta2**t)
            params[i] = params[i] - lr * m1_hat / np.sqrt(m2_hat + 1e-8)
    return params


def _random_problem(rng, scale):
    shapes = [(3, 4), (5,), (2, 1, 3, 3)]
    params = [rng.standard_normal(s) for s in shapes]
    grads = [[scale * rng.standard_normal(s) for s in shapes] for _ in range(6)]
    return params, grads


@pytest.mark.parametrize("scale", [1.0, 1e-5])
def test_matches_numpy_oracle(scale):
    rng = np.random.default_rng(0)
    params_np, grads_np = _random_problem(rng, scale)
    params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params_np]
    # two groups with different learning rates, as with per-player optimizers
    opt = ReferenceAdam([{"params": params[:2]}, {"params": params[2:], "lr": 0.01}], lr=3e-3, betas=(0.5, 0.999))
    for grads in grads_np:
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
    expected_a = numpy_reference_adam(params_np[:2], [g[:2] for g in grads_np], lr=3e-3, beta1=0.5)
    expected_b = numpy_reference_adam(params_np[2:], [g[2:] for g in grads_np], lr=0.01, beta1=0.5)
    for p, e in zip(params, expected_a + expected_b):
        np.testing.assert_allclose(p.detach().numpy(), e, rtol=1e-12, atol=1e-13)
    assert all(opt.state[p]["step"] == 6 for p in params)


def test_epsilon_inside_sqrt_differs_from_torch_adam_on_small_gradients():
    # |g| ~ 1e-5: sqrt(g² + 1e-8) ~ 1e-4 while sqrt(g²) + 1e-8 ~ 1e-5, so the steps differ by ~10x.
    p_ref = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    p_torch = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    ours = ReferenceAdam([p_ref], lr=1e-3, betas=(0.5, 0.999))
    theirs = torch.optim.Adam([p_torch], lr=1e-3, betas=(0.5, 0.999), eps=1e-8)
    g = torch.full((4,), 1e-5, dtype=torch.float64)
    p_ref.grad, p_torch.grad = g.clone(), g.clone()
    ours.step()
    theirs.step()
    expected = -1e-3 * 1e-5 / np.sqrt(1e-10 + 1e-8)
    np.testing.assert_allclose(p_ref.detach().numpy(), expected, rtol=1e-12)
    assert not torch.allclose(p_ref, p_torch, rtol=0.1)


def test_float32_close_to_oracle():
    rng = np.random.default_rng(1)
    params_np, grads_np = _random_problem(rng, 1.0)
    params = [torch.nn.Parameter(torch.from_numpy(p).float()) for p in params_np]
    opt = ReferenceAdam(params, lr=3e-4, betas=(0.5, 0.999))
    for grads in grads_np:
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g).float()
        opt.step()
    for p, e in zip(params, numpy_reference_adam(params_np, grads_np, lr=3e-4, beta1=0.5)):
        np.testing.assert_allclose(p.detach().double().numpy(), e, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = ReferenceAdam(model.parameters(), lr=1e-2, betas=(0.5, 0.999))
    data = [torch.randn(8, 4) for _ in range(6)]

    def step(m, o, x):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()

    for x in data[:3]:
        step(model, opt, x)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for x in data[3:]:
        step(model, opt, x)

    resumed = torch.nn.Linear(4, 3)
    resumed.load_state_dict(saved_model)
    resumed_opt = ReferenceAdam(resumed.parameters(), lr=1e-2, betas=(0.5, 0.999))
    resumed_opt.load_state_dict(saved_opt)
    for x in data[3:]:
        step(resumed, resumed_opt, x)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_step_hooks_run_and_can_change_gradients():
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = ReferenceAdam([p], lr=0.1)
    calls = []

    def pre_hook(optimizer, args, kwargs):
        calls.append("pre")
        p.grad = torch.tensor([1.0, -1.0], dtype=torch.float64)  # e.g. a penalty's gradient

    opt.register_step_pre_hook(pre_hook)
    opt.register_step_post_hook(lambda optimizer, args, kwargs: calls.append("post"))
    p.grad = torch.zeros(2, dtype=torch.float64)
    opt.step()
    assert calls == ["pre", "post"]
    # first step moves by lr * sign(g) * |g| / sqrt(g² + 1e-8)
    np.testing.assert_allclose(p.detach().numpy(), [-0.1 / np.sqrt(1 + 1e-8), 0.1 / np.sqrt(1 + 1e-8)])


def test_parameters_without_gradient_are_skipped_with_their_own_counters():
    a = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = ReferenceAdam([a, b], lr=0.1, betas=(0.5, 0.999))
    a.grad = torch.ones(2, dtype=torch.float64)
    opt.step()
    assert b not in opt.state and torch.equal(b, torch.ones(2, dtype=torch.float64))
    b.grad = torch.ones(2, dtype=torch.float64)
    opt.step()
    assert opt.state[a]["step"] == 2 and opt.state[b]["step"] == 1
    # b's first update uses t = 1 even though the optimizer has stepped twice
    expected_b = numpy_reference_adam([np.ones(2)], [[np.ones(2)]], lr=0.1, beta1=0.5)[0]
    np.testing.assert_allclose(b.detach().numpy(), expected_b, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-1e-3), "lr must be >= 0"),
        (dict(betas=(1.0, 0.999)), r"betas\[0\] must be in \[0, 1\)"),
        (dict(betas=(0.5, -0.1)), r"betas\[1\]"),
        (dict(betas=0.5), "betas must be a pair"),
        (dict(eps=-1.0), "eps must be >= 0"),
        (dict(lr=float("nan")), "lr must be >= 0"),
    ],
)
def test_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReferenceAdam([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_reference_schedule_values():
    for epoch in [0, 1, 399, 800, 801, 999, 1199]:
        assert cifar10_lr_factor(epoch) == min(3.0 - epoch / 400.0, 1.0)
    for epoch in [0, 600, 601, 899]:
        assert svhn_lr_factor(epoch) == min(3.0 - epoch / 300.0, 1.0)
    assert cifar10_lr_factor(800) == 1.0 and cifar10_lr_factor(1000) == 0.5
    assert svhn_lr_factor(750) == 0.5
    assert abs(cifar10_lr_factor(1199) - 0.0025) < 1e-12
    # paper-era MNIST: 0.001 * min(3 - epoch/100, 1) over 300 epochs
    assert linear_decay_factor(250, total_epochs=300, decay_epochs=100) == 0.5


def test_schedule_bad_input():
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        cifar10_lr_factor(-1)
    with pytest.raises(TypeError, match="epoch must be an int"):
        cifar10_lr_factor(1.5)
    with pytest.raises(ValueError, match="decay_epochs must be in"):
        linear_decay_factor(0, total_epochs=10, decay_epochs=11)


def test_factor_works_as_torch_lambda_lr():
    opt = ReferenceAdam([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, cifar10_lr_factor)
    seen = []
    for epoch in range(1200):
        seen.append(opt.param_groups[0]["lr"])
        if epoch < 1199:
            opt.step()
            scheduler.step()
    np.testing.assert_allclose(seen, [3e-4 * min(3 - e / 400, 1) for e in range(1200)], rtol=1e-12)


def _lr_trace(max_epochs, resume_at=None, epoch_length=5):
    """LRs seen per iteration by a trainer with EpochLRScheduler on two optimizers, optionally resumed."""
    factor = lambda epoch: min(3 - epoch / 2, 1)  # noqa: E731  constant 4 epochs, then decays to 0 at 6

    def make():
        d_opt = ReferenceAdam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        g_opt = ReferenceAdam([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
        seen = []
        trainer = Engine(lambda e, b: seen.append((d_opt.param_groups[0]["lr"], g_opt.param_groups[0]["lr"])))
        EpochLRScheduler([d_opt, g_opt], factor).attach(trainer)
        return trainer, d_opt, g_opt, seen

    trainer, d_opt, g_opt, seen = make()
    data = list(range(epoch_length))
    if resume_at is None:
        trainer.run(data, max_epochs=max_epochs)
        return seen
    saved = {}

    @trainer.on(Events.ITERATION_COMPLETED(once=resume_at))
    def _save_and_stop(engine):
        saved.update(trainer=engine.state_dict(), d=copy.deepcopy(d_opt.state_dict()), g=copy.deepcopy(g_opt.state_dict()))
        engine.terminate()

    trainer.run(data, max_epochs=max_epochs)
    trainer2, d_opt2, g_opt2, seen2 = make()
    trainer2.load_state_dict(saved["trainer"])
    d_opt2.load_state_dict(saved["d"])
    g_opt2.load_state_dict(saved["g"])
    trainer2.run(data)
    return seen + seen2


def test_epoch_scheduler_values_and_mid_epoch_resume():
    uninterrupted = _lr_trace(6)
    expected = [(min(3 - e / 2, 1) * 1.0, min(3 - e / 2, 1) * 2.0) for e in range(6) for _ in range(5)]
    assert uninterrupted == expected
    assert _lr_trace(6, resume_at=13) == uninterrupted  # mid-epoch
    assert _lr_trace(6, resume_at=15) == uninterrupted  # epoch boundary


def test_epoch_scheduler_bad_input():
    opt = ReferenceAdam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(TypeError, match="lr_lambda must be callable"):
        EpochLRScheduler(opt, 0.5)
    with pytest.raises(ValueError, match="optimizers must hold at least one"):
        EpochLRScheduler([], cifar10_lr_factor)
    with pytest.raises(TypeError, match=r"optimizers\[0\] must be a torch optimizer"):
        EpochLRScheduler([object()], cifar10_lr_factor)
    trainer = Engine(lambda e, b: None)
    EpochLRScheduler(opt, lambda epoch: -1.0).attach(trainer)
    with pytest.raises(ValueError, match=r"lr_lambda\(0\) must be >= 0, got -1.0"):
        trainer.run([0], max_epochs=1)
