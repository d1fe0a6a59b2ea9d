"""The layers of *Improved Techniques for Training GANs*, as :class:`torch.nn.Module` s.

Every layer computes what the reference code (``openai/improved-gan``, ``mnist_svhn_cifar10/nn.py`` and
``imagenet/model.py``) computes; the links in parentheses lead to the facts of that code (:doc:`/reference`).

* :class:`WeightNormLinear`, :class:`WeightNormConv2d`, :class:`WeightNormConvTranspose2d`: weight normalization
  ``W = V * g / sqrt(eps + sum V^2)`` per output unit, with a gain ``g`` that is frozen unless ``train_scale``
  (:ref:`ref-weight-norm`).
* :class:`ScaleFreeBatchNorm`: the generators' batch norm, batch statistics always, bias only
  (:ref:`ref-generator-batch-norm`).
* :class:`GaussianNoise`: additive noise in training mode (:ref:`ref-noise-and-activations`).
* :class:`MinibatchDiscrimination`: the reference parametrization of minibatch features
  (:ref:`ref-minibatch-discrimination`).
* :class:`VirtualBatchNorm`: the corrected (2017) virtual batch norm of the ImageNet code
  (:ref:`ref-virtual-batch-norm`).
* :func:`data_dependent_init`: the one-pass data-dependent initialization of a whole model (:ref:`ref-data-init`), run
  by every layer that mixes in :class:`DataDependentInit`.

A layer's ``forward`` checks its input only where torch would be silent or obscure: an input of another dtype or
width fails in the products and convolutions with torch's own error, which names both. The normalization layers
and the minibatch layer, where another dtype would silently promote the output or fail obscurely under autocast,
refuse it with a ``TypeError`` that names ``input``, the dtype it got and the one expected, except for the mixes
that :func:`torch.autocast` makes by design: inside autocast for the input's device type, float32 and autocast's
dtype (bfloat16 or float16) may meet.

Example:
    >>> import torch
    >>> from ignite_igan.nn import WeightNormLinear, data_dependent_init
    >>> layer = WeightNormLinear(20, 8, init_scale=0.5)
    >>> out = data_dependent_init(layer, torch.randn(64, 20))
    >>> bool(out.mean(0).abs().max() < 1e-5), round(out.std(0, unbiased=False).mean().item(), 3)
    (True, 0.5)
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Iterator, List, Tuple, Union

import torch
import torch.nn.functional as torch_F
from torch import Tensor, nn

from ignite_igan import _fast_paths
from ignite_igan.functional import minibatch_l1_distances, virtual_batch_norm
from ignite_igan.validation import check_bool, check_input_dtype, check_instance, check_int, check_int_tuple, check_real

__all__ = [
    "DataDependentInit",
    "data_init_mode",
    "data_dependent_init",
    "WeightNormLinear",
    "WeightNormConv2d",
    "WeightNormConvTranspose2d",
    "ScaleFreeBatchNorm",
    "GaussianNoise",
    "MinibatchDiscrimination",
    "minibatch_batch_mean_init",
    "VirtualBatchNorm",
]

_IntPair = Union[int, Tuple[int, int]]


def _unit_norm(weight: Tensor, out_dim: int, eps: float) -> Tensor:
    """The weight norm ``sqrt(eps + Σ V²)`` per output unit, the sum over every axis of ``V`` but ``out_dim``."""
    reduce = [d for d in range(weight.dim()) if d != out_dim]
    return (eps + weight.square().sum(dim=reduce)).sqrt()


# The layers compute two formulas with faster equivalents from ignite_igan._fast_paths, tested equal to the formulas
# (forward and gradients, float64) in tests/test_functional.py and tests/test_nn.py. To change a formula, change it
# (ignite_igan.functional.minibatch_features, _unit_norm above) and point these names at it.
# - Minibatch features, and the distances of their data-dependent init: same result; O(N²B) memory instead of
#   O(N²BC): benchmarks/minibatch_discrimination.py.
# - The weight norm: one fused norm over V instead of a squared copy of it, and a backward pass of one multiplication
#   over V instead of autograd's three. Same numbers to rounding; with _unit_norm the MNIST discriminator's CPU
#   training step (batch 100, one thread) took 1.26 times as long, paired, and its last bits differ.
_minibatch_features = _fast_paths.minibatch_features
_minibatch_l1_distances = _fast_paths.minibatch_l1_distances
_weight_norm = _fast_paths.unit_norm


# --------------------------------------------------------------------------------------------------------------
# Data-dependent initialization (docs/reference.md, Data-dependent initialization)
# --------------------------------------------------------------------------------------------------------------
class DataDependentInit:
    """Mixin for layers that can set their own parameters from the statistics of one batch.

    The reference code initializes a network with one extra forward pass in which every weight-normalized layer
    (and the minibatch layer) computes its pre-activations, sets its gain and bias so that they have zero mean
    and a target standard deviation, and passes the *re-normalized* output on to the next layer (:ref:`ref-data-init`).
    Here a layer takes part in that pass by mixing in this class and, at the top of its ``forward``, calling
    ``_take_data_init()``: when it returns True the layer re-initializes itself from this call's input and
    returns the re-normalized output. :func:`data_init_mode` arms every such layer of a model for one pass; a
    layer disarms itself when it has been initialized, so a layer called twice in the pass is initialized once,
    from its first call.

    Attributes:
        data_init: whether :func:`data_init_mode` arms this layer. Layers that the reference never initializes
            from data (e.g. the MNIST generator's output layer, :ref:`ref-mnist`) set it to False.
    """

    data_init: bool = True
    _data_init_armed: bool = False

    def _take_data_init(self) -> bool:
        # Written only when armed: an unconditional write would be an attribute mutation in every forward pass,
        # which torch.compile replays after each call and guards on (the first write adds the attribute to the
        # instance, so the second call recompiled the whole forward).
        if not self._data_init_armed:
            return False
        self._data_init_armed = False
        return True


@contextlib.contextmanager
def data_init_mode(model: nn.Module) -> Iterator[List[nn.Module]]:
    """Context in which the next forward pass of ``model`` initializes every init-capable layer from data.

    Inside the context gradients are off, the model is in training mode (so noise and dropout are on, as in the
    reference's init pass) and every :class:`DataDependentInit` layer with ``data_init=True`` is armed. On exit
    each module's previous training flag is restored and any layer the pass did not reach is disarmed, with a
    warning. Use :func:`data_dependent_init` unless the model needs a custom call.

    Args:
        model: the network.

    Yields:
        The armed layers.

    Example:
        >>> import torch
        >>> from ignite_igan.nn import WeightNormLinear, data_init_mode
        >>> layer = WeightNormLinear(5, 3).eval()
        >>> with data_init_mode(layer):
        ...     _ = layer(torch.randn(16, 5))
        >>> layer.training  # mode restored
        False
    """
    check_instance("model", model, nn.Module, "a torch.nn.Module")
    layers = [m for m in model.modules() if isinstance(m, DataDependentInit) and m.data_init]
    modes = [(module, module.training) for module in model.modules()]
    model.train()
    for layer in layers:
        layer._data_init_armed = True
    try:
        with torch.no_grad():
            yield layers
    finally:
        missed = [type(layer).__name__ for layer in layers if layer._data_init_armed]
        for layer in layers:
            layer._data_init_armed = False
        for module, training in modes:
            module.training = training
    if missed:
        message = f"{len(missed)} init-capable layer(s) were not reached by the forward pass and keep their parameters"
        warnings.warn(f"data-dependent init: {message}: {', '.join(missed)}", RuntimeWarning, stacklevel=3)


def data_dependent_init(model: nn.Module, *inputs: Any, **kwargs: Any) -> Any:
    """Initializes every init-capable layer of ``model`` from one batch, in one forward pass (:ref:`ref-data-init`).

    Runs ``model(*inputs, **kwargs)`` under :func:`data_init_mode`: no gradients, training mode (noise and
    dropout on; the previous mode of every module is restored afterwards). Each weight-normalized layer with
    ``data_init=True`` sets its gain and bias so that its pre-activations on this batch have zero mean and
    standard deviation ``init_scale`` per output unit or channel (``b <- -m * inv``, ``g <- g * inv`` with
    ``inv = init_scale / s``), each :class:`MinibatchDiscrimination` layer sets its log scale and bias
    (:ref:`ref-minibatch-discrimination`), and each already emits its re-normalized output, so deeper layers are
    initialized on the statistics of the initialized shallower ones, as in the reference. The reference uses 500
    examples.

    Args:
        model: the network.
        *inputs: positional arguments of ``model.forward``.
        **kwargs: keyword arguments of ``model.forward``.

    Returns:
        The model's output on the batch during the pass.

    Example:
        >>> import torch
        >>> from ignite_igan.models import cifar10_fm_discriminator
        >>> disc = cifar10_fm_discriminator()
        >>> logits = data_dependent_init(disc, torch.rand(50, 3, 32, 32) * 2 - 1)
        >>> logits.shape
        torch.Size([50, 10])
    """
    with data_init_mode(model):
        return model(*inputs, **kwargs)


def _expand(per_channel: Tensor, ndim: int) -> Tensor:
    """Reshapes a (C,) tensor to broadcast over (N, C) or (N, C, H, W)."""
    return per_channel.view(1, -1) if ndim == 2 else per_channel.view(1, -1, 1, 1)


def _batch_norm(x: Tensor, eps: float) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` with the batch's mean and biased variance per unit (2-D) or channel (4-D)."""
    var, mean = torch.var_mean(x, dim=(0,) if x.dim() == 2 else (0, 2, 3), correction=0, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


# --------------------------------------------------------------------------------------------------------------
# Weight normalization (docs/reference.md, Weight normalization)
# --------------------------------------------------------------------------------------------------------------
class _WeightNorm(DataDependentInit, nn.Module):
    """Shared parametrization of the weight-normalized layers.

    Subclasses set ``_out_dim`` (the weight axis that indexes output units), ``_repr`` (their own arguments, a
    template filled from their attributes) and ``_input`` (the input's axes, the same kind of template), and
    implement ``_transform(x, weight)``, the linear map without bias; this class owns the parameters, the
    normalized weight, the input check, the data-dependent init and the rest of the repr.
    """

    _out_dim = 0
    _repr = ""
    _input = ""

    def __init__(self, weight_shape: Tuple[int, ...], train_scale: bool, init_scale: float, eps: float,
                 weight_std: float, data_init: bool) -> None:
        super().__init__()
        train_scale = check_bool("train_scale", train_scale)
        self.data_init = check_bool("data_init", data_init)
        self.init_scale = check_real("init_scale", init_scale, minimum=0.0, low_open=True)
        self.eps = check_real("eps", eps, minimum=0.0)
        self.weight_std = check_real("weight_std", weight_std, minimum=0.0, low_open=True)
        self.weight = nn.Parameter(torch.empty(weight_shape))
        self.scale = nn.Parameter(torch.empty(weight_shape[self._out_dim]), requires_grad=train_scale)
        self.bias = nn.Parameter(torch.empty(weight_shape[self._out_dim]))
        self.reset_parameters()

    @property
    def train_scale(self) -> bool:
        """Whether the gain ``scale`` is trained (only the reference's output layers) or frozen after init."""
        return self.scale.requires_grad

    def reset_parameters(self) -> None:
        """Direction ``V ~ N(0, weight_std)`` (every reference script uses 0.05), gain 1, bias 0."""
        with torch.no_grad():
            self.weight.normal_(0.0, self.weight_std)
            self.scale.fill_(1.0)
            self.bias.zero_()

    def output_factor(self) -> Tensor:
        """``g / sqrt(eps + sum V^2)`` per output unit, shape (out_units,): the effective weight is ``V`` times it."""
        return self.scale / _weight_norm(self.weight, self._out_dim, self.eps)

    def normalized_weight(self) -> Tensor:
        """The effective weight ``V * g / sqrt(eps + sum V^2)``, the sum over every axis but the output one."""
        shape = [1] * self.weight.dim()
        shape[self._out_dim] = -1
        return self.weight * self.output_factor().view(shape)

    def forward(self, x: Tensor) -> Tensor:
        # The input has as many axes as the weight: (N, in) or (N, C, H, W). torch's linear also takes (N, ..., in)
        # and its convolutions an unbatched (C, H, W) image, which the per-unit scale and the data-dependent init
        # would silently treat as something else (a batch of one image).
        if x.dim() != self.weight.dim():
            axes = self._input.format(**vars(self))
            raise ValueError(f"input must be {self.weight.dim()}-D ({axes}), got a tensor of shape {tuple(x.shape)}")
        # Linear maps commute with a per-output-unit scale: x·(V·f)ᵀ = (x·Vᵀ)·f. Scaling the (N, out) output
        # instead of the (out, in) weight saves a pass over the weight in every forward and backward pass (the
        # weight is 7.8 times larger than a batch of 100 outputs in the MNIST network's first layer).
        t = self._transform(x, self.weight)
        t = t * _expand(self.output_factor(), t.dim())
        if self._take_data_init():
            return self._initialize_from(t)
        return t + _expand(self.bias, t.dim())

    def _initialize_from(self, t: Tensor) -> Tensor:
        # Data-dependent initialization (docs/reference.md): with t computed from the current W (bias ignored),
        # b <- -m*inv and g <- g*inv with inv = init_scale / std make the pre-activations zero-mean with std
        # init_scale, per unit (2-D) or channel (4-D); the layer emits exactly those normalized values.
        dims = (0,) if t.dim() == 2 else (0, 2, 3)
        mean = t.mean(dim=dims)
        std = (t - _expand(mean, t.dim())).square().mean(dim=dims).sqrt()
        # A single value per channel, a constant channel and a NaN or infinity all leave a std that is 0 or NaN, which
        # would make the gain infinite or NaN for good.
        spread = torch.isfinite(std) & (std > 0)
        if not bool(spread.all()):
            dead = torch.nonzero(~spread).flatten().tolist()
            raise ValueError(
                f"data-dependent init of {type(self).__name__}: the pre-activations of output channel(s) {dead[:10]} "
                f"are constant or not finite on this batch (shape {tuple(t.shape)}); use a batch of several examples "
                "(the reference uses 500) with finite values"
            )
        inv = self.init_scale / std
        with torch.no_grad():
            self.scale.mul_(inv)
            self.bias.copy_(-mean * inv)
        return (t - _expand(mean, t.dim())) * _expand(inv, t.dim())

    def extra_repr(self) -> str:
        arguments = self._repr.format(**vars(self))
        return f"{arguments}, train_scale={self.train_scale}, init_scale={self.init_scale}, eps={self.eps}"


class WeightNormLinear(_WeightNorm):
    """Weight-normalized dense layer: ``y = x W^T + b`` with ``W = V * g / sqrt(eps + sum_in V^2)``
    (:ref:`ref-weight-norm`).

    The normalization is per output unit. The gain ``g`` (``scale``) is an :class:`~torch.nn.Parameter` with
    ``requires_grad=train_scale``: the reference freezes it in hidden layers, where only the data-dependent init
    sets it, and trains it in output layers. ``eps`` and ``weight_std`` cover both reference dense layers:

    * ``weight_norm(DenseLayer)`` of the CIFAR/SVHN code: ``eps=1e-6``, ``V ~ N(0, 0.05)`` (the defaults);
    * the MNIST-only ``nn.DenseLayer`` (:ref:`ref-weight-norm`): ``eps=0``, ``V ~ N(0, 0.1)``; its init pass
      (``weight_scale <- weight_scale / stdv``, ``b <- -mean / stdv``) is this init with ``init_scale=1``.

    Args:
        in_features: input width.
        out_features: output width.
        train_scale: whether ``scale`` is trained.
        init_scale: target std of the pre-activations after data-dependent init (the reference's ``init_stdv``:
            1 in hidden layers, 0.1 in the CIFAR/SVHN output layers).
        eps: added to the squared norm inside the square root.
        weight_std: std of the normal init of the direction ``V``. Its scale does not change the output but sets
            the angular step size under Adam, so keep the reference's value.
        data_init: whether :func:`data_dependent_init` re-initializes this layer.

    Shape:
        input (N, in_features), output (N, out_features).

    Example:
        >>> import torch
        >>> layer = WeightNormLinear(4, 3, train_scale=True)
        >>> layer(torch.randn(2, 4)).shape
        torch.Size([2, 3])
        >>> norms = layer.normalized_weight().norm(dim=1)  # unit rows while g = 1 (up to eps)
        >>> torch.allclose(norms, torch.ones(3), atol=1e-3)
        True
    """

    _repr = "in_features={in_features}, out_features={out_features}"
    _input = "N, in_features={in_features}"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        train_scale: bool = False,
        init_scale: float = 1.0,
        *,
        eps: float = 1e-6,
        weight_std: float = 0.05,
        data_init: bool = True,
    ) -> None:
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        weight_shape = (self.out_features, self.in_features)
        super().__init__(weight_shape, train_scale, init_scale, eps, weight_std, data_init)

    def _transform(self, x: Tensor, weight: Tensor) -> Tensor:
        return torch_F.linear(x, weight)


class _WeightNormConv(_WeightNorm):
    """The arguments that the weight-normalized convolutions share, checked in one place, and their repr; the
    constructor of :class:`WeightNormConv2d`."""

    _repr = "{in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}, padding={padding}"
    _input = "N, in_channels={in_channels}, H, W"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntPair,
        stride: _IntPair = 1,
        padding: _IntPair = 0,
        train_scale: bool = False,
        init_scale: float = 1.0,
        *,
        eps: float = 1e-6,
        weight_std: float = 0.05,
        data_init: bool = True,
    ) -> None:
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        self.kernel_size = check_int_tuple("kernel_size", kernel_size, minimum=1, length=2, repeat_int=True)
        self.stride = check_int_tuple("stride", stride, minimum=1, length=2, repeat_int=True)
        self.padding = check_int_tuple("padding", padding, minimum=0, length=2, repeat_int=True)
        # torch's weight layouts: (out, in, kh, kw), and (in, out, kh, kw) for the transposed convolution.
        channels = (self.in_channels, self.out_channels) if self._out_dim else (self.out_channels, self.in_channels)
        super().__init__((*channels, *self.kernel_size), train_scale, init_scale, eps, weight_std, data_init)


class WeightNormConv2d(_WeightNormConv):
    """Weight-normalized 2-D convolution, normalized per output channel (:ref:`ref-weight-norm`).

    ``W = V * g / sqrt(eps + sum V^2)`` with the sum over (in, kh, kw) of the (out, in, kh, kw) weight; the
    reference's NIN layer is this with ``kernel_size=1``. Parameters and data-dependent init as
    :class:`WeightNormLinear`.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: int or (kh, kw).
        stride: int or pair.
        padding: int or pair (zero padding).
        train_scale: whether ``scale`` is trained.
        init_scale: target std of the pre-activations after data-dependent init.
        eps: added inside the square root.
        weight_std: std of the normal init of ``V``.
        data_init: whether :func:`data_dependent_init` re-initializes this layer.

    Example:
        >>> import torch
        >>> conv = WeightNormConv2d(3, 8, 3, padding=1)
        >>> conv(torch.randn(2, 3, 10, 10)).shape
        torch.Size([2, 8, 10, 10])
    """

    def _transform(self, x: Tensor, weight: Tensor) -> Tensor:
        return torch_F.conv2d(x, weight, stride=self.stride, padding=self.padding)


class WeightNormConvTranspose2d(_WeightNormConv):
    """Weight-normalized transposed convolution, normalized per OUTPUT channel (:ref:`ref-weight-norm`).

    The weight has PyTorch's transposed layout (in, out, kh, kw), so the output channel is axis 1 and the norm
    is taken over (in, kh, kw) (the reference's ``Deconv2DLayer`` sums over axes (0, 2, 3)). Normalizing over
    axis 0, the default of :func:`torch.nn.utils.weight_norm`, would be a different layer. The reference's 5x5
    stride-2 "half" deconvolution is ``kernel_size=5, stride=2, padding=2, output_padding=1`` (doubles H, W).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: int or (kh, kw).
        stride: int or pair.
        padding: int or pair.
        output_padding: int or pair, extra rows/columns on one side of the output (< stride).
        train_scale: whether ``scale`` is trained (True in the generators' output layer).
        init_scale: target std after data-dependent init (0.1 in the generators' output layer).
        eps: added inside the square root.
        weight_std: std of the normal init of ``V``.
        data_init: whether :func:`data_dependent_init` re-initializes this layer.

    Example:
        >>> import torch
        >>> deconv = WeightNormConvTranspose2d(8, 3, 5, stride=2, padding=2, output_padding=1, train_scale=True)
        >>> deconv(torch.randn(2, 8, 16, 16)).shape
        torch.Size([2, 3, 32, 32])
    """

    _out_dim = 1
    _repr = _WeightNormConv._repr + ", output_padding={output_padding}"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntPair,
        stride: _IntPair = 1,
        padding: _IntPair = 0,
        output_padding: _IntPair = 0,
        train_scale: bool = False,
        init_scale: float = 1.0,
        *,
        eps: float = 1e-6,
        weight_std: float = 0.05,
        data_init: bool = True,
    ) -> None:
        self.output_padding = check_int_tuple("output_padding", output_padding, minimum=0, length=2, repeat_int=True)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, train_scale, init_scale, eps=eps,
                         weight_std=weight_std, data_init=data_init)
        if any(op >= s for op, s in zip(self.output_padding, self.stride)):
            raise ValueError(f"output_padding must be smaller than stride {self.stride}, got {self.output_padding}")

    def _transform(self, x: Tensor, weight: Tensor) -> Tensor:
        return torch_F.conv_transpose2d(
            x, weight, stride=self.stride, padding=self.padding, output_padding=self.output_padding
        )


# --------------------------------------------------------------------------------------------------------------
# Normalization and noise (docs/reference.md, The generators' batch norm; Virtual batch normalization)
# --------------------------------------------------------------------------------------------------------------
class _Norm(nn.Module):
    """What the two normalization layers share: ``num_features`` and ``eps`` (checked here), the repr and the check
    of the input."""

    def __init__(self, num_features: int, eps: float) -> None:
        super().__init__()
        self.num_features = check_int("num_features", num_features, minimum=1)
        self.eps = check_real("eps", eps, minimum=0.0)

    def _check_input(self, x: Tensor, min_values: int) -> None:
        """The one check of ``forward``: the layer's dtype, (N, C) or (N, C, H, W), at least ``min_values`` values
        per channel."""
        check_input_dtype(x, self.bias.dtype)  # a float64 input would silently give a float64 output
        # One channel would broadcast silently against the parameters, a 3-D input fail obscurely in the
        # statistics, and a single value per channel (a batch of one) has no batch statistics: every example would
        # map to the bias.
        c = self.num_features
        if x.dim() not in (2, 4) or x.shape[1] != c or x.numel() // c < min_values:
            need = "" if min_values < 2 else (f" with at least {min_values} values per channel (a batch of one has "
                                              "no batch statistics: pass several examples at once or use "
                                              "VirtualBatchNorm)")
            raise ValueError(f"input must be 2-D (N, C={c}) or 4-D (N, C={c}, H, W){need}, got a tensor of shape "
                             f"{tuple(x.shape)}")

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class ScaleFreeBatchNorm(_Norm):
    """The reference generators' batch norm: batch statistics always, no scale, a learned bias
    (:ref:`ref-generator-batch-norm`).

    ``y = (x - mean) / sqrt(1e-6 + var) + b`` with the mean and biased variance of the current batch, per unit
    for (N, C) inputs and per channel over (N, H, W) for (N, C, H, W) inputs. The reference never uses running
    averages, not even when sampling, so neither does this layer: its output is the same in ``train()`` and
    ``eval()`` mode, and every sample depends on the rest of its batch. Sample in batches (the reference used
    100), or use :class:`VirtualBatchNorm`.

    A batch with a single value per channel (one example of a 2-D input) has no batch statistics: every example
    would come out as the bias whatever its input. That raises a :class:`ValueError` rather than silently
    producing a constant.

    The layer has no ``weight``: generic init code that matches "BatchNorm" in class names and touches
    ``m.weight`` must skip it.

    Args:
        num_features: C.
        eps: added to the variance inside the square root (1e-6 in the reference).

    Example:
        >>> import torch
        >>> bn = ScaleFreeBatchNorm(4).eval()
        >>> y = bn(torch.randn(8, 4) * 3 + 1)
        >>> bool(y.mean(0).abs().max() < 1e-5), bool((y.var(0, unbiased=False) - 1).abs().max() < 1e-4)
        (True, True)
    """

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__(num_features, eps)
        self.bias = nn.Parameter(torch.zeros(self.num_features))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x, min_values=2)
        return _batch_norm(x, self.eps) + _expand(self.bias, x.dim())


class GaussianNoise(nn.Module):
    """Adds N(0, sigma^2) noise in training mode; the identity in eval mode (:ref:`ref-noise-and-activations`).

    The layer has no parameters and so no dtype of its own: any floating-point input is accepted and the noise is
    drawn in the input's dtype (the output keeps it).

    Args:
        sigma: noise std (0.3 on the MNIST discriminator's input, 0.5 after its hidden layers, 0.2 on the
            CIFAR/SVHN minibatch-discrimination discriminators' input).

    Example:
        >>> import torch
        >>> noise = GaussianNoise(0.5)
        >>> x = torch.zeros(1000, 10)
        >>> round(noise(x).std().item(), 1), bool((noise.eval()(x) == x).all())
        (0.5, True)
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = check_real("sigma", sigma, minimum=0.0)

    def forward(self, x: Tensor) -> Tensor:
        # randn_like would fail for integers only in training mode, with an error about a kernel.
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got dtype {x.dtype}")
        if not self.training or self.sigma == 0:
            return x
        return x + self.sigma * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class VirtualBatchNorm(_Norm):
    """Virtual batch normalization (paper §3.4), the corrected 2017 version of the reference
    (:ref:`ref-virtual-batch-norm`).

    **Design.** The reference batch and the live batch go through the network in *one* forward pass: the input
    of every VBN layer is the concatenation ``[reference; live]`` along the batch axis, and ``reference_size``
    says how many leading rows are the reference. So

    * the reference statistics are recomputed from the *current* weights at every step, exactly as the
      ImageNet code forwards its fixed reference noise through the current generator every step;
    * gradients flow through the reference statistics (the reference code has no stop-gradient);
    * the reference rows are normalized with the reference batch's own statistics (mean and biased variance
      over (R, H, W)), so the next layer's reference statistics are those of a normalized reference batch;
    * each live example is normalized with its own (spatial) moments mixed into the reference's with weights
      1/(R+1) and R/(R+1) (:func:`ignite_igan.functional.virtual_batch_norm`), so its output does not depend on
      the other live examples and a batch of one is fine;
    * there is no hidden state: no "first call stores the reference" / "second call uses it" protocol,
      so the layer is safe under ``torch.no_grad``, data parallelism, checkpointing and repeated
      calls. A model owns its reference *input* (e.g. a generator's fixed reference noise, see
      :class:`ignite_igan.models.CIFARGenerator`) and slices its output.

    The affine parameters are named ``weight`` (gamma) and ``bias`` (beta) like PyTorch's batch norms, so generic
    init code that matches "BatchNorm" in class names finds them. gamma starts at N(1, 0.02) and
    beta at 0, as in the reference; ``reset_parameters()`` re-draws them.

    Args:
        num_features: C, normalized per unit for (N, C) inputs and per channel for (N, C, H, W) inputs.
        eps: added to the variance inside the square root (1e-5 in the reference).

    Shape:
        input (R + N, C) or (R + N, C, H, W), output the same.

    Example:
        >>> import torch
        >>> vbn = VirtualBatchNorm(4)
        >>> reference, live = torch.randn(16, 4), torch.randn(3, 4)
        >>> out = vbn(torch.cat([reference, live]), reference_size=16)
        >>> alone = vbn(torch.cat([reference, live[:1]]), reference_size=16)
        >>> torch.allclose(out[16], alone[16])  # independent of the other live examples
        True
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps)
        self.weight = nn.Parameter(torch.empty(self.num_features))
        self.bias = nn.Parameter(torch.empty(self.num_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.normal_(1.0, 0.02)
            self.bias.zero_()

    def forward(self, x: Tensor, reference_size: int) -> Tensor:
        self._check_input(x, min_values=0)  # an empty input: reference_size names it
        # A slice would silently take what there is (x[:6] of 5 rows), or nothing (NaN statistics).
        hint = "the number of leading rows of the input that are the reference batch"
        reference_size = check_int("reference_size", reference_size, minimum=1, maximum=len(x), hint=hint)
        reference, live = x[:reference_size], x[reference_size:]
        normalized = _batch_norm(reference, self.eps)
        if live.shape[0] > 0:  # without live rows, the output is the normalized reference alone
            normalized = torch.cat([normalized, virtual_batch_norm(live, reference, eps=self.eps)])
        return normalized * _expand(self.weight, x.dim()) + _expand(self.bias, x.dim())


# --------------------------------------------------------------------------------------------------------------
# Minibatch discrimination (paper §3.2; docs/reference.md, Minibatch discrimination)
# --------------------------------------------------------------------------------------------------------------
class MinibatchDiscrimination(DataDependentInit, nn.Module):
    """Minibatch discrimination with the reference parametrization (:ref:`ref-minibatch-discrimination`).

    Parameters: ``theta`` (A, B, C) ~ N(0, 0.05), ``log_weight_scale`` (B, C) = 0 and ``bias`` (B,) = -1. The
    projection tensor is weight-normalized over the input axis with a log-parametrized scale and no epsilon,

        ``T[:, b, c] = theta[:, b, c] * exp(log_weight_scale[b, c]) / ||theta[:, b, c]||_2``,

    and with ``M = x T`` of shape (N, B, C) the layer outputs ``concat([x, o + bias])`` of shape (N, A + B),
    where ``o[i, b] = sum_{j != i} exp(-||M[i, b] - M[j, b]||_1)``
    (:func:`ignite_igan.functional.minibatch_features`, self excluded as in the reference).

    Because every column of T has norm ``exp(log_weight_scale)`` whatever A is, the distances have the scale of
    the input, not of ``sqrt(A)`` times it: the features are alive at initialization (unlike an unscaled
    ``N(0, 1)`` T). The data-dependent init (:ref:`ref-minibatch-discrimination`) then puts the mean nearest-neighbour
    L1 distance of every kernel at 2 on the init batch (``log_weight_scale[b] -= log mmd[b]`` with
    ``mmd[b] = 0.5 mean_i min_{j != i} d[i, j, b]``) and centres the features there (``bias <- -mean_i o``).

    The features of an example depend on the rest of the batch: call the layer (or the discriminator) once per
    source (labeled, unlabeled, generated), as the reference does. A batch of one gets ``o = 0``.

    Args:
        in_features: A; inputs with more than two dimensions are flattened to (N, A).
        num_kernels: B (100 in the reference).
        kernel_dim: C (5 in the reference).

    Example:
        >>> import torch
        >>> layer = MinibatchDiscrimination(192)
        >>> layer(torch.randn(10, 192)).shape
        torch.Size([10, 292])
    """

    def __init__(self, in_features: int, num_kernels: int = 100, kernel_dim: int = 5) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.num_kernels = check_int("num_kernels", num_kernels, minimum=1)
        self.kernel_dim = check_int("kernel_dim", kernel_dim, minimum=1)
        self.theta = nn.Parameter(torch.empty(self.in_features, self.num_kernels, self.kernel_dim))
        self.log_weight_scale = nn.Parameter(torch.empty(self.num_kernels, self.kernel_dim))
        self.bias = nn.Parameter(torch.empty(self.num_kernels))
        self.reset_parameters()

    @property
    def out_features(self) -> int:
        """A + B."""
        return self.in_features + self.num_kernels

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.theta.normal_(0.0, 0.05)
            self.log_weight_scale.zero_()
            self.bias.fill_(-1.0)

    def projection(self) -> Tensor:
        """The effective tensor T of shape (A, B, C)."""
        return self.theta * (self.log_weight_scale.exp() / self.theta.square().sum(dim=0).sqrt())

    def forward(self, x: Tensor) -> Tensor:
        # Inside autocast, an input of the other low-precision dtype would fail in torch.cat with an obscure error.
        check_input_dtype(x, self.theta.dtype)
        x = x.flatten(1)
        m = (x @ self.projection().flatten(1)).view(-1, self.num_kernels, self.kernel_dim)
        if self._take_data_init():
            return self._initialize_from(x, m)
        return torch.cat([x, _minibatch_features(m) + self.bias], dim=1)

    def _initialize_from(self, x: Tensor, m: Tensor) -> Tensor:
        distances = _minibatch_l1_distances(m)  # (N, N, B), zero diagonal
        distances.diagonal(dim1=0, dim2=1).fill_(math.inf)
        mmd = 0.5 * distances.min(dim=1).values.mean(dim=0)  # (B,), infinite for a batch of one
        del distances
        self._rescale_kernels(mmd, "data-dependent init of MinibatchDiscrimination")
        # T is linear in exp(log_weight_scale), so the rescaled projection is M / mmd: the distances become
        # d / mmd, as the reference divides them in place.
        o = _minibatch_features(m / mmd.view(1, -1, 1))
        centre = o.mean(dim=0)
        with torch.no_grad():
            self.bias.copy_(-centre)
        return torch.cat([x, o - centre], dim=1)

    def _rescale_kernels(self, distance: Tensor, who: str) -> None:
        """Divides every kernel's projections, and so its distances, by ``distance[b]`` (all finite and > 0)."""
        # A batch of identical examples has distance 0, a batch of one none (an infinite nearest-neighbour
        # distance, a 0/0 mean): either would make the scale infinite or NaN for good.
        scaled = torch.isfinite(distance) & (distance > 0)
        if not bool(scaled.all()):
            dead = torch.nonzero(~scaled).flatten().tolist()
            raise ValueError(f"{who}: kernel(s) {dead[:10]} see identical examples; it needs at least 2 examples that "
                             "differ")
        with torch.no_grad():
            self.log_weight_scale.sub_(distance.log().unsqueeze(1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_kernels={self.num_kernels}, kernel_dim={self.kernel_dim}"


def minibatch_batch_mean_init(layer: MinibatchDiscrimination, features: Tensor, target: float = 2.0) -> Tensor:
    """Scales ``layer`` so that every kernel's *mean pairwise* L1 distance on ``features`` is ``target`` and centres
    its features there; returns the per-kernel mean distances before the scaling.

    An alternative to the reference's data-dependent init of :class:`MinibatchDiscrimination` (mean
    *nearest-neighbour* distance 2, :ref:`ref-minibatch-discrimination`). With ``M = features T`` of shape (N, B, C) and
    ``d[i, j, b] = ||M[i, b] - M[j, b]||_1``, the mean over the ordered pairs ``i != j`` is
    ``mean[b] = sum_{i != j} d[i, j, b] / (N (N - 1))``; then ``log_weight_scale[b] -= log(mean[b] / target)`` (the
    distances become ``target * d / mean``) and ``bias <- -mean_i o`` with ``o`` the layer's features after the
    scaling (self excluded, as the layer computes them), so the features are centred on this batch.

    Why: on data of tight, separated modes (the 2-D mixtures of :mod:`ignite_igan.metrics.mode_coverage`) a real
    example's nearest neighbour is in its own mode, so the reference's init sets the kernels' length scale to the
    within-mode spread. A generator collapsed onto a region a few modes wide then gets ``exp(-d) ~ 0`` for every
    pair, the same features as data spread over the plane, and no gradient to learn its way back. The mean over
    all pairs is dominated by the distances between modes, so this init puts those at O(1), where ``exp(-d)``
    tells a collapsed batch from a spread one, while staying data-dependent (independent of the scale of the
    layers below). ``recipes/mixture.py`` offers it as ``--minibatch-init batch_mean``.

    Args:
        layer: the minibatch layer, changed in place (without gradient).
        features: what feeds the layer on a real batch, ``(N, in_features)`` (``(N, ...)`` is flattened), N >= 2:
            e.g. ``body(x)`` for the layers ``body`` below it.
        target: the mean pairwise distance every kernel gets, > 0.

    Returns:
        The ``(B,)`` mean pairwise distances before the scaling.

    Raises:
        ValueError: fewer than 2 examples, or a kernel that sees identical examples (mean distance 0). A width
            other than ``in_features`` fails in the product, with torch's error naming both widths.

    Example:
        >>> import torch
        >>> layer = MinibatchDiscrimination(8, num_kernels=3, kernel_dim=2)
        >>> features = torch.randn(50, 8)
        >>> before = minibatch_batch_mean_init(layer, features)
        >>> m = (features @ layer.projection().flatten(1)).view(50, 3, 2)
        >>> d = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(dim=3)  # (N, N, B)
        >>> torch.allclose(d.sum(dim=(0, 1)) / (50 * 49), torch.full((3,), 2.0))
        True
        >>> layer(features)[:, 8:].mean(dim=0).abs().max() < 1e-5  # centred on the batch
        tensor(True)
    """
    check_instance("layer", layer, MinibatchDiscrimination, "a MinibatchDiscrimination")
    check_instance("features", features, Tensor, "a tensor (N, in_features)")
    target = check_real("target", target, minimum=0.0, low_open=True)
    x = features.flatten(1)
    n = x.shape[0]
    with torch.no_grad():
        m = (x @ layer.projection().flatten(1)).view(n, layer.num_kernels, layer.kernel_dim)
        distances = minibatch_l1_distances(m)  # (N, N, B), zero diagonal
        mean = distances.sum(dim=(0, 1)) / (n * (n - 1))  # (B,)
        layer._rescale_kernels(mean / target, "minibatch_batch_mean_init")
        o = (-distances / (mean / target)).exp().sum(dim=1) - 1.0  # self excluded, as the layer does
        layer.bias.copy_(-o.mean(dim=0))
    return mean
