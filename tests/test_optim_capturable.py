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


def _graph_replays_equal_host_steps(groups, learning_rates, **defaults):
    """One capturable step captured in a CUDA graph and replayed 10 times, the learning rates of each replay's
    groups set by ``learning_rates(t)``, against the host ReferenceAdam stepped the same way on the same gradients.
    ``groups``: ``(size, options)`` per parameter group, one parameter each."""
    params = [torch.nn.Parameter(torch.randn(size, device="cuda")) for size, _ in groups]
    host_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = ReferenceAdam([{"params": [p], **o} for p, (_, o) in zip(params, groups)], capturable=True, **defaults)
    host = ReferenceAdam([{"params": [p], **o} for p, (_, o) in zip(host_params, groups)], **defaults)
    grads = [torch.randn_like(p) for p in params]
    for _ in range(3):  # warm-up outside the capture
        for p, p_host, g in zip(params, host_params, grads):
            p.grad, p_host.grad = g.clone(), g.clone()
        opt.step()
        host.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for t in range(10):
        for optimizer in (opt, host):
            for group, lr in zip(optimizer.param_groups, learning_rates(t)):
                group["lr"] = lr
        opt.refresh_hyperparameters()
        graph.replay()
        host.step()
    for p, p_host in zip(params, host_params):
        torch.testing.assert_close(p.detach(), p_host.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_capturable_step_replays_in_a_cuda_graph():
    _graph_replays_equal_host_steps([(5, {})], lambda t: [1e-2 / (t + 1)], lr=1e-2)


# --- added by tests: several parameter groups, each with its own hyperparameters and step count ---


def _oracle_steps(p, steps, beta1, beta2, eps):
    """The reference's Adam in float64 NumPy for one parameter: ``steps`` is a list of (grad, lr); t counts them."""
    p, m, v = p.astype(np.float64), np.zeros_like(p, dtype=np.float64), np.zeros_like(p, dtype=np.float64)
    for t, (g, lr) in enumerate(steps, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr * (m / (1 - beta1**t)) / np.sqrt(v / (1 - beta2**t) + eps)
    return p


@pytest.mark.parametrize("capturable", [False, True])
def test_groups_with_their_own_lr_betas_eps_and_step_counts_match_the_oracle(capturable):
    generator = torch.Generator().manual_seed(1)
    draw = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64)  # noqa: E731
    a, b, c = (torch.nn.Parameter(draw(4, 3)), torch.nn.Parameter(draw(5)), torch.nn.Parameter(draw(2, 2)))
    frozen = torch.nn.Parameter(draw(3), requires_grad=False)  # in a group, never stepped
    starts = {name: x.detach().numpy().copy() for name, x in (("a", a), ("b", b), ("c", c), ("frozen", frozen))}
    hyper = {"a": (0.5, 0.999, 1e-8), "b": (0.9, 0.99, 1e-3), "c": (0.0, 0.9, 1e-6)}
    opt = ReferenceAdam([{"params": [a, frozen]}, {"params": [b], "lr": 0.2, "betas": (0.9, 0.99), "eps": 1e-3}],
                        lr=0.01, betas=(0.5, 0.999), eps=1e-8, capturable=capturable)
    history = {"a": [], "b": [], "c": []}
    for t in range(30):
        if t == 10:  # a group added later starts its own step count at 1
            opt.add_param_group({"params": [c], "lr": 0.05, "betas": (0.0, 0.9), "eps": 1e-6})
        lrs = {"a": 0.01 * (1 - t / 30), "b": 0.2 / (1 + t), "c": 0.05}
        for group, name in zip(opt.param_groups, "abc"):
            group["lr"] = lrs[name]
        stepped = {"a": True, "b": t % 3 != 0, "c": t >= 10}  # group b has no gradient every third step
        for name, x in (("a", a), ("b", b), ("c", c)):
            x.grad = draw(*x.shape) if stepped[name] else None
            if stepped[name]:
                history[name].append((x.grad.numpy().copy(), lrs[name]))
        opt.step()
    for name, x in (("a", a), ("b", b), ("c", c)):
        expected = _oracle_steps(starts[name], history[name], *hyper[name])
        np.testing.assert_allclose(x.detach().numpy(), expected, rtol=1e-12, atol=1e-12, err_msg=name)
        assert float(opt.state[x]["step"]) == len(history[name])
    np.testing.assert_array_equal(frozen.detach().numpy(), starts["frozen"])
    assert frozen not in opt.state


def test_capturable_groups_equal_host_groups_in_float32():
    def run(capturable):
        generator = torch.Generator().manual_seed(2)
        p, q = (torch.nn.Parameter(torch.randn(n, generator=generator)) for n in (6, 3))
        opt = ReferenceAdam([{"params": [p]}, {"params": [q], "lr": 1e-1}], lr=1e-3, capturable=capturable)
        for t in range(20):
            opt.param_groups[1]["lr"] = 1e-1 / (t + 1)
            p.grad, q.grad = torch.randn(6, generator=generator), torch.randn(3, generator=generator)
            opt.step()
        return p.detach(), q.detach()

    for host, device in zip(run(False), run(True)):
        torch.testing.assert_close(device, host, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_capturable_step_with_two_groups_replays_in_a_cuda_graph():
    groups = [(5, {}), (3, {"lr": 0.1, "betas": (0.9, 0.99), "eps": 1e-3})]
    _graph_replays_equal_host_steps(groups, lambda t: [1e-2 / (t + 1), 0.1 * (1 - t / 10)], lr=1e-2,
                                    betas=(0.5, 0.999))