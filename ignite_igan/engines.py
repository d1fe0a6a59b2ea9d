"""The paper's training steps, and Ignite trainers that run them on any generator/discriminator pair.

- :func:`semi_supervised_step`: the reference's semi-supervised iteration (:ref:`ref-ssl-loss`,
  :ref:`ref-training-loop`) as an Ignite update function: one discriminator step on a labeled, an unlabeled and a
  generated batch with the K+1-class losses, then ``k`` generator steps with feature matching or the minimax objective.
- :func:`gan_step`: the GAN step for sample quality (paper §3-4): real-vs-fake with one-sided label smoothing,
  optionally class-conditional through the K+1 formulation.
- :func:`create_semi_supervised_trainer`, :func:`create_gan_trainer`: an :class:`~ignite.engine.Engine` around
  a step, as Ignite's ``create_supervised_trainer`` around ``supervised_training_step``. What is not the science
  sits around the step, each in one place: moving the batch and reading its labels' range on the host (the
  trainers' ``process``), the hooks run inside the step (``_with_hooks``), the CUDA graph (``_GraphedStep``) and
  the outputs' conversion (``output_transform``). Mixed precision and compilation change only how a step calls
  a model (``_Player``).

To change one loss term, copy a step (about 40 lines) or wrap it, and give it to ``Engine``; the steps read
nothing but their arguments and ``engine.state.real_target``.

The models are arguments, never built here: a discriminator returns class logits ``(N, K)`` (``(N, 1)`` or
``(N,)`` for a plain GAN) from ``forward(x)`` and ``(logits, features)`` from ``forward(x, return_features=True)``
when feature matching is used; a generator maps noise to samples and, unless ``noise_fn`` is given, draws its noise
with ``sample_noise(n, device=...)`` as the models of :mod:`ignite_igan.models` do.

The techniques that live in handlers need nothing from these steps: :class:`~ignite_igan.handlers.HistoricalAveraging`
works through the optimizers' step hooks, :class:`~ignite_igan.handlers.OneSidedLabelSmoothing` publishes
``engine.state.real_target``, which both steps read at every iteration (falling back to their ``real_target``
argument), and the evaluation average, reference batch and data-dependent init attach to the engine's events.

A step does what a hand-written loop does and no more: no host-device synchronization; the trainers copy all
reported numbers to the host in one transfer at the end of the iteration (or none, with your own
``output_transform``). The class labels are checked to lie in [0, K) before the loss uses them (a ``ValueError``
that names ``y_labeled`` or ``y``, instead of a device-side assert); the trainers read them on the host before
they are moved, so the check costs no synchronization unless the labels are already on an accelerator (then one
small transfer per new labels tensor, made before the step queues its work).

Both steps check that each optimizer steps its own player's parameters: a parameter of the other player
(swapped optimizers) or of neither model raises a ``ValueError`` naming ``d_optimizer``/``g_optimizer``; a
trainable parameter of a player that its optimizer does not hold warns (it would never change).

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from ignite_igan.data import SemiSupervisedLoader
    >>> from ignite_igan.models import digits_discriminator, digits_generator
    >>> from ignite_igan.optim import ReferenceAdam
    >>> gen, disc = digits_generator(), digits_discriminator()
    >>> d_opt = ReferenceAdam(disc.parameters(), lr=3e-3, betas=(0.5, 0.999))
    >>> g_opt = ReferenceAdam(gen.parameters(), lr=3e-3, betas=(0.5, 0.999))
    >>> trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt, feature_matching_distance="mean_squared")
    >>> data = TensorDataset(torch.rand(40, 64), torch.arange(40) % 10)
    >>> loader = SemiSupervisedLoader(data, labeled_indices=range(10), batch_size=20, seed=1)
    >>> state = trainer.run(loader, max_epochs=1)
    >>> sorted(state.output)
    ['D_G_z', 'D_x', 'loss_discriminator', 'loss_generator', 'loss_labeled', 'loss_unlabeled', 'train_error']
"""
from __future__ import annotations

import contextlib
import functools
import time
import weakref
from collections import abc
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as torch_F
from ignite.engine import Engine
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer

from ignite_igan import functional as F
from ignite_igan.validation import (
    check_bool, check_choice, check_device, check_instance, check_int, check_methods, check_players, check_real,
)

__all__ = ["semi_supervised_step", "gan_step", "create_semi_supervised_trainer", "create_gan_trainer",
           "outputs_to_floats", "outputs_on_device"]

SEMI_SUPERVISED_GENERATOR_LOSSES = ("feature_matching", "minimax")
GAN_GENERATOR_LOSSES = ("non_saturating", "minimax", "feature_matching")
_AMP_DTYPES = {None: None, False: None, True: torch.bfloat16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
               torch.bfloat16: torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
               torch.float16: torch.float16}

AmpOption = Union[bool, str, torch.dtype, None]
CompileOption = Union[bool, Mapping[str, Any]]
_Update = Callable[[Engine, Any], Dict[str, Tensor]]


def outputs_to_floats(outputs: Mapping[str, Any]) -> Dict[str, float]:
    """The trainers' default ``output_transform``: 0-d tensors to Python floats, in a single device transfer.

    Also converts a dict that :func:`outputs_on_device` left on the device (floats pass through), e.g. for a
    summary at the end of a run.
    """
    if all(isinstance(value, (int, float)) for value in outputs.values()):
        return {key: float(value) for key, value in outputs.items()}
    values = torch.stack([torch.as_tensor(value).detach().float().reshape(()) for value in outputs.values()])
    return dict(zip(outputs.keys(), values.tolist()))


def outputs_on_device(outputs: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """An ``output_transform`` that leaves the step's outputs where they are: detached 0-d tensors on the device.

    The iteration then never waits for the device: on an accelerator the host queues the next step while this one
    runs. Whatever reads ``engine.state.output`` waits instead, so read it rarely: :mod:`ignite_igan.logging` and
    :mod:`ignite_igan.experiments.runs` do so every ``log_every`` iterations and at the end of each epoch.
    """
    return outputs


# ---------------------------------------------------------------------------------------------------------------
# The players: how a step calls each model (mixed precision and compilation, in this one place) and steps it
# ---------------------------------------------------------------------------------------------------------------
def _amp_dtype(amp: AmpOption) -> Optional[torch.dtype]:
    if isinstance(amp, (bool, str, torch.dtype, type(None))) and amp in _AMP_DTYPES:  # not 1 for True
        return _AMP_DTYPES[amp]
    raise ValueError(f"amp must be False, True (bfloat16), 'bf16', 'fp16', torch.bfloat16 or float16, got {amp!r}")


def _compiled(model: nn.Module, option: CompileOption, device_type: str) -> Callable[..., Any]:
    check_instance("compile", option, (bool, Mapping, type(None)), "a bool or a mapping of torch.compile arguments")
    if option is False or option is None:
        return model
    kwargs = {} if option is True else dict(option)
    # On the CPU, Inductor's own random numbers (the noise and dropout layers) are a different stream from eager's
    # and about 10x slower to draw (benchmarks/profile_step.py): compiled models keep eager's RNG there. torch.compile
    # takes no `options` beside a `mode`, so a given mode is left as it is.
    if device_type == "cpu" and kwargs.get("backend", "inductor") == "inductor" and "mode" not in kwargs:
        kwargs["options"] = {"fallback_random": True, **kwargs.get("options", {})}
    return torch.compile(model, **kwargs)


def _model_device(model: nn.Module) -> torch.device:
    return next((parameter.device for parameter in model.parameters()), torch.device("cpu"))


class _Player:
    """One player: its model as the step calls it, its optimizer and, for float16, its GradScaler.

    ``call`` is the model as given (compiled if asked): the passes whose gradients its optimizer uses go through
    it, synchronized across processes when it is a ``DistributedDataParallel``. ``raw_call`` is the module inside
    such a wrapper, for the passes under no_grad and the discriminator inside the generator's step: DDP neither
    waits for gradients that are never computed nor reduces ones that are thrown away.
    """

    def __init__(self, model: nn.Module, optimizer: Optimizer, amp_dtype: Optional[torch.dtype],
                 compile: CompileOption, device_type: str) -> None:
        self.model, self.optimizer = model, optimizer
        self.raw = model.module if isinstance(model, DistributedDataParallel) else model
        self.call = _compiled(model, compile, device_type)
        self.raw_call = self.call if self.raw is model else _compiled(self.raw, compile, device_type)
        # float16 needs loss scaling against gradient underflow; bfloat16 has float32's range and does not.
        self.scaler = torch.amp.GradScaler(device_type) if amp_dtype == torch.float16 else None
        # backward(inputs=...) computes only these gradients: the generator's backward pass through the
        # discriminator skips the discriminator's weight gradients, and the discriminator's pass never reaches
        # the generator (its samples are made under no_grad).
        self.params: List[Tensor] = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]

    def step(self, loss: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward(inputs=self.params)
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward(inputs=self.params)
            self.scaler.step(self.optimizer)
            self.scaler.update()


def _train_mode(models: Sequence[nn.Module]) -> None:
    for model in models:
        if not model.training:  # a no-op otherwise: no walk over the modules at every iteration
            model.train()


class _Game:
    """Both players of a step, the autocast context of their forward passes, the generator's noise, and the options
    both steps share (checked here, once)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, d_optimizer: Optimizer,
                 g_optimizer: Optimizer, *, generator_steps: int, feature_matching_distance: str, real_target: float,
                 fake_batch_size: Optional[int], noise_fn: Optional[Callable[[int], Tensor]], amp: AmpOption,
                 compile: CompileOption) -> None:
        self.distance = check_choice("feature_matching_distance", feature_matching_distance,
                                     F.FEATURE_MATCHING_DISTANCES)
        self.steps = check_int("generator_steps", generator_steps, minimum=1)
        self.real_target = check_real("real_target", real_target, minimum=0.0, maximum=1.0, low_open=True,
                                      allow_tensor=True)
        self.fake_batch_size = check_int("fake_batch_size", fake_batch_size, minimum=1, allow_none=True)
        check_players(generator, discriminator, d_optimizer, g_optimizer, stacklevel=5)
        amp_dtype, device_type = _amp_dtype(amp), _model_device(discriminator).type
        self.d = _Player(discriminator, d_optimizer, amp_dtype, compile, device_type)
        self.g = _Player(generator, g_optimizer, amp_dtype, compile, device_type)
        self.autocast: Callable[[], Any] = contextlib.nullcontext
        if amp_dtype is not None:  # the forward passes only: the losses are computed in float32
            self.autocast = lambda: torch.autocast(device_type=device_type, dtype=amp_dtype)
        if noise_fn is None:  # the generator's own noise, on the device of its parameters
            check_methods("generator", self.g.raw, ["sample_noise"],
                          "the generators of ignite_igan.models; or pass noise_fn=lambda n: <n latent vectors>")
            noise_fn = functools.partial(self.g.raw.sample_noise, device=None)
        self.noise = check_instance("noise_fn", noise_fn, abc.Callable, "callable (n -> noise batch)")

    def begin(self, engine: Engine, batch_size: int) -> Tuple[float, int]:
        """Both models in training mode; the iteration's real target (``engine.state.real_target`` if set) and
        the size of its generated batches (``batch_size``, the real batch's, unless ``fake_batch_size``)."""
        _train_mode((self.d.model, self.g.model))
        n_fake = batch_size if self.fake_batch_size is None else self.fake_batch_size
        return getattr(engine.state, "real_target", self.real_target), n_fake

    def sample(self, n: int) -> Tensor:
        """``n`` samples from fresh noise, without gradient: constants in the discriminator's step."""
        with torch.no_grad(), self.autocast():
            return self.g.raw_call(self.noise(n))

    def generator_steps(self, n_fake: int, x_real: Optional[Tensor],
                        logit_loss: Optional[Callable[[Tensor], Tensor]]) -> Tensor:
        """The generator's updates, each with fresh noise; the mean of their losses.

        ``logit_loss`` maps ``D(G(z))``'s logits to the generator's loss; None is feature matching
        (:func:`~ignite_igan.functional.feature_matching_loss`) against the features of ``x_real``, computed
        without gradient again at each step.
        """
        losses = []
        for _ in range(self.steps):
            with self.autocast():
                x_gen = self.g.call(self.noise(n_fake))
                if logit_loss is None:
                    _, features_fake = self.d.raw_call(x_gen, return_features=True)
                    with torch.no_grad():
                        _, features_real = self.d.raw_call(x_real, return_features=True)
                else:
                    logits_gen = self.d.raw_call(x_gen)
            if logit_loss is None:
                loss = F.feature_matching_loss(features_real.float(), features_fake.float(), distance=self.distance)
            else:
                loss = logit_loss(logits_gen.float())
            self.g.step(loss)
            losses.append(loss.detach())
        return losses[0] if len(losses) == 1 else torch.stack(losses).mean()


# ---------------------------------------------------------------------------------------------------------------
# The labels' range: the steps' one per-call check
# ---------------------------------------------------------------------------------------------------------------
class _ClassLabels:
    """Class labels in [0, K), checked before a loss indexes K logits with them: on a GPU an out-of-range label is a
    device-side assert that leaves the process unusable, on the CPU an error that names no argument.

    The range is read on the host: free for labels on the CPU. A trainer calls ``read`` with the batch as it
    came, before moving it, so that its step waits for no device. Labels read on an accelerator cost one small
    transfer, and the range is kept while that very tensor is alive and unmodified (held weakly, compared by
    identity and version counter): a loop that feeds the same device batch again pays it once.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.enabled = True
        self.num_classes: Optional[int] = None  # K, once a step has seen the logits
        self._read: Optional[Tuple[int, int]] = None  # the range read for the coming step
        self._cached: Tuple[Any, int, Tuple[int, int]] = (None, -1, (0, 0))

    def read(self, labels: Any) -> None:
        """Reads the range of the coming step's labels (a trainer passes them as the loader gave them, before the
        move); checks it at once when K is known (a CUDA graph's replay runs no step code)."""
        self._read = self._range(labels) if self.enabled else None
        if self._read is not None and self.num_classes is not None:
            self.check(labels, self.num_classes)

    def check(self, labels: Tensor, num_classes: int) -> None:
        """Raise if the labels leave [0, ``num_classes``); the range ``read`` read, or read now."""
        if not self.enabled:
            return
        self.num_classes = num_classes
        low, high = self._read if self._read is not None else self._range(labels)
        if low < 0 or high >= num_classes:
            raise ValueError(f"{self.name} must hold class indices in [0, {num_classes}) (the discriminator has "
                             f"K={num_classes} class logits), got the label {low if low < 0 else high}")

    def _range(self, labels: Any) -> Tuple[int, int]:
        # Float labels would be truncated by the losses' .long(); a wrong shape is the losses' own error.
        check_instance(self.name, labels, Tensor, "a tensor of class indices")
        if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"{self.name} must be an integer tensor of class indices, got dtype {labels.dtype}")
        if labels.numel() == 0:
            return (0, 0)
        if labels.device.type == "cpu":
            low, high = torch.aminmax(labels)
            return int(low), int(high)
        return self._device_range(labels)

    def _device_range(self, labels: Tensor) -> Tuple[int, int]:
        ref, version, bounds = self._cached
        if ref is None or ref() is not labels or labels._version != version:
            low, high = torch.stack(torch.aminmax(labels)).tolist()
            bounds = (int(low), int(high))
            self._cached = (weakref.ref(labels), labels._version, bounds)
        return bounds


# ---------------------------------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------------------------------
def semi_supervised_step(
    generator: nn.Module,
    discriminator: nn.Module,
    d_optimizer: Optimizer,
    g_optimizer: Optimizer,
    *,
    generator_loss: str = "feature_matching",
    feature_matching_distance: str = "squared_l2",
    generator_steps: int = 1,
    unlabeled_weight: float = 1.0,
    real_target: float = 1.0,
    fake_batch_size: Optional[int] = None,
    noise_fn: Optional[Callable[[int], Tensor]] = None,
    amp: AmpOption = False,
    compile: CompileOption = False,
) -> _Update:
    """The reference's semi-supervised GAN step (:ref:`ref-ssl-loss`, :ref:`ref-training-loop`), as an Ignite update
    function.

    ``update(engine, batch)`` takes ``(x_labeled, y_labeled, x_unlabeled, x_unlabeled2)`` (what
    :class:`~ignite_igan.data.SemiSupervisedLoader` yields) on the models' device and, with both models in training
    mode (dropout and noise on, as in the reference):

    1. **Discriminator step.** Samples ``x_fake = G(z)`` from fresh noise without gradient, runs three separate
       forward passes ``D(x_labeled)``, ``D(x_unlabeled)``, ``D(x_fake)`` (so minibatch features stay within their
       source), and minimizes ``loss_labeled + unlabeled_weight · loss_unlabeled`` of
       :func:`~ignite_igan.functional.semi_supervised_losses` (K-way cross-entropy on the labeled batch;
       ``0.5·E[-log D(x)] + 0.5·E[-log(1 - D(G(z)))]``). Only the discriminator's optimizer steps.
    2. **Generator steps**, ``generator_steps`` times, each with fresh noise; only the generator's optimizer
       steps:

       - ``"feature_matching"`` (the FM scripts): :func:`~ignite_igan.functional.feature_matching_loss` between
         ``D``'s features of ``x_unlabeled2`` (computed without gradient, again at each generator step) and of
         ``G(z)``. The reference uses ``"mean_squared"`` on MNIST and ``"mean_absolute"`` on CIFAR-10/SVHN;
         ``"squared_l2"`` is the paper's.
       - ``"minimax"`` (the minibatch-discrimination scripts, with ``generator_steps=3``): the saturating
         :func:`~ignite_igan.functional.minimax_generator_loss` on ``D(G(z))``.

    If ``engine.state.real_target`` exists (e.g. set by :class:`~ignite_igan.handlers.OneSidedLabelSmoothing`),
    the unlabeled real term becomes ``0.5·E[BCE(LSE(l), real_target)]``; at 1, the default, it is the reference's
    term exactly.

    It returns detached 0-d tensors on the device: ``loss_labeled``, ``loss_unlabeled``, ``loss_discriminator``
    (the minimized total), ``loss_generator`` (mean over the generator steps), ``train_error`` (argmax error on
    the labeled batch, noise on, as the reference reports it), ``D_x`` (mean D(x) on the unlabeled batch) and
    ``D_G_z`` (mean D(G(z)) in the discriminator step). The labels are checked to lie in [0, K) before the loss
    uses them (reading labels that are only on an accelerator waits for it: see ``update.labels``).

    Args:
        generator: maps noise to samples.
        discriminator: ``forward(x)`` -> logits (N, K); ``forward(x, return_features=True)`` -> (logits,
            features) for feature matching.
        d_optimizer, g_optimizer: one optimizer per player, e.g. :class:`~ignite_igan.optim.ReferenceAdam`.
        generator_loss: ``"feature_matching"`` or ``"minimax"``.
        feature_matching_distance: ``"squared_l2"``, ``"mean_squared"`` or ``"mean_absolute"``.
        generator_steps: generator updates per discriminator update (1 for FM, 3 for MD in the reference).
        unlabeled_weight: weight of the unlabeled loss, >= 0 (1 in the reference).
        real_target: the target of real data when ``engine.state`` has no ``real_target``; 1 = no smoothing.
        fake_batch_size: samples per generated batch; the unlabeled batch's size by default (as the reference).
        noise_fn: ``n -> noise`` for the generator; ``generator.sample_noise(n, device=None)`` (on the device of
            the generator's parameters) by default.
        amp: mixed precision for the forward passes: False, True or ``"bf16"`` (bfloat16 autocast), ``"fp16"``
            (float16 autocast with a :class:`torch.amp.GradScaler` per player, ``update.d_scaler`` and
            ``update.g_scaler``). Losses are computed in float32.
        compile: True, or a mapping of :func:`torch.compile` arguments, to compile the models' forward passes. On
            the CPU the compiled models draw eager's random numbers (Inductor's ``fallback_random``; its own are a
            different stream and about 10x slower there), unless the mapping names a ``mode``.

    Returns:
        ``update(engine, batch) -> dict``, with the attributes ``labels`` (the labels' check: set
        ``update.labels.enabled = False`` for labels checked beforehand), ``d_scaler`` and ``g_scaler``.

    Raises:
        ValueError: (or TypeError) for an unknown loss or distance, a negative weight, a non-positive step count, a
            generator without ``sample_noise`` and no ``noise_fn``, the same optimizer for both players, or an
            optimizer holding parameters of the other player (swapped) or of neither model. While running: a
            batch without ``x_unlabeled2`` for feature matching, labels ``y_labeled`` that are not integer class
            indices in [0, K).

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> from ignite_igan.models import digits_discriminator, digits_generator
        >>> gen, disc = digits_generator(), digits_discriminator()
        >>> d_opt = torch.optim.Adam(disc.parameters(), lr=3e-4)
        >>> g_opt = torch.optim.Adam(gen.parameters(), lr=3e-4)
        >>> trainer = Engine(semi_supervised_step(gen, disc, d_opt, g_opt, feature_matching_distance="mean_squared"))
        >>> batch = (torch.rand(10, 64), torch.arange(10), torch.rand(20, 64), torch.rand(20, 64))
        >>> sorted(trainer.run([batch], max_epochs=1).output)[:3]
        ['D_G_z', 'D_x', 'loss_discriminator']
    """
    check_choice("generator_loss", generator_loss, SEMI_SUPERVISED_GENERATOR_LOSSES)
    unlabeled_weight = check_real("unlabeled_weight", unlabeled_weight, minimum=0.0)
    game = _Game(generator, discriminator, d_optimizer, g_optimizer, generator_steps=generator_steps,
                 feature_matching_distance=feature_matching_distance, real_target=real_target,
                 fake_batch_size=fake_batch_size, noise_fn=noise_fn, amp=amp, compile=compile)
    d, labels = game.d, _ClassLabels("y_labeled")  # the discriminator; the labels' one per-call check
    feature_matching = generator_loss == "feature_matching"
    logit_loss = None if feature_matching else F.minimax_generator_loss

    def update(engine: Engine, batch: Sequence[Tensor]) -> Dict[str, Tensor]:
        x_lab, y_lab, x_unl, x_unl2 = batch
        if feature_matching and x_unl2 is None:
            raise ValueError("feature matching needs the second unlabeled batch (x_unlabeled2), got None: create "
                             "the SemiSupervisedLoader with generator_batch=True")
        target, n_fake = game.begin(engine, x_unl.shape[0])

        # The discriminator on the labeled, unlabeled and generated batches: three separate passes (minibatch
        # features stay within their source); the samples are constants here.
        x_fake = game.sample(n_fake)
        with game.autocast():
            logits_lab, logits_unl, logits_fake = d.call(x_lab), d.call(x_unl), d.call(x_fake)
        logits_lab, logits_unl, logits_fake = logits_lab.float(), logits_unl.float(), logits_fake.float()
        if logits_lab.dim() == 2:  # other shapes: semi_supervised_losses says what it expects
            labels.check(y_lab, logits_lab.shape[1])
        loss_lab, loss_unl = F.semi_supervised_losses(logits_lab, y_lab, logits_unl, logits_fake, real_target=target,
                                                      check_labels=False)
        loss_d = loss_lab + unlabeled_weight * loss_unl
        d.step(loss_d)

        # The generator: feature matching against the second unlabeled batch, or the minimax loss.
        loss_g = game.generator_steps(n_fake, x_unl2, logit_loss)

        with torch.no_grad():
            return {
                "loss_labeled": loss_lab.detach(),
                "loss_unlabeled": loss_unl.detach(),
                "loss_discriminator": loss_d.detach(),
                "loss_generator": loss_g,
                "train_error": (logits_lab.argmax(dim=1) != y_lab).float().mean(),
                "D_x": torch.sigmoid(F.gan_logit(logits_unl)).mean(),
                "D_G_z": torch.sigmoid(F.gan_logit(logits_fake)).mean(),
            }

    update.labels, update.d_scaler, update.g_scaler = labels, game.d.scaler, game.g.scaler  # type: ignore[attr-defined]
    return update


def _gan_logit(logits: Tensor) -> Tensor:
    return logits if logits.dim() == 1 else F.gan_logit(logits)


# The GAN step's generator losses on D(G(z))'s logits; feature matching is _Game.generator_steps' own.
_GAN_LOGIT_LOSSES: Dict[str, Optional[Callable[[Tensor], Tensor]]] = {
    "non_saturating": lambda logits: torch_F.softplus(-_gan_logit(logits)).mean(),  # E[-log D(G(z))]
    "minimax": lambda logits: -torch_F.softplus(_gan_logit(logits)).mean(),  # E[log(1 - D(G(z)))], saturating
    "feature_matching": None,
}


def gan_step(
    generator: nn.Module,
    discriminator: nn.Module,
    d_optimizer: Optimizer,
    g_optimizer: Optimizer,
    *,
    generator_loss: str = "non_saturating",
    feature_matching_distance: str = "squared_l2",
    generator_steps: int = 1,
    real_target: float = 1.0,
    class_weight: Optional[float] = None,
    fake_batch_size: Optional[int] = None,
    noise_fn: Optional[Callable[[int], Tensor]] = None,
    amp: AmpOption = False,
    compile: CompileOption = False,
) -> _Update:
    """The GAN step of the sample-quality experiments (paper §3-4, :ref:`ref-label-smoothing`), as an Ignite update
    function.

    ``update(engine, batch)`` takes ``(x, y)`` on the models' device (``y`` is used only with a ``class_weight``)
    and, with both models in training mode:

    1. **Discriminator step.** ``x_fake = G(z)`` from fresh noise without gradient; two separate forward passes
       ``D(x)`` and ``D(x_fake)`` (minibatch discrimination sees each source on its own); the loss is
       :func:`~ignite_igan.functional.one_sided_label_smoothing_loss` on the real-vs-fake logits, with the real
       target read from ``engine.state.real_target`` if present (see
       :class:`~ignite_igan.handlers.OneSidedLabelSmoothing`), else ``real_target``; fakes keep target 0. The
       real-vs-fake logit is ``logsumexp`` of the class logits, the K+1 formulation with the fake logit fixed at
       0 (:ref:`ref-ssl-loss`); a discriminator with one output (``(N, 1)`` or ``(N,)``) is a plain GAN. With a
       ``class_weight``, the labels ``y`` add ``class_weight ·`` K-way cross-entropy on the real batch, as the
       ImageNet code's ``d_loss_class``.
    2. **Generator steps**, ``generator_steps`` times with fresh noise: ``"non_saturating"`` ``E[-log D(G(z))]``,
       ``"minimax"`` (the reference's saturating ``E[log(1 - D(G(z)))]``) or ``"feature_matching"`` against the
       features of this iteration's real batch.

    A virtual-batch-norm generator needs nothing here (its reference batch is part of the model); nor does
    historical averaging (optimizer step hooks).

    It returns detached 0-d tensors: ``loss_discriminator``, ``loss_generator`` (mean over the generator steps),
    ``D_x``, ``D_G_z`` and, with a ``class_weight``, ``loss_labeled`` and ``train_error``.

    Args:
        generator, discriminator, d_optimizer, g_optimizer: as for :func:`semi_supervised_step`.
        generator_loss: ``"non_saturating"``, ``"minimax"`` or ``"feature_matching"``.
        feature_matching_distance: distance for ``"feature_matching"``.
        generator_steps: generator updates per discriminator update (3 in the reference's MD scripts).
        real_target: the real target when ``engine.state`` has none, in (0, 1]; 1 = no smoothing.
        class_weight: None for a GAN without labels; else the weight (>= 0) of the class loss on the labels.
        fake_batch_size, noise_fn, amp, compile: as for :func:`semi_supervised_step`.

    Returns:
        ``update(engine, batch) -> dict``, with the attributes ``labels``, ``d_scaler`` and ``g_scaler`` as for
        :func:`semi_supervised_step`.

    Raises:
        ValueError: (or TypeError) as :func:`semi_supervised_step` for the models, optimizers and options. While
            running with a ``class_weight``: labels ``y`` that are not integer class indices in [0, K).

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> from ignite_igan.models import digits_discriminator, digits_generator
        >>> gen, disc = digits_generator(), digits_discriminator(num_classes=1)
        >>> d_opt, g_opt = torch.optim.Adam(disc.parameters()), torch.optim.Adam(gen.parameters())
        >>> trainer = Engine(gan_step(gen, disc, d_opt, g_opt, real_target=0.9))
        >>> sorted(trainer.run([(torch.rand(16, 64), None)] * 2, max_epochs=1).output)
        ['D_G_z', 'D_x', 'loss_discriminator', 'loss_generator']
    """
    logit_loss = _GAN_LOGIT_LOSSES[check_choice("generator_loss", generator_loss, GAN_GENERATOR_LOSSES)]
    conditional = class_weight is not None
    class_weight = check_real("class_weight", class_weight, minimum=0.0, allow_none=True)
    game = _Game(generator, discriminator, d_optimizer, g_optimizer, generator_steps=generator_steps,
                 feature_matching_distance=feature_matching_distance, real_target=real_target,
                 fake_batch_size=fake_batch_size, noise_fn=noise_fn, amp=amp, compile=compile)
    d, labels = game.d, _ClassLabels("y")  # the discriminator; the labels' one per-call check

    def update(engine: Engine, batch: Sequence[Any]) -> Dict[str, Tensor]:
        x_real, y_real = batch
        target, n_fake = game.begin(engine, x_real.shape[0])

        # The discriminator on the real and the generated batch, in two passes; the samples are constants here.
        x_fake = game.sample(n_fake)
        with game.autocast():
            logits_real, logits_fake = d.call(x_real), d.call(x_fake)
        logits_real, logits_fake = logits_real.float(), logits_fake.float()
        gan_real, gan_fake = _gan_logit(logits_real), _gan_logit(logits_fake)
        loss_d = F.one_sided_label_smoothing_loss(gan_real, gan_fake, real_target=target)
        if conditional:  # the class loss on the real batch (the K+1 formulation's labeled term)
            labels.check(y_real, logits_real.shape[1] if logits_real.dim() == 2 else 1)
            loss_lab = torch_F.cross_entropy(logits_real, y_real.long())
            loss_d = loss_d + class_weight * loss_lab
        d.step(loss_d)

        # The generator: non-saturating, minimax or feature matching against the real batch.
        loss_g = game.generator_steps(n_fake, x_real, logit_loss)

        with torch.no_grad():
            outputs = {
                "loss_discriminator": loss_d.detach(),
                "loss_generator": loss_g,
                "D_x": torch.sigmoid(gan_real).mean(),
                "D_G_z": torch.sigmoid(gan_fake).mean(),
            }
            if conditional:
                outputs["loss_labeled"] = loss_lab.detach()
                outputs["train_error"] = (logits_real.argmax(dim=1) != y_real).float().mean()
        return outputs

    update.labels, update.d_scaler, update.g_scaler = labels, game.d.scaler, game.g.scaler  # type: ignore[attr-defined]
    return update


# ---------------------------------------------------------------------------------------------------------------
# Wrappers around a step: hooks inside it, the CUDA graph
# ---------------------------------------------------------------------------------------------------------------
def _with_hooks(step: _Update, before: Sequence[Callable[[], None]], after: Sequence[Callable[[], None]]) -> _Update:
    for name, hooks in (("before_step", before), ("after_step", after)):
        if callable(hooks) or not isinstance(hooks, (list, tuple)) or not all(callable(hook) for hook in hooks):
            raise TypeError(f"{name} must be a list of zero-argument callables, got {hooks!r}")
    if not before and not after:
        return step

    def update(engine: Engine, batch: Any) -> Dict[str, Tensor]:
        for hook in before:
            hook()
        outputs = step(engine, batch)
        for hook in after:
            hook()
        return outputs

    return update


class _GraphedStep:
    """Runs ``step(engine, batch)`` eagerly for a few calls, then captures it in a CUDA graph and replays it; a new
    capture when the batch's shapes or the real target change. The step must do device work only."""

    WARMUP = 3  # eager iterations before the capture: lazy initialization (cuBLAS, autograd, compilation) happens

    def __init__(self, step: _Update, models: Sequence[nn.Module], optimizers: Sequence[Optimizer], scaled: bool
                 ) -> None:
        device = _model_device(models[0])
        if device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the models on a CUDA device, got {device}; use cuda_graph=False")
        if scaled:
            raise ValueError("cuda_graph=True does not combine with amp='fp16' (its loss scaling reads the "
                             "gradients on the host); use amp='bf16' or amp=False")
        for name, optimizer in zip(("d_optimizer", "g_optimizer"), optimizers):
            if not getattr(optimizer, "capturable", all(g.get("capturable", False) for g in optimizer.param_groups)):
                raise ValueError(f"cuda_graph=True needs {name} to be capturable, got {type(optimizer).__name__} "
                                 "without it: use ReferenceAdam(..., capturable=True) (or a torch optimizer made "
                                 "with capturable=True)")
        self.step, self.models, self.optimizers = step, list(models), list(optimizers)
        self.calls = 0
        self.graph: Optional["torch.cuda.CUDAGraph"] = None
        self.key: Any = None
        self.static_batch: List[Optional[Tensor]] = []
        self.static_outputs: Dict[str, Tensor] = {}
        self.capture_seconds: List[float] = []

    def __call__(self, engine: Engine, batch: Sequence[Optional[Tensor]]) -> Dict[str, Tensor]:
        key = (tuple(None if t is None else (t.shape, t.dtype, t.device) for t in batch),
               getattr(engine.state, "real_target", None))
        self.calls += 1
        for optimizer in self.optimizers:  # a replay reads the learning rates from tensors: a scheduler's change
            refresh = getattr(optimizer, "refresh_hyperparameters", None)  # reaches them here (ReferenceAdam)
            if callable(refresh):
                refresh()
        if self.graph is None and self.calls <= self.WARMUP:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                outputs = self.step(engine, batch)
            torch.cuda.current_stream().wait_stream(side)
            return outputs
        if self.graph is None or key != self.key:
            self._capture(engine, batch, key)
        _train_mode(self.models)  # a replay runs no step code: the models' modes as an eager step leaves them
        for static, tensor in zip(self.static_batch, batch):
            if static is not None:
                static.copy_(tensor, non_blocking=True)
        self.graph.replay()  # type: ignore[union-attr]
        return self.static_outputs

    def _capture(self, engine: Engine, batch: Sequence[Optional[Tensor]], key: Any) -> None:
        started = time.perf_counter()
        self.graph = None  # frees the previous graph's memory first
        torch.cuda.synchronize()
        self.static_batch = [None if t is None else t.clone() for t in batch]
        for optimizer in self.optimizers:  # the graph allocates the gradients it writes
            optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_outputs = self.step(engine, self.static_batch)
        self.graph, self.key = graph, key
        torch.cuda.synchronize()
        self.capture_seconds.append(time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------------------
# The trainers: an Engine around a step
# ---------------------------------------------------------------------------------------------------------------
def _move(value: Any, device: Optional[torch.device], non_blocking: bool) -> Any:
    if device is None or not isinstance(value, Tensor):
        return value
    return value.to(device, non_blocking=non_blocking)


def _prepare_semi_supervised_batch(batch: Sequence[Any], device: Optional[torch.device], non_blocking: bool
                                   ) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    # A batch of another length fails where the step unpacks its four parts.
    return tuple(_move(value, device, non_blocking) for value in batch)  # type: ignore[return-value]


def _prepare_gan_batch(batch: Any, device: Optional[torch.device], non_blocking: bool
                       ) -> Tuple[Tensor, Optional[Tensor]]:
    batch = (batch,) if isinstance(batch, Tensor) else batch
    # Labels are moved by the trainer, and only if the step uses them (conditional=True).
    return _move(batch[0], device, non_blocking), batch[1] if len(batch) >= 2 else None


def _engine(update: Callable[[Engine, Any], Any], step: _Update, graphed: Optional[_GraphedStep] = None) -> Engine:
    engine = Engine(update)
    # As ignite's create_supervised_trainer does with its scaler: visible for checkpointing.
    engine.state.d_scaler = step.d_scaler  # type: ignore[attr-defined]
    engine.state.g_scaler = step.g_scaler  # type: ignore[attr-defined]
    if graphed is not None:  # seconds of each CUDA graph capture (warm-up not included), for reports
        engine.state.graph_capture_seconds = graphed.capture_seconds  # type: ignore[attr-defined]
    return engine


def create_semi_supervised_trainer(
    generator: nn.Module,
    discriminator: nn.Module,
    d_optimizer: Optimizer,
    g_optimizer: Optimizer,
    *,
    device: Optional[Union[str, torch.device]] = None,
    non_blocking: bool = False,
    prepare_batch: Callable[..., Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]] = _prepare_semi_supervised_batch,
    output_transform: Callable[[Dict[str, Tensor]], Any] = outputs_to_floats,
    check_labels: bool = True,
    before_step: Sequence[Callable[[], None]] = (),
    after_step: Sequence[Callable[[], None]] = (),
    cuda_graph: bool = False,
    **step_options: Any,
) -> Engine:
    """An Ignite trainer whose iteration is :func:`semi_supervised_step` (:ref:`ref-ssl-loss`,
    :ref:`ref-training-loop`).

    Each iteration moves the batch ``(x_labeled, y_labeled, x_unlabeled, x_unlabeled2)`` (what
    :class:`~ignite_igan.data.SemiSupervisedLoader` yields) to ``device``, runs the step on it and sets
    ``engine.state.output`` to ``output_transform`` of the step's outputs (``loss_labeled``, ``loss_unlabeled``,
    ``loss_discriminator``, ``loss_generator``, ``train_error``, ``D_x``, ``D_G_z``). With ``amp="fp16"`` the
    players' GradScalers are ``engine.state.d_scaler`` and ``engine.state.g_scaler``, for checkpointing.

    Args:
        generator, discriminator, d_optimizer, g_optimizer: as for :func:`semi_supervised_step`.
        device: where to move the batches; None leaves them where they are. The models must already be there.
        non_blocking: passed to ``Tensor.to``.
        prepare_batch: ``(batch, device, non_blocking) -> (x_labeled, y_labeled, x_unlabeled, x_unlabeled2)``.
        output_transform: maps the dict of detached 0-d tensors to the engine's output; the default converts them
            to floats in one device transfer (the iteration waits for the device); :func:`outputs_on_device`
            keeps them on the device.
        check_labels: check, at every iteration, that ``y_labeled`` holds class indices in [0, K) before the loss
            uses them. Labels on an accelerator are read once per new tensor, which waits for the device: pass
            False for labels checked beforehand, e.g. by
            :class:`~ignite_igan.device_data.DeviceSemiSupervisedLoader` (an out-of-range label then fails inside
            the loss, on a GPU as a device-side assert).
        before_step, after_step: zero-argument callables of device work run at the start and at the end of every
            iteration's step, inside it (captured with it): e.g. ``[averaging.step_update]`` of
            :class:`~ignite_igan.handlers.EvaluationAveraging` (after the step as the handler attached at
            ``ITERATION_COMPLETED``; before it as the reference's average at ``ITERATION_STARTED``).
        cuda_graph: capture the whole iteration (both players' steps with their optimizers, ``before_step`` and
            ``after_step``) in a CUDA graph and replay it: one launch per iteration instead of about a thousand.
            The first 3 iterations run eagerly (warm-up), the fourth is captured; a change of batch shapes or of
            the real target captures again (``engine.state.graph_capture_seconds`` lists how long each took). The
            models must be on a CUDA device and the optimizers capturable
            (:class:`~ignite_igan.optim.ReferenceAdam` with ``capturable=True``, or a torch optimizer made with
            ``capturable=True``); float16 autocast (loss scaling) is refused. The noise and dropout layers draw
            from torch's CUDA generator, which graphs advance at every replay. The outputs are the graph's own
            tensors, overwritten by the next iteration: read them at ``ITERATION_COMPLETED`` (as handlers do), or
            copy them. The labels are checked on the host before every replay while ``check_labels`` is True.
        step_options: the keyword arguments of :func:`semi_supervised_step` (``generator_loss``,
            ``feature_matching_distance``, ``generator_steps``, ``unlabeled_weight``, ``real_target``,
            ``fake_batch_size``, ``noise_fn``, ``amp``, ``compile``).

    Returns:
        An :class:`ignite.engine.Engine`.

    Raises:
        ValueError: (or TypeError) as :func:`semi_supervised_step`, and for ``cuda_graph=True`` where it cannot
            run. While running: a batch that is not four elements.
    """
    step = semi_supervised_step(generator, discriminator, d_optimizer, g_optimizer, **step_options)
    step.labels.enabled = check_bool("check_labels", check_labels)  # type: ignore[attr-defined]
    update, graphed = _with_hooks(step, before_step, after_step), None
    if check_bool("cuda_graph", cuda_graph):
        scaled = step.d_scaler is not None  # type: ignore[attr-defined]
        update = graphed = _GraphedStep(update, [discriminator, generator], [d_optimizer, g_optimizer], scaled)
    device = check_device("device", device, allow_none=True)

    def process(engine: Engine, batch: Any) -> Any:
        prepared = prepare_batch(batch, device, non_blocking)
        # The labels' range is read from the batch as it came (on the CPU from the loaders) when the default
        # prepare_batch moved it: no device synchronization.
        step.labels.read(batch[1] if prepare_batch is _prepare_semi_supervised_batch else prepared[1])  # type: ignore
        return output_transform(update(engine, prepared))

    return _engine(process, step, graphed)


def create_gan_trainer(
    generator: nn.Module,
    discriminator: nn.Module,
    d_optimizer: Optimizer,
    g_optimizer: Optimizer,
    *,
    conditional: bool = False,
    class_weight: float = 1.0,
    device: Optional[Union[str, torch.device]] = None,
    non_blocking: bool = False,
    prepare_batch: Callable[..., Tuple[Tensor, Optional[Tensor]]] = _prepare_gan_batch,
    output_transform: Callable[[Dict[str, Tensor]], Any] = outputs_to_floats,
    check_labels: bool = True,
    **step_options: Any,
) -> Engine:
    """An Ignite trainer whose iteration is :func:`gan_step` (paper §3-4, :ref:`ref-label-smoothing`) on batches ``x``
    or ``(x, y, ...)``.

    The output is ``output_transform`` of the step's outputs: ``loss_discriminator``, ``loss_generator``,
    ``D_x``, ``D_G_z`` and, with ``conditional=True``, ``loss_labeled`` and ``train_error``.

    Args:
        generator, discriminator, d_optimizer, g_optimizer: as for :func:`semi_supervised_step`.
        conditional: use the batch's labels (second element) for the class loss.
        class_weight: weight of the class loss, >= 0 (with ``conditional=True``).
        device, non_blocking, output_transform: as for :func:`create_semi_supervised_trainer`.
        check_labels: as for :func:`create_semi_supervised_trainer`; it applies with ``conditional=True``.
        prepare_batch: ``(batch, device, non_blocking) -> (x, y or None)``; the labels are moved to ``device`` by
            the trainer when ``conditional=True``.
        step_options: the other keyword arguments of :func:`gan_step` (``generator_loss``,
            ``feature_matching_distance``, ``generator_steps``, ``real_target``, ``fake_batch_size``,
            ``noise_fn``, ``amp``, ``compile``).

    Returns:
        An :class:`ignite.engine.Engine`.

    Raises:
        ValueError: (or TypeError) as :func:`gan_step`. While running with ``conditional=True``: batches without
            labels, or labels ``y`` that are not integer class indices in [0, K).

    Example:
        >>> import torch
        >>> from ignite_igan.models import digits_discriminator, digits_generator
        >>> from ignite_igan.optim import ReferenceAdam
        >>> gen, disc = digits_generator(), digits_discriminator(num_classes=1)
        >>> d_opt, g_opt = ReferenceAdam(disc.parameters(), lr=3e-4), ReferenceAdam(gen.parameters(), lr=3e-4)
        >>> trainer = create_gan_trainer(gen, disc, d_opt, g_opt, real_target=0.9)
        >>> sorted(trainer.run([torch.rand(16, 64)] * 2, max_epochs=1).output)
        ['D_G_z', 'D_x', 'loss_discriminator', 'loss_generator']
    """
    class_weight = check_real("class_weight", class_weight, minimum=0.0)
    conditional = bool(conditional)
    step = gan_step(generator, discriminator, d_optimizer, g_optimizer,
                    class_weight=class_weight if conditional else None, **step_options)
    step.labels.enabled = check_bool("check_labels", check_labels) and conditional  # type: ignore[attr-defined]
    device = check_device("device", device, allow_none=True)

    def process(engine: Engine, batch: Any) -> Any:
        x_real, y_real = prepare_batch(batch, device, non_blocking)
        if conditional:  # the labels are read before the move: on the CPU, that waits for no device
            step.labels.read(y_real)  # type: ignore[attr-defined]
            y_real = _move(y_real, device, non_blocking)
        return output_transform(step(engine, (x_real, y_real)))

    return _engine(process, step)
