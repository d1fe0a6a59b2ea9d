"""Ignite trainers that run the paper's training steps on any generator/discriminator pair.

- :func:`create_semi_supervised_trainer`: the reference's semi-supervised iteration (spec §2, §4.1): one
  discriminator step on a labeled, an unlabeled and a generated batch with the K+1-class losses, then ``k``
  generator steps with feature matching or the minimax objective.
- :func:`create_gan_trainer`: the GAN step for sample quality (paper §3-4): real-vs-fake with one-sided label
  smoothing, optionally class-conditional through the K+1 formulation.

The models are arguments, never built here: a discriminator returns class logits ``(N, K)`` (``(N, 1)`` or
``(N,)`` for a plain GAN) from ``forward(x)`` and ``(logits, features)`` from ``forward(x, return_features=True)``
when feature matching is used; a generator maps noise to samples and, unless ``noise_fn`` is given, draws its noise
with ``sample_noise(n, device=...)`` as the models of :mod:`ignite_igan.models` do.

The techniques that live in handlers need nothing from these trainers: :class:`~ignite_igan.handlers.HistoricalAveraging`
works through the optimizers' step hooks, :class:`~ignite_igan.handlers.OneSidedLabelSmoothing` publishes
``engine.state.real_target``, which both trainers read at every iteration (falling back to their ``real_target``
argument), and the evaluation average, reference batch and data-dependent init attach to the engine's events.

The step does what a hand-written loop does and no more: no host-device synchronization until the end of the
iteration, where all reported numbers are copied to the host in one transfer (or none, with your own
``output_transform``). The class labels are checked to lie in [0, K) before the loss uses them (a ``ValueError``
that names ``y_labeled`` or ``y``, instead of a device-side assert); they are read on the host before they are
moved, so the check costs no synchronization unless the labels are already on an accelerator (then one small
transfer per new labels tensor, made before the step queues its work).

Both factories check that each optimizer steps its own player's parameters: a parameter of the other player
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
import time
import warnings
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as torch_F
from ignite.engine import Engine
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer

from ignite_igan import functional as F
from ignite_igan.validation import check_bool, check_int, check_real

__all__ = ["create_semi_supervised_trainer", "create_gan_trainer", "outputs_to_floats", "outputs_on_device"]

SEMI_SUPERVISED_GENERATOR_LOSSES = ("feature_matching", "minimax")
GAN_GENERATOR_LOSSES = ("non_saturating", "minimax", "feature_matching")
_AMP_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}

AmpOption = Union[bool, str, torch.dtype, None]
CompileOption = Union[bool, Mapping[str, Any]]


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
    :mod:`ignite_igan.runs` do so every ``log_every`` iterations and at the end of each epoch.
    """
    return outputs


# ---------------------------------------------------------------------------------------------------------------
# Argument checks. Messages name the argument, what it got and what was expected.
# ---------------------------------------------------------------------------------------------------------------
def _check_module(name: str, value: Any) -> nn.Module:
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def _check_optimizer(name: str, value: Any) -> Optimizer:
    if not isinstance(value, Optimizer):
        raise TypeError(f"{name} must be a torch.optim.Optimizer, got {type(value).__name__}")
    if not any(p.requires_grad for group in value.param_groups for p in group["params"]):
        raise ValueError(f"{name} has no parameter that requires a gradient; expected the player's parameters")
    return value


def _preview(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_optimizer_owner(
    name: str, optimizer: Optimizer, model_name: str, model: nn.Module, other_name: str, other: nn.Module
) -> None:
    """Every parameter ``optimizer`` steps must belong to ``model``; one that is missing from it warns.

    A parameter of the other player means swapped optimizers (the player would never train, the other one would
    be stepped by the wrong loss), one of neither model a stale optimizer: both raise. A trainable parameter of
    ``model`` that the optimizer does not hold never changes, which can be meant (a partly trained model) but is
    usually a mistake: it warns.
    """
    own, rival = _unwrap(model), _unwrap(other)
    own_ids = {id(p) for p in own.parameters()}
    rival_names = {id(p): n for n, p in rival.named_parameters()}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    swapped = [rival_names[id(p)] for p in held if id(p) not in own_ids and id(p) in rival_names]
    if swapped:
        raise ValueError(
            f"{name} must step the {model_name}'s parameters, but it holds {len(swapped)} parameter(s) of the "
            f"{other_name} ({_preview(swapped)}): are d_optimizer and g_optimizer swapped? Expected "
            f"(generator, discriminator, d_optimizer, g_optimizer)"
        )
    foreign = [tuple(p.shape) for p in held if id(p) not in own_ids]
    if foreign:
        raise ValueError(
            f"{name} must step only the {model_name}'s parameters, but it holds {len(foreign)} parameter(s) of "
            f"neither model (shapes {foreign[:5]}): was it built for another instance of the {model_name}?"
        )
    held_ids = {id(p) for p in held}
    missing = [n for n, p in own.named_parameters() if p.requires_grad and id(p) not in held_ids]
    if missing:
        warnings.warn(
            f"{name} does not step {len(missing)} trainable parameter(s) of the {model_name} "
            f"({_preview(missing)}): they will never change. Build it from {model_name}.parameters(), or set "
            f"requires_grad=False on the parameters meant to stay fixed",
            UserWarning,
            stacklevel=4,
        )


_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


class _LabelBoundsCache:
    """The range of the last labels read from an accelerator, kept while that very tensor is alive and unmodified.

    A loop that feeds the same device-resident batch again (a benchmark, a fixed batch) then pays the transfer
    once. The tensor is held weakly and compared by identity and version counter, so a new tensor that happens to
    reuse the memory is never mistaken for it.
    """

    def __init__(self) -> None:
        self._ref: Optional["weakref.ReferenceType[Tensor]"] = None
        self._version = -1
        self._bounds = (0, 0)

    def get(self, labels: Tensor) -> Optional[Tuple[int, int]]:
        """The cached range if ``labels`` is the tensor last read and has not been modified since, else None."""
        if self._ref is not None and self._ref() is labels and labels._version == self._version:
            return self._bounds
        return None

    def put(self, labels: Tensor, bounds: Tuple[int, int]) -> None:
        self._ref, self._version, self._bounds = weakref.ref(labels), labels._version, bounds


def _label_bounds(
    name: str, labels: Any, host_labels: Any = None, cache: Optional[_LabelBoundsCache] = None
) -> Optional[Tuple[int, int]]:
    """``(min, max)`` of a batch's class labels, read on the host; None for an empty batch.

    ``host_labels`` is a CPU copy of the same labels when the caller has one (the batch before it was moved):
    reading it costs no device synchronization. Labels that are only on an accelerator cost one small transfer
    (unless ``cache`` saw the same tensor last time), made before the step queues its forward passes.
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a tensor of class indices, got {type(labels).__name__}")
    if labels.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"{name} must be an integer tensor of class indices, got dtype {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor (N,) of class indices, got shape {tuple(labels.shape)}")
    source = labels
    if isinstance(host_labels, Tensor) and host_labels.device.type == "cpu" and host_labels.shape == labels.shape:
        source = host_labels
    if source.numel() == 0:
        return None
    if source.device.type == "cpu":
        low, high = torch.aminmax(source)
        return int(low), int(high)
    cached = cache.get(source) if cache is not None else None
    if cached is not None:
        return cached
    low_high = torch.stack(torch.aminmax(source)).tolist()
    bounds = (int(low_high[0]), int(low_high[1]))
    if cache is not None:
        cache.put(source, bounds)
    return bounds


def _check_label_bounds(name: str, bounds: Optional[Tuple[int, int]], num_classes: int) -> None:
    """Raise if the labels' range leaves [0, K), before the loss indexes the logits with them (on a GPU that would
    be a device-side assert that leaves the process unusable)."""
    if bounds is None:
        return
    low, high = bounds
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes}) (the discriminator has K={num_classes} class "
            f"logits), got the label {bad}"
        )


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def _check_positive_int(name: str, value: Any) -> int:
    return check_int(name, value, minimum=1)


def _check_weight(name: str, value: Any) -> float:
    return check_real(name, value, minimum=0.0)


def _check_hooks(name: str, hooks: Any) -> Tuple[Callable[[], None], ...]:
    if callable(hooks) or not isinstance(hooks, (list, tuple)) or not all(callable(h) for h in hooks):
        raise TypeError(f"{name} must be a list of zero-argument callables, got {hooks!r}")
    return tuple(hooks)


def _check_graphable(model: nn.Module, device: Optional[torch.device], optimizers: Sequence[Tuple[str, Optimizer]],
                     amp: AmpOption) -> None:
    where = device or _model_device(model)
    if where.type != "cuda":
        raise ValueError(f"cuda_graph=True needs the models on a CUDA device, got {where}; use cuda_graph=False")
    if _amp_dtype(amp) == torch.float16:
        raise ValueError("cuda_graph=True does not combine with amp='fp16' (its loss scaling reads the gradients "
                         "on the host); use amp='bf16' or amp=False")
    for name, optimizer in optimizers:
        capturable = getattr(optimizer, "capturable", None)
        if capturable is None:
            capturable = all(group.get("capturable", False) for group in optimizer.param_groups)
        if not capturable:
            raise ValueError(f"cuda_graph=True needs {name} to be capturable, got {type(optimizer).__name__} "
                             "without it: use ReferenceAdam(..., capturable=True) (or a torch optimizer made with "
                             "capturable=True)")


class _GraphedIteration:
    """Runs ``iteration(*tensors, target, label_bounds)`` eagerly for a few calls, then captures it in a CUDA graph
    and replays it; a new capture when the tensors' shapes or the target change."""

    WARMUP = 3  # eager iterations before the capture: lazy initialization (cuBLAS, autograd, compilation) happens

    def __init__(self, iteration: Callable[..., Dict[str, Tensor]], optimizers: Sequence[Optimizer]) -> None:
        self.iteration = iteration
        self.optimizers = list(optimizers)
        self.calls = 0
        self.graph: Optional["torch.cuda.CUDAGraph"] = None
        self.key: Any = None
        self.static_inputs: List[Optional[Tensor]] = []
        self.static_outputs: Dict[str, Tensor] = {}
        self.capture_seconds: List[float] = []

    def _refresh(self) -> None:
        for optimizer in self.optimizers:
            refresh = getattr(optimizer, "refresh_hyperparameters", None)
            if callable(refresh):
                refresh()

    def __call__(self, *args: Any) -> Dict[str, Tensor]:
        *tensors, target, label_bounds = args
        key = (tuple(None if t is None else (t.shape, t.dtype, t.device) for t in tensors), target)
        self.calls += 1
        self._refresh()
        if self.graph is None and self.calls <= self.WARMUP:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                outputs = self.iteration(*tensors, target, label_bounds)
            torch.cuda.current_stream().wait_stream(side)
            return outputs
        if self.graph is None or key != self.key:
            self._capture(tensors, target, label_bounds, key)
        for static, tensor in zip(self.static_inputs, tensors):
            if static is not None:
                static.copy_(tensor, non_blocking=True)
        self.graph.replay()  # type: ignore[union-attr]
        return self.static_outputs

    def _capture(self, tensors: Sequence[Optional[Tensor]], target: Any, label_bounds: Any, key: Any) -> None:
        started = time.perf_counter()
        self.graph = None  # frees the previous graph's memory first
        torch.cuda.synchronize()
        self.static_inputs = [None if t is None else t.clone() for t in tensors]
        for optimizer in self.optimizers:  # the graph allocates the gradients it writes
            optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_outputs = self.iteration(*self.static_inputs, target, label_bounds)
        self.graph, self.key = graph, key
        torch.cuda.synchronize()
        self.capture_seconds.append(time.perf_counter() - started)


def _check_target(name: str, value: Any) -> float:
    return check_real(name, value, minimum=0.0, maximum=1.0, low_open=True, allow_tensor=True)


def _amp_dtype(amp: AmpOption) -> Optional[torch.dtype]:
    if amp is None or amp is False:
        return None
    if amp is True:
        return torch.bfloat16
    if isinstance(amp, torch.dtype) and amp in (torch.bfloat16, torch.float16):
        return amp
    if isinstance(amp, str) and amp in _AMP_DTYPES:
        return _AMP_DTYPES[amp]
    raise ValueError(
        f"amp must be False, True (bfloat16), 'bf16', 'fp16', torch.bfloat16 or torch.float16, got {amp!r}"
    )


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (for passes whose gradients are not synchronized)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _maybe_compile(model: nn.Module, option: CompileOption, device_type: str = "cpu") -> Callable[..., Any]:
    if option is False or option is None:
        return model
    if option is not True and not isinstance(option, Mapping):
        raise TypeError(
            f"compile must be a bool or a mapping of torch.compile arguments, got {type(option).__name__}"
        )
    kwargs = {} if option is True else dict(option)
    # On the CPU, Inductor's own random numbers (the noise and dropout layers) are a different stream from eager's
    # and about 10x slower to draw (benchmarks/profile_step.py): compiled models keep eager's RNG there. torch.compile
    # takes no `options` beside a `mode`, so a given mode is left as it is.
    if device_type == "cpu" and kwargs.get("backend", "inductor") == "inductor" and "mode" not in kwargs:
        kwargs["options"] = {"fallback_random": True, **kwargs.get("options", {})}
    return torch.compile(model, **kwargs)


def _default_noise(generator: nn.Module, device: Optional[torch.device]) -> Callable[[int], Tensor]:
    sample_noise = getattr(_unwrap(generator), "sample_noise", None)
    if not callable(sample_noise):
        raise TypeError(
            f"generator ({type(_unwrap(generator)).__name__}) has no sample_noise(n, device=...) method; pass "
            "noise_fn=lambda n: <a batch of n latent vectors>"
        )
    return lambda n: sample_noise(n, device=device)


def _move(value: Any, device: Optional[torch.device], non_blocking: bool) -> Any:
    if device is None or not isinstance(value, Tensor):
        return value
    return value.to(device, non_blocking=non_blocking)


class _Player:
    """One player's optimizer, optional GradScaler, and the tensors its backward pass is restricted to."""

    def __init__(self, optimizer: Optimizer, scaler: Optional["torch.amp.GradScaler"]) -> None:
        self.optimizer = optimizer
        self.scaler = scaler
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


def _setup(
    generator: nn.Module,
    discriminator: nn.Module,
    d_optimizer: Optimizer,
    g_optimizer: Optimizer,
    generator_steps: int,
    device: Optional[Union[str, torch.device]],
    amp: AmpOption,
    compile: CompileOption,
    noise_fn: Optional[Callable[[int], Tensor]],
) -> Dict[str, Any]:
    _check_module("generator", generator)
    _check_module("discriminator", discriminator)
    _check_optimizer("d_optimizer", d_optimizer)
    _check_optimizer("g_optimizer", g_optimizer)
    _check_positive_int("generator_steps", generator_steps)
    if d_optimizer is g_optimizer:
        raise ValueError("d_optimizer and g_optimizer must be two optimizers (one per player), got the same object")
    _check_optimizer_owner("d_optimizer", d_optimizer, "discriminator", discriminator, "generator", generator)
    _check_optimizer_owner("g_optimizer", g_optimizer, "generator", generator, "discriminator", discriminator)
    device = None if device is None else torch.device(device)
    amp_dtype = _amp_dtype(amp)
    device_type = (device or _model_device(discriminator)).type
    if amp_dtype is None:
        autocast: Callable[[], Any] = contextlib.nullcontext
    else:
        autocast = lambda: torch.autocast(device_type=device_type, dtype=amp_dtype)  # noqa: E731
    # float16 needs loss scaling against gradient underflow; bfloat16 has float32's range and does not.
    scalers = (
        (torch.amp.GradScaler(device_type), torch.amp.GradScaler(device_type))
        if amp_dtype == torch.float16
        else (None, None)
    )
    if noise_fn is None:
        noise_fn = _default_noise(generator, device)
    elif not callable(noise_fn):
        raise TypeError(f"noise_fn must be callable (n -> noise batch), got {type(noise_fn).__name__}")
    d_raw, g_raw = _unwrap(discriminator), _unwrap(generator)
    d_call = _maybe_compile(discriminator, compile, device_type)
    return dict(
        device=device,
        autocast=autocast,
        d_player=_Player(d_optimizer, scalers[0]),
        g_player=_Player(g_optimizer, scalers[1]),
        noise_fn=noise_fn,
        # The synchronized (DDP) modules run the passes whose gradients the optimizers use; the passes under no_grad
        # and the discriminator inside the generator's step go through the unwrapped modules, so that DDP neither
        # waits for gradients that are never computed nor reduces ones that are thrown away.
        d_call=d_call,
        d_raw_call=d_call if d_raw is discriminator else _maybe_compile(d_raw, compile, device_type),
        g_call=_maybe_compile(generator, compile, device_type),
        g_raw_call=_maybe_compile(g_raw, compile, device_type) if g_raw is not generator else None,
    )


def _finish_engine(engine: Engine, setup: Dict[str, Any], graphed: Optional[_GraphedIteration] = None) -> Engine:
    # As ignite's create_supervised_trainer does with its scaler: visible for checkpointing.
    engine.state.d_scaler = setup["d_player"].scaler  # type: ignore[attr-defined]
    engine.state.g_scaler = setup["g_player"].scaler  # type: ignore[attr-defined]
    if graphed is not None:  # seconds of each CUDA graph capture (warm-up not included), for reports
        engine.state.graph_capture_seconds = graphed.capture_seconds  # type: ignore[attr-defined]
    return engine


def _gan_logit(logits: Tensor) -> Tensor:
    return logits if logits.dim() == 1 else F.gan_logit(logits)


# ---------------------------------------------------------------------------------------------------------------
# Semi-supervised trainer
# ---------------------------------------------------------------------------------------------------------------
def _prepare_semi_supervised_batch(
    batch: Sequence[Any], device: Optional[torch.device], non_blocking: bool
) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 4:
        raise TypeError(
            "the semi-supervised trainer expects batches (x_labeled, y_labeled, x_unlabeled, x_unlabeled2) as "
            f"yielded by SemiSupervisedLoader, got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    return tuple(_move(value, device, non_blocking) for value in batch)  # type: ignore[return-value]


def create_semi_supervised_trainer(
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
    device: Optional[Union[str, torch.device]] = None,
    non_blocking: bool = False,
    amp: AmpOption = False,
    compile: CompileOption = False,
    prepare_batch: Callable[..., Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]] = _prepare_semi_supervised_batch,
    output_transform: Callable[[Dict[str, Tensor]], Any] = outputs_to_floats,
    check_labels: bool = True,
    before_step: Sequence[Callable[[], None]] = (),
    after_step: Sequence[Callable[[], None]] = (),
    cuda_graph: bool = False,
) -> Engine:
    """An Ignite trainer whose iteration is the reference's semi-supervised GAN step (spec §2, §4.1).

    Each iteration takes a batch ``(x_labeled, y_labeled, x_unlabeled, x_unlabeled2)`` (what
    :class:`~ignite_igan.data.SemiSupervisedLoader` yields) and, with both models in training mode (dropout and
    noise on, as in the reference):

    1. **Discriminator step.** Samples ``x_fake = G(z)`` from fresh noise without gradient, runs three separate
       forward passes ``D(x_labeled)``, ``D(x_unlabeled)``, ``D(x_fake)`` (so minibatch features stay within their
       source), and minimizes ``loss_labeled + unlabeled_weight · loss_unlabeled`` of
       :func:`~ignite_igan.functional.semi_supervised_losses` (K-way cross-entropy on the labeled batch;
       ``0.5·E[-log D(x)] + 0.5·E[-log(1 - D(G(z)))]``). Only the discriminator's optimizer steps.
    2. **Generator steps**, ``generator_steps`` times, each with fresh noise; only the generator's optimizer
       steps:

       - ``"feature_matching"`` (the FM scripts): :func:`~ignite_igan.functional.feature_matching_loss` between
         ``D``'s features of ``x_unlabeled2`` (computed without gradient, again at each generator step) and of
         ``G(z)``. The reference uses
         ``"mean_squared"`` on MNIST and ``"mean_absolute"`` on CIFAR-10/SVHN; ``"squared_l2"`` is the paper's.
       - ``"minimax"`` (the minibatch-discrimination scripts, with ``generator_steps=3``): the saturating
         :func:`~ignite_igan.functional.minimax_generator_loss` on ``D(G(z))``.

    If ``engine.state.real_target`` exists (e.g. set by :class:`~ignite_igan.handlers.OneSidedLabelSmoothing`),
    the unlabeled real term becomes ``0.5·E[BCE(LSE(l), real_target)]``; at 1, the default, it is the reference's
    term exactly.

    The output (``engine.state.output``) is, after ``output_transform``: ``loss_labeled``, ``loss_unlabeled``,
    ``loss_discriminator`` (the minimized total), ``loss_generator`` (mean over the generator steps),
    ``train_error`` (argmax error on the labeled batch, noise on, as the reference reports it), ``D_x`` (mean
    D(x) on the unlabeled batch) and ``D_G_z`` (mean D(G(z)) in the discriminator step).

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
        noise_fn: ``n -> noise`` for the generator; ``generator.sample_noise(n, device=device)`` by default.
        device: where to move the batches; None leaves them where they are. The models must already be there.
        non_blocking: passed to ``Tensor.to``.
        amp: mixed precision: False, True or ``"bf16"`` (bfloat16 autocast), ``"fp16"`` (float16 autocast with a
            :class:`torch.amp.GradScaler` per player, exposed as ``engine.state.d_scaler`` and
            ``engine.state.g_scaler`` for checkpointing). Losses are computed in float32.
        compile: True, or a mapping of :func:`torch.compile` arguments, to compile the models' forward passes. On
            the CPU the compiled models draw eager's random numbers (Inductor's ``fallback_random``; its own are a
            different stream and about 10x slower there), unless the mapping names a ``mode``.
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
            iteration's step, inside it (compiled and captured with it): e.g. ``[averaging.step_update]`` of
            :class:`~ignite_igan.handlers.EvaluationAveraging` (after the step as the handler attached at
            ``ITERATION_COMPLETED``; before it as the reference's average at ``ITERATION_STARTED``).
        cuda_graph: capture the whole iteration (both players' steps with their optimizers, ``before_step`` and
            ``after_step``) in a CUDA graph and replay it: one launch per iteration instead of about a thousand.
            The first 3 iterations run eagerly (warm-up), the fourth is captured; a change of batch shapes or of
            the real target captures again. The models must be on a CUDA device and the optimizers capturable
            (:class:`~ignite_igan.optim.ReferenceAdam` with ``capturable=True``, or a torch optimizer made with
            ``capturable=True``); float16 autocast (loss scaling) is refused. The noise and dropout layers draw
            from torch's CUDA generator, which graphs advance at every replay. The outputs are the graph's own
            tensors, overwritten by the next iteration: read them at ``ITERATION_COMPLETED`` (as handlers do), or
            copy them. The labels are checked on the host before every replay while ``check_labels`` is True.

    Returns:
        An :class:`ignite.engine.Engine`.

    Raises:
        ValueError: (or TypeError) for an unknown loss or distance, a negative weight, a non-positive step count, a
            generator without ``sample_noise`` and no ``noise_fn``, the same optimizer for both players, or an
            optimizer holding parameters of the other player (swapped) or of neither model. While running: labels
            ``y_labeled`` that are not integer class indices in [0, K).
    """
    generator_loss = _check_choice("generator_loss", generator_loss, SEMI_SUPERVISED_GENERATOR_LOSSES)
    _check_choice("feature_matching_distance", feature_matching_distance, F.FEATURE_MATCHING_DISTANCES)
    unlabeled_weight = _check_weight("unlabeled_weight", unlabeled_weight)
    default_target = _check_target("real_target", real_target)
    if fake_batch_size is not None:
        _check_positive_int("fake_batch_size", fake_batch_size)
    s = _setup(generator, discriminator, d_optimizer, g_optimizer, generator_steps, device, amp, compile, noise_fn)
    device_, autocast, noise = s["device"], s["autocast"], s["noise_fn"]
    d_player, g_player = s["d_player"], s["g_player"]
    d_call, d_raw_call, g_call = s["d_call"], s["d_raw_call"], s["g_call"]
    g_sample = s["g_raw_call"] or g_call
    feature_matching = generator_loss == "feature_matching"
    label_cache = _LabelBoundsCache()
    check_labels = check_bool("check_labels", check_labels)
    before_step, after_step = _check_hooks("before_step", before_step), _check_hooks("after_step", after_step)
    if check_bool("cuda_graph", cuda_graph):
        _check_graphable(discriminator, device_, [("d_optimizer", d_optimizer), ("g_optimizer", g_optimizer)], amp)

    classes: List[int] = []  # K, once the discriminator has shown it

    def iteration(
        x_lab: Tensor, y_lab: Tensor, x_unl: Tensor, x_unl2: Optional[Tensor], target: float, label_bounds: Any
    ) -> Dict[str, Tensor]:
        """Both players' steps on one batch: device work only, so that it can be captured in a CUDA graph."""
        for hook in before_step:
            hook()
        n_fake = x_unl.shape[0] if fake_batch_size is None else fake_batch_size

        # Discriminator step: three separate passes; the samples are constants.
        with torch.no_grad(), autocast():
            x_fake = g_sample(noise(n_fake))
        with autocast():
            logits_lab = d_call(x_lab)
            logits_unl = d_call(x_unl)
            logits_fake = d_call(x_fake)
        logits_lab, logits_unl, logits_fake = logits_lab.float(), logits_unl.float(), logits_fake.float()
        if logits_lab.dim() == 2:  # other shapes: semi_supervised_losses says what it expects
            classes[:] = [logits_lab.shape[1]]
            _check_label_bounds("y_labeled", label_bounds, classes[0])
        # The range was checked above on the host; the functional check would synchronize again.
        loss_lab, loss_unl = F.semi_supervised_losses(
            logits_lab, y_lab, logits_unl, logits_fake, real_target=target, check_labels=False
        )
        loss_d = loss_lab + unlabeled_weight * loss_unl
        d_player.step(loss_d)

        # Generator steps, fresh noise each.
        g_losses = []
        for _ in range(generator_steps):
            with autocast():
                x_gen = g_call(noise(n_fake))
                if feature_matching:
                    _, features_fake = d_raw_call(x_gen, return_features=True)
                    with torch.no_grad():
                        _, features_real = d_raw_call(x_unl2, return_features=True)
                else:
                    logits_gen = d_raw_call(x_gen)
            if feature_matching:
                loss_g = F.feature_matching_loss(
                    features_real.float(), features_fake.float(), distance=feature_matching_distance
                )
            else:
                loss_g = F.minimax_generator_loss(logits_gen.float())
            g_player.step(loss_g)
            g_losses.append(loss_g.detach())
        for hook in after_step:
            hook()

        with torch.no_grad():
            return {
                "loss_labeled": loss_lab.detach(),
                "loss_unlabeled": loss_unl.detach(),
                "loss_discriminator": loss_d.detach(),
                "loss_generator": g_losses[0] if len(g_losses) == 1 else torch.stack(g_losses).mean(),
                "train_error": (logits_lab.argmax(dim=1) != y_lab).float().mean(),
                "D_x": torch.sigmoid(F.gan_logit(logits_unl)).mean(),
                "D_G_z": torch.sigmoid(F.gan_logit(logits_fake)).mean(),
            }

    graphed = _GraphedIteration(iteration, [d_optimizer, g_optimizer]) if cuda_graph else None

    def step(engine: Engine, batch: Any) -> Any:
        x_lab, y_lab, x_unl, x_unl2 = prepare_batch(batch, device_, non_blocking)
        # The labels' range is read from the batch as it came (on the CPU from the loaders) when the default
        # prepare_batch moved it: no device synchronization.
        host_labels = batch[1] if prepare_batch is _prepare_semi_supervised_batch else None
        label_bounds = _label_bounds("y_labeled", y_lab, host_labels, label_cache) if check_labels else None
        if feature_matching and x_unl2 is None:
            raise ValueError(
                "feature matching needs the second unlabeled batch (x_unlabeled2), got None: create the "
                "SemiSupervisedLoader with generator_batch=True"
            )
        if not discriminator.training:
            discriminator.train()
        if not generator.training:
            generator.train()
        target = getattr(engine.state, "real_target", default_target)
        if graphed is None:
            return output_transform(iteration(x_lab, y_lab, x_unl, x_unl2, target, label_bounds))
        if classes:  # a replay runs no Python: the labels are checked here
            _check_label_bounds("y_labeled", label_bounds, classes[0])
        return output_transform(graphed(x_lab, y_lab, x_unl, x_unl2, target, label_bounds))

    return _finish_engine(Engine(step), s, graphed)


# ---------------------------------------------------------------------------------------------------------------
# GAN trainer for sample quality
# ---------------------------------------------------------------------------------------------------------------
def _prepare_gan_batch(
    batch: Any, device: Optional[torch.device], non_blocking: bool
) -> Tuple[Tensor, Optional[Tensor]]:
    if isinstance(batch, Tensor):
        return _move(batch, device, non_blocking), None
    if isinstance(batch, (tuple, list)) and len(batch) >= 1:
        # Labels are moved by the step, and only if it uses them (conditional=True).
        labels = batch[1] if len(batch) >= 2 else None
        return _move(batch[0], device, non_blocking), labels
    raise TypeError(f"the GAN trainer expects batches x or (x, y, ...), got {type(batch).__name__}")


def create_gan_trainer(
    generator: nn.Module,
    discriminator: nn.Module,
    d_optimizer: Optimizer,
    g_optimizer: Optimizer,
    *,
    generator_loss: str = "non_saturating",
    feature_matching_distance: str = "squared_l2",
    generator_steps: int = 1,
    real_target: float = 1.0,
    conditional: bool = False,
    class_weight: float = 1.0,
    fake_batch_size: Optional[int] = None,
    noise_fn: Optional[Callable[[int], Tensor]] = None,
    device: Optional[Union[str, torch.device]] = None,
    non_blocking: bool = False,
    amp: AmpOption = False,
    compile: CompileOption = False,
    prepare_batch: Callable[..., Tuple[Tensor, Optional[Tensor]]] = _prepare_gan_batch,
    output_transform: Callable[[Dict[str, Tensor]], Any] = outputs_to_floats,
    check_labels: bool = True,
) -> Engine:
    """An Ignite trainer for the GAN step of the sample-quality experiments (paper §3-4, spec §3.7).

    Each iteration takes a batch ``x`` or ``(x, y, ...)`` and, with both models in training mode:

    1. **Discriminator step.** ``x_fake = G(z)`` from fresh noise without gradient; two separate forward passes
       ``D(x)`` and ``D(x_fake)`` (minibatch discrimination sees each source on its own); the loss is
       :func:`~ignite_igan.functional.one_sided_label_smoothing_loss` on the real-vs-fake logits, with the real
       target read from ``engine.state.real_target`` if present (see
       :class:`~ignite_igan.handlers.OneSidedLabelSmoothing`), else ``real_target``; fakes keep target 0. The
       real-vs-fake logit is ``logsumexp`` of the class logits, the K+1 formulation with the fake logit fixed at
       0 (spec §2); a discriminator with one output (``(N, 1)`` or ``(N,)``) is a plain GAN.
       With ``conditional=True`` the batch's labels add ``class_weight ·`` K-way cross-entropy on the real batch,
       as the ImageNet code's ``d_loss_class``.
    2. **Generator steps**, ``generator_steps`` times with fresh noise: ``"non_saturating"`` ``E[-log D(G(z))]``,
       ``"minimax"`` (the reference's saturating ``E[log(1 - D(G(z)))]``) or ``"feature_matching"`` against the
       features of this iteration's real batch.

    A virtual-batch-norm generator needs nothing here (its reference batch is part of the model); nor does
    historical averaging (optimizer step hooks).

    The output is ``loss_discriminator``, ``loss_generator`` (mean over the generator steps), ``D_x``, ``D_G_z``
    and, with ``conditional=True``, ``loss_labeled`` and ``train_error``.

    Args:
        generator, discriminator, d_optimizer, g_optimizer: as for :func:`create_semi_supervised_trainer`.
        generator_loss: ``"non_saturating"``, ``"minimax"`` or ``"feature_matching"``.
        feature_matching_distance: distance for ``"feature_matching"``.
        generator_steps: generator updates per discriminator update (3 in the reference's MD scripts).
        real_target: the real target when ``engine.state`` has none, in (0, 1]; 1 = no smoothing.
        conditional: use the batch's labels (second element) for the class loss.
        class_weight: weight of the class loss, >= 0.
        fake_batch_size, noise_fn, device, non_blocking, amp, compile, output_transform, check_labels: as for
            :func:`create_semi_supervised_trainer` (``check_labels`` applies with ``conditional=True``).
        prepare_batch: ``(batch, device, non_blocking) -> (x, y or None)``; the labels are moved to ``device`` by
            the step when ``conditional=True``.

    Returns:
        An :class:`ignite.engine.Engine`.

    Raises:
        ValueError: (or TypeError) as :func:`create_semi_supervised_trainer` for the models, optimizers and options.
            While running with ``conditional=True``: batches without labels, or labels ``y`` that are not integer
            class indices in [0, K).

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
    generator_loss = _check_choice("generator_loss", generator_loss, GAN_GENERATOR_LOSSES)
    _check_choice("feature_matching_distance", feature_matching_distance, F.FEATURE_MATCHING_DISTANCES)
    default_target = _check_target("real_target", real_target)
    class_weight = _check_weight("class_weight", class_weight)
    conditional = bool(conditional)
    if fake_batch_size is not None:
        _check_positive_int("fake_batch_size", fake_batch_size)
    s = _setup(generator, discriminator, d_optimizer, g_optimizer, generator_steps, device, amp, compile, noise_fn)
    device_, autocast, noise = s["device"], s["autocast"], s["noise_fn"]
    d_player, g_player = s["d_player"], s["g_player"]
    d_call, d_raw_call, g_call = s["d_call"], s["d_raw_call"], s["g_call"]
    g_sample = s["g_raw_call"] or g_call
    label_cache = _LabelBoundsCache()

    def step(engine: Engine, batch: Any) -> Any:
        x_real, y_real = prepare_batch(batch, device_, non_blocking)
        label_bounds = None
        if conditional:
            if y_real is None:
                raise ValueError("conditional=True needs batches (x, y, ...) with labels, got inputs only")
            # Read before the move: labels still on the CPU cost no device synchronization.
            label_bounds = _label_bounds("y", y_real, cache=label_cache) if check_labels else None
            y_real = _move(y_real, device_, non_blocking)
        if not discriminator.training:
            discriminator.train()
        if not generator.training:
            generator.train()
        target = getattr(engine.state, "real_target", default_target)
        n_fake = x_real.shape[0] if fake_batch_size is None else fake_batch_size

        with torch.no_grad(), autocast():
            x_fake = g_sample(noise(n_fake))
        with autocast():
            logits_real = d_call(x_real)
            logits_fake = d_call(x_fake)
        logits_real, logits_fake = logits_real.float(), logits_fake.float()
        gan_real, gan_fake = _gan_logit(logits_real), _gan_logit(logits_fake)
        loss_d = F.one_sided_label_smoothing_loss(gan_real, gan_fake, real_target=target)
        if conditional:
            _check_label_bounds("y", label_bounds, logits_real.shape[1] if logits_real.dim() == 2 else 1)
            loss_lab = torch_F.cross_entropy(logits_real, y_real.long())
            loss_d = loss_d + class_weight * loss_lab
        d_player.step(loss_d)

        g_losses = []
        for _ in range(generator_steps):
            with autocast():
                x_gen = g_call(noise(n_fake))
                if generator_loss == "feature_matching":
                    _, features_fake = d_raw_call(x_gen, return_features=True)
                    with torch.no_grad():
                        _, features_real = d_raw_call(x_real, return_features=True)
                else:
                    logits_gen = d_raw_call(x_gen)
            if generator_loss == "feature_matching":
                loss_g = F.feature_matching_loss(
                    features_real.float(), features_fake.float(), distance=feature_matching_distance
                )
            elif generator_loss == "minimax":
                loss_g = -torch_F.softplus(_gan_logit(logits_gen.float())).mean()
            else:
                loss_g = torch_F.softplus(-_gan_logit(logits_gen.float())).mean()
            g_player.step(loss_g)
            g_losses.append(loss_g.detach())

        with torch.no_grad():
            outputs = {
                "loss_discriminator": loss_d.detach(),
                "loss_generator": g_losses[0] if len(g_losses) == 1 else torch.stack(g_losses).mean(),
                "D_x": torch.sigmoid(gan_real).mean(),
                "D_G_z": torch.sigmoid(gan_fake).mean(),
            }
            if conditional:
                outputs["loss_labeled"] = loss_lab.detach()
                outputs["train_error"] = (logits_real.argmax(dim=1) != y_real).float().mean()
        return output_transform(outputs)

    return _finish_engine(Engine(step), s)
