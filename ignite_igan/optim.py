"""The reference code's optimizer and learning-rate schedules.

:class:`ReferenceAdam` is the Adam of ``mnist_svhn_cifar10/nn.py`` (:ref:`ref-adam`): the epsilon sits *inside* the
square root, ``p ← p - lr · m̂ / sqrt(v̂ + 1e-8)``, where :class:`torch.optim.Adam` computes
``m̂ / (sqrt(v̂) + eps)``. The two differ when gradients are small (``|g| ≲ 1e-4``), which is common late in GAN
training, and no choice of ``eps`` makes :class:`torch.optim.Adam` equal to it.

The schedules are the reference's per-epoch learning-rate factors (:ref:`ref-schedules`): constant, then a linear decay
to zero over the last epochs, ``min(3 - epoch/400, 1)`` on CIFAR-10 and ``min(3 - epoch/300, 1)`` on SVHN. They are
plain functions of the epoch, so they work as the ``lr_lambda`` of :class:`torch.optim.lr_scheduler.LambdaLR`, and
:class:`EpochLRScheduler` applies them from an Ignite engine's epoch counter, which needs nothing saved to resume.

Example:
    >>> import torch
    >>> from ignite.engine import Engine
    >>> from ignite_igan.optim import ReferenceAdam, EpochLRScheduler, cifar10_lr_factor
    >>> model = torch.nn.Linear(3, 1)
    >>> optimizer = ReferenceAdam(model.parameters(), lr=3e-4, betas=(0.5, 0.999))
    >>> def step(engine, batch):
    ...     optimizer.zero_grad()
    ...     model(batch).sum().backward()
    ...     optimizer.step()
    >>> trainer = Engine(step)
    >>> EpochLRScheduler(optimizer, cifar10_lr_factor).attach(trainer)
    >>> _ = trainer.run([torch.randn(2, 3)], max_epochs=2)
    >>> optimizer.param_groups[0]["lr"]  # epoch index 1 of 1200: still the constant part
    0.0003
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from ignite.engine import CallableEventWithFilter, Engine, Events
from torch import Tensor
from torch.optim import Optimizer

from ignite_igan.validation import (
    check_bool, check_finite_state, check_int, check_optimizer_state, check_real, describe,
)

__all__ = [
    "ReferenceAdam",
    "linear_decay_factor",
    "cifar10_lr_factor",
    "svhn_lr_factor",
    "EpochLRScheduler",
    "linear_decay_scheduler",
]


class ReferenceAdam(Optimizer):
    """Adam as the reference code writes it, epsilon inside the square root (:ref:`ref-adam`).

    For every parameter, with moments starting at zero and ``t`` the number of updates so far (starting at 1)::

        m ← β1·m + (1 - β1)·g
        v ← β2·v + (1 - β2)·g²
        p ← p - lr · (m / (1 - β1^t)) / sqrt(v / (1 - β2^t) + eps)

    The reference keeps one counter ``t`` per optimizer and updates every parameter at every step. Here, as in
    :class:`torch.optim.Adam`, each parameter keeps its own ``step`` in its state and a parameter whose ``.grad`` is
    None is skipped; when every parameter receives a gradient at every step (the reference's situation) all the
    counters are equal to the reference's ``t``. The state is the usual ``state_dict`` (``step``, ``exp_avg``,
    ``exp_avg_sq`` per parameter), and the step hooks of :class:`torch.optim.Optimizer`
    (``register_step_pre_hook`` / ``register_step_post_hook``) work, which is how
    :class:`ignite_igan.handlers.HistoricalAveraging` adds its penalty's gradient.

    All scripts of the reference use ``betas=(0.5, 0.999)``; the defaults here are Adam's usual ``(0.9, 0.999)``,
    as in the reference's function signature.

    Args:
        params: parameters or parameter groups, as for any torch optimizer.
        lr: learning rate (3e-4 on CIFAR-10/SVHN, 3e-3 on MNIST in the reference).
        betas: ``(β1, β2)``, each in [0, 1).
        eps: added to the bias-corrected second moment *inside* the square root (1e-8 in the reference).
        capturable: keep the step counts and the learning rate as tensors on the parameters' device and compute the
            bias corrections there, so that a step can be captured in a CUDA graph (or compiled without
            recompiling at every step). The arithmetic is the same, in float64 for the corrections as on the host;
            the last bit of an update can differ where the device fuses a multiply-add. The learning rate of each
            group is read from ``param_groups`` at every step outside a graph capture, so schedulers work; a
            captured graph reads the tensor, which :meth:`refresh_hyperparameters` updates (call it before each
            replay). All parameters must be on one device and receive a gradient at every step.

    Example:
        >>> import torch
        >>> p = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = ReferenceAdam([p], lr=0.1, betas=(0.5, 0.999))
        >>> p.grad = torch.tensor([2.0])
        >>> opt.step()
        >>> round(p.item(), 6)  # first step: m̂ = g, v̂ = g², so the move is lr · g / sqrt(g² + 1e-8)
        0.9
    """

    def __init__(
        self,
        params: Iterable[Union[Tensor, Dict[str, Any]]],
        lr: float = 1e-3,
        betas: Tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        capturable: bool = False,
    ) -> None:
        defaults = _check_hyperparameters("", lr, betas, eps)
        self.capturable = check_bool("capturable", capturable)
        self._lr_tensors: Dict[int, Tuple[float, Tensor]] = {}  # group index -> (value, its tensor on the device)
        super().__init__(params, defaults)

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Loads a state after checking that it belongs to these parameters and that its values can be stepped.

        :class:`torch.optim.Optimizer` checks only the number of parameters per group: another model's state with
        as many parameters would load and fail at the first step. Here it is refused at once, naming the parameter.
        A state of a diverged or damaged run is refused too, naming the entry: a learning rate, beta or epsilon
        that the constructor would refuse (NaN, infinite, negative), moments holding NaN or infinity, a negative
        second moment (its square root is NaN) or a negative step count. Loaded silently, each would turn the
        parameters into NaN at the first step, and the run would stop blaming its own divergence.

        Raises:
            ValueError: naming the entry (e.g. ``state_dict['param_groups'][0]['lr']``) and its value.
        """
        owner = "ReferenceAdam.load_state_dict"
        check_optimizer_state(owner, self, state_dict)
        for index, group in enumerate(state_dict["param_groups"]):
            # The constructor's ranges (an entry not there is left to torch's loading).
            _check_hyperparameters(f"{owner}: state_dict['param_groups'][{index}]", group.get("lr", 0.0),
                                   group.get("betas", (0.0, 0.0)), group.get("eps", 0.0))
        check_finite_state(owner, "state_dict['state']", state_dict["state"])
        for key, state in state_dict["state"].items():
            if not isinstance(state, Mapping):
                continue
            square = state.get("exp_avg_sq")
            if isinstance(square, Tensor) and bool((square < 0).any()):
                raise ValueError(
                    f"{owner}: state_dict['state'][{key!r}]['exp_avg_sq'] holds negative values "
                    f"({int((square < 0).sum())} of {square.numel()}); a second moment is a mean of squares. The state "
                    "is damaged: load one saved by a healthy run"
                )
            if "step" in state and not _is_count(state["step"]):
                raise ValueError(
                    f"{owner}: state_dict['state'][{key!r}]['step'] must be a count >= 0, got {describe(state['step'])}"
                )
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:  # type: ignore[override]
        """Performs one update of every parameter that has a gradient.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        if self.capturable:
            self._capturable_step()
            return loss
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            # Parameters are bucketed by (device, dtype, step count) so that every bucket is one set of fused
            # foreach kernels with scalar bias corrections; normally there is a single bucket.
            buckets: Dict[Tuple[torch.device, torch.dtype, int], Tuple[List[Tensor], ...]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state(p)
                state["step"] = int(state["step"]) + 1
                bucket = buckets.setdefault((p.device, p.dtype, state["step"]), ([], [], [], []))
                for values, value in zip(bucket, (p, p.grad, state["exp_avg"], state["exp_avg_sq"])):
                    values.append(value)

            for (_, _, step), (params, grads, exp_avgs, exp_avg_sqs) in buckets.items():
                bias_correction1 = 1.0 - beta1**step
                bias_correction2 = 1.0 - beta2**step
                denominators = _moments(group, grads, exp_avgs, exp_avg_sqs, bias_correction2)
                torch._foreach_addcdiv_(params, exp_avgs, denominators, value=-group["lr"] / bias_correction1)
        return loss

    def _state(self, p: Tensor) -> Dict[str, Any]:
        """The state of ``p``, made on its first update: the step count and zero moments."""
        # torch would run the moments' arithmetic on a complex parameter without error, with |g|² taken as g².
        if p.grad.is_sparse or torch.is_complex(p):
            raise RuntimeError("ReferenceAdam does not support sparse gradients or complex parameters")
        state = self.state[p]
        if len(state) == 0:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def refresh_hyperparameters(self) -> None:
        """Copies each group's ``lr`` into the tensor a captured step reads (``capturable=True``); a no-op for
        values that have not changed, and nothing waits for the device."""
        for index, group in enumerate(self.param_groups):
            value = float(group["lr"])
            if index not in self._lr_tensors:
                device = next((p.device for p in group["params"]), torch.device("cpu"))
                self._lr_tensors[index] = (value, torch.full((), value, dtype=torch.float64, device=device))
            elif self._lr_tensors[index][0] != value:
                self._lr_tensors[index] = (value, self._lr_tensors[index][1].fill_(value))

    def _capturable_step(self) -> None:
        capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
        if not capturing:  # inside a capture, fills would be frozen into the graph: refresh before each replay
            self.refresh_hyperparameters()
        for index, group in enumerate(self.param_groups):
            beta1, beta2 = group["betas"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if len(params) != sum(p.requires_grad for p in group["params"]):  # frozen tensors never step
                raise RuntimeError("ReferenceAdam(capturable=True) needs a gradient for every trainable parameter at "
                                   "every step")
            states = [self._state(p) for p in params]
            step = states[0]["step"]
            shared = torch.is_tensor(step) and step.device == params[0].device
            if not shared or any(state["step"] is not step for state in states):
                # Fresh states, or states loaded (from the host-side optimizer, or onto another device), hold a count
                # each: the group's parameters step together (checked above), so they share one float64 tensor on
                # their device, and a step adds 1 once. Read once, before any capture (warm-up).
                counts = {float(state["step"]) for state in states}
                if len(counts) > 1:
                    raise RuntimeError("ReferenceAdam(capturable=True) needs every parameter of a group at the same "
                                       "step count; the loaded state has different ones")
                step = torch.full((), counts.pop(), dtype=torch.float64, device=params[0].device)
                for state in states:
                    state["step"] = step
            step.add_(1)
            grads = [p.grad for p in params]
            exp_avgs = [state["exp_avg"] for state in states]
            exp_avg_sqs = [state["exp_avg_sq"] for state in states]
            bias_correction1 = 1.0 - torch.pow(beta1, step)
            bias_correction2 = (1.0 - torch.pow(beta2, step)).to(exp_avg_sqs[0].dtype)
            denominators = _moments(group, grads, exp_avgs, exp_avg_sqs, bias_correction2)
            updates = torch._foreach_div(exp_avgs, denominators)
            step_size = (-self._lr_tensors[index][1] / bias_correction1).to(params[0].dtype)
            torch._foreach_mul_(updates, step_size)
            torch._foreach_add_(params, updates)


def _check_hyperparameters(where: str, lr: Any, betas: Any, eps: Any) -> Dict[str, Any]:
    """``lr``, ``betas`` and ``eps`` as the constructor takes them (``where`` empty) or as a state to load holds them
    (``where`` names the group; a scheduler may have set the rate to a one-element tensor)."""
    def name(key: str) -> str:
        return f"{where}['{key}']" if where else key

    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{name('betas')} must be a pair (beta1, beta2), got {describe(betas)}")
    return dict(
        lr=check_real(name("lr"), lr, minimum=0.0, allow_tensor=bool(where)),
        betas=tuple(check_real(f"{name('betas')}[{i}]", beta, minimum=0.0, maximum=1.0, high_open=True,
                               allow_tensor=bool(where)) for i, beta in enumerate(betas)),
        eps=check_real(name("eps"), eps, minimum=0.0, allow_tensor=bool(where)),
    )


def _is_count(value: Any) -> bool:
    """Whether ``value`` is a step count: a whole number >= 0, as a Python or NumPy number or a one-element tensor
    (the capturable optimizer keeps it as a float64 tensor)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return real and math.isfinite(value) and value >= 0 and float(value).is_integer()


def _moments(
    group: Dict[str, Any], grads: List[Tensor], exp_avgs: List[Tensor], exp_avg_sqs: List[Tensor],
    bias_correction2: Union[float, Tensor],
) -> List[Tensor]:
    """Updates the moments in place with the ``group``'s betas and returns ``sqrt(v / (1 - β2^t) + eps)`` per
    parameter: the arithmetic the host-side and the capturable step share.

    The epsilon is inside the root, as in the reference. ``bias_correction2`` is a float (the host-side step) or a
    0-d tensor on the device (the capturable step).
    """
    (beta1, beta2), eps = group["betas"], group["eps"]
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    denominators = torch._foreach_div(exp_avg_sqs, bias_correction2)
    torch._foreach_add_(denominators, eps)
    torch._foreach_sqrt_(denominators)
    return denominators


def linear_decay_factor(epoch: int, total_epochs: int, decay_epochs: int) -> float:
    """The reference's learning-rate factor: 1, then a linear decay to 0 over the last ``decay_epochs`` epochs.

    ``min(total_epochs/decay_epochs - epoch/decay_epochs, 1)`` for a 0-based ``epoch``; with ``total_epochs=1200``
    and ``decay_epochs=400`` this is the CIFAR-10 scripts' ``min(3 - epoch/400, 1)``. The arithmetic follows the
    reference (``3. - epoch/400.``) so that the factors are the same floats.

    Args:
        epoch: 0-based epoch index, >= 0.
        total_epochs: the length of the run; the factor reaches 0 at this epoch.
        decay_epochs: length of the decay, in (0, total_epochs].

    Returns:
        The factor, in [0, 1] for ``epoch <= total_epochs``.
    """
    epoch = check_int("epoch", epoch, minimum=0, hint="0-based")
    total_epochs = check_int("total_epochs", total_epochs)
    decay_epochs = check_int("decay_epochs", decay_epochs, minimum=1, maximum=total_epochs, hint="total_epochs at most")
    return min(total_epochs / decay_epochs - epoch / decay_epochs, 1.0)


def cifar10_lr_factor(epoch: int) -> float:
    """CIFAR-10 scripts' factor ``min(3 - epoch/400, 1)`` over 1200 epochs (:ref:`ref-cifar10`,
    :ref:`ref-minibatch-scripts`), 0-based ``epoch``.

    Example:
        >>> cifar10_lr_factor(0), cifar10_lr_factor(800), cifar10_lr_factor(1000)
        (1.0, 1.0, 0.5)
    """
    return linear_decay_factor(epoch, total_epochs=1200, decay_epochs=400)


def svhn_lr_factor(epoch: int) -> float:
    """SVHN scripts' factor ``min(3 - epoch/300, 1)`` over 900 epochs (:ref:`ref-svhn`, :ref:`ref-minibatch-scripts`),
    0-based ``epoch``.

    Example:
        >>> svhn_lr_factor(600), svhn_lr_factor(750)
        (1.0, 0.5)
    """
    return linear_decay_factor(epoch, total_epochs=900, decay_epochs=300)


class EpochLRScheduler:
    """Sets the learning rate of one or more optimizers to ``base_lr · lr_lambda(epoch)`` at every epoch start.

    ``epoch`` is the engine's 0-based epoch index (``engine.state.epoch - 1``), as in the reference's
    ``for epoch in range(...)`` loop. The rate is a function of the engine's epoch alone, so a run resumed from a
    checkpoint, even one taken in the middle of an epoch, gets the same rates as an uninterrupted run without this
    handler being saved. (A stateful :class:`torch.optim.lr_scheduler.LambdaLR` stepped on epoch events is off by
    one epoch after a mid-epoch resume, because the resumed engine fires ``EPOCH_STARTED`` again for the
    interrupted epoch.)

    The base rates are taken from each parameter group's ``"initial_lr"`` if it has one, else its current
    ``"lr"``, when the handler is attached, and written to ``"initial_lr"``, the key torch's own schedulers use,
    so that they travel with the optimizer's ``state_dict``.

    Args:
        optimizers: an optimizer or a sequence of them (the reference schedules D and G alike).
        lr_lambda: maps the 0-based epoch to a factor, e.g. :func:`cifar10_lr_factor`.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> d_opt = ReferenceAdam(torch.nn.Linear(2, 2).parameters(), lr=1.0)
        >>> trainer = Engine(lambda engine, batch: None)
        >>> EpochLRScheduler(d_opt, lambda epoch: 0.5 ** epoch).attach(trainer)
        >>> _ = trainer.run([0, 0], max_epochs=3)
        >>> d_opt.param_groups[0]["lr"]
        0.25
    """

    def __init__(self, optimizers: Union[Optimizer, Sequence[Optimizer]], lr_lambda: Callable[[int], float]) -> None:
        optimizers = [optimizers] if hasattr(optimizers, "param_groups") else list(optimizers)  # type: ignore
        if not optimizers:
            raise ValueError("optimizers must hold at least one optimizer, got an empty sequence")
        for index, optimizer in enumerate(optimizers):
            if not hasattr(optimizer, "param_groups"):
                raise TypeError(f"optimizers[{index}] must be a torch optimizer (with param_groups), got "
                                f"{describe(optimizer)}")
        if not callable(lr_lambda):
            raise TypeError(f"lr_lambda must be callable (epoch -> factor), got {type(lr_lambda).__name__}")
        self.optimizers: List[Optimizer] = optimizers
        self.lr_lambda = lr_lambda

    def attach(self, engine: Engine, event: Union[Events, CallableEventWithFilter] = Events.EPOCH_STARTED) -> None:
        """Records the base rates and sets the rate on ``event`` (every epoch start by default)."""
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        engine.add_event_handler(event, self)

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch - 1
        factor = check_real(f"lr_lambda({epoch})", self.lr_lambda(epoch), minimum=0.0, allow_tensor=True)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor


def linear_decay_scheduler(
    optimizers: Union[Optimizer, Sequence[Optimizer]], total_epochs: int, decay_epochs: int
) -> EpochLRScheduler:
    """An :class:`EpochLRScheduler` of :func:`linear_decay_factor`: the rates stay, then decay linearly to 0 over
    the last ``decay_epochs`` of ``total_epochs`` epochs (the reference's schedule); attach it to the trainer.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> d_opt = ReferenceAdam(torch.nn.Linear(2, 2).parameters(), lr=1.0)
        >>> trainer = Engine(lambda engine, batch: None)
        >>> linear_decay_scheduler(d_opt, total_epochs=4, decay_epochs=2).attach(trainer)
        >>> _ = trainer.run([0], max_epochs=4)
        >>> d_opt.param_groups[0]["lr"]  # epoch 3 of 0..3
        0.5
    """
    linear_decay_factor(0, total_epochs, decay_epochs)  # the arguments' errors now, not at the first epoch
    return EpochLRScheduler(optimizers, lambda epoch: linear_decay_factor(epoch, total_epochs, decay_epochs))
