"""ReferenceAdam(capturable=True) computes what the host-side ReferenceAdam computes, and can be captured."""
import numpy as np
import pytest
import torch

from ignite_igan.optim import ReferenceAdam


def _oracle(p, grads, lrs, beta1=0.5, beta2=0.999, eps=1e-8):
    """The reference's Adam in float64 NumPy (spec §1.2), one learning rate per step."""
    p, m, v = p.astype(np.float64), np.zeros_like(p, dtype=np.float64), np.zeros_like(p, dtype=np.float64)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr * (m / (1 - beta1**t)) / np.sqrt(v / (1 - beta2**t) + eps)
    return p


def _run(capturable, steps=60, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    grads = [torch.randn(7, 3, generator=generator, dtype=torch.float64) for _ in range(steps)]
    p = torch.nn.Parameter(start.to(dtype).clone())
    q = torch.nn.Parameter(torch.zeros(2, dtype=dtype))
    opt = ReferenceAdam([p, q], lr=3e-3, betas=(0.5, 0.999), capturable=capturable)
    lrs = []
    for t, g in enumerate(grads):
        opt.param_groups[0]["lr"] = 3e-3 * (1 - t / steps)  # a schedule: the tensor follows the group's value
        lrs.append(opt.param_groups[0]["lr"])
        p.grad, q.grad = g.to(dtype), torch.ones(2, dtype=dtype)
        opt.step()
    return start.numpy(), [g.numpy() for g in grads], lrs, p.detach(), opt


def test_capturable_equals_host_steps_and_the_oracle():
    start, grads, lrs, host, _ = _run(False)
    _, _, _, device, opt = _run(True)
    torch.testing.assert_close(device, host, rtol=1e-6, atol=1e-6)
    _, _, _, device64, _ = _run(True, dtype=torch.float64)
    np.testing.assert_allclose(device64.numpy(), _oracle(start, grads, lrs), rtol=1e-12, atol=1e-12)
    state = opt.state_dict()["state"][0]
    assert torch.is_tensor(state["step"]) and float(state["step"]) == 60.0


def test_states_move_between_host_and_capturable_optimizers():
    _, _, _, _, capturable = _run(True, steps=5)
    p = torch.nn.Parameter(torch.zeros(7, 3))
    q = torch.nn.Parameter(torch.zeros(2))
    host = ReferenceAdam([p, q], lr=1e-3, betas=(0.5, 0.999))
    host.load_state_dict(capturable.state_dict())
    p.grad, q.grad = torch.ones(7, 3), torch.ones(2)
    host.step()
    assert int(host.state[p]["step"]) == 6
    back = ReferenceAdam([p, q], lr=1e-3, betas=(0.5, 0.999), capturable=True)
    back.load_state_dict(host.state_dict())
    back.step()
    assert float(back.state[p]["step"]) == 7.0


def test_capturable_needs_every_gradient_and_a_bool():
    p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = ReferenceAdam([p, q], capturable=True)
    p.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="gradient for every trainable parameter"):
        opt.step()
    with pytest.raises(TypeError, match="capturable must be a bool"):
        ReferenceAdam([p], capturable="yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_capturable_step_replays_in_a_cuda_graph():
    p = torch.nn.Parameter(torch.randn(5, device="cuda"))
    opt = ReferenceAdam([p], lr=1e-2, capturable=True)
    reference = torch.nn.Parameter(p.detach().clone())
    host = ReferenceAdam([reference], lr=1e-2)
    static_grad = torch.randn(5, device="cuda")
    for _ in range(3):  # warm-up outside the capture
        p.grad, reference.grad = static_grad.clone(), static_grad.clone()
        opt.step()
        host.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for t in range(10):
        opt.param_groups[0]["lr"] = host.param_groups[0]["lr"] = 1e-2 / (t + 1)
        opt.refresh_hyperparameters()
        graph.replay()
        host.step()
    torch.testing.assert_close(p.detach(), reference.detach(), rtol=1e-6, atol=1e-6)
