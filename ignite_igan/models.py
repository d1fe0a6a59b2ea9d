"""The networks of *Improved Techniques for Training GANs*, layer for layer as the reference code builds them.

* :class:`MNISTGenerator`, :class:`MNISTDiscriminator`: the permutation-invariant MNIST networks (spec §3.1);
  :func:`mnist_generator`, :func:`mnist_discriminator` build the paper's sizes, :func:`digits_generator`,
  :func:`digits_discriminator` the same networks scaled to scikit-learn's 8x8 digits. Options beyond the
  released MNIST code: virtual batch norm in the generator, minibatch features in the discriminator.
* :class:`CIFARGenerator`: the CIFAR-10/SVHN generator (spec §3.2), with the reference's batch-statistics batch
  norm or with virtual batch norm (paper §3.4).
* :class:`CIFARDiscriminator`: the 9-layer weight-normalized conv net of the CIFAR-10 and SVHN scripts, for
  feature matching and minibatch discrimination (spec §3.2-§3.5); factories for the four paper settings.
* :class:`MixtureGenerator`, :class:`MixtureDiscriminator`: the small MLPs of the 2-D Gaussian-mixture
  (mode-coverage) experiment, in units of the data's scale; the discriminator has an optional minibatch layer.

Both generators with ``normalization="virtual"`` own their reference noise batch the same way (the buffer
``reference_noise``, ``set_reference``, checkpoints of any reference size), so
:class:`~ignite_igan.handlers.VirtualBatchReference` works with either.

Nothing depends on the batch size (the reference baked in 100). Generators draw their input with
``sample_noise`` (z ~ U[0, 1)^z_dim, as every reference script). Discriminators return K class logits (the
K+1-th "fake" logit is fixed at 0, spec §2) and, with ``return_features=True``, the features that feature
matching compares. ``trainable_scale_layers()`` names the weight-normalized layers whose gain is trained (the
output layers); every other weight-norm gain is frozen after data-dependent init, as in the reference.

Example:
    >>> import torch
    >>> from ignite_igan.models import cifar10_generator, cifar10_fm_discriminator
    >>> from ignite_igan.nn import data_dependent_init
    >>> gen, disc = cifar10_generator(), cifar10_fm_discriminator()
    >>> _ = data_dependent_init(gen, gen.sample_noise(20))
    >>> _ = data_dependent_init(disc, torch.rand(20, 3, 32, 32) * 2 - 1)
    >>> logits, features = disc(gen(gen.sample_noise(8)), return_features=True)
    >>> logits.shape, features.shape
    (torch.Size([8, 10]), torch.Size([8, 192]))
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as torch_F
from torch import Tensor, nn

from ignite_igan.nn import (
    GaussianNoise,
    MinibatchDiscrimination,
    ScaleFreeBatchNorm,
    VirtualBatchNorm,
    WeightNormConv2d,
    WeightNormConvTranspose2d,
    WeightNormLinear,
    _WeightNorm,
    minibatch_batch_mean_init,
)

__all__ = [
    "MNISTGenerator",
    "MNISTDiscriminator",
    "CIFARGenerator",
    "CIFARDiscriminator",
    "mnist_generator",
    "mnist_discriminator",
    "digits_generator",
    "digits_discriminator",
    "cifar10_generator",
    "svhn_generator",
    "cifar10_fm_discriminator",
    "cifar10_md_discriminator",
    "svhn_fm_discriminator",
    "svhn_md_discriminator",
    "MixtureGenerator",
    "MixtureDiscriminator",
    "DigitsClassifier",
    "train_digits_classifier",
    "load_digits_classifier",
]

LEAKY_SLOPE = 0.2  # spec §1.1: lrelu slope at HEAD (0.1 in the paper-era commits)


# --------------------------------------------------------------------------------------------------------------
# Checks. Messages name the argument, what it got and what was expected.
# --------------------------------------------------------------------------------------------------------------
def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _minibatch_kernels(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"minibatch_kernels must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"minibatch_kernels must be >= 0 (0 = no minibatch discrimination), got {value}")
    return int(value)


def _probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def _widths(name: str, value: object, count: Optional[int] = None) -> Tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of ints, got {type(value).__name__}")
    widths = tuple(_positive_int(f"{name}[{i}]", v) for i, v in enumerate(value))
    if count is not None and len(widths) != count:
        raise ValueError(f"{name} must have {count} entries, got {len(widths)}: {widths}")
    if not widths:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    return widths


def _check_batch(name: str, x: object, ndim: int, layout: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must be {layout}, got a tensor of shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one example, got an empty batch of shape {tuple(x.shape)}")
    return x


class _ModelMixin:
    """What every network here shares: the list of trainable-gain layers and the parameters' device/dtype."""

    def trainable_scale_layers(self) -> Dict[str, nn.Module]:
        """The weight-normalized layers whose gain ``scale`` is trained, by qualified name.

        These are the reference's ``train_g=True`` / ``train_scale=True`` output layers (spec §0.1); every other
        weight-norm gain is frozen (``requires_grad=False``) and changes only in data-dependent init.
        """
        return {
            name: module
            for name, module in self.named_modules()  # type: ignore[attr-defined]
            if isinstance(module, _WeightNorm) and module.train_scale
        }

    def _parameter(self) -> Tensor:
        return next(self.parameters())  # type: ignore[attr-defined]


class _NoiseSampler(_ModelMixin):
    z_dim: int

    def sample_noise(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[Union[torch.device, str]] = None,
    ) -> Tensor:
        """Draws ``n`` latent vectors z ~ U[0, 1)^z_dim, the reference's noise (spec §7.8).

        Args:
            n: how many.
            generator: an optional :class:`torch.Generator` for reproducible draws.
            device: where to put them; defaults to the device of the model's parameters.

        Returns:
            (n, z_dim) tensor with the dtype of the model's parameters.
        """
        n = _positive_int("n", n)
        parameter = self._parameter()
        device = parameter.device if device is None else device
        return torch.rand(n, self.z_dim, generator=generator, device=device, dtype=parameter.dtype)


NORMALIZATIONS = ("batch", "virtual")

#: ``normalize(norm_layer, h)``: how a generator's hidden norm layers are called in one forward pass.
_Normalize = Callable[[nn.Module, Tensor], Tensor]


class _ReferenceNoiseGenerator(_NoiseSampler):
    """What a generator with ``normalization="batch"`` or ``"virtual"`` needs besides its layers.

    With ``"virtual"``, the generator owns the fixed reference noise batch of virtual batch norm (paper §3.4) as
    the buffer ``reference_noise``: set once with ``set_reference()``, saved in ``state_dict`` and loaded
    from checkpoints of any reference size. :meth:`_generate` runs ``[reference_noise; z]`` through the network
    in one pass, every :class:`~ignite_igan.nn.VirtualBatchNorm` told how many leading rows are the reference,
    and returns the rows of ``z``. With ``"batch"``, it runs ``z`` alone, every norm layer on its batch.

    A subclass calls :meth:`_init_normalization` in its constructor and implements ``_run(z, normalize)``, which
    calls ``normalize(norm_layer, h)`` at each hidden norm layer.
    """

    normalization: str
    reference_noise: Tensor

    def _init_normalization(self, normalization: object) -> type:
        """Checks ``normalization``, registers the reference buffer if it is ``"virtual"``; returns the norm class."""
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.normalization = str(normalization)
        if self.normalization == "batch":
            return ScaleFreeBatchNorm
        self.register_buffer("reference_noise", torch.empty(0, self.z_dim))  # type: ignore[attr-defined]
        return VirtualBatchNorm

    def set_reference(self, z_ref: Tensor) -> None:
        """Fixes the reference noise batch of a ``"virtual"`` generator (paper §3.4: chosen once, kept fixed).

        Args:
            z_ref: (R, z_dim) latent vectors, typically ``sample_noise(R)``; the reference used R = 16 on ImageNet.
        """
        if self.normalization != "virtual":
            raise ValueError(
                f"set_reference needs normalization='virtual', got a generator with normalization="
                f"{self.normalization!r}"
            )
        z_ref = _check_batch("z_ref", z_ref, 2, f"2-D (R, z_dim={self.z_dim})")
        if z_ref.shape[1] != self.z_dim:
            raise ValueError(f"z_ref must have z_dim={self.z_dim} columns, got shape {tuple(z_ref.shape)}")
        parameter = self._parameter()
        self.reference_noise = z_ref.detach().to(device=parameter.device, dtype=parameter.dtype).clone()

    def _load_from_state_dict(
        self, state_dict: Mapping[str, Any], prefix: str, local_metadata: Any, strict: bool, missing_keys: Any,
        unexpected_keys: Any, error_msgs: Any,
    ) -> None:
        # The reference batch size is only known from the checkpoint: resize the buffer before it is copied.
        key = prefix + "reference_noise"
        if self.normalization == "virtual" and key in state_dict:
            incoming = state_dict[key]
            if isinstance(incoming, Tensor) and incoming.dim() == 2:
                self.reference_noise = torch.empty_like(incoming, device=self.reference_noise.device,
                                                        dtype=self.reference_noise.dtype)
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _generate(self, z: Tensor) -> Tensor:
        z = _check_batch("z", z, 2, f"2-D (N, z_dim={self.z_dim})")
        if z.shape[1] != self.z_dim:
            raise ValueError(f"z must have z_dim={self.z_dim} columns, got shape {tuple(z.shape)}")
        if self.normalization == "batch":
            return self._run(z, lambda norm, h: norm(h))
        reference_size = self.reference_noise.shape[0]
        if reference_size == 0:
            raise RuntimeError(
                "this generator uses virtual batch norm and has no reference batch yet: call "
                "set_reference(gen.sample_noise(R)) once before the first forward pass"
            )
        out = self._run(torch.cat([self.reference_noise, z]), lambda norm, h: norm(h, reference_size))
        return out[reference_size:]

    def _run(self, z: Tensor, normalize: _Normalize) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------------------
# MNIST (spec §3.1)
# --------------------------------------------------------------------------------------------------------------
class MNISTGenerator(_ReferenceNoiseGenerator, nn.Module):
    """The MNIST feature-matching generator (spec §3.1), any width, with batch or virtual batch norm.

    ``z -> [Dense (no bias, Glorot-uniform) -> norm (per unit) -> softplus] x len(hidden) -> Dense with weight
    norm (trainable gain, own bias, Glorot-uniform direction, eps 1e-6) -> sigmoid``: the hidden layers are
    ``dense[i]`` and ``norms[i]``, the output layer ``output``, as in :class:`CIFARGenerator`. The output layer
    is the reference's ``l2normalize(DenseLayer(784, sigmoid))``: it normalizes the weight per output unit, not
    the output vector. The reference never initializes this generator from data, so its output layer has
    ``data_init=False`` and :func:`~ignite_igan.nn.data_dependent_init` leaves the model unchanged.

    ``normalization`` picks the norm layers:

    * ``"batch"`` (the released MNIST code): :class:`~ignite_igan.nn.ScaleFreeBatchNorm`, the statistics of the
      current batch, also when sampling: samples depend on their batch, and a batch of one raises a
      :class:`ValueError`.
    * ``"virtual"`` (paper §3.4; not in the released MNIST code, which has no VBN):
      :class:`~ignite_igan.nn.VirtualBatchNorm` at the same places, with a fixed reference noise batch (the buffer
      ``reference_noise``, set once with ``set_reference()``, saved in ``state_dict``) run through the network
      with every ``z``, exactly as :class:`CIFARGenerator` does. Each sample is independent of the rest of its
      batch; a batch of one is fine.

    Args:
        z_dim: latent size (100).
        hidden: width of each hidden layer; an int means two layers of that width, as the reference (500, 500).
        out_features: output size (784 for 28x28 MNIST).
        normalization: ``"batch"`` or ``"virtual"``.

    Example:
        >>> gen = MNISTGenerator()
        >>> gen(gen.sample_noise(5)).shape
        torch.Size([5, 784])
        >>> gen = MNISTGenerator(normalization="virtual")
        >>> gen.set_reference(gen.sample_noise(16))
        >>> gen(gen.sample_noise(1)).shape
        torch.Size([1, 784])
    """

    def __init__(
        self,
        z_dim: int = 100,
        hidden: Union[int, Sequence[int]] = 500,
        out_features: int = 784,
        normalization: str = "batch",
    ) -> None:
        super().__init__()
        self.z_dim = _positive_int("z_dim", z_dim)
        self.out_features = _positive_int("out_features", out_features)
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = (int(hidden), int(hidden))
        self.hidden = _widths("hidden", hidden)
        norm = self._init_normalization(normalization)
        dense, norms = [], []
        width = self.z_dim
        for h in self.hidden:
            layer = nn.Linear(width, h, bias=False)
            nn.init.xavier_uniform_(layer.weight)  # Lasagne's GlorotUniform
            dense.append(layer)
            norms.append(norm(h))
            width = h
        self.dense = nn.ModuleList(dense)
        self.norms = nn.ModuleList(norms)
        self.output = WeightNormLinear(width, self.out_features, train_scale=True, eps=1e-6, data_init=False)
        with torch.no_grad():
            nn.init.xavier_uniform_(self.output.weight)

    def forward(self, z: Tensor) -> Tensor:
        """Maps z (N, z_dim) to samples (N, out_features) in (0, 1)."""
        return self._generate(z)

    def _run(self, z: Tensor, normalize: _Normalize) -> Tensor:
        h = z
        for dense, norm in zip(self.dense, self.norms):
            h = torch_F.softplus(normalize(norm, dense(h)))
        return torch.sigmoid(self.output(h))


class MNISTDiscriminator(_ModelMixin, nn.Module):
    """The MNIST discriminator (spec §3.1): five weight-normalized ReLU layers with Gaussian noise.

    ``GaussianNoise(input_noise) -> [WN dense -> ReLU -> GaussianNoise(hidden_noise)] x 5 -> WN dense (trainable
    gain)``. Every dense layer is the reference's MNIST ``nn.DenseLayer`` (spec §1.8): direction ~ N(0, 0.1), no
    epsilon in the norm, data-dependent init to std 1 (also the output layer), gain frozen except in the output
    layer. The feature-matching features are the last hidden layer's ReLU output, before its noise
    (``layers[-3]`` in the reference).

    With ``minibatch_kernels = B > 0`` (not in the released MNIST code) a
    :class:`~ignite_igan.nn.MinibatchDiscrimination` layer (B kernels of ``minibatch_kernel_dim`` dimensions)
    reads the feature-matching features, as the CIFAR-10 minibatch script's layer reads the pooled features that
    its feature matching would use (spec §3.3), and the output layer reads the last hidden layer's noisy output
    concatenated with the B minibatch features: ``hidden[-1] + B`` inputs.

    Args:
        in_features: input size (784); inputs with more dimensions, e.g. (N, 1, 28, 28), are flattened.
        num_classes: K, the number of class logits.
        hidden: hidden widths (1000, 500, 250, 250, 250).
        input_noise: std of the noise on the input (0.3).
        hidden_noise: std of the noise after every hidden layer (0.5).
        minibatch_kernels: B, 0 for no minibatch discrimination.
        minibatch_kernel_dim: C (5, as in the reference's layer).

    Example:
        >>> import torch
        >>> disc = MNISTDiscriminator()
        >>> logits, features = disc(torch.rand(4, 784), return_features=True)
        >>> logits.shape, features.shape
        (torch.Size([4, 10]), torch.Size([4, 250]))
        >>> MNISTDiscriminator(minibatch_kernels=100).classifier.in_features  # 250 + 100
        350
    """

    def __init__(
        self,
        in_features: int = 784,
        num_classes: int = 10,
        hidden: Sequence[int] = (1000, 500, 250, 250, 250),
        input_noise: float = 0.3,
        hidden_noise: float = 0.5,
        minibatch_kernels: int = 0,
        minibatch_kernel_dim: int = 5,
    ) -> None:
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.num_classes = _positive_int("num_classes", num_classes)
        self.hidden = _widths("hidden", hidden)
        minibatch_kernels = _minibatch_kernels(minibatch_kernels)
        self.input_noise = GaussianNoise(input_noise)
        blocks = []
        width = self.in_features
        for h in self.hidden:
            blocks.append(nn.Sequential(WeightNormLinear(width, h, eps=0.0, weight_std=0.1), nn.ReLU()))
            width = h
        self.blocks = nn.ModuleList(blocks)
        self.hidden_noise = nn.ModuleList(GaussianNoise(hidden_noise) for _ in self.hidden)
        self.minibatch: Optional[MinibatchDiscrimination] = None
        if minibatch_kernels > 0:
            self.minibatch = MinibatchDiscrimination(width, minibatch_kernels, minibatch_kernel_dim)
            width += minibatch_kernels
        self.classifier = WeightNormLinear(width, self.num_classes, train_scale=True, eps=0.0, weight_std=0.1)

    @property
    def feature_dim(self) -> int:
        return self.hidden[-1]

    def forward(self, x: Tensor, return_features: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Class logits (N, num_classes), and with ``return_features`` also the features (N, hidden[-1])."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() >= 2:
            x = x.flatten(1)
        x = _check_batch("x", x, 2, f"(N, in_features={self.in_features}) or (N, ...) flattening to it")
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"x must have in_features={self.in_features} values per example, got {x.shape[1]} "
                f"(flattened shape {tuple(x.shape)})"
            )
        h = self.input_noise(x)
        for block, noise in zip(self.blocks, self.hidden_noise):
            features = block(h)
            h = noise(features)
        if self.minibatch is not None:
            # The layer outputs [features, minibatch features]; the output layer reads the noisy h in their place.
            minibatch_features = self.minibatch(features)[:, features.shape[1] :]
            h = torch.cat([h, minibatch_features], dim=1)
        logits = self.classifier(h)
        return (logits, features) if return_features else logits


def mnist_generator() -> MNISTGenerator:
    """The reference MNIST generator: 100 -> 500 -> 500 -> 784 (spec §3.1)."""
    return MNISTGenerator(z_dim=100, hidden=500, out_features=784)


def mnist_discriminator() -> MNISTDiscriminator:
    """The reference MNIST discriminator: 784 -> 1000-500-250-250-250 -> 10, noise 0.3/0.5 (spec §3.1)."""
    return MNISTDiscriminator()


DIGITS_GENERATOR_HIDDEN = (128, 128)
DIGITS_DISCRIMINATOR_HIDDEN = (256, 128, 64, 64, 64)


def digits_generator(z_dim: int = 100, normalization: str = "batch") -> MNISTGenerator:
    """The MNIST generator scaled to scikit-learn's 8x8 digits (64 pixels in [0, 1]).

    Same layers as :func:`mnist_generator`, two hidden layers of 128 instead of 500. Shrinking 500 in
    proportion to the output (784 -> 64 pixels) would give about 40 units, narrower than the image it has to
    draw; 128 (twice the output) keeps the generator expressive and still trains in minutes on a CPU. The
    latent stays U[0, 1)^100 by default. ``normalization="virtual"`` swaps the batch norm for virtual batch norm
    (see :class:`MNISTGenerator`); call ``set_reference`` before the first forward pass.
    """
    return MNISTGenerator(
        z_dim=z_dim, hidden=DIGITS_GENERATOR_HIDDEN, out_features=64, normalization=normalization
    )


def digits_discriminator(num_classes: int = 10, minibatch_kernels: int = 0) -> MNISTDiscriminator:
    """The MNIST discriminator scaled to 8x8 digits: 64 -> 256-128-64-64-64 -> 10, noise 0.3/0.5.

    Five hidden layers as the reference, widths about a quarter of MNIST's (1000-500-250-250-250) so that the
    first layer still widens the 64-pixel input fourfold; the noise levels are kept because the pixels are in
    [0, 1] as in MNIST. Feature matching uses the 64-d last hidden layer. ``minibatch_kernels > 0`` adds that
    many minibatch-discrimination kernels of 5 dimensions on those 64 features (see :class:`MNISTDiscriminator`).
    """
    return MNISTDiscriminator(
        in_features=64, num_classes=num_classes, hidden=DIGITS_DISCRIMINATOR_HIDDEN,
        minibatch_kernels=minibatch_kernels,
    )


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10 / SVHN (spec §3.2-§3.5)
# --------------------------------------------------------------------------------------------------------------
class CIFARGenerator(_ReferenceNoiseGenerator, nn.Module):
    """The CIFAR-10/SVHN generator (spec §3.2), with batch or virtual batch norm.

    ``z (U[0,1)^100) -> Dense 100 -> 512*4*4 (no bias, N(0, 0.05)) -> norm (per unit over the 8192 outputs) ->
    ReLU -> reshape (512, 4, 4) -> [Deconv 5x5 stride 2 (no bias, N(0, 0.05)) -> norm per channel -> ReLU] to
    256x8x8 and 128x16x16 -> weight-normalized Deconv 5x5 stride 2 to out_channels x 32 x 32 (trainable gain,
    data-dependent init to std 0.1) -> tanh``.

    ``normalization`` picks the norm layers:

    * ``"batch"`` (the released code): :class:`~ignite_igan.nn.ScaleFreeBatchNorm`, batch statistics always
      (also when sampling), no scale. Samples depend on their batch; a batch of one raises a ValueError.
    * ``"virtual"`` (paper §3.4, the sample-quality experiments): :class:`~ignite_igan.nn.VirtualBatchNorm` at
      the same places (per unit after the dense layer, per channel after the deconvolutions). The generator
      owns a fixed reference noise batch, the buffer ``reference_noise``, set once with ``set_reference()``
      and saved in ``state_dict``. ``forward(z)`` runs ``[reference_noise; z]`` through the network in one pass,
      so the reference statistics come from the current weights and carry gradients, and returns only the rows
      of ``z``. Each sample is then independent of the rest of its batch.

    In data-dependent init the output layer's statistics are taken over every row it sees (with ``"virtual"``
    the reference rows too: they are generated images as well).

    Args:
        z_dim: latent size (100).
        out_channels: image channels (3).
        normalization: ``"batch"`` or ``"virtual"``.
        widths: channels after the dense layer and after each hidden deconvolution ((512, 256, 128)); the
            output side is ``4 * 2**len(widths)`` (32).

    Example:
        >>> gen = CIFARGenerator(normalization="virtual")
        >>> gen.set_reference(gen.sample_noise(16))
        >>> gen(gen.sample_noise(1)).shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(
        self,
        z_dim: int = 100,
        out_channels: int = 3,
        normalization: str = "batch",
        widths: Sequence[int] = (512, 256, 128),
    ) -> None:
        super().__init__()
        self.z_dim = _positive_int("z_dim", z_dim)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.widths = _widths("widths", widths)
        self.base_size = 4
        norm = self._init_normalization(normalization)

        first = self.widths[0] * self.base_size**2
        self.dense = nn.Linear(self.z_dim, first, bias=False)
        self.dense_norm = norm(first)
        deconvs, norms = [], []
        for cin, cout in zip(self.widths[:-1], self.widths[1:]):
            deconvs.append(nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1, bias=False))
            norms.append(norm(cout))
        self.deconvs = nn.ModuleList(deconvs)
        self.norms = nn.ModuleList(norms)
        with torch.no_grad():
            for layer in [self.dense, *self.deconvs]:
                layer.weight.normal_(0.0, 0.05)
        self.output = WeightNormConvTranspose2d(
            self.widths[-1], self.out_channels, 5, stride=2, padding=2, output_padding=1, train_scale=True,
            init_scale=0.1,
        )

    @property
    def image_size(self) -> int:
        return self.base_size * 2 ** len(self.widths)

    def forward(self, z: Tensor) -> Tensor:
        """Maps z (N, z_dim) to images (N, out_channels, 32, 32) in (-1, 1)."""
        return self._generate(z)

    def _run(self, z: Tensor, normalize: _Normalize) -> Tensor:
        h = self.dense(z)
        h = torch.relu(normalize(self.dense_norm, h))
        h = h.view(-1, self.widths[0], self.base_size, self.base_size)
        for deconv, norm in zip(self.deconvs, self.norms):
            h = torch.relu(normalize(norm, deconv(h)))
        return torch.tanh(self.output(h))


INPUT_CORRUPTIONS = ("dropout", "noise")


class CIFARDiscriminator(_ModelMixin, nn.Module):
    """The CIFAR-10/SVHN discriminator of the reference scripts (spec §3.2-§3.5).

    =====  =====================================================================  ====================
    #      layer (WN = weight-normalized, frozen gain, LeakyReLU 0.2 after each)  output (32x32 input)
    =====  =====================================================================  ====================
    0      input corruption: Dropout(0.2) (FM) or GaussianNoise(0.2) (MD)         C x 32 x 32
    1-3    WN conv 3x3 pad 1: w1, w1, w1 stride 2                                 w1 x 16 x 16
    4      Dropout(0.5)
    5-7    WN conv 3x3 pad 1: w2, w2, w2 stride 2                                 w2 x 8 x 8
    8      Dropout(0.5)
    9      WN conv 3x3 pad 0: w2                                                  w2 x 6 x 6
    10-11  WN 1x1 conv (NIN): w2, w2                                              w2 x 6 x 6
    12     global average pool  <- feature-matching features                      w2
    (13)   MinibatchDiscrimination(w2, B, C) when ``minibatch_kernels > 0``       w2 + B
    14     WN dense to num_classes, trainable gain, init std 0.1                  num_classes
    =====  =====================================================================  ====================

    (w1, w2) = ``widths``: (96, 192) for CIFAR-10 and SVHN-MD, (64, 128) for SVHN-FM. All directions ~ N(0, 0.05),
    eps 1e-6, data-dependent init to std 1 (0.1 for the output layer). The features returned with
    ``return_features=True`` are the pooled ones, before the minibatch features, as the reference's feature
    matching (``disc_layers[-2]`` in the FM scripts). Any input side of at least 9 works (32 in the paper).

    Args:
        in_channels: image channels (3).
        num_classes: K (10).
        widths: (w1, w2).
        input_corruption: ``"dropout"`` (FM scripts) or ``"noise"`` (MD scripts).
        minibatch_kernels: B, 0 for no minibatch discrimination (100 in the MD scripts).
        minibatch_kernel_dim: C (5).
        input_corruption_level: the dropout probability or the noise std (0.2 for both).
        dropout: the hidden dropout probability (0.5).

    Example:
        >>> import torch
        >>> disc = cifar10_md_discriminator()
        >>> logits, features = disc(torch.randn(4, 3, 32, 32), return_features=True)
        >>> logits.shape, features.shape
        (torch.Size([4, 10]), torch.Size([4, 192]))
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        widths: Sequence[int] = (96, 192),
        input_corruption: str = "dropout",
        minibatch_kernels: int = 0,
        minibatch_kernel_dim: int = 5,
        input_corruption_level: float = 0.2,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.num_classes = _positive_int("num_classes", num_classes)
        w1, w2 = self.widths = _widths("widths", widths, count=2)
        if input_corruption not in INPUT_CORRUPTIONS:
            raise ValueError(f"input_corruption must be one of {INPUT_CORRUPTIONS}, got {input_corruption!r}")
        self.input_corruption = input_corruption
        if input_corruption == "dropout":
            corruption: nn.Module = nn.Dropout(_probability("input_corruption_level", input_corruption_level))
        else:
            corruption = GaussianNoise(input_corruption_level)
        dropout = _probability("dropout", dropout)
        minibatch_kernels = _minibatch_kernels(minibatch_kernels)

        def conv(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 1) -> nn.Sequential:
            return nn.Sequential(
                WeightNormConv2d(cin, cout, kernel, stride=stride, padding=padding), nn.LeakyReLU(LEAKY_SLOPE)
            )

        self.trunk = nn.Sequential(
            corruption,
            conv(self.in_channels, w1, 3),
            conv(w1, w1, 3),
            conv(w1, w1, 3, stride=2),
            nn.Dropout(dropout),
            conv(w1, w2, 3),
            conv(w2, w2, 3),
            conv(w2, w2, 3, stride=2),
            nn.Dropout(dropout),
            conv(w2, w2, 3, padding=0),
            conv(w2, w2, 1, padding=0),
            conv(w2, w2, 1, padding=0),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.minibatch: Optional[MinibatchDiscrimination] = None
        width = w2
        if minibatch_kernels > 0:
            self.minibatch = MinibatchDiscrimination(w2, minibatch_kernels, minibatch_kernel_dim)
            width = self.minibatch.out_features
        self.classifier = WeightNormLinear(width, self.num_classes, train_scale=True, init_scale=0.1)

    @property
    def feature_dim(self) -> int:
        return self.widths[1]

    def forward(self, x: Tensor, return_features: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Class logits (N, num_classes), and with ``return_features`` also the pooled features (N, w2)."""
        x = _check_batch("x", x, 4, f"4-D (N, C={self.in_channels}, H, W)")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have in_channels={self.in_channels} channels, got shape {tuple(x.shape)}")
        if min(x.shape[2:]) < 9:
            raise ValueError(f"x must be at least 9x9 (two stride-2 convs and a 3x3 valid conv), got {tuple(x.shape)}")
        features = self.trunk(x)
        h = features if self.minibatch is None else self.minibatch(features)
        logits = self.classifier(h)
        return (logits, features) if return_features else logits


def cifar10_generator(normalization: str = "batch") -> CIFARGenerator:
    """The CIFAR-10 generator (spec §3.2); ``normalization="virtual"`` for virtual batch norm (paper §3.4)."""
    return CIFARGenerator(z_dim=100, out_channels=3, normalization=normalization)


def svhn_generator(normalization: str = "batch") -> CIFARGenerator:
    """The SVHN generator: identical to CIFAR-10's (spec §3.4)."""
    return CIFARGenerator(z_dim=100, out_channels=3, normalization=normalization)


def cifar10_fm_discriminator(num_classes: int = 10) -> CIFARDiscriminator:
    """CIFAR-10 feature matching (spec §3.2): 96/192, input dropout 0.2, no minibatch features."""
    return CIFARDiscriminator(num_classes=num_classes, widths=(96, 192), input_corruption="dropout")


def cifar10_md_discriminator(num_classes: int = 10, minibatch_kernels: int = 100) -> CIFARDiscriminator:
    """CIFAR-10 minibatch discrimination (spec §3.3): 96/192, input noise 0.2, 100 kernels of 5 dims.

    ``minibatch_kernels`` sets the number of kernels B; ``minibatch_kernels=0`` gives the same network without
    the minibatch layer (input noise 0.2, the output layer on the 192 pooled features): the "-MBF" ablation of
    the paper's Inception-score table (spec §6.4), which differs from :func:`cifar10_fm_discriminator` in its
    input corruption.
    """
    return CIFARDiscriminator(
        num_classes=num_classes, widths=(96, 192), input_corruption="noise", minibatch_kernels=minibatch_kernels,
        minibatch_kernel_dim=5,
    )


def svhn_fm_discriminator(num_classes: int = 10) -> CIFARDiscriminator:
    """SVHN feature matching (spec §3.4): narrower 64/128, input dropout 0.2; 128-d features."""
    return CIFARDiscriminator(num_classes=num_classes, widths=(64, 128), input_corruption="dropout")


def svhn_md_discriminator(num_classes: int = 10, minibatch_kernels: int = 100) -> CIFARDiscriminator:
    """SVHN minibatch discrimination (spec §3.5): 96/192 like CIFAR, input noise 0.2, 100 kernels of 5 dims.

    ``minibatch_kernels`` as in :func:`cifar10_md_discriminator` (0: no minibatch layer).
    """
    return CIFARDiscriminator(
        num_classes=num_classes, widths=(96, 192), input_corruption="noise", minibatch_kernels=minibatch_kernels,
        minibatch_kernel_dim=5,
    )


# --------------------------------------------------------------------------------------------------------------
# The 2-D Gaussian-mixture networks (the mode-coverage experiment, recipes/mixture.py)
# --------------------------------------------------------------------------------------------------------------
def _mixture_scale(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"scale must be a real number, got {type(value).__name__} {value!r}")
    if not 0.0 < value < float("inf"):
        raise ValueError(f"scale must be in (0.0, inf), got {value!r}")
    return float(value)


class MixtureGenerator(nn.Module):
    """An MLP from z ~ N(0, I) to 2-D points: ``layers`` hidden ReLU layers of ``hidden`` units and a linear output
    multiplied by ``scale``.

    ``scale`` re-parametrizes the network in units of the data: PyTorch's default init puts a small MLP's outputs
    within about one unit of the origin, while the mixtures of :mod:`ignite_igan.metrics.mode_coverage` span
    [-2, 2] (ring) or [-4, 4] (grid); with ``scale`` set to the mixture's extent the network's outputs have the
    data's scale from the start. ``scale=1.0`` is the raw plane.

    Args:
        z_dim: dimension of the noise z ~ N(0, I).
        hidden: width of the hidden layers.
        layers: number of hidden layers.
        scale: the output is multiplied by it (> 0).

    Example:
        >>> gen = MixtureGenerator(z_dim=4, hidden=8, layers=2, scale=2.0)
        >>> gen(gen.sample_noise(3)).shape
        torch.Size([3, 2])
    """

    def __init__(self, z_dim: int = 16, hidden: int = 256, layers: int = 3, scale: float = 1.0) -> None:
        super().__init__()
        self.z_dim = _positive_int("z_dim", z_dim)
        hidden, layers = _positive_int("hidden", hidden), _positive_int("layers", layers)
        self.scale = _mixture_scale(scale)
        blocks = []
        width = self.z_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        blocks.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*blocks)

    def sample_noise(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> Tensor:
        """``n`` noise vectors z ~ N(0, I) of ``z_dim`` dimensions, on ``device`` (default: the model's).

        A CPU ``generator`` with another ``device`` draws on the CPU and moves the noise, so a seeded generator
        gives the same noise on every device.
        """
        n = _positive_int("n", n)
        parameter = next(self.parameters())
        device = parameter.device if device is None else device
        if generator is not None and torch.device(device).type != generator.device.type:
            return torch.randn(n, self.z_dim, generator=generator, dtype=parameter.dtype).to(device)
        return torch.randn(n, self.z_dim, generator=generator, device=device, dtype=parameter.dtype)

    def forward(self, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.z_dim:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {shape}")
        return self.net(z) * self.scale


class MixtureDiscriminator(nn.Module):
    """An MLP on 2-D points with an optional minibatch-discrimination layer before its single-logit output.

    ``forward(x)`` returns the real-vs-fake logits ``(N,)``; ``forward(x, return_features=True)`` also returns the
    input of the output layer (the last hidden layer, with the minibatch features appended when the layer is on),
    which is what feature matching compares. Call it once per source (real, generated): the minibatch features of
    an example depend on the rest of its batch. The input is divided by ``scale`` first (the data's scale, as in
    :class:`MixtureGenerator`), so the hidden layers' kinks lie where the modes are.

    Args:
        hidden: width of the hidden LeakyReLU(0.2) layers.
        layers: number of hidden layers.
        minibatch_kernels: B of the minibatch layer; 0 for none.
        minibatch_kernel_dim: C of the minibatch layer.
        scale: the input is divided by it (> 0).

    Attributes:
        body: the hidden layers (``body(x / scale)`` is what feeds the minibatch layer).
        minibatch: the :class:`~ignite_igan.nn.MinibatchDiscrimination` layer, or None.
        out: the output layer.

    Example:
        >>> import torch
        >>> disc = MixtureDiscriminator(hidden=8, layers=2, minibatch_kernels=3, minibatch_kernel_dim=2)
        >>> logits, features = disc(torch.randn(5, 2), return_features=True)
        >>> logits.shape, features.shape
        (torch.Size([5]), torch.Size([5, 11]))
    """

    def __init__(
        self,
        hidden: int = 256,
        layers: int = 2,
        minibatch_kernels: int = 0,
        minibatch_kernel_dim: int = 3,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.scale = _mixture_scale(scale)
        hidden, layers = _positive_int("hidden", hidden), _positive_int("layers", layers)
        minibatch_kernel_dim = _positive_int("minibatch_kernel_dim", minibatch_kernel_dim)
        minibatch_kernels = _minibatch_kernels(minibatch_kernels)
        blocks = []
        width = 2
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.body = nn.Sequential(*blocks)
        self.minibatch = (
            MinibatchDiscrimination(width, minibatch_kernels, minibatch_kernel_dim) if minibatch_kernels else None
        )
        self.out = nn.Linear(width + minibatch_kernels, 1)

    def forward(self, x: Tensor, return_features: bool = False) -> Any:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (N, 2), got {shape}")
        features = self.body(x / self.scale)
        if self.minibatch is not None:
            features = self.minibatch(features)
        logits = self.out(features).squeeze(1)
        return (logits, features) if return_features else logits

    @torch.no_grad()
    def init_minibatch_batch_mean(self, x: Tensor, target: float = 2.0) -> Tensor:
        """:func:`~ignite_igan.nn.minibatch_batch_mean_init` of the minibatch layer on the features of ``x`` that
        feed it (mean pairwise distance ``target``); returns the per-kernel mean distances before the scaling.

        Example:
            >>> d = MixtureDiscriminator(minibatch_kernels=5)
            >>> _ = d.init_minibatch_batch_mean(torch.randn(100, 2))
        """
        if self.minibatch is None:
            raise ValueError("this discriminator has no minibatch layer (minibatch_kernels=0)")
        return minibatch_batch_mean_init(self.minibatch, self.body(x / self.scale), target=target)


# --------------------------------------------------------------------------------------------------------------
# A classifier for scoring digits samples (the network of the digits "Inception" score)
# --------------------------------------------------------------------------------------------------------------
class DigitsClassifier(nn.Module):
    """A small CNN for 8x8 digits: the network of the Inception-Score protocol on scikit-learn's digits.

    ``(N, 64)`` or ``(N, 1, 8, 8)`` pixels in [0, 1] -> conv 3x3 32 -> ReLU -> conv 3x3 32 -> ReLU -> max-pool 2 ->
    dense 128 -> ReLU -> dropout 0.5 -> 10 logits. :func:`train_digits_classifier` trains one (~98.5 % test
    accuracy); ``ignite_igan.metrics.ClassifierExtractor(classifier, input_range="[0,1]", num_logits=10)`` turns it
    into the network of an :class:`~ignite_igan.metrics.InceptionScore`.

    Example:
        >>> DigitsClassifier()(torch.rand(5, 64)).shape
        torch.Size([5, 10])
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.reshape(-1, 1, 8, 8)))


def train_digits_classifier(
    seed: int = 0, epochs: int = 30, device: Union[str, torch.device] = "cpu"
) -> Tuple[DigitsClassifier, float]:
    """Trains :class:`DigitsClassifier` on the 1,297 training digits; returns it (eval mode) and its test accuracy.

    Adam (lr 2e-3), batches of 64, ``epochs`` epochs, dropout on. Initialization and shuffling use their own
    random streams seeded with ``seed``, so the result depends only on ``seed`` (on a given machine and thread
    count), and the global random state is left untouched. About 6 s on one CPU core; test accuracy ~98.5 %.

    Example:
        >>> model, accuracy = train_digits_classifier(epochs=1)  # doctest: +SKIP
    """
    from torch.utils.data import DataLoader

    from ignite_igan.datasets import load_dataset

    def whole(train: bool) -> Tuple[Tensor, Tensor]:
        dataset = load_dataset("digits", train=train)
        x, y = next(iter(DataLoader(dataset, batch_size=len(dataset))))
        return x.to(device), y.to(device)

    device = torch.device(device)
    (x, y), (x_test, y_test) = whole(True), whole(False)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = DigitsClassifier().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        order = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            permutation = torch.randperm(len(x), generator=order).to(device)
            for start in range(0, len(x) - 63, 64):
                batch = permutation[start : start + 64]
                loss = torch_F.cross_entropy(model(x[batch]), y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(dim=1) == y_test).float().mean())
    return model, accuracy


def load_digits_classifier(path: Any, device: Union[str, torch.device] = "cpu") -> DigitsClassifier:
    """A :class:`DigitsClassifier` from a state dict saved with ``torch.save(model.state_dict(), path)``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a :class:`DigitsClassifier` state dict (the message names it).
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = DigitsClassifier()
        model.load_state_dict(state)
    except Exception as error:  # noqa: BLE001 - unpickling and key errors both mean "not such a file"
        raise ValueError(
            f"path: {str(path)!r} is not a DigitsClassifier state dict ({type(error).__name__}: {error})"
        ) from error
    return model.to(device).eval()
