"""Independent tests of :mod:`ignite_igan.functional`.

Every value is checked against a small NumPy oracle written from the formulas of the reference notes
(``/work/shared/reference/improved-gan-spec.md``: §1.5 minibatch features, §2 the K+1-class losses, §3.1-3.2
feature matching, §3.7 virtual batch norm, §5 the Inception Score) and issue 2, never from the implementation.
The oracles are deliberately naive (explicit loops, the reference's own arithmetic) and run in float64.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ignite_igan import _fast_paths, functional as F

DOUBLE = torch.float64


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20160610)


def as_tensor(array: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(array, dtype=DOUBLE, requires_grad=requires_grad)


# ----------------------------------------------------------------------------------------------------------------
# NumPy oracles, written from the spec's formulas
# ----------------------------------------------------------------------------------------------------------------
def np_l1_distances(m: np.ndarray) -> np.ndarray:
    """d[i, j, b] = sum_c |m[i, b, c] - m[j, b, c]| (spec §1.5), by explicit loops."""
    n, b, _ = m.shape
    d = np.zeros((n, n, b))
    for i in range(n):
        for j in range(n):
            for k in range(b):
                d[i, j, k] = np.sum(np.abs(m[i, k, :] - m[j, k, :]))
    return d


def np_minibatch_features(m: np.ndarray) -> np.ndarray:
    """o[i, b] = sum over j != i of exp(-||m[i, b] - m[j, b]||_1): the reference adds 1e6 to the self-distance."""
    d = np_l1_distances(m)
    n = m.shape[0]
    d = d + 1e6 * np.eye(n)[:, :, None]
    return np.exp(-d).sum(axis=1)


def np_virtual_batch_norm(x: np.ndarray, reference: np.ndarray, eps: float) -> np.ndarray:
    """Spec §3.7, the corrected (e0e5ffc) VBN, per live example, without γ/β.

    2-D inputs are treated as (N, C, 1, 1), as the reference reshapes them to (N, 1, 1, C).
    """
    two_d = x.ndim == 2
    if two_d:
        x = x[:, :, None, None]
        reference = reference[:, :, None, None]
    r = reference.shape[0]
    mu_ref = reference.mean(axis=(0, 2, 3))  # (C,)
    s_ref = (reference**2).mean(axis=(0, 2, 3))
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            mu_i = x[i, c].mean()
            s_i = (x[i, c] ** 2).mean()
            mu = mu_i / (r + 1) + mu_ref[c] * r / (r + 1)
            s = s_i / (r + 1) + s_ref[c] * r / (r + 1)
            out[i, c] = (x[i, c] - mu) / np.sqrt(eps + s - mu**2)
    return out[:, :, 0, 0] if two_d else out


def np_feature_matching(real: np.ndarray, fake: np.ndarray, distance: str) -> float:
    diff = fake.reshape(len(fake), -1).mean(axis=0) - real.reshape(len(real), -1).mean(axis=0)
    if distance == "squared_l2":  # the paper: ||E f(x) - E f(G(z))||_2^2
        return float(np.sum(diff**2))
    if distance == "mean_squared":  # MNIST code: mean over features of the squared difference
        return float(np.mean(diff**2))
    if distance == "mean_absolute":  # CIFAR/SVHN code: mean over features of |difference|
        return float(np.mean(np.abs(diff)))
    raise AssertionError(distance)


def np_logsumexp(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))


def np_softplus(v: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, v)


def np_semi_supervised(l_lab: np.ndarray, y: np.ndarray, l_unl: np.ndarray, l_gen: np.ndarray):
    """Spec §2, exactly as the Theano scripts write it."""
    loss_lab = -np.mean(l_lab[np.arange(len(y)), y]) + np.mean(np_logsumexp(l_lab))
    lse_unl, lse_gen = np_logsumexp(l_unl), np_logsumexp(l_gen)
    loss_unl = (
        -0.5 * np.mean(lse_unl) + 0.5 * np.mean(np_softplus(lse_unl)) + 0.5 * np.mean(np_softplus(lse_gen))
    )
    return float(loss_lab), float(loss_unl)


def np_bce_with_logits(logit: np.ndarray, target: float) -> np.ndarray:
    # -(t log sigmoid(l) + (1 - t) log(1 - sigmoid(l))), with log sigmoid(l) = -softplus(-l).
    return target * np_softplus(-logit) + (1.0 - target) * np_softplus(logit)


def np_inception_score(preds: np.ndarray, splits: int):
    """The loop of ``inception_score/model.py`` (spec §5) on probabilities, verbatim in NumPy."""
    scores = []
    for i in range(splits):
        part = preds[(i * preds.shape[0] // splits) : ((i + 1) * preds.shape[0] // splits), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        kl = np.mean(np.sum(kl, 1))
        scores.append(np.exp(kl))
    return np.mean(scores), np.std(scores)


def np_softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def assert_raises_naming(exc_types, words, fn, *args, **kwargs):
    """The call raises one of ``exc_types`` and the message contains every string of ``words``."""
    with pytest.raises(exc_types) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in error message {message!r}"


class _LargestTensorCreated(TorchDispatchMode):
    """Records the element count of the largest tensor any ATen op returns (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0
        self.largest_op = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.numel() > self.largest:
                self.largest, self.largest_op = leaf.numel(), (str(func), tuple(leaf.shape))
        return out


def _largest_saved_for_backward(fn, *inputs) -> int:
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*inputs)
    assert sizes, "nothing was saved for backward"
    return max(sizes), out


# ----------------------------------------------------------------------------------------------------------------
# Minibatch features (spec §1.5)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 4, 3), (9, 2, 5), (5, 3, 1), (1, 3, 2), (2, 1, 1)])
def test_minibatch_features_matches_oracle(rng, shape):
    # Scale 0.3 keeps the distances around 1, where exp(-d) is far from 0 and the comparison means something.
    m = rng.normal(scale=0.3, size=shape)
    out = F.minibatch_features(as_tensor(m))
    assert out.shape == shape[:2]
    assert out.dtype == DOUBLE
    np.testing.assert_allclose(out.numpy(), np_minibatch_features(m), rtol=1e-12, atol=1e-14)


def test_minibatch_features_float32_close_to_oracle(rng):
    m = rng.normal(scale=0.3, size=(8, 5, 5))
    out = F.minibatch_features(torch.tensor(m, dtype=torch.float32))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), np_minibatch_features(m.astype(np.float32).astype(np.float64)), rtol=1e-5)


def test_minibatch_features_of_non_contiguous_projection(rng):
    # In the layer, m comes from a matmul and a reshape; a transposed (non-contiguous) view must work the same.
    m = rng.normal(scale=0.3, size=(4, 7, 6))
    view = as_tensor(m).permute(2, 1, 0)  # (6, 7, 4), non-contiguous
    assert not view.is_contiguous()
    np.testing.assert_allclose(
        F.minibatch_features(view).numpy(), np_minibatch_features(m.transpose(2, 1, 0)), rtol=1e-12
    )


def test_minibatch_l1_distances_matches_oracle(rng):
    m = rng.normal(size=(7, 3, 4))
    d = F.minibatch_l1_distances(as_tensor(m))
    assert d.shape == (7, 7, 3)
    np.testing.assert_allclose(d.numpy(), np_l1_distances(m), rtol=1e-13, atol=1e-14)
    assert torch.all(d.diagonal(dim1=0, dim2=1) == 0)


def test_minibatch_features_gradcheck(rng):
    m = as_tensor(rng.normal(scale=0.3, size=(6, 3, 4)), requires_grad=True)
    assert gradcheck(F.minibatch_features, (m,), eps=1e-6, atol=1e-7)


def test_minibatch_features_gradcheck_through_projection(rng):
    # The path the layer uses: x @ T reshaped to (N, B, C); gradients reach both x and T.
    x = as_tensor(rng.normal(size=(5, 4)), requires_grad=True)
    t = as_tensor(rng.normal(scale=0.3, size=(4, 3 * 2)), requires_grad=True)
    assert gradcheck(lambda a, b: F.minibatch_features((a @ b).reshape(5, 3, 2)), (x, t), eps=1e-6, atol=1e-7)


def test_minibatch_l1_distances_gradcheck(rng):
    m = as_tensor(rng.normal(size=(5, 2, 3)), requires_grad=True)
    assert gradcheck(F.minibatch_l1_distances, (m,), eps=1e-6, atol=1e-7)


def test_minibatch_features_permutation_equivariant(rng):
    m = as_tensor(rng.normal(scale=0.3, size=(10, 4, 5)))
    perm = torch.as_tensor(rng.permutation(10))
    torch.testing.assert_close(F.minibatch_features(m[perm]), F.minibatch_features(m)[perm], rtol=1e-13, atol=0)


def test_minibatch_features_identical_rows_give_n_minus_one():
    row = torch.linspace(-2.0, 3.0, 4 * 5, dtype=DOUBLE).reshape(1, 4, 5)
    for n in (1, 2, 7):
        out = F.minibatch_features(row.repeat(n, 1, 1))
        torch.testing.assert_close(out, torch.full((n, 4), float(n - 1), dtype=DOUBLE), rtol=0, atol=0)


def test_minibatch_features_far_outlier_gets_zero(rng):
    n, b, c = 6, 3, 5
    m = torch.zeros(n, b, c, dtype=DOUBLE)
    m[3] = 1e3  # L1 distance 5e3 from everyone else: exp(-5e3) == 0
    out = F.minibatch_features(m)
    assert torch.all(out[3] < 1e-300)
    others = torch.cat([out[:3], out[4:]])
    torch.testing.assert_close(others, torch.full_like(others, n - 2.0), rtol=0, atol=1e-15)


# The layers' features (ignite_igan._fast_paths): the formula's numbers in O(N²·B) memory.
@pytest.mark.parametrize("shape", [(6, 4, 3), (9, 2, 5), (5, 3, 1), (1, 3, 2), (2, 1, 1), (13, 3, 4)])
def test_fast_minibatch_features_equal_the_formula_forward_and_gradients(rng, shape):
    m = as_tensor(rng.normal(scale=0.3, size=shape), requires_grad=True)
    weights = as_tensor(rng.normal(size=shape[:2]))  # a loss that weighs every feature differently
    fast, formula = _fast_paths.minibatch_features(m), F.minibatch_features(m)
    torch.testing.assert_close(fast, formula, rtol=1e-13, atol=1e-15)
    fast_grad, = torch.autograd.grad((fast * weights).sum(), m)
    formula_grad, = torch.autograd.grad((formula * weights).sum(), m)
    torch.testing.assert_close(fast_grad, formula_grad, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fast.detach().numpy(), np_minibatch_features(m.detach().numpy()), rtol=1e-12, atol=1e-14)
    assert gradcheck(_fast_paths.minibatch_features, (m,), eps=1e-6, atol=1e-7)


def test_fast_minibatch_l1_distances_equal_the_formula(rng):
    m = rng.normal(size=(7, 3, 4))
    fast = _fast_paths.minibatch_l1_distances(as_tensor(m))
    torch.testing.assert_close(fast, F.minibatch_l1_distances(as_tensor(m)), rtol=1e-14, atol=0)
    np.testing.assert_allclose(fast.numpy(), np_l1_distances(m), rtol=1e-13, atol=1e-14)


def test_an_infinite_input_gives_no_finite_features_either_way():
    # docs/nan_policy.md: a non-finite value is never silently turned into a number. The infinite example's
    # self-distance is inf - inf = NaN, so its features are NaN in the formula and in the layers' version alike.
    m = torch.zeros(4, 2, 3, dtype=DOUBLE)
    m[1, 0, 2] = math.inf
    for features in (F.minibatch_features(m), _fast_paths.minibatch_features(m)):
        assert torch.isnan(features[1, 0])
        torch.testing.assert_close(features[[0, 2, 3], 0], torch.full((3,), 2.0, dtype=DOUBLE))  # exp(-inf) = 0
        torch.testing.assert_close(features[:, 1], torch.full((4,), 3.0, dtype=DOUBLE))


def test_fast_minibatch_features_saved_tensors_are_at_most_n_n_b(rng):
    n, b, c = 12, 7, 5
    m = as_tensor(rng.normal(size=(n, b, c)), requires_grad=True)
    largest, out = _largest_saved_for_backward(_fast_paths.minibatch_features, m)
    assert largest <= n * n * b, f"a tensor of {largest} elements is saved for backward (limit N*N*B={n * n * b})"
    out.sum().backward()
    assert m.grad is not None and torch.isfinite(m.grad).all()


def test_fast_minibatch_features_never_create_an_n_n_b_c_tensor(rng):
    # Every tensor produced by any ATen op in the forward and the backward pass is at most (N, N, B).
    n, b, c = 12, 7, 5
    m = as_tensor(rng.normal(size=(n, b, c)), requires_grad=True)
    recorder = _LargestTensorCreated()
    with recorder:
        _fast_paths.minibatch_features(m).sum().backward()
    assert recorder.largest <= n * n * b, f"largest tensor created: {recorder.largest_op}"
    with recorder:  # the init's distances, without autograd
        _fast_paths.minibatch_l1_distances(m.detach())
    assert recorder.largest <= n * n * b, f"largest tensor created: {recorder.largest_op}"
    assert recorder.largest <= n * n * b, f"largest tensor created: {recorder.largest_op}"


def test_memory_checks_catch_the_broadcast_formula(rng):
    # The two memory checks above fail for the formula of F.minibatch_features: they detect what they claim to.
    n, b, c = 12, 7, 5
    m = as_tensor(rng.normal(size=(n, b, c)), requires_grad=True)
    largest_saved, out = _largest_saved_for_backward(F.minibatch_features, m)
    assert largest_saved == n * n * b * c
    recorder = _LargestTensorCreated()
    with recorder:
        F.minibatch_features(m).sum().backward()
    assert recorder.largest == n * n * b * c
    np.testing.assert_allclose(out.detach().numpy(), _fast_paths.minibatch_features(m).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    "bad, words",
    [
        (torch.zeros(4, 5), ["m", "(4, 5)"]),
        (torch.zeros(2, 3, 4, 5), ["m", "(2, 3, 4, 5)"]),
        (torch.zeros(0, 3, 5), ["m", "(0, 3, 5)"]),
        (torch.zeros(4, 0, 5), ["m", "(4, 0, 5)"]),
        (torch.zeros(4, 3, 0), ["m", "(4, 3, 0)"]),
    ],
)
def test_minibatch_features_bad_shapes(bad, words):
    assert_raises_naming(ValueError, words, F.minibatch_features, bad)
    assert_raises_naming(ValueError, words, F.minibatch_l1_distances, bad)


def test_minibatch_features_of_integers_and_of_arrays():
    # Integer projections are their float values (exp promotes); an array is not a tensor (its own error).
    integers = torch.tensor([[[0, 1]], [[2, -1]], [[0, 0]]])
    torch.testing.assert_close(F.minibatch_features(integers), F.minibatch_features(integers.float()), rtol=0, atol=0)
    assert_raises_naming(AttributeError, ["ndarray"], F.minibatch_features, np.zeros((3, 2, 2)))


# ----------------------------------------------------------------------------------------------------------------
# Virtual batch normalization (spec §3.7, corrected version)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "live_shape, ref_shape", [((5, 4), (3, 4)), ((4, 3, 5, 6), (2, 3, 5, 6)), ((1, 2, 1, 1), (7, 2, 1, 1))]
)
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_virtual_batch_norm_matches_oracle(rng, live_shape, ref_shape, eps):
    # Offsets and scales per channel, different for live and reference, so that every mixing weight matters.
    channel = (1, live_shape[1]) + (1,) * (len(live_shape) - 2)
    x = rng.normal(size=live_shape) * rng.uniform(0.5, 3, size=channel) + rng.normal(size=channel)
    ref = rng.normal(size=ref_shape) * rng.uniform(0.5, 3, size=channel) + 2 * rng.normal(size=channel)
    out = F.virtual_batch_norm(as_tensor(x), as_tensor(ref), eps=eps)
    assert out.shape == x.shape
    np.testing.assert_allclose(out.numpy(), np_virtual_batch_norm(x, ref, eps), rtol=1e-11, atol=1e-12)


def test_virtual_batch_norm_default_eps_is_reference_1e_5(rng):
    x, ref = rng.normal(size=(3, 2)) * 1e-3, rng.normal(size=(2, 2)) * 1e-3  # variance ~1e-6: eps shows
    np.testing.assert_allclose(
        F.virtual_batch_norm(as_tensor(x), as_tensor(ref)).numpy(), np_virtual_batch_norm(x, ref, 1e-5), rtol=1e-11
    )


@pytest.mark.parametrize("live_shape, ref_shape", [((6, 4), (3, 4)), ((5, 3, 4, 4), (2, 3, 4, 4))])
def test_virtual_batch_norm_example_independent_of_other_live_examples(rng, live_shape, ref_shape):
    x = as_tensor(rng.normal(size=live_shape))
    ref = as_tensor(rng.normal(size=ref_shape))
    changed = x.clone()
    changed[1:] = as_tensor(rng.normal(scale=10.0, size=(live_shape[0] - 1,) + live_shape[1:])) + 5.0
    a = F.virtual_batch_norm(x, ref)
    b = F.virtual_batch_norm(changed, ref)
    assert torch.equal(a[0], b[0])
    assert torch.equal(F.virtual_batch_norm(x[:1], ref)[0], a[0])  # alone in its batch: the same output
    assert not torch.allclose(a[1:], b[1:])


def test_virtual_batch_norm_depends_on_reference(rng):
    x = as_tensor(rng.normal(size=(4, 3)))
    ref = as_tensor(rng.normal(size=(5, 3)))
    assert not torch.allclose(F.virtual_batch_norm(x, ref), F.virtual_batch_norm(x, ref + 1.0))


@pytest.mark.parametrize("live_shape, ref_shape", [((4, 3), (3, 3)), ((2, 2, 3, 3), (3, 2, 3, 3))])
def test_virtual_batch_norm_gradcheck_live_and_reference(rng, live_shape, ref_shape):
    # Gradients flow into the reference batch too, as in the reference code (no stop-gradient).
    x = as_tensor(rng.normal(size=live_shape), requires_grad=True)
    ref = as_tensor(rng.normal(size=ref_shape), requires_grad=True)
    assert gradcheck(F.virtual_batch_norm, (x, ref), eps=1e-6, atol=1e-7)
    F.virtual_batch_norm(x, ref).pow(3).sum().backward()
    assert ref.grad is not None and ref.grad.abs().sum() > 0


def test_virtual_batch_norm_constant_channel_is_finite():
    x = torch.full((3, 2, 4, 4), 2.5, dtype=DOUBLE)
    out = F.virtual_batch_norm(x, torch.full((5, 2, 4, 4), 2.5, dtype=DOUBLE))
    assert torch.isfinite(out).all()
    assert torch.all(out == 0)


def test_virtual_batch_norm_never_silently_nan():
    # Project standard: nothing silently becomes NaN. eps=0 on a constant channel is 0/0: either reject eps=0 with
    # a ValueError or return a finite output.
    x = torch.full((3, 2), 2.5, dtype=DOUBLE)
    ref = torch.full((5, 2), 2.5, dtype=DOUBLE)
    try:
        out = F.virtual_batch_norm(x, ref, eps=0.0)
    except ValueError as error:
        assert "eps" in str(error)
    else:
        assert torch.isfinite(out).all(), f"virtual_batch_norm(constant, constant, eps=0.0) returned {out}"


def test_virtual_batch_norm_bad_input():
    x2, x4 = torch.zeros(4, 3), torch.zeros(4, 3, 5, 5)
    x3 = torch.zeros(4, 3, 5)
    assert_raises_naming(ValueError, ["x", "(4, 3, 5)"], F.virtual_batch_norm, x3, torch.zeros(2, 3, 5))
    assert_raises_naming(ValueError, ["x", "(4,)"], F.virtual_batch_norm, torch.zeros(4), torch.zeros(2))
    assert_raises_naming(ValueError, ["reference", "(2, 7)"], F.virtual_batch_norm, x2, torch.zeros(2, 7))
    assert_raises_naming(ValueError, ["reference", "(2, 3)"], F.virtual_batch_norm, x4, torch.zeros(2, 3))
    assert_raises_naming(ValueError, ["reference", "(2, 3, 4, 5)"], F.virtual_batch_norm, x4, torch.zeros(2, 3, 4, 5))
    assert_raises_naming(ValueError, ["reference", "(0, 3)"], F.virtual_batch_norm, x2, torch.zeros(0, 3))
    assert_raises_naming(ValueError, ["eps", "-1"], F.virtual_batch_norm, x2, torch.zeros(2, 3), eps=-1.0)
    assert_raises_naming(ValueError, ["eps", "0"], F.virtual_batch_norm, x2, torch.zeros(2, 3), eps=0.0)
    assert_raises_naming(AttributeError, ["list"], F.virtual_batch_norm, x2, [[0.0, 0.0, 0.0]])
    # Integer activations are their float values.
    integers = torch.tensor([[1, 2, 3], [4, 0, 2]])
    reference = torch.randn(5, 3, dtype=DOUBLE)
    torch.testing.assert_close(F.virtual_batch_norm(integers, reference), F.virtual_batch_norm(integers.double(), reference))


# ----------------------------------------------------------------------------------------------------------------
# Feature matching (spec §3.1, §3.2)
# ----------------------------------------------------------------------------------------------------------------
DISTANCES = ["squared_l2", "mean_squared", "mean_absolute"]


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("n_real, n_fake", [(7, 5), (3, 11), (1, 1)])
def test_feature_matching_matches_oracle(rng, distance, n_real, n_fake):
    real, fake = rng.normal(size=(n_real, 9)), rng.normal(size=(n_fake, 9)) + 0.3
    loss = F.feature_matching_loss(as_tensor(real), as_tensor(fake), distance=distance)
    assert loss.shape == ()
    np.testing.assert_allclose(loss.item(), np_feature_matching(real, fake, distance), rtol=1e-12)


def test_feature_matching_default_is_papers_squared_l2(rng):
    real, fake = rng.normal(size=(4, 6)), rng.normal(size=(5, 6))
    np.testing.assert_allclose(
        F.feature_matching_loss(as_tensor(real), as_tensor(fake)).item(), np_feature_matching(real, fake, "squared_l2")
    )


@pytest.mark.parametrize("distance", DISTANCES)
def test_feature_matching_flattens_feature_maps(rng, distance):
    real, fake = rng.normal(size=(4, 3, 2, 2)), rng.normal(size=(6, 3, 2, 2))
    np.testing.assert_allclose(
        F.feature_matching_loss(as_tensor(real), as_tensor(fake), distance).item(),
        np_feature_matching(real, fake, distance),
        rtol=1e-12,
    )


@pytest.mark.parametrize("distance", DISTANCES)
def test_feature_matching_compares_batch_means_not_pairs(rng, distance):
    # Pitfall 1: reordering the fake batch, or replacing it by anything with the same mean, changes nothing.
    real = as_tensor(rng.normal(size=(6, 5)))
    shuffled = real[torch.as_tensor(rng.permutation(6))]
    assert F.feature_matching_loss(real, shuffled, distance).item() == pytest.approx(0.0, abs=1e-15)
    other = as_tensor(rng.normal(size=(4, 5)))
    other = other - other.mean(0) + real.mean(0)
    assert F.feature_matching_loss(real, other, distance).item() == pytest.approx(0.0, abs=1e-14)


@pytest.mark.parametrize("distance", DISTANCES)
def test_feature_matching_real_side_carries_no_gradient(rng, distance):
    real_np, fake_np = rng.normal(size=(5, 4)), rng.normal(size=(3, 4)) + 1.0
    real, fake = as_tensor(real_np, requires_grad=True), as_tensor(fake_np, requires_grad=True)
    F.feature_matching_loss(real, fake, distance).backward()
    assert real.grad is None
    diff = fake_np.mean(0) - real_np.mean(0)
    per_feature = {
        "squared_l2": 2 * diff,
        "mean_squared": 2 * diff / diff.size,
        "mean_absolute": np.sign(diff) / diff.size,
    }[distance]
    expected = np.tile(per_feature / len(fake_np), (len(fake_np), 1))  # d mean / d row = 1/M
    np.testing.assert_allclose(fake.grad.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("distance", DISTANCES)
def test_feature_matching_gradcheck(rng, distance):
    real = as_tensor(rng.normal(size=(4, 5)))
    fake = as_tensor(rng.normal(size=(3, 5)) + 0.5, requires_grad=True)
    assert gradcheck(lambda f: F.feature_matching_loss(real, f, distance), (fake,), eps=1e-6, atol=1e-7)


def test_feature_matching_bad_input():
    a = torch.zeros(4, 5)
    assert_raises_naming(KeyError, ["'l2'"], F.feature_matching_loss, a, a, distance="l2")  # the lookup's own error
    words = ["real_features", "fake_features", "(4, 5)", "(4, 6)"]
    assert_raises_naming(ValueError, words, F.feature_matching_loss, a, torch.zeros(4, 6))
    assert_raises_naming(ValueError, ["real_features", "(5,)"], F.feature_matching_loss, torch.zeros(5), a)
    assert_raises_naming(ValueError, ["fake_features", "(5,)"], F.feature_matching_loss, a, torch.zeros(5))
    assert_raises_naming(ValueError, ["real_features", "(0, 5)"], F.feature_matching_loss, torch.zeros(0, 5), a)
    assert_raises_naming(ValueError, ["fake_features", "(0, 5)"], F.feature_matching_loss, a, torch.zeros(0, 5))
    assert_raises_naming(RuntimeError, ["mean", "Long"], F.feature_matching_loss, a, a.long())
    assert_raises_naming(AttributeError, ["ndarray"], F.feature_matching_loss, np.zeros((4, 5)), a)


# ----------------------------------------------------------------------------------------------------------------
# The K+1-class discriminator (spec §2)
# ----------------------------------------------------------------------------------------------------------------
def test_gan_logit_matches_oracle(rng):
    logits = rng.normal(scale=3.0, size=(8, 10))
    out = F.gan_logit(as_tensor(logits))
    assert out.shape == (8,)
    np.testing.assert_allclose(out.numpy(), np_logsumexp(logits), rtol=1e-13)
    # D(x) = Z / (Z + 1) with Z = sum_k exp(l_k), the fake logit fixed at 0.
    z = np.exp(logits).sum(axis=1)
    np.testing.assert_allclose(torch.sigmoid(out).numpy(), z / (z + 1), rtol=1e-12)


def test_gan_logit_gradcheck(rng):
    assert gradcheck(F.gan_logit, (as_tensor(rng.normal(size=(4, 6)), requires_grad=True),), eps=1e-6, atol=1e-7)


def test_gan_logit_bad_input():
    assert_raises_naming(ValueError, ["logits", "(10,)"], F.gan_logit, torch.zeros(10))
    assert_raises_naming(ValueError, ["logits", "(2, 10, 1)"], F.gan_logit, torch.zeros(2, 10, 1))
    integers = torch.tensor([[0, 1, 2], [3, 0, 0]])  # their float values
    torch.testing.assert_close(F.gan_logit(integers), F.gan_logit(integers.float()), rtol=0, atol=0)


def _ssl_inputs(rng, k=10, n_lab=6, n_unl=8, n_gen=5, scale=3.0):
    return (
        rng.normal(scale=scale, size=(n_lab, k)),
        rng.integers(0, k, size=n_lab),
        rng.normal(scale=scale, size=(n_unl, k)),
        rng.normal(scale=scale, size=(n_gen, k)),
    )


@pytest.mark.parametrize("k", [1, 2, 10])
def test_semi_supervised_losses_match_oracle(rng, k):
    l_lab, y, l_unl, l_gen = _ssl_inputs(rng, k=k)
    loss_lab, loss_unl = F.semi_supervised_losses(
        as_tensor(l_lab), torch.as_tensor(y), as_tensor(l_unl), as_tensor(l_gen)
    )
    assert loss_lab.shape == () and loss_unl.shape == ()
    want_lab, want_unl = np_semi_supervised(l_lab, y, l_unl, l_gen)
    np.testing.assert_allclose(loss_lab.item(), want_lab, rtol=1e-12)
    np.testing.assert_allclose(loss_unl.item(), want_unl, rtol=1e-12)


@pytest.mark.parametrize("real_target", [0.9, 0.75, 1.0])
def test_semi_supervised_losses_with_smoothed_real_target(rng, real_target):
    # One-sided label smoothing on the K+1-class D: the unlabeled real term becomes BCE(LSE(l_unl), real_target);
    # the fake term keeps target 0; at 1.0 it is the reference's formula.
    l_lab, y, l_unl, l_gen = _ssl_inputs(rng)
    loss_lab, loss_unl = F.semi_supervised_losses(
        as_tensor(l_lab), torch.as_tensor(y), as_tensor(l_unl), as_tensor(l_gen), real_target=real_target
    )
    want_lab, want_unl_reference = np_semi_supervised(l_lab, y, l_unl, l_gen)
    want_unl = 0.5 * np.mean(np_bce_with_logits(np_logsumexp(l_unl), real_target)) + 0.5 * np.mean(
        np_softplus(np_logsumexp(l_gen))
    )
    np.testing.assert_allclose(loss_lab.item(), want_lab, rtol=1e-12)
    np.testing.assert_allclose(loss_unl.item(), want_unl, rtol=1e-12)
    if real_target == 1.0:
        np.testing.assert_allclose(loss_unl.item(), want_unl_reference, rtol=1e-12)


def test_semi_supervised_losses_smoothed_gradcheck_and_extremes(rng):
    l_lab, y, l_unl, l_gen = _ssl_inputs(rng, k=3, n_lab=2, n_unl=3, n_gen=2, scale=1.0)
    labels = torch.as_tensor(y)
    inputs = tuple(as_tensor(a, requires_grad=True) for a in (l_lab, l_unl, l_gen))
    fn = lambda a, b, c: F.semi_supervised_losses(a, labels, b, c, real_target=0.8)  # noqa: E731
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-7)
    extreme = [torch.tensor(EXTREME * np.sign(a), requires_grad=True) for a in (l_lab, l_unl, l_gen)]
    losses = F.semi_supervised_losses(extreme[0], labels, extreme[1], extreme[2], real_target=0.8)
    assert all(torch.isfinite(loss) for loss in losses)
    sum(losses).backward()
    assert all(torch.isfinite(t.grad).all() for t in extreme)


def test_semi_supervised_losses_check_labels_false_same_values(rng):
    l_lab, y, l_unl, l_gen = _ssl_inputs(rng)
    args = (as_tensor(l_lab), torch.as_tensor(y), as_tensor(l_unl), as_tensor(l_gen))
    checked, unchecked = F.semi_supervised_losses(*args), F.semi_supervised_losses(*args, check_labels=False)
    assert torch.equal(checked[0], unchecked[0]) and torch.equal(checked[1], unchecked[1])


@pytest.mark.parametrize("label_dtype", [torch.int64, torch.int32, torch.uint8])
def test_semi_supervised_losses_accept_integer_labels(rng, label_dtype):
    l_lab, y, l_unl, l_gen = _ssl_inputs(rng)
    labels = torch.as_tensor(y).to(label_dtype)
    loss_lab, _ = F.semi_supervised_losses(as_tensor(l_lab), labels, as_tensor(l_unl), as_tensor(l_gen))
    np.testing.assert_allclose(loss_lab.item(), np_semi_supervised(l_lab, y, l_unl, l_gen)[0], rtol=1e-12)


def test_semi_supervised_losses_gradcheck(rng):
    l_lab, y, l_unl, l_gen = _ssl_inputs(rng, k=4, n_lab=3, n_unl=4, n_gen=2, scale=1.0)
    labels = torch.as_tensor(y)
    inputs = tuple(as_tensor(a, requires_grad=True) for a in (l_lab, l_unl, l_gen))
    assert gradcheck(lambda a, b, c: F.semi_supervised_losses(a, labels, b, c), inputs, eps=1e-6, atol=1e-7)


EXTREME = 1e4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_semi_supervised_losses_stable_for_extreme_logits(rng, dtype):
    k = 10
    signs = rng.choice([-1.0, 1.0], size=(3, 6, k))
    l_lab, l_unl, l_gen = (EXTREME * s for s in signs)
    l_unl[0] = -EXTREME  # D(x) -> 0 on a real example: -log D = 1e4, a finite (large) loss
    l_gen[0] = EXTREME  # D(G(z)) -> 1 on a fake one
    y = rng.integers(0, k, size=6)
    inputs = [torch.tensor(a, dtype=dtype, requires_grad=True) for a in (l_lab, l_unl, l_gen)]
    loss_lab, loss_unl = F.semi_supervised_losses(inputs[0], torch.as_tensor(y), inputs[1], inputs[2])
    want_lab, want_unl = np_semi_supervised(l_lab, y, l_unl, l_gen)
    assert torch.isfinite(loss_lab) and torch.isfinite(loss_unl)
    rtol = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(loss_lab.item(), want_lab, rtol=rtol, atol=1e-3 if dtype == torch.float32 else 1e-8)
    np.testing.assert_allclose(loss_unl.item(), want_unl, rtol=rtol, atol=1e-3 if dtype == torch.float32 else 1e-8)
    (loss_lab + loss_unl).backward()
    for tensor in inputs:
        assert torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().max() <= 1.0  # softmax/sigmoid weights divided by the batch size


def test_minimax_generator_loss_matches_oracle(rng):
    l_gen = rng.normal(scale=3.0, size=(7, 10))
    loss = F.minimax_generator_loss(as_tensor(l_gen))
    assert loss.shape == ()
    np.testing.assert_allclose(loss.item(), -np.mean(np_softplus(np_logsumexp(l_gen))), rtol=1e-12)
    # softplus(LSE) = -log(1 - D): the loss is mean log(1 - D(G(z))).
    z = np.exp(l_gen).sum(axis=1)
    np.testing.assert_allclose(loss.item(), np.mean(np.log(1 - z / (z + 1))), rtol=1e-10)


def test_minimax_generator_loss_is_the_saturating_one():
    # When D confidently rejects the fakes (LSE -> -inf), log(1 - D) is flat: the gradient vanishes. The
    # non-saturating -log D would give a gradient of about -1/N per logit row instead.
    logits = torch.full((4, 10), -30.0, dtype=DOUBLE, requires_grad=True)
    F.minimax_generator_loss(logits).backward()
    assert logits.grad.abs().max() < 1e-10
    assert torch.all(logits.grad <= 0)  # minimizing it raises D(G(z))


def test_minimax_generator_loss_gradcheck(rng):
    logits = as_tensor(rng.normal(size=(5, 4)), requires_grad=True)
    assert gradcheck(F.minimax_generator_loss, (logits,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gan_logit_and_minimax_stable_for_extreme_logits(rng, dtype):
    raw = EXTREME * rng.choice([-1.0, 1.0], size=(6, 10))
    raw[0] = -EXTREME
    raw[1] = EXTREME
    logits = torch.tensor(raw, dtype=dtype, requires_grad=True)
    lse = F.gan_logit(logits)
    np.testing.assert_allclose(lse.detach().double().numpy(), np_logsumexp(raw), rtol=1e-6)
    loss = F.minimax_generator_loss(logits)
    np.testing.assert_allclose(loss.item(), -np.mean(np_softplus(np_logsumexp(raw))), rtol=1e-6)
    (loss + lse.sum()).backward()
    assert torch.isfinite(logits.grad).all()


def test_semi_supervised_losses_bad_input(rng):
    l = torch.zeros(4, 10)
    y = torch.tensor([0, 1, 2, 3])
    ssl = F.semi_supervised_losses
    assert_raises_naming(ValueError, ["labels", "10"], ssl, l, torch.tensor([0, 1, 2, 10]), l, l)
    assert_raises_naming(ValueError, ["labels", "-1"], ssl, l, torch.tensor([0, -1, 2, 3]), l, l)
    assert_raises_naming(TypeError, ["labels", "float"], ssl, l, y.double(), l, l)
    assert_raises_naming(ValueError, ["labels", "(4, 1)"], ssl, l, y[:, None], l, l)
    assert_raises_naming(ValueError, ["labels", "(3,)"], ssl, l, y[:3], l, l)
    assert_raises_naming(ValueError, ["logits_unlabeled", "(4, 9)"], ssl, l, y, torch.zeros(4, 9), l)
    assert_raises_naming(ValueError, ["logits_fake", "(4, 11)"], ssl, l, y, l, torch.zeros(4, 11))
    assert_raises_naming(ValueError, ["logits_labeled", "(4,)"], ssl, torch.zeros(4), y, l, l)
    assert_raises_naming(ValueError, ["logits_labeled", "(0, 10)"], ssl, torch.zeros(0, 10), y[:0], l, l)
    assert_raises_naming(ValueError, ["logits_unlabeled", "(0, 10)"], ssl, l, y, torch.zeros(0, 10), l)
    assert_raises_naming(ValueError, ["logits_fake", "(0, 10)"], ssl, l, y, l, torch.zeros(0, 10))
    assert_raises_naming(ValueError, ["logits_fake", "(0, 10)"], F.minimax_generator_loss, torch.zeros(0, 10))
    assert_raises_naming(ValueError, ["logits_fake", "(10,)"], F.minimax_generator_loss, torch.zeros(10))
    assert_raises_naming(AttributeError, ["list"], ssl, l, [0, 1, 2, 3], l, l)
    for bad_target in (0.0, 1.5, -0.2, float("nan"), True):
        assert_raises_naming(ValueError, ["real_target", repr(bad_target)], ssl, l, y, l, l, real_target=bad_target)


# ----------------------------------------------------------------------------------------------------------------
# One-sided label smoothing (paper §3.4; ImageNet code, spec §3.7)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("real_target", [0.9, 0.75, 1.0, 0.3])
def test_one_sided_label_smoothing_matches_oracle(rng, real_target):
    real, fake = rng.normal(scale=3.0, size=7), rng.normal(scale=3.0, size=(5, 1))
    loss = F.one_sided_label_smoothing_loss(as_tensor(real), as_tensor(fake), real_target=real_target)
    assert loss.shape == ()
    want = np.mean(np_bce_with_logits(real, real_target)) + np.mean(np_bce_with_logits(fake, 0.0))
    np.testing.assert_allclose(loss.item(), want, rtol=1e-12)


def test_one_sided_label_smoothing_default_target_is_0_9(rng):
    real, fake = rng.normal(size=4), rng.normal(size=4)
    want = np.mean(np_bce_with_logits(real, 0.9)) + np.mean(np_bce_with_logits(fake, 0.0))
    loss = F.one_sided_label_smoothing_loss(as_tensor(real), as_tensor(fake))
    np.testing.assert_allclose(loss.item(), want, rtol=1e-12)


def test_one_sided_label_smoothing_only_real_side_smoothed():
    # The optimum for a real logit is logit(real_target); for a fake logit the loss keeps falling towards -inf.
    target = 0.75
    real = torch.tensor([math.log(target / (1 - target))], dtype=DOUBLE, requires_grad=True)
    fake = torch.tensor([-5.0], dtype=DOUBLE, requires_grad=True)
    F.one_sided_label_smoothing_loss(real, fake, real_target=target).backward()
    assert abs(real.grad.item()) < 1e-12
    assert fake.grad.item() > 0  # still pushes the fake logit down: fake targets are 0, not smoothed


def test_one_sided_label_smoothing_gradcheck(rng):
    real = as_tensor(rng.normal(size=(4, 1)), requires_grad=True)
    fake = as_tensor(rng.normal(size=3), requires_grad=True)
    assert gradcheck(lambda r, f: F.one_sided_label_smoothing_loss(r, f, 0.8), (real, fake), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_sided_label_smoothing_stable_for_extreme_logits(dtype):
    raw = [EXTREME, -EXTREME, 0.0]
    real = torch.tensor(raw, dtype=dtype, requires_grad=True)
    fake = torch.tensor(raw, dtype=dtype, requires_grad=True)
    loss = F.one_sided_label_smoothing_loss(real, fake, real_target=0.9)
    want = np.mean(np_bce_with_logits(np.array(raw), 0.9)) + np.mean(np_bce_with_logits(np.array(raw), 0.0))
    assert torch.isfinite(loss)
    np.testing.assert_allclose(loss.item(), want, rtol=1e-6)
    loss.backward()
    assert torch.isfinite(real.grad).all() and torch.isfinite(fake.grad).all()


@pytest.mark.parametrize("real_target", [0.0, -0.1, 1.1, float("nan"), float("inf"), True, "0.9"])
def test_one_sided_label_smoothing_rejects_targets_outside_0_1(real_target):
    a = torch.zeros(3)
    assert_raises_naming(
        ValueError, ["real_target", repr(real_target)], F.one_sided_label_smoothing_loss, a, a, real_target=real_target
    )


@pytest.mark.parametrize("real_target", [np.float32(0.75), np.float64(0.75), torch.tensor(0.75)])
def test_one_sided_label_smoothing_accepts_real_number_types(rng, real_target):
    # A target read from a NumPy config or array is in (0, 1] as much as a Python float is.
    real, fake = rng.normal(size=4), rng.normal(size=4)
    want = np.mean(np_bce_with_logits(real, float(real_target))) + np.mean(np_bce_with_logits(fake, 0.0))
    loss = F.one_sided_label_smoothing_loss(as_tensor(real), as_tensor(fake), real_target=real_target)
    np.testing.assert_allclose(loss.item(), want, rtol=1e-6)


def test_one_sided_label_smoothing_bad_input():
    a = torch.zeros(3)
    assert_raises_naming(ValueError, ["real_logits", "(0,)"], F.one_sided_label_smoothing_loss, torch.zeros(0), a)
    assert_raises_naming(ValueError, ["fake_logits", "(0,)"], F.one_sided_label_smoothing_loss, a, torch.zeros(0))
    assert_raises_naming(NotImplementedError, ["Long"], F.one_sided_label_smoothing_loss, a, a.long())


# ----------------------------------------------------------------------------------------------------------------
# Historical averaging (paper §3.3)
# ----------------------------------------------------------------------------------------------------------------
def test_historical_average_penalty_matches_oracle_and_gradients(rng):
    shapes = [(3, 4), (4,), (2, 1, 3, 3), ()]
    theta = [rng.normal(size=s) for s in shapes]
    avg = [rng.normal(size=s) for s in shapes]
    params = [as_tensor(t, requires_grad=True) for t in theta]
    averages = [as_tensor(a, requires_grad=True) for a in avg]
    penalty = F.historical_average_penalty(params, averages)
    assert penalty.shape == ()
    np.testing.assert_allclose(penalty.item(), sum(np.sum((t - a) ** 2) for t, a in zip(theta, avg)), rtol=1e-12)
    penalty.backward()
    for p, t, a in zip(params, theta, avg):
        np.testing.assert_allclose(p.grad.numpy(), 2 * (t - a), rtol=1e-12)
    assert all(a.grad is None for a in averages)  # the averages carry no gradient


def test_historical_average_penalty_gradcheck(rng):
    avg = [as_tensor(rng.normal(size=(2, 3))), as_tensor(rng.normal(size=4))]
    params = (as_tensor(rng.normal(size=(2, 3)), requires_grad=True), as_tensor(rng.normal(size=4), requires_grad=True))
    assert gradcheck(lambda a, b: F.historical_average_penalty([a, b], avg), params, eps=1e-6, atol=1e-7)


def test_historical_average_penalty_accepts_module_parameters():
    model = torch.nn.Linear(3, 2).double()
    averages = [p.detach() + 0.5 for p in model.parameters()]
    penalty = F.historical_average_penalty(model.parameters(), averages)
    assert penalty.item() == pytest.approx(0.25 * (6 + 2), rel=1e-12)
    penalty.backward()
    assert torch.allclose(model.weight.grad, torch.full((2, 3), -1.0, dtype=DOUBLE))


def test_historical_average_penalty_bad_input():
    p = [torch.zeros(2, 3), torch.zeros(4)]
    words = ["averages", "[(2, 3), (4,)]", "1 averages", "[(2, 3)]"]
    assert_raises_naming(ValueError, words, F.historical_average_penalty, p, [torch.zeros(2, 3)])
    wrong_shape = [torch.zeros(2, 3), torch.zeros(5)]
    assert_raises_naming(ValueError, ["averages", "(4,)", "(5,)"], F.historical_average_penalty, p, wrong_shape)
    assert_raises_naming(ValueError, ["params"], F.historical_average_penalty, [], [])
    assert_raises_naming(AttributeError, ["list"], F.historical_average_penalty, p, [[0.0], torch.zeros(4)])


# ----------------------------------------------------------------------------------------------------------------
# Inception Score (spec §5)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, k, splits", [(103, 13, 10), (50, 7, 7), (40, 5, 1), (12, 4, 12)])
def test_inception_score_matches_original_code(rng, n, k, splits):
    # Scale 2 makes the splits differ, so the population std is exercised.
    logits = rng.normal(scale=2.0, size=(n, k))
    mean, std = F.inception_score(torch.tensor(logits), splits=splits)
    assert isinstance(mean, float) and isinstance(std, float)
    want_mean, want_std = np_inception_score(np_softmax(logits), splits)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
    np.testing.assert_allclose(std, want_std, rtol=1e-9, atol=1e-13)


def test_inception_score_std_is_population_std(rng):
    logits = rng.normal(scale=2.0, size=(60, 6))
    _, std = F.inception_score(torch.tensor(logits), splits=3)
    scores = [np_inception_score(np_softmax(logits[20 * i : 20 * (i + 1)]), 1)[0] for i in range(3)]
    np.testing.assert_allclose(std, np.std(scores, ddof=0), rtol=1e-10)
    assert abs(std - np.std(scores, ddof=1)) > 1e-6


def test_inception_score_computes_in_float64(rng):
    logits32 = torch.tensor(rng.normal(scale=4.0, size=(200, 50)), dtype=torch.float32)
    mean, std = F.inception_score(logits32, splits=4)
    want_mean, want_std = np_inception_score(np_softmax(logits32.double().numpy()), 4)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12)  # float32 arithmetic would be off by ~1e-6
    np.testing.assert_allclose(std, want_std, rtol=1e-9)


def test_inception_score_accepts_numpy(rng):
    logits = rng.normal(size=(30, 5))
    assert F.inception_score(logits, splits=3) == pytest.approx(np_inception_score(np_softmax(logits), 3), rel=1e-12)


@pytest.mark.parametrize("k, splits", [(10, 10), (4, 3), (1, 1)])
def test_inception_score_perfect_balanced_predictor_gives_k(k, splits):
    # log p of one-hot predictions (exact zeros as -inf), classes cycling so every split is balanced.
    log_p = torch.log(torch.eye(k, dtype=DOUBLE)).repeat(splits * 3, 1)
    mean, std = F.inception_score(log_p, splits=splits)
    assert math.isfinite(mean) and math.isfinite(std)
    assert mean == pytest.approx(k, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_identical_predictions_give_one(rng):
    row = rng.normal(size=(1, 8))
    mean, std = F.inception_score(torch.tensor(np.repeat(row, 40, axis=0)), splits=4)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_zero_probabilities_give_no_nan(rng):
    p = rng.dirichlet(np.ones(6), size=30)
    p[:, 2] = 0.0  # a class nobody predicts: 0 log 0 terms, and log p-bar = -inf, in every split
    p[::3, 4] = 0.0
    p /= p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        log_p = np.log(p)
    mean, std = F.inception_score(torch.tensor(log_p), splits=3)
    assert math.isfinite(mean) and math.isfinite(std)
    # The oracle on the columns with mass (0 log 0 = 0 by convention) is the same score.
    keep = p.copy()
    keep[keep == 0] = 1e-300  # contributes 1e-300 * log(...) ~ 0
    want_mean, want_std = np_inception_score(keep, 3)
    np.testing.assert_allclose([mean, std], [want_mean, want_std], rtol=1e-10, atol=1e-12)


def test_inception_score_splits_are_contiguous():
    # First half all class 0, second half all class 1: contiguous halves are each one class (score 1);
    # any mixing of the halves would score above 1.
    log_p = torch.log(torch.tensor([[1.0, 0.0]] * 10 + [[0.0, 1.0]] * 10, dtype=DOUBLE))
    assert F.inception_score(log_p, splits=2) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert F.inception_score(log_p, splits=1)[0] == pytest.approx(2.0, rel=1e-12)


def test_inception_score_bad_input():
    logits = torch.zeros(5, 3)
    assert_raises_naming(ValueError, ["splits", "10", "5"], F.inception_score, logits, splits=10)
    assert_raises_naming(ValueError, ["splits", "0"], F.inception_score, logits, splits=0)
    assert_raises_naming(ValueError, ["splits", "2.5"], F.inception_score, logits, splits=2.5)
    assert_raises_naming(ValueError, ["logits", "(5,)"], F.inception_score, torch.zeros(5), splits=1)
    assert_raises_naming(ValueError, ["logits", "0"], F.inception_score, torch.zeros(0, 3), splits=1)
    assert_raises_naming(ValueError, ["logits", "NaN"], F.inception_score, torch.full((5, 3), float("nan")), splits=1)
    assert_raises_naming(ValueError, ["logits", "-inf"], F.inception_score, torch.full((5, 3), float("-inf")), splits=1)
    plus_inf = torch.tensor([[0.0, 1.0, 2.0]] * 4 + [[0.0, float("inf"), 2.0]])  # one +inf entry, finite elsewhere
    assert_raises_naming(ValueError, ["logits", "+inf"], F.inception_score, plus_inf, splits=1)
    integers = torch.zeros(5, 3, dtype=torch.int64)
    assert_raises_naming(TypeError, ["logits", "int64"], F.inception_score, integers, splits=1)


@pytest.mark.parametrize("tile_bytes", [8, 200, 1000, 10**9])
def test_fast_minibatch_features_every_tiling_matches_the_oracle(rng, monkeypatch, tile_bytes):
    # The CPU passes work through the (B, N, N) similarities in tiles; shrink the tile so that the one-kernel
    # row bands (8, 200 bytes), several whole kernels per tile (1000) and a single tile are all exercised.
    monkeypatch.setattr(_fast_paths, "_CPU_TILE_BYTES", tile_bytes)
    m_np = rng.normal(size=(13, 3, 4))
    m = as_tensor(m_np, requires_grad=True)
    out = _fast_paths.minibatch_features(m)
    distances = np.abs(m_np[:, None] - m_np[None]).sum(axis=-1)  # (N, N, B)
    similarity = np.exp(-distances) * (1 - np.eye(13))[:, :, None]
    np.testing.assert_allclose(out.detach().numpy(), similarity.sum(axis=1), rtol=1e-12, atol=1e-14)
    assert gradcheck(_fast_paths.minibatch_features, (m,), eps=1e-6, atol=1e-7)
    np.testing.assert_allclose(_fast_paths.minibatch_l1_distances(m.detach()).numpy(), distances, rtol=1e-13)


# --------------------------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------------------------
def _scipy_frechet(mu1, sigma1, mu2, sigma2):
    """The usual implementation (pytorch-fid, Ignite): tr(sqrtm(Σ1 Σ2)) by SciPy, in float64."""
    import scipy.linalg

    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real)


def _statistics(rng, n, d, scale=1.0):
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * scale / np.sqrt(d)
    return x.mean(axis=0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("n1, n2, d", [(400, 300, 32), (5000, 5000, 128), (40, 60, 64), (20, 500, 64)])
def test_frechet_distance_matches_scipy_sqrtm(n1, n2, d):
    # (40, 60, 64) and (20, 500, 64): fewer samples than features, so Σ1 (and Σ2) is singular.
    rng = np.random.default_rng(n1 + n2 + d)
    mu1, sigma1 = _statistics(rng, n1, d)
    mu2, sigma2 = _statistics(rng, n2, d, scale=1.3)
    expected = _scipy_frechet(mu1, sigma1, mu2, sigma2)
    got = F.frechet_distance(torch.from_numpy(mu1), torch.from_numpy(sigma1), mu2, sigma2)
    assert got == pytest.approx(expected, rel=1e-6)
    assert isinstance(got, float)


def test_frechet_distance_closed_forms():
    eye = torch.eye(5, dtype=torch.float64)
    # Equal Gaussians: 0. Commuting covariances: ||Δμ||² + Σ(√a − √b)².
    assert F.frechet_distance(torch.ones(5), eye, torch.ones(5), eye) == pytest.approx(0.0, abs=1e-12)
    a, b = torch.tensor([1.0, 4.0, 9.0, 0.0, 2.0]), torch.tensor([4.0, 1.0, 0.0, 0.0, 2.0])
    expected = 5 * 0.5**2 + float(((a.sqrt() - b.sqrt()) ** 2).sum())
    got = F.frechet_distance(torch.zeros(5), torch.diag(a), torch.full((5,), 0.5), torch.diag(b))
    assert got == pytest.approx(expected, rel=1e-12)
    # Float32 statistics are computed in float64.
    assert F.frechet_distance(torch.zeros(5), eye.float() * 4, torch.zeros(5), eye.float()) == pytest.approx(5.0)


def test_frechet_distance_warns_with_the_numbers_when_a_covariance_is_not_psd():
    sigma = torch.diag(torch.tensor([1.0, 1.0, -0.5], dtype=torch.float64))
    with pytest.warns(RuntimeWarning, match=r"sigma1 has the eigenvalue -5\.000e-01 \(largest 1\.000e\+00\)"):
        F.frechet_distance(torch.zeros(3), sigma, torch.zeros(3), torch.eye(3))


def test_frechet_distance_bad_input():
    eye = torch.eye(3)
    with pytest.raises(ValueError, match=r"sigma1 must be a \(3, 3\) covariance matching mu1, got shape \(2, 2\)"):
        F.frechet_distance(torch.zeros(3), torch.eye(2), torch.zeros(3), eye)
    with pytest.raises(ValueError, match="mu1 and mu2 must have the same size, got 3 and 4"):
        F.frechet_distance(torch.zeros(3), eye, torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="sigma2 must be finite"):
        F.frechet_distance(torch.zeros(3), eye, torch.zeros(3), eye * float("nan"))
    with pytest.raises(TypeError, match="mu1 must be a torch.Tensor"):
        F.frechet_distance([0.0, 0.0, 0.0], eye, torch.zeros(3), eye)
    with pytest.raises(ValueError, match="mu2 must be a non-empty 1-D mean vector"):
        F.frechet_distance(torch.zeros(3), eye, torch.zeros(1, 3), eye)
