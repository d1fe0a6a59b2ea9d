"""Historical averaging (Salimans et al., 2016, §3.3) as an Ignite handler.

The paper adds ``λ ||θ - (1/t) Σ_{i=1..t} θ[i]||²`` to a player's cost, where ``θ[i]`` is the value of the
parameters at time ``i``. The original code never implemented it (spec §0.6, §7.3); do not confuse it with the
test-time parameter average ``disc_param_avg`` (see :mod:`ignite_igan.handlers.evaluation_averaging`).
The term is part of the player's cost: its gradient joins the loss's gradient in the player's own optimizer step,
never as a separate "pull towards the average" step of its own.
"""
from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from ignite.engine import CallableEventWithFilter, Engine, Events, EventsList
from torch import Tensor, nn
from torch.optim import Optimizer

from ignite_igan.functional import historical_average_penalty

__all__ = ["HistoricalAveraging"]

EventType = Union[str, Events, CallableEventWithFilter, EventsList]


class HistoricalAveraging:
    """Pulls a player's parameters towards the average of their past values (paper §3.3).

    **What is averaged, and when.** Every time ``event`` fires (default :attr:`Events.ITERATION_STARTED`, i.e.
    once per iteration, before the iteration's optimizer steps) the current values of the model's trainable
    parameters (``requires_grad=True`` when the handler is built) are added to the average. The average used in
    an iteration therefore includes the parameters the iteration starts from, which is the paper's
    ``(1/t) Σ_{i=1..t} θ[i]`` with ``θ[t]`` the current value. It is a constant for the gradient (no gradient
    flows into the average). With ``average="uniform"`` (the paper) it is the plain mean of all recorded values,
    updated online (``θ̄ ← θ̄ + (θ - θ̄)/t``); with ``average="exponential"`` it is
    ``θ̄ ← decay·θ̄ + (1-decay)·θ`` started from the first recorded value. Until the first update the penalty is
    zero. A filtered event (``Events.ITERATION_STARTED(every=10)``) records every tenth iteration only.

    **How the penalty reaches the cost.** With an ``optimizer``, :meth:`attach` registers an optimizer step
    pre-hook (:meth:`torch.optim.Optimizer.register_step_pre_hook`) that adds the penalty's exact gradient
    ``2λ(θ - θ̄)`` to every tracked parameter's ``.grad`` just before each ``optimizer.step()``: the same update as
    adding ``λ||θ - θ̄||²`` to the loss, with no change to the process function. (Gradient clipping in the process
    function comes before the hook, so it leaves the penalty's part unclipped; with ``torch.amp.GradScaler`` the
    hook sees the unscaled gradients.) Without
    an optimizer nothing is added automatically: add :meth:`penalty` to the loss yourself. Use one instance per
    player; the generator and the discriminator can each have one.

    The value ``λ||θ - θ̄||²`` of the last penalty applied is published as ``engine.state.<name>`` (a detached 0-d
    tensor, so no device synchronization) at every :attr:`Events.ITERATION_COMPLETED`, for loggers.

    Args:
        model: the player whose trainable parameters are averaged (``DistributedDataParallel`` is unwrapped).
        weight: λ >= 0, the weight of the penalty. The paper does not publish a value.
        optimizer: the optimizer that steps ``model``'s parameters; the penalty's gradient is added before each of
            its steps. ``None``: add :meth:`penalty` to the loss yourself.
        average: ``"uniform"`` (the paper's 1/t mean) or ``"exponential"``.
        decay: the decay of the exponential average, in (0, 1); only used with ``average="exponential"``.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> from ignite_igan.handlers import HistoricalAveraging
        >>> model = torch.nn.Linear(3, 1)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> def step(engine, x):
        ...     optimizer.zero_grad()
        ...     loss = model(x).pow(2).mean()
        ...     loss.backward()
        ...     optimizer.step()  # the hook adds 2λ(θ - θ̄) to the gradients here
        ...     return loss.item()
        >>> trainer = Engine(step)
        >>> ha = HistoricalAveraging(model, weight=0.1, optimizer=optimizer)
        >>> ha.attach(trainer, name="historical_penalty")
        >>> _ = trainer.run([torch.randn(4, 3)] * 5, max_epochs=1)
        >>> ha.num_updates
        5
    """

    def __init__(
        self,
        model: nn.Module,
        weight: float,
        optimizer: Optional[Optimizer] = None,
        average: str = "uniform",
        decay: float = 0.999,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(
                f"model must have at least one trainable parameter (requires_grad=True) to average, "
                f"got {type(model).__name__} with none"
            )
        if average not in ("uniform", "exponential"):
            raise ValueError(f"average must be 'uniform' or 'exponential', got {average!r}")
        if average == "exponential":
            if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0.0 < float(decay) < 1.0:
                raise ValueError(f"decay must be a float in (0, 1), got {decay!r}")
        if optimizer is not None:
            if not isinstance(optimizer, Optimizer):
                raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
            stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
            missing = [name for name, p in named if id(p) not in stepped]
            if missing:
                raise ValueError(
                    f"optimizer must step every trainable parameter of model, but it does not hold {missing}"
                )
        self.model = model
        self.optimizer = optimizer
        self.weight = weight  # validated by the property setter
        self.average = average
        self.decay = float(decay)
        self._names: List[str] = [name for name, _ in named]
        self._params: List[Tensor] = [p for _, p in named]
        self._averages: Optional[List[Tensor]] = None
        self.num_updates = 0
        self._last_penalty: Union[Tensor, float] = 0.0
        self._hook_handle: Optional[Any] = None
        self._engine_handlers: List[Any] = []
        self._state_name: Optional[str] = None

    # ------------------------------------------------------------------------------------------------------
    @property
    def weight(self) -> float:
        """λ, the weight of the penalty (may be changed between steps)."""
        return self._weight

    @weight.setter
    def weight(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"weight must be a real number >= 0, got {type(value).__name__} {value!r}")
        if not math.isfinite(float(value)) or float(value) < 0.0:
            raise ValueError(f"weight must be a finite number >= 0 (the penalty's λ), got {value!r}")
        self._weight = float(value)

    @property
    def averages(self) -> "OrderedDict[str, Tensor]":
        """The current averages θ̄ by parameter name (empty before the first update)."""
        if self._averages is None:
            return OrderedDict()
        return OrderedDict(zip(self._names, self._averages))

    # ------------------------------------------------------------------------------------------------------
    def attach(
        self, engine: Engine, event: EventType = Events.ITERATION_STARTED, name: str = "historical_penalty"
    ) -> None:
        """Record the parameters at ``event`` and, with an optimizer, add the penalty's gradient before each step.

        Args:
            engine: the trainer.
            event: when the current parameters are added to the average (filtered events allowed).
            name: the ``engine.state`` attribute that receives the last penalty; give each player its own name.
        """
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be an ignite.engine.Engine, got {type(engine).__name__}")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"name must be a valid attribute name, got {name!r}")
        if hasattr(engine.state, name):
            raise ValueError(
                f"engine.state already has an attribute {name!r} (another handler's?); pass a different name, "
                f"e.g. name='{name}_generator'"
            )
        if self._hook_handle is not None or self._engine_handlers:
            raise ValueError("this HistoricalAveraging is already attached; call detach(engine) first")
        setattr(engine.state, name, 0.0)
        self._state_name = name
        self._engine_handlers = [
            (event, engine.add_event_handler(event, self._on_update)),
            (Events.ITERATION_COMPLETED, engine.add_event_handler(Events.ITERATION_COMPLETED, self._publish, name)),
        ]
        if self.optimizer is not None:
            self._hook_handle = self.optimizer.register_step_pre_hook(self._step_pre_hook)

    def detach(self, engine: Engine) -> None:
        """Remove the engine handlers, the ``engine.state`` attribute and the optimizer hook of :meth:`attach`."""
        for _, handle in self._engine_handlers:
            handle.remove()
        self._engine_handlers = []
        if self._state_name is not None and hasattr(engine.state, self._state_name):
            delattr(engine.state, self._state_name)
        self._state_name = None
        if self._hook_handle is not None:
            self._hook_handle.remove()
            self._hook_handle = None

    # ------------------------------------------------------------------------------------------------------
    def update(self) -> None:
        """Add the current parameter values to the average (what ``event`` triggers)."""
        self.num_updates += 1
        with torch.no_grad():
            if self._averages is None:
                self._averages = [p.detach().clone() for p in self._params]
                return
            if self.average == "uniform":
                fraction = 1.0 / self.num_updates
            else:
                fraction = 1.0 - self.decay
            for index, (avg, param) in enumerate(zip(self._averages, self._params)):
                if avg.device != param.device or avg.dtype != param.dtype:
                    avg = self._averages[index] = avg.to(device=param.device, dtype=param.dtype)
                avg.lerp_(param.detach(), fraction)

    def penalty(self) -> Tensor:
        """``λ Σ ||θ - θ̄||²`` with the gradient flowing into θ only; zero before the first update.

        For process functions that add the term to the loss themselves (build the handler without an optimizer,
        or the penalty is counted twice).
        """
        if self._averages is None:
            value = torch.zeros((), dtype=self._params[0].dtype, device=self._params[0].device)
        else:
            value = self._weight * historical_average_penalty(self._params, self._averages)
        self._last_penalty = value.detach()
        return value

    # ------------------------------------------------------------------------------------------------------
    def _on_update(self, engine: Engine) -> None:
        self.update()

    def _publish(self, engine: Engine, name: str) -> None:
        setattr(engine.state, name, self._last_penalty)

    def _step_pre_hook(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        if self._averages is None:
            return None
        # autograd of λ·Σ(θ - θ̄)² gives λ·(2·(θ - θ̄)); doubling is exact, so (2λ)·(θ - θ̄) below is bitwise the
        # gradient a hand-written penalty term would add. Multiply, then add: add_(alpha=) may fuse and round once.
        scale = 2.0 * self._weight
        with torch.no_grad():
            total: Optional[Tensor] = None
            for param, avg in zip(self._params, self._averages):
                diff = param - avg.to(device=param.device, dtype=param.dtype)
                grad = diff * scale
                if param.grad is None:
                    param.grad = grad
                else:
                    param.grad.add_(grad)
                term = diff.square().sum()
                total = term if total is None else total + term
            assert total is not None
            self._last_penalty = total * self._weight
        return None

    # ------------------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The number of updates and the averages by parameter name (``None`` before the first update)."""
        averages = None
        if self._averages is not None:
            averages = OrderedDict((name, avg.detach()) for name, avg in zip(self._names, self._averages))
        return {"num_updates": self.num_updates, "averages": averages}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the averages move to the parameters' devices)."""
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"num_updates", "averages"}:
            got = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
            raise ValueError(f"state_dict must have the keys ['averages', 'num_updates'], got {got}")
        num_updates = state_dict["num_updates"]
        averages = state_dict["averages"]
        if isinstance(num_updates, bool) or not isinstance(num_updates, int) or num_updates < 0:
            raise ValueError(f"state_dict['num_updates'] must be an int >= 0, got {num_updates!r}")
        if averages is None:
            if num_updates != 0:
                raise ValueError(f"state_dict['averages'] is None but num_updates is {num_updates}")
            self._averages = None
            self.num_updates = 0
            return
        if not isinstance(averages, Mapping) or list(averages) != self._names:
            got = list(averages) if isinstance(averages, Mapping) else type(averages).__name__
            raise ValueError(f"state_dict['averages'] must hold the parameters {self._names}, got {got}")
        restored = []
        for name, param in zip(self._names, self._params):
            value = averages[name]
            if not isinstance(value, Tensor) or value.shape != param.shape:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(
                    f"state_dict['averages'][{name!r}] must be a tensor of shape {tuple(param.shape)}, got {shape}"
                )
            restored.append(value.detach().to(device=param.device, dtype=param.dtype).clone())
        self._averages = restored
        self.num_updates = num_updates
