"""The GPU paths: minibatch features on CUDA, bf16 autocast, torch.compile, handlers and models moved between devices.

Skipped without a GPU (CI has none); run on a GPU machine with ``python -m pytest tests/test_cuda.py``.
"""
import copy

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from ignite_igan import _fast_paths, functional as F
from ignite_igan.engines import create_semi_supervised_trainer
from ignite_igan.handlers import EvaluationAveraging, HistoricalAveraging
from ignite_igan.models import MNISTDiscriminator, mnist_generator
from ignite_igan.nn import MinibatchDiscrimination, data_dependent_init
from ignite_igan.optim import ReferenceAdam

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _oracle_minibatch_features(m: np.ndarray) -> np.ndarray:
    """o[i, b] = sum_{j != i} exp(-sum_c |m[i, b, c] - m[j, b, c]|), spec §1.5, in NumPy float64."""
    d = np.abs(m[:, None, :, :] - m[None, :, :, :]).sum(axis=3)  # (N, N, B)
    s = np.exp(-d)
    for i in range(m.shape[0]):
        s[i, i, :] = 0.0
    return s.sum(axis=1)


@pytest.mark.parametrize("features", [F.minibatch_features, _fast_paths.minibatch_features])  # formula, layers'
@pytest.mark.parametrize("n", [7, 100, 300])  # 300 crosses the tile size
def test_minibatch_features_on_cuda_match_the_oracle_and_the_cpu(n, features):
    torch.manual_seed(0)
    m = torch.randn(n, 20, 5, dtype=torch.float64) * 0.3
    weights = torch.randn(n, 20, dtype=torch.float64)
    cpu = m.clone().requires_grad_(True)
    gpu = m.cuda().requires_grad_(True)
    out_cpu, out_gpu = features(cpu), features(gpu)
    np.testing.assert_allclose(out_gpu.detach().cpu().numpy(), _oracle_minibatch_features(m.numpy()), rtol=1e-10)
    (out_cpu * weights).sum().backward()
    (out_gpu * weights.cuda()).sum().backward()
    np.testing.assert_allclose(gpu.grad.cpu().numpy(), cpu.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_minibatch_layer_float32_on_cuda_equals_cpu():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(192)
    x = torch.randn(100, 192)
    data_dependent_init(layer, x)
    expected = layer(x)
    got = copy.deepcopy(layer).cuda()(x.cuda())
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-4)


def _trainer(device, noise=True, **options):
    torch.manual_seed(0)
    generator = mnist_generator().to(device)
    # Without the discriminator's Gaussian noise, eager and compiled runs draw no random numbers inside the
    # models (Inductor's random streams differ from eager's), so their losses can be compared.
    discriminator = (MNISTDiscriminator() if noise else MNISTDiscriminator(input_noise=0.0, hidden_noise=0.0)).to(device)
    data_dependent_init(discriminator, torch.rand(100, 784, device=device))
    d_opt = ReferenceAdam(discriminator.parameters(), lr=3e-3, betas=(0.5, 0.999))
    g_opt = ReferenceAdam(generator.parameters(), lr=3e-3, betas=(0.5, 0.999))
    trainer = create_semi_supervised_trainer(
        generator, discriminator, d_opt, g_opt, feature_matching_distance="mean_squared", device=device, **options
    )
    rng = torch.Generator().manual_seed(1)
    batch = (torch.rand(100, 784, generator=rng), torch.arange(100) % 10, torch.rand(100, 784, generator=rng),
             torch.rand(100, 784, generator=rng))
    return trainer, batch, discriminator


@pytest.mark.parametrize("options", [dict(amp="bf16"), dict(compile=True)], ids=["bf16", "compile"])
def test_semi_supervised_step_on_cuda(options):
    noise = "compile" not in options
    reference, batch, _ = _trainer("cuda", noise=noise)
    reference.run([batch] * 3, max_epochs=1)
    trainer, batch, discriminator = _trainer("cuda", noise=noise, **options)
    trainer.run([batch] * 3, max_epochs=1)
    out, ref = trainer.state.output, reference.state.output
    assert all(np.isfinite(v) for v in out.values()), out
    assert all(p.device.type == "cuda" for p in discriminator.parameters())
    # bf16 rounds to 3 significant digits; compile only reorders float32 arithmetic.
    tolerance = 0.05 if "amp" in options else 1e-3
    assert out["loss_labeled"] == pytest.approx(ref["loss_labeled"], rel=tolerance, abs=tolerance)
    assert out["loss_unlabeled"] == pytest.approx(ref["loss_unlabeled"], rel=tolerance, abs=tolerance)


def test_handlers_follow_their_model_to_cuda_and_back():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    averaging = EvaluationAveraging(model, rate=0.5)
    historical = HistoricalAveraging(model, weight=0.1, optimizer=optimizer)

    def step(engine, x):
        optimizer.zero_grad()
        model(x.cuda()).square().sum().backward()
        optimizer.step()

    trainer = Engine(step)
    averaging.attach(trainer)
    historical.attach(trainer)
    trainer.run([torch.randn(2, 4)] * 3, max_epochs=1)
    averaged = averaging.averaged_model
    assert all(p.device.type == "cuda" for p in averaged.parameters())
    assert all(v.device.type == "cuda" for v in historical.averages.values())
    assert torch.isfinite(historical.penalty()).all()
    # Saved on the GPU, loaded into handlers whose model lives on the CPU.
    cpu_model = copy.deepcopy(model).cpu()
    cpu_averaging = EvaluationAveraging(cpu_model, rate=0.5)
    cpu_averaging.load_state_dict(averaging.state_dict())
    for p_cpu, p_gpu in zip(cpu_averaging.averaged_model.parameters(), averaged.parameters()):
        assert p_cpu.device.type == "cpu"
        torch.testing.assert_close(p_cpu, p_gpu.cpu())
    cpu_historical = HistoricalAveraging(cpu_model, weight=0.1)
    cpu_historical.load_state_dict(historical.state_dict())
    torch.testing.assert_close(cpu_historical.penalty(), historical.penalty().cpu())
