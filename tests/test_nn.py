"""Tests of ignite_igan.nn against NumPy oracles written from the formulas of the spec (§1.3-§1.8, §3.7, §4.4)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from ignite_igan.nn import (
    DataDependentInit,
    GaussianNoise,
    MinibatchDiscrimination,
    ScaleFreeBatchNorm,
    VirtualBatchNorm,
    WeightNormConv2d,
    WeightNormConvTranspose2d,
    WeightNormLinear,
    data_dependent_init,
    data_init_mode,
)


def np_(t):
    return t.detach().cpu().double().numpy()


def randomize(layer, seed=1):
    """Moves a layer's parameters away from their init so that an oracle checks every parameter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(p + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


# ----------------------------------------------------------------------------------------------------------------
# NumPy oracles (spec formulas, written independently of the implementation)
# ----------------------------------------------------------------------------------------------------------------
def oracle_wn_weight(v, g, eps, out_axis):
    """Spec §1.3: W = V * g / sqrt(eps + sum V^2), the sum over every axis except the output unit's."""
    axes = tuple(a for a in range(v.ndim) if a != out_axis)
    norm = np.sqrt(eps + (v**2).sum(axis=axes, keepdims=True))
    shape = [1] * v.ndim
    shape[out_axis] = -1
    return v * g.reshape(shape) / norm


def oracle_conv2d(x, w, stride, padding):
    n, cin, h, wd = x.shape
    cout, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((n, cout, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
    return out


def oracle_conv_transpose2d(x, w, stride, padding, output_padding):
    """Each input pixel scatters its kernel-weighted copy into the output; then crop the padding."""
    n, cin, h, wd = x.shape
    _, cout, kh, kw = w.shape
    full = np.zeros((n, cout, (h - 1) * stride + kh + output_padding, (wd - 1) * stride + kw + output_padding))
    for i in range(h):
        for j in range(wd):
            full[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw] += np.einsum(
                "nc,cokl->nokl", x[:, :, i, j], w
            )
    ho = (h - 1) * stride - 2 * padding + kh + output_padding
    wo = (wd - 1) * stride - 2 * padding + kw + output_padding
    return full[:, :, padding : padding + ho, padding : padding + wo]


def oracle_data_init(t, g, init_scale):
    """Spec §1.3 init pass: returns the re-normalized output, the new bias and the new gain."""
    axes = (0,) if t.ndim == 2 else (0, 2, 3)
    shape = (1, -1) if t.ndim == 2 else (1, -1, 1, 1)
    m = t.mean(axis=axes)
    s = np.sqrt(((t - m.reshape(shape)) ** 2).mean(axis=axes))
    inv = init_scale / s
    return (t - m.reshape(shape)) * inv.reshape(shape), -m * inv, g * inv


def oracle_minibatch(x, theta, log_scale, b, init=False):
    """The reference MinibatchLayer.get_output_for (spec §1.5), literally: 1e6 on the diagonal, d /= mmd."""
    t = theta * np.exp(log_scale)[None] / np.sqrt((theta**2).sum(axis=0))[None]
    act = np.tensordot(x, t, axes=[[1], [0]])  # (N, B, C)
    n = x.shape[0]
    abs_dif = np.abs(act[:, :, :, None] - act.transpose(1, 2, 0)[None]).sum(axis=2)  # (N, B, N)
    abs_dif = abs_dif + 1e6 * np.eye(n)[:, None, :]
    if init:
        mmd = 0.5 * abs_dif.min(axis=2).mean(axis=0)
        abs_dif = abs_dif / mmd[None, :, None]
        new_log_scale = log_scale - np.log(mmd)[:, None]
    f = np.exp(-abs_dif).sum(axis=2)
    if init:
        mf = f.mean(axis=0)
        return np.concatenate([x, f - mf], axis=1), new_log_scale, -mf
    return np.concatenate([x, f + b], axis=1)


def oracle_vbn(x, r, gamma, beta, eps):
    """Spec §3.7 (2017 version): reference rows with their own moments, live rows with mixed moments."""
    ref, live = x[:r], x[r:]
    sp = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    if x.ndim == 2:
        ref = ref[:, :, None, None]
        live = live[:, :, None, None]
    mu_ref = ref.mean(axis=(0, 2, 3))[None, :, None, None]
    s_ref = (ref**2).mean(axis=(0, 2, 3))[None, :, None, None]
    out_ref = (ref - mu_ref) / np.sqrt(eps + s_ref - mu_ref**2)
    mu_i = live.mean(axis=(2, 3), keepdims=True)
    s_i = (live**2).mean(axis=(2, 3), keepdims=True)
    mu = mu_i / (r + 1) + mu_ref * r / (r + 1)
    s = s_i / (r + 1) + s_ref * r / (r + 1)
    out_live = (live - mu) / np.sqrt(eps + s - mu**2)
    out = np.concatenate([out_ref, out_live])
    if x.ndim == 2:
        out = out[:, :, 0, 0]
    return out * gamma.reshape(sp) + beta.reshape(sp)


# ----------------------------------------------------------------------------------------------------------------
# Weight-normalized layers
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [1e-6, 0.0])
def test_weight_norm_linear_matches_oracle(eps):
    layer = randomize(WeightNormLinear(6, 4, train_scale=True, eps=eps).double())
    x = torch.randn(5, 6, dtype=torch.float64)
    w = oracle_wn_weight(np_(layer.weight), np_(layer.scale), eps, out_axis=0)
    expected = np_(x) @ w.T + np_(layer.bias)
    np.testing.assert_allclose(np_(layer(x)), expected, rtol=1e-12, atol=1e-12)


def test_weight_norm_conv2d_matches_oracle():
    layer = randomize(WeightNormConv2d(3, 4, 3, stride=2, padding=1).double())
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    w = oracle_wn_weight(np_(layer.weight), np_(layer.scale), 1e-6, out_axis=0)
    expected = oracle_conv2d(np_(x), w, 2, 1) + np_(layer.bias)[None, :, None, None]
    np.testing.assert_allclose(np_(layer(x)), expected, rtol=1e-11, atol=1e-11)


def test_weight_norm_conv_transpose2d_normalizes_per_output_channel():
    layer = randomize(WeightNormConvTranspose2d(5, 3, 5, stride=2, padding=2, output_padding=1).double())
    x = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    # The oracle normalizes over axes (0, 2, 3) of the (in, out, kh, kw) weight, i.e. per output channel.
    w = oracle_wn_weight(np_(layer.weight), np_(layer.scale), 1e-6, out_axis=1)
    expected = oracle_conv_transpose2d(np_(x), w, 2, 2, 1) + np_(layer.bias)[None, :, None, None]
    out = layer(x)
    assert out.shape == (2, 3, 8, 8)
    np.testing.assert_allclose(np_(out), expected, rtol=1e-11, atol=1e-11)
    # With g = 1, every output channel's filter bank has unit norm (input-channel norms do not).
    layer.scale.data.fill_(1.0)
    w_eff = layer.normalized_weight().detach()
    torch.testing.assert_close(w_eff.square().sum(dim=(0, 2, 3)), torch.ones(3, dtype=torch.float64))
    assert not torch.allclose(w_eff.square().sum(dim=(1, 2, 3)), torch.ones(5, dtype=torch.float64))


def test_weight_norm_initial_parameters():
    layer = WeightNormLinear(400, 300)
    assert abs(layer.weight.std().item() - 0.05) < 0.002 and abs(layer.weight.mean().item()) < 0.002
    assert torch.equal(layer.scale, torch.ones(300)) and torch.equal(layer.bias, torch.zeros(300))
    assert not layer.scale.requires_grad and not layer.train_scale
    assert WeightNormLinear(4, 3, train_scale=True).scale.requires_grad
    mnist_style = WeightNormLinear(400, 300, eps=0.0, weight_std=0.1)
    assert abs(mnist_style.weight.std().item() - 0.1) < 0.004


def test_frozen_scale_gets_no_gradient_but_trainable_does():
    frozen, trainable = WeightNormLinear(4, 3), WeightNormLinear(4, 3, train_scale=True)
    for layer in (frozen, trainable):
        layer(torch.randn(5, 4)).square().sum().backward()
        assert layer.weight.grad is not None and layer.bias.grad is not None
    assert frozen.scale.grad is None
    assert trainable.scale.grad is not None and trainable.scale.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: WeightNormLinear(4, 3, train_scale=True), (5, 4)),
        (lambda: WeightNormConv2d(2, 3, 3, stride=2, padding=1, train_scale=True), (2, 2, 5, 5)),
        (lambda: WeightNormConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, train_scale=True), (2, 2, 3, 3)),
    ],
)
def test_weight_norm_gradcheck(make, shape):
    layer = make().double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    names = ["weight", "scale", "bias"]
    params = [getattr(layer, n).detach().clone().requires_grad_(True) for n in names]

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params))


# ----------------------------------------------------------------------------------------------------------------
# Data-dependent init of the weight-normalized layers (spec §1.3, §4.4)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, shape, out_axis",
    [
        (lambda: WeightNormLinear(6, 4, init_scale=0.1), (50, 6), 0),
        (lambda: WeightNormLinear(6, 4, eps=0.0, weight_std=0.1), (50, 6), 0),
        (lambda: WeightNormConv2d(3, 4, 3, padding=1), (6, 3, 5, 5), 0),
        (lambda: WeightNormConvTranspose2d(3, 4, 5, stride=2, padding=2, output_padding=1, init_scale=0.1), (6, 3, 4, 4), 1),
    ],
)
def test_data_init_matches_oracle_and_normalizes(make, shape, out_axis):
    layer = randomize(make().double())
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    g0, v = np_(layer.scale), np_(layer.weight)
    # Pre-activations with the current W, bias ignored (spec §1.3).
    w = oracle_wn_weight(v, g0, layer.eps, out_axis)
    if len(shape) == 2:
        t = np_(x) @ w.T
    elif out_axis == 0:
        t = oracle_conv2d(np_(x), w, 1, 1)
    else:
        t = oracle_conv_transpose2d(np_(x), w, 2, 2, 1)
    expected_out, expected_b, expected_g = oracle_data_init(t, g0, layer.init_scale)

    out = data_dependent_init(layer, x)
    np.testing.assert_allclose(np_(out), expected_out, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np_(layer.bias), expected_b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np_(layer.scale), expected_g, rtol=1e-9)
    assert not out.requires_grad
    # After the init, a normal pass gives zero-mean pre-activations with std init_scale per channel.
    with torch.no_grad():
        y = layer(x)
    dims = (0,) if y.dim() == 2 else (0, 2, 3)
    torch.testing.assert_close(y.mean(dim=dims), torch.zeros(4, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(
        y.std(dim=dims, unbiased=False), torch.full((4,), layer.init_scale, dtype=torch.float64), rtol=1e-9, atol=0
    )
    torch.testing.assert_close(y, out)


def test_data_init_on_one_example_or_constant_channel_raises():
    with pytest.raises(ValueError, match=r"channel\(s\) \[0, 1, 2\] are constant or not finite .*\(shape \(1, 3\)\)"):
        data_dependent_init(WeightNormLinear(4, 3), torch.randn(1, 4))
    layer = WeightNormLinear(4, 3)
    with pytest.raises(ValueError, match=r"channel\(s\) \[0, 1, 2\] are constant"):
        data_dependent_init(layer, torch.ones(10, 4))
    # Nothing was half-written by the failed pass.
    assert torch.equal(layer.scale, torch.ones(3)) and torch.equal(layer.bias, torch.zeros(3))


class _Probe(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen_training = []

    def forward(self, x):
        self.seen_training.append(self.training)
        return x


def test_data_dependent_init_restores_modes_runs_in_train_mode_without_grad():
    probe = _Probe()
    model = nn.Sequential(probe, WeightNormLinear(4, 8), nn.ReLU(), nn.Sequential(nn.Dropout(0.5), WeightNormLinear(8, 2)))
    model.train()
    model[3].eval()  # a mixed-mode model must come back exactly as it was
    modes = [m.training for m in model.modules()]
    out = data_dependent_init(model, torch.randn(30, 4))
    assert probe.seen_training == [True]
    assert [m.training for m in model.modules()] == modes
    assert not out.requires_grad
    assert not any(layer._data_init_armed for layer in model.modules() if isinstance(layer, DataDependentInit))
    assert torch.is_grad_enabled()


def test_layer_called_twice_is_initialized_once_from_its_first_call():
    layer = WeightNormLinear(4, 4).double()

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(self.layer(x))

    x = torch.randn(40, 4, dtype=torch.float64) * 2 + 3
    reference = WeightNormLinear(4, 4).double()
    reference.load_state_dict(layer.state_dict())
    data_dependent_init(reference, x)
    data_dependent_init(Twice(), x)
    torch.testing.assert_close(layer.scale, reference.scale)
    torch.testing.assert_close(layer.bias, reference.bias)


def test_unreached_layer_warns_and_data_init_false_layer_is_untouched():
    class Partial(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = WeightNormLinear(4, 3)
            self.unused = WeightNormLinear(4, 3)
            self.fixed = WeightNormLinear(3, 3, data_init=False)

        def forward(self, x):
            return self.fixed(self.used(x))

    model = Partial()
    fixed_state = {k: v.clone() for k, v in model.fixed.state_dict().items()}
    with pytest.warns(RuntimeWarning, match=r"1 init-capable layer.*WeightNormLinear"):
        data_dependent_init(model, torch.randn(20, 4))
    assert not torch.equal(model.used.scale, torch.ones(3))
    for k, v in model.fixed.state_dict().items():
        assert torch.equal(v, fixed_state[k])
    assert not model.unused._data_init_armed


def test_data_init_mode_yields_armed_layers_and_rejects_non_modules():
    model = nn.Sequential(WeightNormLinear(4, 3), MinibatchDiscrimination(3, 2, 2))
    with data_init_mode(model) as layers:
        assert layers == [model[0], model[1]]
        assert not torch.is_grad_enabled()
        model(torch.randn(10, 4))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got function"):
        data_dependent_init(lambda x: x, torch.randn(2, 2))


# ----------------------------------------------------------------------------------------------------------------
# Scale-free batch norm (spec §1.6)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7, 5), (3, 5, 4, 4), (1, 5, 3, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_scale_free_batch_norm_matches_oracle_in_both_modes(shape, training):
    bn = randomize(ScaleFreeBatchNorm(5).double()).train(training)
    x = torch.randn(*shape, dtype=torch.float64) * 2 + 0.5
    xn = np_(x)
    axes = (0,) if xn.ndim == 2 else (0, 2, 3)
    mu = xn.mean(axis=axes, keepdims=True)
    var = ((xn - mu) ** 2).mean(axis=axes, keepdims=True)  # biased
    b = np_(bn.bias).reshape((1, -1) if xn.ndim == 2 else (1, -1, 1, 1))
    np.testing.assert_allclose(np_(bn(x)), (xn - mu) / np.sqrt(1e-6 + var) + b, rtol=1e-10, atol=1e-10)
    assert [n for n, _ in bn.named_parameters()] == ["bias"]
    assert not list(bn.buffers())  # no running statistics


def test_scale_free_batch_norm_gradcheck():
    bn = randomize(ScaleFreeBatchNorm(3).double())
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    b = bn.bias.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, b: torch.func.functional_call(bn, {"bias": b}, (x,)), (x, b))


def test_scale_free_batch_norm_rejects_a_single_value_per_channel():
    with pytest.raises(ValueError, match=r"at least 2 values per channel.*got a tensor of shape \(1, 5\)"):
        ScaleFreeBatchNorm(5)(torch.randn(1, 5))


# ----------------------------------------------------------------------------------------------------------------
# Gaussian noise (spec §1.7)
# ----------------------------------------------------------------------------------------------------------------
def test_gaussian_noise_training_only():
    noise = GaussianNoise(0.3)
    x = torch.full((20000, 5), 2.0)
    y = noise(x)
    assert abs((y - x).std().item() - 0.3) < 0.01 and abs((y - x).mean().item()) < 0.01
    noise.eval()
    assert torch.equal(noise(x), x)
    assert torch.equal(GaussianNoise(0.0)(x), x)


# ----------------------------------------------------------------------------------------------------------------
# Virtual batch norm (spec §3.7)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(9, 4), (9, 4, 3, 3)])
def test_virtual_batch_norm_matches_oracle(shape):
    vbn = randomize(VirtualBatchNorm(4).double())
    x = torch.randn(*shape, dtype=torch.float64) * 1.5 + 0.3
    expected = oracle_vbn(np_(x), 5, np_(vbn.weight), np_(vbn.bias), 1e-5)
    np.testing.assert_allclose(np_(vbn(x, reference_size=5)), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(6, 4), (6, 4, 3, 3)])
def test_virtual_batch_norm_reference_alone_is_batch_norm_with_biased_variance(shape):
    vbn = randomize(VirtualBatchNorm(4).double())
    ref = torch.randn(*shape, dtype=torch.float64) * 2 - 1
    xn = np_(ref)
    axes = (0,) if xn.ndim == 2 else (0, 2, 3)
    sp = (1, -1) if xn.ndim == 2 else (1, -1, 1, 1)
    mu = xn.mean(axis=axes, keepdims=True)
    var = xn.var(axis=axes, keepdims=True)  # ddof=0
    expected = (xn - mu) / np.sqrt(var + 1e-5) * np_(vbn.weight).reshape(sp) + np_(vbn.bias).reshape(sp)
    np.testing.assert_allclose(np_(vbn(ref, reference_size=shape[0])), expected, rtol=1e-10, atol=1e-10)
    # The reference rows come out the same whatever live rows follow them.
    live = torch.randn(3, *shape[1:], dtype=torch.float64)
    np.testing.assert_allclose(np_(vbn(torch.cat([ref, live]), shape[0])[: shape[0]]), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(4,), (4, 3, 3)])
def test_virtual_batch_norm_live_example_independent_of_other_live_examples(shape):
    vbn = VirtualBatchNorm(4).double()
    ref = torch.randn(8, *shape, dtype=torch.float64)
    example = torch.randn(1, *shape, dtype=torch.float64)
    outs = []
    for others in (torch.randn(5, *shape, dtype=torch.float64), 10 * torch.randn(2, *shape, dtype=torch.float64)):
        outs.append(vbn(torch.cat([ref, example, others]), reference_size=8)[8])
    outs.append(vbn(torch.cat([ref, example]), reference_size=8)[8])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs[0], outs[2], rtol=1e-12, atol=1e-12)


def test_virtual_batch_norm_gradients_flow_into_the_reference():
    vbn = VirtualBatchNorm(3)
    x = torch.randn(10, 3, 2, 2, requires_grad=True)
    vbn(x, reference_size=6)[6:].sum().backward()
    assert x.grad[:6].abs().sum() > 0


def test_virtual_batch_norm_gradcheck_and_parameters():
    vbn = randomize(VirtualBatchNorm(3).double())
    x = torch.randn(7, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    w, b = (p.detach().clone().requires_grad_(True) for p in (vbn.weight, vbn.bias))
    assert torch.autograd.gradcheck(
        lambda x, w, b: torch.func.functional_call(vbn, {"weight": w, "bias": b}, (x, 4)), (x, w, b)
    )
    fresh = VirtualBatchNorm(2000)
    assert [n for n, _ in fresh.named_parameters()] == ["weight", "bias"]  # pitfall 4
    assert abs(fresh.weight.mean().item() - 1) < 0.003 and abs(fresh.weight.std().item() - 0.02) < 0.002
    assert torch.equal(fresh.bias, torch.zeros(2000))
    assert not list(fresh.buffers())  # no hidden state


def test_virtual_batch_norm_bad_reference_size():
    vbn = VirtualBatchNorm(4)
    x = torch.randn(5, 4)
    for bad in (0, 6, -1):
        with pytest.raises(ValueError, match=rf"reference_size must be in \[1, 5\] \(the number of leading rows.*got {bad}"):
            vbn(x, bad)
    with pytest.raises(TypeError, match="reference_size must be an int, got float"):
        vbn(x, 2.0)
    with pytest.raises(TypeError, match="reference_size must be an int, got bool"):
        vbn(x, True)


# ----------------------------------------------------------------------------------------------------------------
# Minibatch discrimination (spec §1.5)
# ----------------------------------------------------------------------------------------------------------------
def test_minibatch_discrimination_matches_oracle():
    layer = randomize(MinibatchDiscrimination(6, num_kernels=4, kernel_dim=3).double())
    x = torch.randn(7, 6, dtype=torch.float64)
    expected = oracle_minibatch(np_(x), np_(layer.theta), np_(layer.log_weight_scale), np_(layer.bias))
    np.testing.assert_allclose(np_(layer(x)), expected, rtol=1e-10, atol=1e-12)


def test_minibatch_discrimination_initial_parameters_and_flattening():
    layer = MinibatchDiscrimination(192)
    assert layer.theta.shape == (192, 100, 5) and abs(layer.theta.std().item() - 0.05) < 0.001
    assert torch.equal(layer.log_weight_scale, torch.zeros(100, 5))
    assert torch.equal(layer.bias, torch.full((100,), -1.0))
    x = torch.randn(4, 3, 8, 8)
    out = layer(x)
    assert out.shape == (4, 292)
    torch.testing.assert_close(out[:, :192], x.flatten(1))
    torch.testing.assert_close(out, layer(x.flatten(1)))


def test_minibatch_discrimination_data_init_matches_oracle():
    layer = randomize(MinibatchDiscrimination(6, num_kernels=4, kernel_dim=3).double())
    x = torch.randn(9, 6, dtype=torch.float64)
    expected_out, expected_log_scale, expected_b = oracle_minibatch(
        np_(x), np_(layer.theta), np_(layer.log_weight_scale), np_(layer.bias), init=True
    )
    out = data_dependent_init(layer, x)
    np.testing.assert_allclose(np_(out), expected_out, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np_(layer.log_weight_scale), expected_log_scale, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np_(layer.bias), expected_b, rtol=1e-9, atol=1e-12)
    # The next normal pass on the same batch reproduces the init output: features centred, mean NN distance 2.
    with torch.no_grad():
        torch.testing.assert_close(layer(x), out)
        m = torch.tensordot(x, layer.projection(), dims=([1], [0]))
        d = (m[:, None] - m[None]).abs().sum(-1) + torch.diag(torch.full((9,), math.inf, dtype=torch.float64))[..., None]
        torch.testing.assert_close(d.min(dim=1).values.mean(dim=0), torch.full((4,), 2.0, dtype=torch.float64))
    torch.testing.assert_close(out[:, 6:].mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)


def test_minibatch_discrimination_gradcheck():
    layer = randomize(MinibatchDiscrimination(5, num_kernels=3, kernel_dim=2).double())
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    names = ["theta", "log_weight_scale", "bias"]
    params = [getattr(layer, n).detach().clone().requires_grad_(True) for n in names]
    assert torch.autograd.gradcheck(
        lambda x, *ps: torch.func.functional_call(layer, dict(zip(names, ps)), (x,)), (x, *params)
    )


@pytest.mark.parametrize("in_features", [192, 2560])
@pytest.mark.parametrize("after_data_init", [False, True])
def test_minibatch_discrimination_is_alive_at_realistic_widths(in_features, after_data_init):
    """Pitfall 2: the features and their gradient must depend on the input at initialization."""
    layer = MinibatchDiscrimination(in_features)
    if after_data_init:
        data_dependent_init(layer, torch.randn(100, in_features))
    x = torch.randn(32, in_features, requires_grad=True)
    o = layer(x)[:, in_features:]
    spread = o.std(dim=0)  # per kernel, across examples
    assert (spread > 1e-3).float().mean() > 0.9, spread
    grad, = torch.autograd.grad(o.sum(), x)
    assert grad.abs().mean() > 1e-3 * x.abs().mean()
    assert (grad.norm(dim=1) > 0).all()
    o2 = layer(torch.randn(32, in_features))[:, in_features:]
    assert (o2 - o).abs().mean() > 1e-2 * o.abs().mean()


def test_minibatch_discrimination_batch_of_one_and_bad_input():
    layer = MinibatchDiscrimination(6, num_kernels=4, kernel_dim=3)
    torch.testing.assert_close(layer(torch.randn(1, 6))[:, 6:], layer.bias.detach()[None])  # no neighbours: o = 0
    with pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(3x5 and 6x12\)"):
        layer(torch.randn(3, 5))
    with pytest.raises(IndexError, match=r"Dimension out of range"):  # flatten(1) of a 1-D input
        layer(torch.randn(6))
    assert layer(torch.randn(0, 6)).shape == (0, 10)  # an empty batch: empty features
    with pytest.raises(ValueError, match=r"MinibatchDiscrimination: kernel\(s\) \[0, 1, 2, 3\] .*at least 2 examples"):
        data_dependent_init(layer, torch.randn(1, 6))
    with pytest.raises(ValueError, match=r"kernel\(s\) \[0, 1, 2, 3\] see identical examples"):
        data_dependent_init(layer, torch.ones(5, 6))


# ----------------------------------------------------------------------------------------------------------------
# Bad input and arguments
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer, x, error, pattern",
    [
        (WeightNormLinear(5, 3), torch.randn(2, 4, 5), ValueError, r"input must be 2-D \(N, in_features=5\), got a tensor of shape \(2, 4, 5\)"),
        # Where torch's own error names the problem, the layers leave it to torch.
        (WeightNormLinear(5, 3), torch.randn(2, 4), RuntimeError, r"mat1 and mat2 shapes cannot be multiplied \(2x4 and 5x3\)"),
        (WeightNormLinear(5, 3), torch.ones(2, 5, dtype=torch.long), RuntimeError, r"expected m1 and m2 to have the same dtype, but got: long int != float"),
        (WeightNormLinear(5, 3), [[1.0] * 5], AttributeError, r"'list' object has no attribute"),
        (WeightNormConv2d(3, 4, 3), torch.randn(2, 3, 5), ValueError, r"input must be 4-D \(N, in_channels=3, H, W\), got a tensor of shape \(2, 3, 5\)"),
        (WeightNormConv2d(3, 4, 3), torch.randn(2, 2, 5, 5), RuntimeError, r"expected input\[2, 2, 5, 5\] to have 3 channels, but got 2 channels instead"),
        (WeightNormConvTranspose2d(3, 4, 3), torch.randn(2, 4, 5, 5), RuntimeError, r"expected input\[2, 4, 5, 5\] to have 3 channels, but got 4 channels instead"),
        (ScaleFreeBatchNorm(4), torch.randn(2, 4, 3), ValueError, r"input must be 2-D \(N, C=4\) or 4-D .*got a tensor of shape \(2, 4, 3\)"),
        (ScaleFreeBatchNorm(4), torch.randn(2, 3), ValueError, r"input must be 2-D \(N, C=4\) .* got a tensor of shape \(2, 3\)"),
        (ScaleFreeBatchNorm(4), torch.randn(2, 1), ValueError, r"input must be 2-D \(N, C=4\) .* got a tensor of shape \(2, 1\)"),
        (WeightNormConvTranspose2d(3, 4, 5), torch.randn(3, 8, 8), ValueError, r"input must be 4-D \(N, in_channels=3, H, W\), got a tensor of shape \(3, 8, 8\)"),
        (ScaleFreeBatchNorm(4), torch.randn(0, 4, 2, 2), ValueError, r"at least 2 values per channel.*got a tensor of shape \(0, 4, 2, 2\)"),
        (GaussianNoise(0.1), torch.ones(2, dtype=torch.long), TypeError, r"input must be a floating-point tensor, got dtype torch.int64"),
    ],
)
def test_bad_input_names_argument_got_and_expected(layer, x, error, pattern):
    with pytest.raises(error, match=pattern):
        layer(x)


def test_an_empty_batch_gives_an_empty_output():
    assert WeightNormLinear(5, 3)(torch.randn(0, 5)).shape == (0, 3)
    assert WeightNormConv2d(3, 4, 3, padding=1)(torch.randn(0, 3, 5, 5)).shape == (0, 4, 5, 5)


def test_virtual_batch_norm_bad_input():
    vbn = VirtualBatchNorm(4)
    with pytest.raises(ValueError, match=r"input must be 2-D \(N, C=4\) or 4-D \(N, C=4, H, W\), got a tensor of shape \(3, 4, 2\)"):
        vbn(torch.randn(3, 4, 2), 1)
    with pytest.raises(ValueError, match=r"input must be 2-D \(N, C=4\) or 4-D \(N, C=4, H, W\), got a tensor of shape \(3, 5\)"):
        vbn(torch.randn(3, 5), 1)
    with pytest.raises(ValueError, match=r"got a tensor of shape \(3, 1\)"):  # one channel would broadcast silently
        vbn(torch.randn(3, 1), 1)
    with pytest.raises(ValueError, match=r"reference_size must be in \[1, 0\]"):
        vbn(torch.randn(0, 4), 1)


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda: WeightNormLinear(0, 3), ValueError, r"in_features must be >= 1, got 0"),
        (lambda: WeightNormLinear(2.5, 3), TypeError, r"in_features must be an int, got float"),
        (lambda: WeightNormLinear(2, 3, init_scale=-1.0), ValueError, r"init_scale must be > 0, got -1.0"),
        (lambda: WeightNormLinear(2, 3, init_scale=0), ValueError, r"init_scale must be > 0, got 0"),
        (lambda: WeightNormLinear(2, 3, train_scale=1), TypeError, r"train_scale must be a bool \(True or False\), got int 1"),
        (lambda: WeightNormConv2d(2, 3, (3, 3, 3)), ValueError, r"kernel_size must have 2 entries, got 3: \(3, 3, 3\)"),
        (lambda: WeightNormConv2d(2, 3, "3"), TypeError, r"kernel_size must be an int or a sequence of ints, got str '3'"),
        (lambda: WeightNormConv2d(2, 3, 3, padding=-1), ValueError, r"padding\[0\] must be >= 0, got -1"),
        (lambda: WeightNormConvTranspose2d(2, 3, 3, stride=2, output_padding=2), ValueError, r"output_padding must be smaller than stride \(2, 2\), got \(2, 2\)"),
        (lambda: GaussianNoise(-0.1), ValueError, r"sigma must be >= 0, got -0.1"),
        (lambda: GaussianNoise("0.1"), TypeError, r"sigma must be a real number, got str"),
        (lambda: MinibatchDiscrimination(10, num_kernels=0), ValueError, r"num_kernels must be >= 1, got 0"),
        (lambda: VirtualBatchNorm(4, eps=float("nan")), ValueError, r"eps must be >= 0, got nan"),
        (lambda: ScaleFreeBatchNorm(-2), ValueError, r"num_features must be >= 1, got -2"),
    ],
)
def test_bad_constructor_arguments(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_data_init_rejects_non_finite_preactivations():
    x = torch.randn(10, 4)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"pre-activations of output channel\(s\) \[0, 1, 2\] are constant or not finite"):
        data_dependent_init(WeightNormLinear(4, 3), x)


# ----------------------------------------------------------------------------------------------------------------
# Inputs of another dtype than the layer
# ----------------------------------------------------------------------------------------------------------------
# (make, shape, kwargs, checked): the normalization layers would promote a mismatch silently, the minibatch layer
# fail obscurely inside autocast, and they check it; in the others a product or a convolution refuses it itself.
DTYPE_CASES = [
    (lambda: WeightNormLinear(5, 3), (4, 5), {}, False),
    (lambda: WeightNormConv2d(3, 4, 3, padding=1), (2, 3, 6, 6), {}, False),
    (lambda: WeightNormConvTranspose2d(3, 4, 5, stride=2, padding=2, output_padding=1), (2, 3, 4, 4), {}, False),
    (lambda: MinibatchDiscrimination(6, num_kernels=4, kernel_dim=3), (5, 6), {}, True),
    (lambda: MinibatchDiscrimination(6, num_kernels=4, kernel_dim=3), (5, 2, 3), {}, True),  # flattened input
    (lambda: ScaleFreeBatchNorm(4), (5, 4, 3, 3), {}, True),
    (lambda: VirtualBatchNorm(4), (7, 4), {"reference_size": 4}, True),
]
TORCH_DTYPE_ERROR = r"expected m1 and m2 to have the same dtype|expected scalar type|Input type .* should be the same"


def dtype_error(checked, expected, got):
    if checked:
        return TypeError, rf"input must have the layer's dtype {expected} \(the dtype of its parameters\), got dtype {got}"
    return RuntimeError, TORCH_DTYPE_ERROR


def refused(checked, expected, got):
    error, pattern = dtype_error(checked, expected, got)
    return pytest.raises(error, match=pattern)


@pytest.mark.parametrize("make, shape, kwargs, checked", DTYPE_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_input_of_another_dtype_is_refused_with_names(make, shape, kwargs, checked, dtype):
    layer = make()
    error, pattern = dtype_error(checked, torch.float32, dtype)
    with pytest.raises(error, match=pattern):
        layer(torch.randn(*shape, dtype=dtype), **kwargs)
    # the other way round: a float64 layer names float64
    error, pattern = dtype_error(checked, torch.float64, torch.float32)
    with pytest.raises(error, match=pattern):
        make().double()(torch.randn(*shape), **kwargs)
    assert layer(torch.randn(*shape).to(dtype).float(), **kwargs).dtype == torch.float32  # converted: accepted


@pytest.mark.parametrize("make, shape, kwargs, checked", DTYPE_CASES)
@pytest.mark.parametrize("low, other", [(torch.bfloat16, torch.float16), (torch.float16, torch.bfloat16)])
def test_autocast_mixes_are_accepted_but_float64_is_not(make, shape, kwargs, checked, low, other):
    layer = make()
    x = torch.randn(*shape)
    with torch.autocast("cpu", dtype=low):
        for inp in (x, x.to(low)):  # float32 data, activations in autocast's dtype
            out = layer(inp, **kwargs)
            assert torch.isfinite(out.float()).all()
        # autocast leaves float64 alone; the other low-precision dtype is refused by the normalization layers, and
        # cast to autocast's dtype by autocast itself in a product or a convolution
        with refused(checked, torch.float32, torch.float64):
            layer(x.to(torch.float64), **kwargs)
        if checked:
            with refused(checked, torch.float32, other):
                layer(x.to(other), **kwargs)
        else:
            assert torch.isfinite(layer(x.to(other), **kwargs).float()).all()
    with refused(checked, torch.float32, low):
        layer(x.to(low), **kwargs)  # the same input outside autocast
    with torch.autocast("cpu", dtype=low):
        assert make().to(low)(x, **kwargs).dtype in (low, torch.float32)  # a low-precision layer, float32 data


def test_gaussian_noise_has_no_dtype_and_keeps_the_input_s():
    noise = GaussianNoise(0.5)
    for dtype in (torch.float64, torch.float16, torch.bfloat16, torch.float32):
        out = noise(torch.zeros(200, 10, dtype=dtype))
        assert out.dtype == dtype and out.float().std() > 0.4


@pytest.mark.parametrize("shape, out_dim, eps", [((5, 7), 0, 0.0), ((5, 7), 0, 1e-6), ((3, 4, 2, 2), 1, 1e-6)])
def test_fast_weight_norm_equals_the_formula_forward_and_gradients(shape, out_dim, eps):
    """The layers' weight norm (one-pass backward) equals sqrt(eps + sum V^2) and its autograd gradient (float64)."""
    from ignite_igan import _fast_paths
    from ignite_igan.nn import _unit_norm

    torch.manual_seed(0)
    weight = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    axes = tuple(d for d in range(len(shape)) if d != out_dim)
    expected = np.sqrt(eps + (np_(weight) ** 2).sum(axis=axes))  # the spec's formula, in NumPy
    fast, formula = _fast_paths.unit_norm(weight, out_dim, eps), _unit_norm(weight, out_dim, eps)
    np.testing.assert_allclose(np_(formula), expected, rtol=1e-13)
    torch.testing.assert_close(fast, formula, rtol=1e-13, atol=0)
    upstream = torch.randn(shape[out_dim], dtype=torch.float64)
    fast_grad, = torch.autograd.grad((fast * upstream).sum(), weight)
    formula_grad, = torch.autograd.grad((formula * upstream).sum(), weight)
    torch.testing.assert_close(fast_grad, formula_grad, rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(lambda w: _fast_paths.unit_norm(w, out_dim, eps), (weight,))


def test_the_layers_use_the_fast_paths():
    """The one commented choice in ignite_igan.nn: the minibatch layer's features are the tiled ones, bit for bit."""
    from ignite_igan import _fast_paths

    torch.manual_seed(0)
    layer = MinibatchDiscrimination(6, num_kernels=4, kernel_dim=3)
    x = torch.randn(9, 6)
    m = (x @ layer.projection().flatten(1)).view(9, 4, 3)
    assert torch.equal(layer(x)[:, 6:], _fast_paths.minibatch_features(m) + layer.bias)


def test_weight_norm_forward_compiles_once():
    """The data-init flag is only written when armed: a compiled forward is not recompiled on its second call.

    (Writing it unconditionally added the attribute to the instance on the first call, a guard failure on the
    second, and a mutation replayed after every call.)
    """
    torch._dynamo.reset()
    layer = WeightNormLinear(6, 4, train_scale=True)
    compiled = torch.compile(layer, backend="eager")
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for _ in range(3):
        compiled(torch.randn(5, 6)).sum().backward()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - frames == 1
    assert "_data_init_armed" not in vars(layer)
    # Armed layers still initialize once, compiled or not.
    data_dependent_init(layer, torch.randn(50, 6))
    assert "_data_init_armed" in vars(layer) and not layer._data_init_armed


def test_weight_norm_default_path_is_the_formula_bit_for_bit():
    """The float32 eager forward is ``linear(x, V) * (g / ||V||) + b`` exactly, before and after data init."""
    torch.manual_seed(3)
    layer = WeightNormLinear(7, 5, train_scale=True, eps=0.0, weight_std=0.1)
    x = torch.randn(9, 7)
    data_dependent_init(layer, torch.randn(40, 7))
    with torch.no_grad():
        norm = torch.linalg.vector_norm(layer.weight, dim=[1])
        expected = torch.nn.functional.linear(x, layer.weight) * (layer.scale / norm).view(1, -1) + layer.bias
    assert torch.equal(layer(x), expected)
