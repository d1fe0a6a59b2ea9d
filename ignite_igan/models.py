"""The networks of *Improved Techniques for Training GANs*, layer for layer as the reference code builds them.

* :class:`MNISTGenerator`, :class:`MNISTDiscriminator`: the permutation-invariant MNIST networks (:ref:`ref-mnist`);
  :func:`mnist_generator`, :func:`mnist_discriminator` build the paper's sizes, :func:`digits_generator`,
  :func:`digits_discriminator` the same networks scaled to scikit-learn's 8x8 digits. Options beyond the
  released MNIST code: virtual batch norm in the generator, minibatch features in the discriminator.
* :class:`CIFARGenerator`: the CIFAR-10/SVHN generator (:ref:`ref-cifar10`), with the reference's batch-statistics batch
  norm or with virtual batch norm (paper §3.4).
* :class:`CIFARDiscriminator`: the 9-layer weight-normalized conv net of the CIFAR-10 and SVHN scripts, for
  feature matching and minibatch discrimination (:ref:`ref-scripts`); factories for the four paper settings.
* :class:`MixtureGenerator`, :class:`MixtureDiscriminator`: the small MLPs of the 2-D Gaussian-mixture
  (mode-coverage) experiment, in units of the data's scale; the discriminator has an optional minibatch layer.

The digits classifier of the digits "Inception" score (:class:`DigitsClassifier`, :func:`train_digits_classifier`,
:func:`load_digits_classifier`), a scoring tool rather than a paper network, lives in
:mod:`ignite_igan.digits_classifier` and is importable from here too.

Both generators with ``normalization="virtual"`` own their reference noise batch the same way (the buffer
``reference_noise``, ``set_reference``, checkpoints of any reference size), so
:class:`~ignite_igan.handlers.VirtualBatchReference` works with either.

Nothing depends on the batch size (the reference baked in 100). Generators draw their input with
``sample_noise`` (z ~ U[0, 1)^z_dim, as every reference script). Discriminators return K class logits (the
K+1-th "fake" logit is fixed at 0, :ref:`ref-ssl-loss`) and, with ``return_features=True``, the features that feature
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
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as torch_F
from torch import Tensor, nn

from ignite_igan.digits_classifier import DigitsClassifier, load_digits_classifier, train_digits_classifier
from ignite_igan.nn import (
    GaussianNoise, MinibatchDiscrimination, ScaleFreeBatchNorm, VirtualBatchNorm, WeightNormConv2d,
    WeightNormConvTranspose2d, WeightNormLinear, minibatch_batch_mean_init,
)
from ignite_igan.validation import check_choice, check_device, check_int, check_int_tuple, check_real, describe

__all__ = [  # one line per family of networks
    "MNISTGenerator", "MNISTDiscriminator", "mnist_generator", "mnist_discriminator", "digits_generator",
    "digits_discriminator",
    "CIFARGenerator", "CIFARDiscriminator", "cifar10_generator", "svhn_generator", "cifar10_fm_discriminator",
    "cifar10_md_discriminator", "svhn_fm_discriminator", "svhn_md_discriminator",
    "MixtureGenerator", "MixtureDiscriminator",
    "DigitsClassifier", "train_digits_classifier", "load_digits_classifier",
]

LEAKY_SLOPE = 0.2  # 0.1 in the paper-era commits (docs/reference.md, Noise, dropout, pooling and activations)
NORMALIZATIONS = ("batch", "virtual")
INPUT_CORRUPTIONS = ("dropout", "noise")
_WEIGHT_NORM_LAYERS = (WeightNormLinear, WeightNormConv2d, WeightNormConvTranspose2d)
_Device = Optional[Union[torch.device, str]]


def _glorot(layer: nn.Module) -> nn.Module:
    """``layer`` with its weight redrawn Glorot-uniform (Lasagne's ``GlorotUniform``, the MNIST generator's init)."""
    nn.init.xavier_uniform_(layer.weight)
    return layer


def _minibatch_layer(in_features: int, kernels: int, kernel_dim: int) -> Tuple[Optional[nn.Module], int]:
    """A discriminator's optional :class:`~ignite_igan.nn.MinibatchDiscrimination` layer (None for 0 kernels) and
    the width of what the output layer reads: ``in_features`` and one feature per kernel."""
    kernels = check_int("minibatch_kernels", kernels, minimum=0, hint="0 = no minibatch discrimination")
    return (MinibatchDiscrimination(in_features, kernels, kernel_dim) if kernels else None), in_features + kernels


def _mlp(
    in_features: int, hidden: int, layers: int, activation: Callable[[], nn.Module]
) -> Tuple[List[nn.Module], int]:
    """The hidden layers of the mixture networks: ``layers`` x [Linear -> activation] of ``hidden`` units, and their
    output width."""
    hidden, layers = check_int("hidden", hidden, minimum=1), check_int("layers", layers, minimum=1)
    widths = [in_features] + [hidden] * layers
    return [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), activation())], hidden


class _Network(nn.Module):
    """A network of the paper: it can name the weight-normalized layers whose gain is trained."""

    def trainable_scale_layers(self) -> Dict[str, nn.Module]:
        """The weight-normalized layers whose gain ``scale`` is trained, by qualified name.

        These are the reference's ``train_g=True`` / ``train_scale=True`` output layers (:ref:`ref-weight-norm`); every
        other weight-norm gain is frozen (``requires_grad=False``) and changes only in data-dependent init.
        """
        return {
            name: module
            for name, module in self.named_modules()
            if isinstance(module, _WEIGHT_NORM_LAYERS) and module.train_scale
        }


class _Discriminator(_Network):
    """A paper discriminator: its body, then an optional minibatch layer and the weight-normalized output layer."""

    def _add_head(self, feature_dim: int, num_classes: int, kernels: int, kernel_dim: int, **output: Any) -> None:
        """Builds the head, after the body as the reference does (its order of draws): the ``feature_dim`` features
        that feature matching compares, with ``kernels`` minibatch features appended, feed the output layer."""
        self.feature_dim = feature_dim
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.minibatch, width = _minibatch_layer(feature_dim, kernels, kernel_dim)
        self.classifier = WeightNormLinear(width, self.num_classes, train_scale=True, **output)


class _NoiseInput(nn.Module):
    """A generator's input: ``z_dim`` numbers per sample, drawn by :meth:`sample_noise` from ``_draw``."""

    z_dim: int
    _draw = staticmethod(torch.rand)  # U[0, 1), the paper's generators; MixtureGenerator draws N(0, I)

    def sample_noise(self, n: int, generator: Optional[torch.Generator] = None, device: _Device = None) -> Tensor:
        """Draws ``n`` latent vectors: z ~ U[0, 1)^z_dim for the paper's generators, the reference's noise
        (:ref:`ref-data-scaling`); z ~ N(0, I) for :class:`MixtureGenerator`.

        Args:
            n: how many.
            generator: an optional :class:`torch.Generator` for reproducible draws. A CPU generator with another
                ``device`` draws on the CPU and moves the noise, so a seeded generator gives the same noise on
                every device.
            device: where to put them; defaults to the device of the model's parameters.

        Returns:
            (n, z_dim) tensor with the dtype of the model's parameters.
        """
        n = check_int("n", n, minimum=1)
        parameter = next(self.parameters())
        device = parameter.device if device is None else check_device("device", device)  # None: the trainers' path
        if generator is not None and torch.device(device).type != generator.device.type:
            return self._draw(n, self.z_dim, generator=generator, dtype=parameter.dtype).to(device)
        return self._draw(n, self.z_dim, generator=generator, device=device, dtype=parameter.dtype)


class _Generator(_Network, _NoiseInput):
    """What both paper generators own besides their layers: their noise and the reference batch of virtual BN.

    With ``normalization="virtual"`` the generator owns the fixed reference noise batch of virtual batch norm
    (paper §3.4) as the buffer ``reference_noise``: set once with :meth:`set_reference`, saved in ``state_dict``
    and loaded from checkpoints of any reference size. A subclass's ``forward`` runs the rows that
    :meth:`_with_reference` gives (``[reference_noise; z]``) through its layers, passes the extra argument it
    gives (the reference size R) to every :class:`~ignite_igan.nn.VirtualBatchNorm`, and returns the last
    ``len(z)`` rows. With ``"batch"`` the rows are ``z`` alone and the norm layers take no extra argument.
    """

    reference_noise: Tensor

    def __init__(self, z_dim: int, normalization: str) -> None:
        super().__init__()
        self.z_dim = check_int("z_dim", z_dim, minimum=1)
        self.normalization = str(check_choice("normalization", normalization, NORMALIZATIONS))
        if self.normalization == "virtual":
            self.register_buffer("reference_noise", torch.empty(0, self.z_dim))

    def _norm(self, num_features: int) -> nn.Module:
        """The generator's norm layer of ``num_features`` units or channels."""
        return VirtualBatchNorm(num_features) if self.normalization == "virtual" else ScaleFreeBatchNorm(num_features)

    def _layers_and_norms(self, make: Callable[[int, int], nn.Module], widths: Sequence[int]) -> Tuple[nn.Module, ...]:
        """``make(a, b)`` for each two consecutive ``widths``, and the norm of its ``b`` outputs after it."""
        # Built in turn, layer then norm: virtual batch norm draws its gains, so this is the reference's order of draws.
        pairs = [(make(a, b), self._norm(b)) for a, b in zip(widths, widths[1:])]
        return nn.ModuleList(layer for layer, _ in pairs), nn.ModuleList(norm for _, norm in pairs)

    def set_reference(self, z_ref: Tensor) -> None:
        """Fixes the reference noise batch of a ``"virtual"`` generator (paper §3.4: chosen once, kept fixed).

        Args:
            z_ref: (R, z_dim) latent vectors, typically ``sample_noise(R)``; the reference used R = 16 on ImageNet.
        """
        if self.normalization != "virtual":
            raise ValueError(f"set_reference needs normalization='virtual', got normalization={self.normalization!r}")
        if not (isinstance(z_ref, Tensor) and z_ref.is_floating_point() and z_ref.dim() == 2 and len(z_ref) > 0
                and z_ref.shape[1] == self.z_dim):
            got = f"{z_ref.dtype} of shape {tuple(z_ref.shape)}" if isinstance(z_ref, Tensor) else describe(z_ref)
            raise ValueError(f"z_ref must be a non-empty floating-point (R, z_dim={self.z_dim}) batch, got {got}")
        parameter = next(self.parameters())
        self.reference_noise = z_ref.detach().to(device=parameter.device, dtype=parameter.dtype).clone()

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        # The reference batch size is only known from the checkpoint: resize the buffer before it is copied.
        incoming = state_dict.get(prefix + "reference_noise")
        if self.normalization == "virtual" and isinstance(incoming, Tensor) and incoming.dim() == 2:
            self.reference_noise = torch.empty_like(incoming, device=self.reference_noise.device,
                                                    dtype=self.reference_noise.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _with_reference(self, z: Tensor) -> Tuple[Tensor, Tuple[int, ...]]:
        """The rows to run and the norm layers' extra arguments: ``([reference_noise; z], (R,))`` with virtual
        batch norm, ``(z, ())`` with batch norm."""
        # The one check of the forward pass: a 1-D z would pass through the dense layer as a single example.
        if z.dim() != 2 or z.shape[1] != self.z_dim or len(z) == 0:
            raise ValueError(f"z must be a non-empty batch (N, z_dim={self.z_dim}), got shape {tuple(z.shape)}")
        if self.normalization == "batch":
            return z, ()
        if len(self.reference_noise) == 0:
            raise RuntimeError("this generator uses virtual batch norm and has no reference batch yet: call "
                               "set_reference(gen.sample_noise(R)) once before the first forward pass")
        return torch.cat([self.reference_noise, z]), (len(self.reference_noise),)


# --------------------------------------------------------------------------------------------------------------
# MNIST (docs/reference.md, MNIST, feature matching)
# --------------------------------------------------------------------------------------------------------------
class MNISTGenerator(_Generator):
    """The MNIST feature-matching generator (:ref:`ref-mnist`), any width, with batch or virtual batch norm.

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
        self, z_dim: int = 100, hidden: Union[int, Sequence[int]] = 500, out_features: int = 784,
        normalization: str = "batch",
    ) -> None:
        super().__init__(z_dim, normalization)
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = (hidden, hidden)
        self.hidden = check_int_tuple("hidden", hidden, minimum=1)
        self.dense, self.norms = self._layers_and_norms(
            lambda a, b: _glorot(nn.Linear(a, b, bias=False)), (self.z_dim, *self.hidden)
        )
        self.output = WeightNormLinear(self.hidden[-1], out_features, train_scale=True, eps=1e-6, data_init=False)
        self.out_features = self.output.out_features
        _glorot(self.output)

    def forward(self, z: Tensor) -> Tensor:
        """Maps z (N, z_dim) to samples (N, out_features) in (0, 1)."""
        h, reference = self._with_reference(z)
        for dense, norm in zip(self.dense, self.norms):
            h = torch_F.softplus(norm(dense(h), *reference))
        return torch.sigmoid(self.output(h))[-len(z) :]  # the rows of z: the reference rows come first


class MNISTDiscriminator(_Discriminator):
    """The MNIST discriminator (:ref:`ref-mnist`): five weight-normalized ReLU layers with Gaussian noise.

    ``GaussianNoise(input_noise) -> [WN dense -> ReLU -> GaussianNoise(hidden_noise)] x 5 -> WN dense (trainable
    gain)``. Every dense layer is the reference's MNIST ``nn.DenseLayer`` (:ref:`ref-weight-norm`): direction ~ N(0,
    0.1), no epsilon in the norm, data-dependent init to std 1 (also the output layer), gain frozen except in the output
    layer. The feature-matching features are the last hidden layer's ReLU output, before its noise
    (``layers[-3]`` in the reference).

    With ``minibatch_kernels = B > 0`` (not in the released MNIST code) a
    :class:`~ignite_igan.nn.MinibatchDiscrimination` layer (B kernels of ``minibatch_kernel_dim`` dimensions)
    reads the feature-matching features, as the CIFAR-10 minibatch script's layer reads the pooled features that
    its feature matching would use (:ref:`ref-minibatch-scripts`), and the output layer reads the last hidden layer's
    noisy output concatenated with the B minibatch features: ``hidden[-1] + B`` inputs.

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
        self, in_features: int = 784, num_classes: int = 10, hidden: Sequence[int] = (1000, 500, 250, 250, 250),
        input_noise: float = 0.3, hidden_noise: float = 0.5, minibatch_kernels: int = 0, minibatch_kernel_dim: int = 5,
    ) -> None:
        super().__init__()
        self.in_features = in_features  # checked by the first layer
        self.hidden = check_int_tuple("hidden", hidden, minimum=1)
        self.input_noise = GaussianNoise(input_noise)
        widths = (self.in_features, *self.hidden)
        dense = partial(WeightNormLinear, eps=0.0, weight_std=0.1)
        self.blocks = nn.ModuleList(nn.Sequential(dense(a, b), nn.ReLU()) for a, b in zip(widths, widths[1:]))
        self.hidden_noise = nn.ModuleList(GaussianNoise(hidden_noise) for _ in self.hidden)
        self._add_head(self.hidden[-1], num_classes, minibatch_kernels, minibatch_kernel_dim, eps=0.0, weight_std=0.1)

    def forward(self, x: Tensor, return_features: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Class logits (N, num_classes), and with ``return_features`` also the features (N, hidden[-1])."""
        # The one check of the forward pass: an empty batch would pass silently. A 1-D x fails in flatten, another
        # width in the first product and integer pixels in the input noise (or the product), with torch's errors.
        h = self.input_noise(x.flatten(1))
        if len(h) == 0:
            raise ValueError(f"x must be a non-empty batch (N, in_features={self.in_features}) or (N, ...) flattening "
                             f"to it, got shape {tuple(x.shape)}")
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
    """The reference MNIST generator: 100 -> 500 -> 500 -> 784 (:ref:`ref-mnist`).

    Example:
        >>> gen = mnist_generator()
        >>> gen(gen.sample_noise(2)).shape
        torch.Size([2, 784])
    """
    return MNISTGenerator(z_dim=100, hidden=500, out_features=784)


def mnist_discriminator() -> MNISTDiscriminator:
    """The reference MNIST discriminator: 784 -> 1000-500-250-250-250 -> 10, noise 0.3/0.5 (:ref:`ref-mnist`).

    Example:
        >>> mnist_discriminator()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
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

    Example:
        >>> gen = digits_generator(normalization="virtual")
        >>> gen.set_reference(gen.sample_noise(16))
        >>> gen(gen.sample_noise(1)).shape
        torch.Size([1, 64])
    """
    return MNISTGenerator(z_dim=z_dim, hidden=DIGITS_GENERATOR_HIDDEN, out_features=64, normalization=normalization)


def digits_discriminator(num_classes: int = 10, minibatch_kernels: int = 0) -> MNISTDiscriminator:
    """The MNIST discriminator scaled to 8x8 digits: 64 -> 256-128-64-64-64 -> 10, noise 0.3/0.5.

    Five hidden layers as the reference, widths about a quarter of MNIST's (1000-500-250-250-250) so that the
    first layer still widens the 64-pixel input fourfold; the noise levels are kept because the pixels are in
    [0, 1] as in MNIST. Feature matching uses the 64-d last hidden layer. ``minibatch_kernels > 0`` adds that
    many minibatch-discrimination kernels of 5 dimensions on those 64 features (see :class:`MNISTDiscriminator`).

    Example:
        >>> logits, features = digits_discriminator(minibatch_kernels=8)(torch.rand(3, 64), return_features=True)
        >>> logits.shape, features.shape
        (torch.Size([3, 10]), torch.Size([3, 64]))
    """
    return MNISTDiscriminator(
        in_features=64, num_classes=num_classes, hidden=DIGITS_DISCRIMINATOR_HIDDEN,
        minibatch_kernels=minibatch_kernels,
    )


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10 / SVHN (docs/reference.md, The experiment scripts)
# --------------------------------------------------------------------------------------------------------------
class CIFARGenerator(_Generator):
    """The CIFAR-10/SVHN generator (:ref:`ref-cifar10`), with batch or virtual batch norm.

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
        self, z_dim: int = 100, out_channels: int = 3, normalization: str = "batch",
        widths: Sequence[int] = (512, 256, 128),
    ) -> None:
        super().__init__(z_dim, normalization)
        self.widths = check_int_tuple("widths", widths, minimum=1)
        self.base_size = 4
        first = self.widths[0] * self.base_size**2
        self.dense = nn.Linear(self.z_dim, first, bias=False)
        self.dense_norm = self._norm(first)
        self.deconvs, self.norms = self._layers_and_norms(
            partial(nn.ConvTranspose2d, kernel_size=5, stride=2, padding=2, output_padding=1, bias=False), self.widths
        )
        with torch.no_grad():
            for layer in [self.dense, *self.deconvs]:
                layer.weight.normal_(0.0, 0.05)
        self.output = WeightNormConvTranspose2d(
            self.widths[-1], out_channels, 5, stride=2, padding=2, output_padding=1, train_scale=True, init_scale=0.1
        )
        self.out_channels = self.output.out_channels

    @property
    def image_size(self) -> int:
        """The side of the generated images, ``base_size * 2**len(widths)`` pixels (32)."""
        return self.base_size * 2 ** len(self.widths)

    def forward(self, z: Tensor) -> Tensor:
        """Maps z (N, z_dim) to images (N, out_channels, 32, 32) in (-1, 1)."""
        h, reference = self._with_reference(z)
        h = torch.relu(self.dense_norm(self.dense(h), *reference))
        h = h.view(-1, self.widths[0], self.base_size, self.base_size)
        for deconv, norm in zip(self.deconvs, self.norms):
            h = torch.relu(norm(deconv(h), *reference))
        return torch.tanh(self.output(h))[-len(z) :]  # the rows of z: the reference rows come first


class CIFARDiscriminator(_Discriminator):
    """The CIFAR-10/SVHN discriminator of the reference scripts (:ref:`ref-scripts`).

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
        self, in_channels: int = 3, num_classes: int = 10, widths: Sequence[int] = (96, 192),
        input_corruption: str = "dropout", minibatch_kernels: int = 0, minibatch_kernel_dim: int = 5,
        input_corruption_level: float = 0.2, dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels  # checked by the first layer
        w1, w2 = self.widths = check_int_tuple("widths", widths, minimum=1, length=2)
        self.input_corruption = check_choice("input_corruption", input_corruption, INPUT_CORRUPTIONS)
        if input_corruption == "dropout":
            level = check_real("input_corruption_level", input_corruption_level, minimum=0, maximum=1, high_open=True)
            corruption: nn.Module = nn.Dropout(level)
        else:
            corruption = GaussianNoise(input_corruption_level)
        dropout = check_real("dropout", dropout, minimum=0, maximum=1, high_open=True)

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
        self._add_head(w2, num_classes, minibatch_kernels, minibatch_kernel_dim, init_scale=0.1)

    def forward(self, x: Tensor, return_features: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Class logits (N, num_classes), and with ``return_features`` also the pooled features (N, w2)."""
        # The one check of the forward pass: convolutions take a 3-D x as one unbatched image, a side under 9
        # fails three layers down with a kernel-size error, and input dropout fails on integer pixels with a cast
        # error: none of them says what the network needs.
        if x.dim() != 4 or len(x) == 0 or min(x.shape[2:]) < 9 or not x.is_floating_point():
            raise ValueError(f"x must be a non-empty floating-point batch (N, C={self.in_channels}, H, W) with H, W "
                             f">= 9 (two stride-2 convs and a 3x3 valid conv), got {x.dtype} of shape {tuple(x.shape)}")
        features = self.trunk(x)
        h = features if self.minibatch is None else self.minibatch(features)
        logits = self.classifier(h)
        return (logits, features) if return_features else logits


def cifar10_generator(normalization: str = "batch") -> CIFARGenerator:
    """The CIFAR-10 generator (:ref:`ref-cifar10`); ``normalization="virtual"`` for virtual batch norm (paper §3.4).

    Example:
        >>> gen = cifar10_generator()
        >>> gen(gen.sample_noise(2)).shape
        torch.Size([2, 3, 32, 32])
    """
    return CIFARGenerator(z_dim=100, out_channels=3, normalization=normalization)


def svhn_generator(normalization: str = "batch") -> CIFARGenerator:
    """The SVHN generator: identical to CIFAR-10's (:ref:`ref-svhn`).

    Example:
        >>> svhn_generator("virtual").normalization
        'virtual'
    """
    return cifar10_generator(normalization)


def cifar10_fm_discriminator(num_classes: int = 10) -> CIFARDiscriminator:
    """CIFAR-10 feature matching (:ref:`ref-cifar10`): 96/192, input dropout 0.2, no minibatch features.

    Example:
        >>> cifar10_fm_discriminator().feature_dim
        192
    """
    return CIFARDiscriminator(num_classes=num_classes, widths=(96, 192), input_corruption="dropout")


def cifar10_md_discriminator(num_classes: int = 10, minibatch_kernels: int = 100) -> CIFARDiscriminator:
    """CIFAR-10 minibatch discrimination (:ref:`ref-minibatch-scripts`): 96/192, input noise 0.2, 100 kernels of 5 dims.

    ``minibatch_kernels`` sets the number of kernels B; ``minibatch_kernels=0`` gives the same network without
    the minibatch layer (input noise 0.2, the output layer on the 192 pooled features): the "-MBF" ablation of
    the paper's Inception-score table (:ref:`ref-paper-numbers`), which differs from :func:`cifar10_fm_discriminator` in
    its input corruption.

    Example:
        >>> cifar10_md_discriminator().classifier.in_features  # 192 pooled + 100 minibatch features
        292
    """
    return CIFARDiscriminator(
        num_classes=num_classes, widths=(96, 192), input_corruption="noise", minibatch_kernels=minibatch_kernels,
        minibatch_kernel_dim=5,
    )


def svhn_fm_discriminator(num_classes: int = 10) -> CIFARDiscriminator:
    """SVHN feature matching (:ref:`ref-svhn`): narrower 64/128, input dropout 0.2; 128-d features.

    Example:
        >>> svhn_fm_discriminator().feature_dim
        128
    """
    return CIFARDiscriminator(num_classes=num_classes, widths=(64, 128), input_corruption="dropout")


def svhn_md_discriminator(num_classes: int = 10, minibatch_kernels: int = 100) -> CIFARDiscriminator:
    """SVHN minibatch discrimination (:ref:`ref-minibatch-scripts`): 96/192 like CIFAR, input noise 0.2, 100 kernels of
    5 dims.

    ``minibatch_kernels`` as in :func:`cifar10_md_discriminator` (0: no minibatch layer).

    Example:
        >>> svhn_md_discriminator().minibatch.num_kernels
        100
    """
    return cifar10_md_discriminator(num_classes, minibatch_kernels)


# --------------------------------------------------------------------------------------------------------------
# The 2-D Gaussian-mixture networks (the mode-coverage experiment, recipes/mixture.py)
# --------------------------------------------------------------------------------------------------------------
class MixtureGenerator(_NoiseInput):
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

    _draw = staticmethod(torch.randn)

    def __init__(self, z_dim: int = 16, hidden: int = 256, layers: int = 3, scale: float = 1.0) -> None:
        super().__init__()
        self.z_dim = check_int("z_dim", z_dim, minimum=1)
        blocks, width = _mlp(self.z_dim, hidden, layers, nn.ReLU)
        self.scale = check_real("scale", scale, minimum=0, low_open=True)
        self.net = nn.Sequential(*blocks, nn.Linear(width, 2))

    def forward(self, z: Tensor) -> Tensor:
        # The one check: a 1-D z would pass through the MLP as a single example.
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
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
        self, hidden: int = 256, layers: int = 2, minibatch_kernels: int = 0, minibatch_kernel_dim: int = 3,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.scale = check_real("scale", scale, minimum=0, low_open=True)
        blocks, width = _mlp(2, hidden, layers, partial(nn.LeakyReLU, 0.2))
        self.body = nn.Sequential(*blocks)
        self.minibatch, width = _minibatch_layer(width, minibatch_kernels, minibatch_kernel_dim)
        self.out = nn.Linear(width, 1)

    def forward(self, x: Tensor, return_features: bool = False) -> Any:
        # The one check: a 1-D x would pass through the MLP as a single example.
        if x.dim() != 2 or x.shape[1] != 2:
            raise ValueError(f"x must have shape (N, 2), got {tuple(x.shape)}")
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
