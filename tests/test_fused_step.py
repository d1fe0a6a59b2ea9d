"""The fused step: the evaluation average inside the step, capturable optimizers, compiled and CUDA-graph steps,
each compared with the exact eager step."""
import pytest
import torch
from ignite.engine import Events
from torch.utils.data import TensorDataset

from ignite_igan.data import SemiSupervisedLoader
from ignite_igan.engines import create_semi_supervised_trainer, outputs_on_device
from ignite_igan.handlers import EvaluationAveraging
from ignite_igan.models import digits_discriminator, digits_generator
from ignite_igan.optim import ReferenceAdam


def _setup(device="cpu", in_step=False, capturable=False, ema_reference=False, lr=3e-3, **trainer_kwargs):
    torch.manual_seed(0)
    generator, discriminator = digits_generator().to(device), digits_discriminator().to(device)
    d_opt = ReferenceAdam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999), capturable=capturable)
    g_opt = ReferenceAdam(generator.parameters(), lr=lr, betas=(0.5, 0.999), capturable=capturable)
    averaging = EvaluationAveraging(discriminator, rate=0.05, bias_correction=not ema_reference)
    hooks = {}
    if in_step:
        hooks["before_step" if ema_reference else "after_step"] = [averaging.step_update]
    trainer = create_semi_supervised_trainer(
        generator, discriminator, d_opt, g_opt, feature_matching_distance="mean_squared", device=device,
        output_transform=outputs_on_device, **hooks, **trainer_kwargs)
    if not in_step:
        averaging.attach(trainer, Events.ITERATION_STARTED if ema_reference else Events.ITERATION_COMPLETED)
    data = TensorDataset(torch.rand(200, 64, generator=torch.Generator().manual_seed(1)), torch.arange(200) % 10)
    loader = SemiSupervisedLoader(data, labeled_indices=range(20), batch_size=20, seed=1)
    return trainer, loader, generator, discriminator, averaging


def _state(generator, discriminator, averaging):
    tensors = {f"g.{k}": v for k, v in generator.state_dict().items()}
    tensors.update({f"d.{k}": v for k, v in discriminator.state_dict().items()})
    tensors.update({f"avg.{k}": v for k, v in averaging.averaged_model.state_dict().items()})
    return {k: v.detach().cpu() for k, v in tensors.items()}


@pytest.mark.parametrize("ema_reference", [False, True])
def test_average_inside_the_step_equals_the_attached_handler(ema_reference):
    runs = []
    for in_step, capturable in ((False, False), (True, True)):
        trainer, loader, g, d, averaging = _setup(in_step=in_step, capturable=capturable,
                                                  ema_reference=ema_reference)
        trainer.run(loader, max_epochs=3)  # 30 iterations
        runs.append((_state(g, d, averaging), averaging.num_updates))
    (exact, count), (fused, fused_count) = runs
    assert count == fused_count == 30
    for key in exact:
        torch.testing.assert_close(fused[key], exact[key], rtol=1e-4, atol=1e-5, msg=key)


def test_step_update_and_attach_exclude_each_other():
    trainer, _, _, _, averaging = _setup()
    with pytest.raises(RuntimeError, match="attached to an engine already"):
        averaging.step_update()
    _, _, _, d, fused = _setup(in_step=True)
    fused.step_update()
    with pytest.raises(RuntimeError, match="inside a trainer's step"):
        fused.attach(trainer)


def test_cuda_graph_is_refused_clearly_where_it_cannot_run():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="cuda_graph=True needs the models on a CUDA device, got cpu"):
        _setup(cuda_graph=True, capturable=True)
    with pytest.raises(TypeError, match="after_step must be a list of zero-argument callables"):
        _setup(after_step=print)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_refuses_host_optimizers():
    with pytest.raises(ValueError, match="d_optimizer to be capturable"):
        _setup(device="cuda", cuda_graph=True)


def _train(iterations, perturb=False, **kwargs):
    trainer, loader, g, d, averaging = _setup(in_step=True, capturable=True, **kwargs)
    if perturb:  # one ulp up in every discriminator weight: what float rounding alone does to the trajectory
        with torch.no_grad():
            for p in d.parameters():
                p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
    state = trainer.run(loader, max_epochs=iterations // 10)
    return _state(g, d, averaging), {k: float(v) for k, v in state.output.items()}, state


def _largest_difference(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _assert_within_float_rounding(**candidate):
    """The candidate step equals the eager step to rounding after 10 iterations; after 100, where GAN training has
    amplified rounding differences, it is no further from the eager run than a one-ulp change of the weights
    takes the eager run itself."""
    eager10, out10, _ = _train(10, device=candidate.get("device", "cpu"))
    fused10, fused_out10, _ = _train(10, **candidate)
    for key in eager10:
        torch.testing.assert_close(fused10[key], eager10[key], rtol=1e-4, atol=1e-5, msg=key)
    assert fused_out10 == pytest.approx(out10, rel=1e-4, abs=1e-5)
    eager, _, _ = _train(100, device=candidate.get("device", "cpu"))
    nudged, _, _ = _train(100, perturb=True, device=candidate.get("device", "cpu"))
    fused, _, state = _train(100, **candidate)
    rounding = _largest_difference(nudged, eager)
    assert _largest_difference(fused, eager) <= 4 * rounding + 1e-6, (_largest_difference(fused, eager), rounding)
    return state


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_step_equals_the_eager_step_over_100_iterations():
    state = _assert_within_float_rounding(device="cuda", cuda_graph=True)
    assert len(state.graph_capture_seconds) == 1


@pytest.mark.slow
def test_compiled_step_equals_the_eager_step_over_100_iterations_on_the_cpu():
    # compile=True on the CPU: the compiled noise layers draw eager's random numbers by default.
    _assert_within_float_rounding(compile=True)


def test_the_average_can_leave_the_finite_check_to_a_guard():
    from ignite.engine import Engine

    model = torch.nn.Linear(2, 2)
    checked, unchecked = EvaluationAveraging(model), EvaluationAveraging(model, check_finite=False)
    engine = Engine(lambda e, b: None)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="refusing to take it into the average"):
        checked(engine)
    unchecked(engine)  # no read of the weights: the recipes' guard stops training before this
    assert unchecked.num_updates == 1 and checked.num_updates == 0
    with pytest.raises(TypeError, match="check_finite"):
        EvaluationAveraging(model, check_finite="no")


@pytest.mark.parametrize("bias_correction", [True, False])
def test_step_update_is_the_weighted_average_of_the_formulas(bias_correction):
    """Spec §4.5 in NumPy: a_n = Σ_k r(1 - r)^(n-k) θ_k, from zero (the reference), or divided by 1 - (1 - r)^n
    (bias-corrected: the average of the weights seen so far, weighted as the EMA weighs them)."""
    import numpy as np

    rate, steps = 0.1, 12
    model = torch.nn.Linear(3, 2).double()
    averaging = EvaluationAveraging(model, rate=rate, bias_correction=bias_correction)
    history = []
    generator = torch.Generator().manual_seed(3)
    for _ in range(steps):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
        history.append([p.detach().numpy().copy() for p in model.parameters()])
        averaging.step_update()
    weights = np.array([rate * (1 - rate) ** (steps - k) for k in range(1, steps + 1)])
    if bias_correction:
        weights = weights / (1 - (1 - rate) ** steps)
    for index, averaged in enumerate(averaging.averaged_model.parameters()):
        expected = sum(w * h[index] for w, h in zip(weights, history))
        np.testing.assert_allclose(averaged.detach().numpy(), expected, rtol=1e-12, atol=1e-14)
    assert averaging.num_updates == steps
