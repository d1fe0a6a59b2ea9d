"""The formulas of *Improved Techniques for Training GANs*, as pure functions on tensors.

Each function computes one formula of the paper (Salimans et al., 2016) exactly as the reference code
(``openai/improved-gan``) computes it; where the paper and the code disagree, the docstring says which one is
followed and, where users would want either, offers both. The links in parentheses lead to the facts of the
original code that we follow (:doc:`/reference`).

Nothing here holds state or parameters: the modules in :mod:`ignite_igan.nn` and the handlers in
:mod:`ignite_igan.handlers` are built on these functions, and users can call them directly, the way
``torch.nn.functional`` sits under ``torch.nn``.

Example:
    >>> import torch
    >>> from ignite_igan import functional as F
    >>> logits_lab, logits_unl, logits_fake = torch.randn(4, 10), torch.randn(6, 10), torch.randn(6, 10)
    >>> loss_lab, loss_unl = F.semi_supervised_losses(logits_lab, torch.tensor([0, 1, 2, 3]), logits_unl, logits_fake)
    >>> bool(loss_lab > 0) and bool(loss_unl > 0)
    True
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as torch_F
from torch import Tensor

from ignite_igan.validation import ArgumentTypeError, check_int, check_real, check_statistics

__all__ = [
    "minibatch_l1_distances",
    "minibatch_features",
    "virtual_batch_norm",
    "feature_matching_loss",
    "gan_logit",
    "semi_supervised_losses",
    "minimax_generator_loss",
    "one_sided_label_smoothing_loss",
    "historical_average_penalty",
    "inception_score",
    "frechet_distance",
]

#: The distances of :func:`feature_matching_loss` between the batch means: the paper's, the MNIST code's, and the
#: CIFAR-10/SVHN code's.
_FEATURE_MATCHING_DISTANCES = {
    "squared_l2": lambda difference: difference.square().sum(),
    "mean_squared": lambda difference: difference.square().mean(),
    "mean_absolute": lambda difference: difference.abs().mean(),
}
FEATURE_MATCHING_DISTANCES = tuple(_FEATURE_MATCHING_DISTANCES)


# --------------------------------------------------------------------------------------------------------------
# Minibatch discrimination (paper §3.2; docs/reference.md, Minibatch discrimination)
# --------------------------------------------------------------------------------------------------------------
def minibatch_l1_distances(m: Tensor) -> Tensor:
    """Pairwise L1 distances between the rows of every kernel: ``d[i, j, b] = ||m[i, b] - m[j, b]||_1``.

    The broadcast formula: it builds the (N, N, B, C) differences. :class:`ignite_igan.nn.MinibatchDiscrimination`
    computes the same distances in O(N²·B) memory (``ignite_igan._fast_paths``).

    Args:
        m: the projected features, shape (N, B, C): N examples, B kernels of C dimensions each.

    Returns:
        The distances, shape (N, N, B), with zeros on the diagonal (self-distances are not masked here).

    Example:
        >>> import torch
        >>> minibatch_l1_distances(torch.tensor([[[0.0, 1.0]], [[2.0, -1.0]]]))[0, 1].tolist()  # |0-2| + |1+1|
        [4.0]
    """
    # A 4-D m would broadcast into features of another shape, an empty one into empty features: both silently.
    if m.dim() != 3 or 0 in m.shape:
        raise ValueError(f"m must be non-empty (N examples, B kernels, C kernel dims), got shape {tuple(m.shape)}")
    return (m.unsqueeze(1) - m.unsqueeze(0)).abs().sum(dim=3)


def minibatch_features(m: Tensor) -> Tensor:
    """Minibatch-discrimination features: the closeness of each example to the rest of its minibatch.

    ::

        o[i, b] = Σ_{j ≠ i} exp(−‖m[i, b] − m[j, b]‖₁)

    The paper (§3.2) sums over all j; the reference code excludes the example itself (it adds 1e6 to the
    self-distance, :ref:`ref-minibatch-discrimination`), which only removes a constant 1, and so do we. The per-kernel
    bias of the reference layer is a parameter and lives in :class:`ignite_igan.nn.MinibatchDiscrimination`.

    This is the formula as written, with O(N²·B·C) memory for the differences. The layer computes the same
    features in O(N²·B) memory, forward and backward (``ignite_igan._fast_paths``, chosen in :mod:`ignite_igan.nn`;
    ``benchmarks/minibatch_discrimination.py`` measures both).

    Args:
        m: the input projected through the layer's tensor T, shape (N, B, C).

    Returns:
        ``o`` of shape (N, B). Each example's features depend on the other examples of the same call, so call
        it separately per source (labeled, unlabeled, generated), as the reference does. Non-finite inputs follow
        the expression (``docs/nan_policy.md``): a NaN in ``m[i, b]`` makes kernel ``b``'s features NaN for every
        example; an infinity makes example ``i``'s features NaN in kernel ``b`` (its self-distance is
        ``inf - inf``) and adds ``exp(-inf) = 0`` to those of the examples with finite entries there.

    Example:
        >>> import torch
        >>> o = minibatch_features(torch.zeros(4, 3, 5))  # identical rows: each sees N - 1 = 3 neighbours
        >>> o.tolist()[0]
        [3.0, 3.0, 3.0]
    """
    distances = minibatch_l1_distances(m)  # (N, N, B)
    self_distance = 1e6 * torch.eye(m.shape[0], dtype=m.dtype, device=m.device).unsqueeze(2)  # exp(-1e6) = 0
    return torch.exp(-(distances + self_distance)).sum(dim=1)


# --------------------------------------------------------------------------------------------------------------
# Virtual batch normalization (paper §3; docs/reference.md, Virtual batch normalization)
# --------------------------------------------------------------------------------------------------------------
def virtual_batch_norm(x: Tensor, reference: Tensor, eps: float = 1e-5) -> Tensor:
    """Normalizes each example with statistics mixed from a fixed reference batch and the example itself.

    The reference (:ref:`ref-virtual-batch-norm`; the corrected 2017 version, commit ``e0e5ffc``): per channel, with R
    the reference batch size,

    ::

        μ   = μ_i / (R + 1) + R · μ_ref / (R + 1)
        s   = s_i / (R + 1) + R · s_ref / (R + 1)
        y_i = (x_i − μ) / √(ε + s − μ²)

    where ``μ_ref`` and ``s_ref`` are the mean and the mean of squares of the reference activations over
    (R, H, W), and ``μ_i``, ``s_i`` the example's own over (H, W) (for 2-D inputs, the value and its square).
    An example's output therefore never depends on the other live examples. Gradients flow into ``reference``,
    as in the reference code. No affine transform is applied here; :class:`ignite_igan.nn.VirtualBatchNorm`
    adds γ and β.

    The variance ``s - μ²`` is non-negative in exact arithmetic; it is clamped at 0 so that rounding can never
    turn it into a NaN.

    Args:
        x: live activations, (N, C) or (N, C, H, W).
        reference: the reference batch's activations at the same layer, (R, C) or (R, C, H, W).
        eps: added to the variance inside the square root, > 0 (1e-5 in the reference).

    Returns:
        The normalized ``x``, same shape.
    """
    # Moments of another width would broadcast, and an empty reference has NaN moments: both silently.
    if x.dim() not in (2, 4) or reference.shape[1:] != x.shape[1:] or len(reference) == 0:
        shapes = f"got x of shape {tuple(x.shape)} and reference of shape {tuple(reference.shape)}"
        raise ValueError(f"x must be (N, C) or (N, C, H, W) and reference a non-empty (R, ...) alike, {shapes}")
    # eps = 0 would turn a constant channel into 0/0, eps = inf every output into 0.
    eps = check_real("eps", eps, minimum=0.0, low_open=True)
    r = reference.shape[0]
    # Per-channel moments: reduce over the batch and the spatial dimensions for the reference, over the
    # spatial dimensions alone for each live example.
    ref_dims = (0,) if x.dim() == 2 else (0, 2, 3)
    ref_mean = reference.mean(dim=ref_dims, keepdim=True)
    ref_mean_sq = reference.square().mean(dim=ref_dims, keepdim=True)
    if x.dim() == 2:
        own_mean, own_mean_sq = x, x.square()
    else:
        own_mean = x.mean(dim=(2, 3), keepdim=True)
        own_mean_sq = x.square().mean(dim=(2, 3), keepdim=True)
    new_coeff = 1.0 / (r + 1.0)
    ref_coeff = 1.0 - new_coeff
    mean = new_coeff * own_mean + ref_coeff * ref_mean
    mean_sq = new_coeff * own_mean_sq + ref_coeff * ref_mean_sq
    var = (mean_sq - mean.square()).clamp_min(0.0)
    return (x - mean) * torch.rsqrt(var + eps)


# --------------------------------------------------------------------------------------------------------------
# Feature matching (paper §3.1; docs/reference.md, Feature matching)
# --------------------------------------------------------------------------------------------------------------
def feature_matching_loss(real_features: Tensor, fake_features: Tensor, distance: str = "squared_l2") -> Tensor:
    """Distance between the batch means of the discriminator's features on real and generated data.

    The batch *means* are compared, never individual pairs:

    - ``"squared_l2"``: the paper's ``||E f(x) - E f(G(z))||²₂``, a sum over features (§3.1).
    - ``"mean_squared"``: the MNIST code's ``mean_f (E f(G(z)) - E f(x))²`` (:ref:`ref-mnist`).
    - ``"mean_absolute"``: the CIFAR-10/SVHN code's ``mean_f |E f(x) - E f(G(z))|`` (:ref:`ref-cifar10`).

    The real side is detached: only the generator learns from this loss.

    Args:
        real_features: (N, F) features of real data (more dimensions are flattened).
        fake_features: (M, F) features of generated data; M may differ from N.
        distance: one of ``"squared_l2"``, ``"mean_squared"``, ``"mean_absolute"``.

    Returns:
        A scalar tensor.
    """
    # Means of F features and of 1 would broadcast, and an empty batch has a NaN mean: both silently. (Another
    # distance is a KeyError naming it.)
    real, fake = real_features.shape, fake_features.shape
    if len(real) < 2 or len(fake) < 2 or 0 in (real[0], fake[0]) or math.prod(real[1:]) != math.prod(fake[1:]):
        shapes = f"got shapes {tuple(real)} and {tuple(fake)}"
        raise ValueError(f"real_features and fake_features must be non-empty (N, F) and (M, F) batches, {shapes}")
    difference = fake_features.flatten(1).mean(dim=0) - real_features.detach().flatten(1).mean(dim=0)
    return _FEATURE_MATCHING_DISTANCES[distance](difference)


# --------------------------------------------------------------------------------------------------------------
# The K+1-class semi-supervised discriminator (paper §5; docs/reference.md, The K+1-class discriminator)
# --------------------------------------------------------------------------------------------------------------
def gan_logit(logits: Tensor) -> Tensor:
    """The real-vs-fake logit of a K-class discriminator whose (K+1)-th "fake" logit is fixed at 0.

    With ``Z = Σ_k exp(l_k)``, ``D(x) = Z / (Z + 1) = sigmoid(log Z)``, so the logit of D is ``logsumexp(l)``
    (:ref:`ref-ssl-loss`).

    Args:
        logits: (N, K) class logits.

    Returns:
        (N,) logits of D(x).
    """
    # logsumexp over dim 1 of a 3-D tensor would silently keep the third dimension.
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D (N, K classes), got a tensor of shape {tuple(logits.shape)}")
    return torch.logsumexp(logits, dim=1)


def semi_supervised_losses(
    logits_labeled: Tensor,
    labels: Tensor,
    logits_unlabeled: Tensor,
    logits_fake: Tensor,
    real_target: float = 1.0,
    check_labels: bool = True,
) -> Tuple[Tensor, Tensor]:
    """The discriminator's two losses in the K+1-class semi-supervised GAN (:ref:`ref-ssl-loss`).

    With ``LSE = logsumexp`` over the K classes (the fake class's logit fixed at 0):

    - ``loss_labeled = mean(LSE(l_lab) - l_lab[y])``: K-way softmax cross-entropy on the labeled batch.
    - ``loss_unlabeled = 0.5·mean(softplus(-LSE(l_unl))) + 0.5·mean(softplus(LSE(l_fake)))``
      ``= 0.5·E[-log D(x)] + 0.5·E[-log(1 - D(G(z)))]``, the reference's form with the half weights.

    Written with logsumexp and softplus only, so it is finite for any finite logits. The
    reference minimizes ``loss_labeled + unlabeled_weight · loss_unlabeled`` with weight 1.

    Args:
        logits_labeled: (N_lab, K) logits of the labeled batch.
        labels: (N_lab,) integer class labels in [0, K).
        logits_unlabeled: (N_unl, K) logits of the unlabeled batch.
        logits_fake: (N_fake, K) logits of the generated batch.
        real_target: target of the unlabeled real data in the real-vs-fake term, in (0, 1]. At 1 (the reference)
            the term is ``softplus(-LSE)``; below 1 it is ``BCE(LSE, real_target)``, one-sided label smoothing
            (paper §3.4) applied to the K+1-class discriminator. Fakes keep target 0.
        check_labels: verify that every label lies in [0, K). The check reads the labels' range back to the host,
            a device synchronization that a training step on a GPU may want to skip once the data is trusted.

    Returns:
        ``(loss_labeled, loss_unlabeled)``, scalar tensors.
    """
    logits = {"logits_labeled": logits_labeled, "logits_unlabeled": logits_unlabeled, "logits_fake": logits_fake}
    shapes = {name: tuple(value.shape) for name, value in logits.items()}
    num_classes = shapes["logits_labeled"][-1]
    # Torch would be silent on logits of another class count (nothing compares them), on an empty batch (a NaN
    # mean) and on float labels (.long() truncates them).
    wrong = [name for name, shape in shapes.items() if len(shape) != 2 or shape[0] == 0 or shape[1] != num_classes]
    if wrong or labels.is_floating_point() or tuple(labels.shape) != shapes["logits_labeled"][:1]:
        got = f"got shapes {shapes} and labels of shape {tuple(labels.shape)} and dtype {labels.dtype}"
        raise ArgumentTypeError(f"the logits must be non-empty (N, K) batches of one K, labels ints (N_lab,); {got}")
    # Labels out of range fail in cross_entropy on the CPU, but as a device-side assert on a GPU. The check reads
    # their range back to the host, a synchronization that check_labels=False skips.
    if check_labels and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    real_target = check_real("real_target", real_target, minimum=0.0, maximum=1.0, low_open=True, allow_tensor=True)

    loss_labeled = torch_F.cross_entropy(logits_labeled, labels.long())
    lse_unlabeled = torch.logsumexp(logits_unlabeled, dim=1)
    lse_fake = torch.logsumexp(logits_fake, dim=1)
    if real_target == 1.0:
        real_term = torch_F.softplus(-lse_unlabeled).mean()
    else:
        real_term = torch_F.binary_cross_entropy_with_logits(lse_unlabeled, torch.full_like(lse_unlabeled, real_target))
    loss_unlabeled = 0.5 * real_term + 0.5 * torch_F.softplus(lse_fake).mean()
    return loss_labeled, loss_unlabeled


def minimax_generator_loss(logits_fake: Tensor) -> Tensor:
    """The generator loss of the reference's minibatch-discrimination scripts (:ref:`ref-ssl-loss`, "MD scripts").

    ``-mean(softplus(LSE(l_fake))) = mean(log(1 - D(G(z))))``: the original, *saturating* minimax objective,
    not the non-saturating ``-log D(G(z))``.

    Args:
        logits_fake: (N, K) class logits of generated samples.

    Returns:
        A scalar tensor.
    """
    # The mean over an empty batch is a silent NaN; logsumexp over dim 1 of a 3-D tensor keeps the third dimension.
    if logits_fake.dim() != 2 or len(logits_fake) == 0:
        raise ValueError(f"logits_fake must be a non-empty (N, K) batch, got shape {tuple(logits_fake.shape)}")
    return -torch_F.softplus(torch.logsumexp(logits_fake, dim=1)).mean()


# --------------------------------------------------------------------------------------------------------------
# One-sided label smoothing (paper §3.4)
# --------------------------------------------------------------------------------------------------------------
def one_sided_label_smoothing_loss(real_logits: Tensor, fake_logits: Tensor, real_target: float = 0.9) -> Tensor:
    """Binary cross-entropy of the discriminator with the real targets smoothed and the fake targets at 0.

    ``mean_real BCE(l, real_target) + mean_fake BCE(l, 0)`` with logits. Only the real side is smoothed: the
    paper (§3.4) shows that smoothing the fake targets too pushes the optimal discriminator towards the
    generator's samples where the data has no mass. (The ImageNet reference code subtracts the target's entropy,
    making this a KL; that changes the value by a constant, not the gradient.)

    Args:
        real_logits: logits of D on real data, any shape (commonly (N,) or (N, 1)).
        fake_logits: logits of D on generated data, any shape.
        real_target: the target for real data, in (0, 1]; 1 means no smoothing. The reference used 0.75 on
            ImageNet; 0.9 is the common default.

    Returns:
        A scalar tensor.
    """
    real_target = check_real("real_target", real_target, minimum=0.0, maximum=1.0, low_open=True, allow_tensor=True)
    # The mean over no logits is a silent NaN.
    if real_logits.numel() == 0 or fake_logits.numel() == 0:
        shapes = f"got shapes {tuple(real_logits.shape)} and {tuple(fake_logits.shape)}"
        raise ValueError(f"real_logits and fake_logits must hold at least one logit each, {shapes}")
    real_loss = torch_F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
    fake_loss = torch_F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real_loss + fake_loss


# --------------------------------------------------------------------------------------------------------------
# Historical averaging (paper §3.3)
# --------------------------------------------------------------------------------------------------------------
def historical_average_penalty(params: Sequence[Tensor], averages: Sequence[Tensor]) -> Tensor:
    """The historical-averaging term ``Σ ||θ - θ̄||²`` over a player's parameters (paper §3.3).

    The averages θ̄ are detached: the penalty pulls the parameters towards their history, not the other way.
    Multiply by the weight λ yourself, or let :class:`ignite_igan.handlers.HistoricalAveraging` do it.

    Args:
        params: the parameters θ.
        averages: their running averages θ̄, in the same order and of the same shapes.

    Returns:
        A scalar tensor.
    """
    params, averages = list(params), list(averages)
    # zip would drop the parameters without an average, and a broadcast would hide an average of another shape.
    shapes = [tuple(param.shape) for param in params], [tuple(average.shape) for average in averages]
    if not params or shapes[0] != shapes[1]:
        got = f"got params of shapes {shapes[0]} and {len(averages)} averages of shapes {shapes[1]}"
        raise ValueError(f"params must hold at least one tensor and averages one of each parameter's shape, {got}")
    return sum((param - average.detach()).square().sum() for param, average in zip(params, averages))


# --------------------------------------------------------------------------------------------------------------
# Inception Score (paper §4; docs/reference.md, The Inception Score)
# --------------------------------------------------------------------------------------------------------------
def inception_score(logits: Union[Tensor, np.ndarray], splits: int = 10) -> Tuple[float, float]:
    """The Inception Score by the paper's protocol (:ref:`ref-inception-score`).

    ``p(y|x) = softmax(logits)``; the samples are cut **in order** into ``splits`` contiguous chunks
    ``[i·N//splits, (i+1)·N//splits)``; each chunk scores ``exp(mean_x KL(p(y|x) || p̄(y)))`` with ``p̄`` the
    chunk's mean prediction; the result is the mean and the population standard deviation (ddof=0) of the chunk
    scores, as ``inception_score/model.py`` returns them.

    The arithmetic is float64 and goes through ``log_softmax``, so exact zeros in p give ``0·log 0 = 0``
    instead of the original's NaN. Log-probabilities (``log p``, ``-inf`` allowed) can be passed
    in place of logits: ``log_softmax(log p) = log p``. Probabilities cannot: logits whose rows are all
    non-negative and sum to 1 give a ``UserWarning``.

    Args:
        logits: (N, K) class logits, e.g. the 1008 unbiased logits of the 2015 Inception network.
        splits: number of contiguous chunks, 1 <= splits <= N (10 in the paper).

    Returns:
        ``(mean, std)`` as Python floats.

    Example:
        >>> import torch
        >>> perfect = torch.eye(10).repeat(10, 1) * 100.0  # confident, balanced predictions over 10 classes
        >>> round(inception_score(perfect, splits=10)[0], 6)
        10.0
    """
    logits = torch.as_tensor(logits)
    splits = check_int("splits", splits, minimum=1)
    n = logits.shape[0] if logits.dim() else 0
    if logits.dim() != 2 or not logits.is_floating_point() or logits.shape[1] == 0 or n < splits:
        raise ArgumentTypeError(
            f"logits must be a floating-point (N samples, K classes) tensor with K >= 1 and at least splits={splits} "
            f"samples, got dtype {logits.dtype} and shape {tuple(logits.shape)}"
        )
    logits = logits.detach().to(device="cpu", dtype=torch.float64)
    log_p = torch.log_softmax(logits, dim=1)
    # log_softmax turns NaN, +inf and a row of -inf alone (a distribution with no mass) into NaN, and only those.
    if torch.isnan(log_p).any():
        raise ValueError("logits must not contain NaN or +inf, nor a row whose entries are all -inf (no mass)")
    # The score of probabilities would be close to 1 whatever the samples. Only a warning, since such logits can be
    # intended (though that is very unlikely with K > 1).
    ones = torch.ones((), dtype=torch.float64)
    if logits.shape[1] > 1 and not (logits < 0).any() and torch.allclose(logits.sum(dim=1), ones, rtol=0, atol=1e-3):
        warnings.warn(
            "inception_score: logits look like probabilities (every row is non-negative and sums to 1); pass the "
            "logits (or log-probabilities) instead: softmax of probabilities is nearly uniform and the score "
            "means nothing",
            stacklevel=2,
        )

    scores = []
    for i in range(splits):
        chunk = log_p[i * n // splits : (i + 1) * n // splits]
        p = chunk.exp()
        log_mean = torch.logsumexp(chunk, dim=0) - math.log(chunk.shape[0])
        # 0·(log 0 - ·) is 0 by the convention of KL; torch.where keeps -inf out of the product.
        terms = torch.where(p > 0, p * (chunk - log_mean), torch.zeros_like(p))
        scores.append(math.exp(float(terms.sum(dim=1).mean())))
    scores_np = np.asarray(scores, dtype=np.float64)
    return float(scores_np.mean()), float(scores_np.std())


# --------------------------------------------------------------------------------------------------------------
# Fréchet distance (FID; Heusel et al., 2017)
# --------------------------------------------------------------------------------------------------------------

#: A negative eigenvalue larger than this share of the largest one is not rounding: the matrix is not PSD.
PSD_TOLERANCE = 1e-6


def _psd_eigenvalues(name: str, values: Tensor) -> Tensor:
    """Eigenvalues of a symmetric PSD matrix, rounding errors below zero set to 0; a clearly negative one warns."""
    top, lowest = (float(values.abs().max()), float(values.min())) if values.numel() else (0.0, 0.0)
    if lowest < -PSD_TOLERANCE * max(top, 1e-300):
        warnings.warn(
            f"frechet_distance: {name} has the eigenvalue {lowest:.3e} (largest {top:.3e}); a covariance is positive "
            "semi-definite, so its statistics are not a covariance or were computed from too few samples. Negative "
            "eigenvalues are treated as 0.",
            RuntimeWarning,
            stacklevel=4,
        )
    return values.clamp(min=0.0)


def _definite_cholesky(sigma: Tensor) -> Optional[Tensor]:
    """The Cholesky factor of ``sigma`` if it is numerically positive definite, else ``None``.

    Positive definite here means that Cholesky succeeds and no pivot (squared diagonal entry of the factor) is below
    ``D·eps`` times the largest: a singular covariance plus rounding errors can pass Cholesky with a pivot of the
    size of the rounding, and is treated as singular.
    """
    factor, info = torch.linalg.cholesky_ex(sigma)
    if int(info) != 0:
        return None
    pivots = torch.diagonal(factor) ** 2
    tolerance = sigma.shape[0] * torch.finfo(sigma.dtype).eps
    return factor if float(pivots.min()) > tolerance * float(pivots.max()) else None


def _covariance_factor(name: str, sigma: Tensor) -> Tensor:
    """A factor ``F`` with ``F Fᵀ = sigma`` (float64, symmetric input) and no column in its null space.

    The Cholesky factor when ``sigma`` is positive definite (the usual case: more samples than features); otherwise
    ``V_r·diag(√λ_r)`` from the symmetric eigendecomposition, keeping the eigenvalues above ``D·eps`` times the
    largest (rounding errors below zero warn if clearly negative, and are dropped with the rest). That is exact for
    singular covariances (fewer samples than features), whose null space then contributes no spurious eigenvalues.
    """
    factor = _definite_cholesky(sigma)
    if factor is not None:
        return factor
    values, vectors = torch.linalg.eigh(sigma)
    values = _psd_eigenvalues(name, values)
    tolerance = sigma.shape[0] * torch.finfo(sigma.dtype).eps * float(values.max())
    keep = values > tolerance
    return vectors[:, keep] * values[keep].sqrt()


def _frechet_from_factor(mu1: Tensor, sigma1: Tensor, factor1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """The Fréchet distance of checked float64 statistics, with ``factor1 = _covariance_factor(sigma1)``."""
    # tr((Σ1^½ Σ2 Σ1^½)^½) is the sum of the square roots of the eigenvalues of Σ1 Σ2 = F1 F1ᵀ Σ2.
    if _definite_cholesky(sigma2) is not None:
        # Those are the eigenvalues of the symmetric matrix F1ᵀ Σ2 F1, positive definite here: one eigvalsh.
        middle = factor1.T @ sigma2 @ factor1
        middle = 0.5 * (middle + middle.T)
        values = _psd_eigenvalues("sqrt(sigma1) @ sigma2 @ sqrt(sigma1)", torch.linalg.eigvalsh(middle))
        trace_sqrt = values.sqrt().sum()
    else:
        # A singular Σ2 = F2 F2ᵀ would give F1ᵀ Σ2 F1 exact zero eigenvalues, whose rounding errors the square root
        # magnifies (√1e-16 = 1e-8 each); instead take the singular values of F2ᵀ F1 (their squares are those
        # eigenvalues), with F2 free of Σ2's null space.
        factor2 = _covariance_factor("sigma2", sigma2)
        trace_sqrt = torch.linalg.svdvals(factor2.T @ factor1).sum()
    diff = mu1 - mu2
    value = diff.dot(diff) + torch.trace(sigma1) + torch.trace(sigma2) - 2.0 * trace_sqrt
    return float(value)


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    r"""The Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2), exactly, in float64.

    ``d² = ||mu1 − mu2||² + tr(Σ1) + tr(Σ2) − 2·tr((Σ1^½ Σ2 Σ1^½)^½)`` (Dowson and Landau, 1982; the FID of
    Heusel et al., 2017, on Inception features). ``tr((Σ1^½ Σ2 Σ1^½)^½)`` equals the ``tr(sqrtm(Σ1 Σ2))`` of the
    usual implementations: it is the sum of the square roots of the eigenvalues of ``Σ1 Σ2``. Here ``Σ1`` is
    factored as ``Σ1 = F Fᵀ`` (Cholesky when it is positive definite, else the symmetric eigendecomposition
    ``F = V Λ^½`` without the null space: exact for singular covariances, i.e. fewer samples than features), and
    those eigenvalues are the eigenvalues of the symmetric matrix ``Fᵀ Σ2 F`` (one ``eigvalsh``); when ``Σ2`` is
    singular too, the singular values of ``F2ᵀ F`` (their squares), which keep full accuracy where square roots of
    rounded zero eigenvalues would not. No complex arithmetic, no iterative matrix square root, and several times
    faster than SciPy's ``sqrtm`` (``benchmarks/frechet_distance.py``).
    Eigenvalues below zero by rounding are set to 0; a clearly negative one (below ``-1e-6`` times the largest)
    means the input is not a covariance, and a ``RuntimeWarning`` gives the numbers. Nothing falls back to an
    approximation.

    The arithmetic runs in float64 on the device of ``sigma1`` (a GPU's solvers if the statistics are there).

    Args:
        mu1, mu2: (D,) means (tensors or NumPy arrays).
        sigma1, sigma2: (D, D) covariances.

    Returns:
        The squared distance as a Python float (FID is this number; it is not square-rooted).

    Example:
        >>> import torch
        >>> mu, sigma = torch.zeros(3), torch.eye(3)
        >>> frechet_distance(mu, sigma, mu + 1, 4 * torch.eye(3))  # 3·1 + 3 + 12 − 2·3·2
        6.0
    """
    mu1, sigma1 = check_statistics("mu1", mu1, "sigma1", sigma1)
    mu2, sigma2 = check_statistics("mu2", mu2, "sigma2", sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must have the same size, got {mu1.shape[0]} and {mu2.shape[0]}")
    mu1, mu2, sigma1, sigma2 = (t.detach().to(sigma1.device, torch.float64) for t in (mu1, mu2, sigma1, sigma2))
    # Covariances accumulated in float are symmetric only to rounding; the factorizations read one triangle.
    sigma1, sigma2 = 0.5 * (sigma1 + sigma1.T), 0.5 * (sigma2 + sigma2.T)
    return _frechet_from_factor(mu1, sigma1, _covariance_factor("sigma1", sigma1), mu2, sigma2)
