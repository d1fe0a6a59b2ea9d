"""Historical averaging (Salimans et al., 2016, §3.3) as an Ignite handler.

The paper adds ``λ ||θ - (1/t) Σ_{i=1..t} θ[i]||²`` to a player's cost, where ``θ[i]`` is the value of the
parameters at time ``i``. The original code never implemented it (:ref:`ref-historical-averaging`); do not confuse it
with the test-time parameter average ``disc_param_avg`` (see :mod:`ignite_igan.handlers.evaluation_averaging`).
The term is part of the player's cost: its gradient joins the loss's gradient in the player's own optimizer step,
never as a separate "pull towards the average" step of its own.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from ignite.engine import Engine, Events
from torch import Tensor, nn
from torch.optim import Optimizer

from ignite_igan.functional import historical_average_penalty
from ignite_igan.handlers.base import AveragingHandler, Removable
from ignite_igan.validation import (
    check_choice, check_finite_parameters, check_instance, check_real, check_same_trainable, check_state_keys,
    check_tensor_shape,
)

__all__ = ["HistoricalAveraging", "attach_historical_averaging"]


class HistoricalAveraging(AveragingHandler):
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

    **How the penalty reaches the cost.** With an ``optimizer``, :meth:`~ignite_igan.handlers.Handler.attach`
    registers an optimizer step pre-hook (:meth:`torch.optim.Optimizer.register_step_pre_hook`) that adds the
    penalty's exact gradient ``2λ(θ - θ̄)`` to every tracked parameter's ``.grad`` just before each
    ``optimizer.step()``: the same update as adding ``λ||θ - θ̄||²`` to the loss, with no change to the process
    function. (Gradient clipping in the process function comes before the hook, so it leaves the penalty's part
    unclipped; with ``torch.amp.GradScaler`` the hook sees the unscaled gradients.) Without an optimizer nothing is
    added automatically: add :meth:`penalty` to the loss yourself. Use one instance per
    player; the generator and the discriminator can each have one.

    The value ``λ||θ - θ̄||²`` of the last penalty applied is published as ``engine.state.<name>`` (a detached 0-d
    tensor, so no device synchronization) as soon as it is computed (at each step of the optimizer, or each call
    of :meth:`penalty`), so loggers find the iteration's value at :attr:`Events.ITERATION_COMPLETED` whatever the
    order of the handlers.

    **Which parameters.** The parameters that are trainable when the handler is built, and only those. If one of
    them is frozen (``requires_grad=False``) or another one is unfrozen or added later, the next update, penalty
    or optimizer step raises a :class:`ValueError` naming them, rather than keep pulling a frozen parameter or
    silently leave a trainable one out: build a new handler after changing which parameters train. A parameter
    holding NaN or infinity when it is about to be averaged raises a :class:`ValueError` naming the iteration,
    the parameter and the value (one ``isfinite().all()`` per tensor, one host transfer per device).

    **attach or callable.** ``engine.add_event_handler(event, ha)`` records the parameters at ``event`` like
    ``attach(engine, event)``; its first call also does the rest of ``attach``'s set-up (the optimizer's step
    pre-hook and the publication of the penalty as ``engine.state.historical_penalty``), so both give the same
    training and the same published values. What only ``attach`` adds: the hook and the ``engine.state``
    attribute exist from the moment it is called, and the attribute's name can be chosen (needed for a second
    player's handler on the same engine). A handler serves one engine, once (its average and its optimizer hook
    belong to one run). :meth:`detach` undoes the set-up; a handler registered as a callable is removed with
    ``engine.remove_event_handler(ha, event)``.

    Args:
        model: the player whose trainable parameters are averaged (``DistributedDataParallel`` is unwrapped).
        weight: λ >= 0, the weight of the penalty. The paper does not publish a value.
        optimizer: the optimizer that steps ``model``'s parameters; the penalty's gradient is added before each of
            its steps. ``None``: add :meth:`penalty` to the loss yourself.
        average: ``"uniform"`` (the paper's 1/t mean) or ``"exponential"``.
        decay: the decay of the exponential average, in (0, 1); only used with ``average="exponential"``.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine, Events
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

        As a callable (the engine.state name is then ``historical_penalty``):

        >>> ha.detach(trainer)
        >>> _ = trainer.add_event_handler(Events.ITERATION_STARTED, ha)
        >>> _ = trainer.run([torch.randn(4, 3)] * 2, max_epochs=1)
        >>> ha.num_updates, "historical_penalty" in vars(trainer.state)
        (7, True)
    """

    default_event = Events.ITERATION_STARTED
    default_name = "historical_penalty"
    twice = "record the parameters and add the penalty's gradient twice"
    one_engine = "its average and its optimizer hook belong to one run"
    state_keys = ("num_updates", "averages")

    def __init__(
        self, model: nn.Module, weight: float, optimizer: Optional[Optimizer] = None, average: str = "uniform",
        decay: float = 0.999,
    ) -> None:
        super().__init__(model)
        if optimizer is not None:
            check_instance("optimizer", optimizer, Optimizer, "a torch.optim.Optimizer or None")
            stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
            missing = [name for name, p in self._tracked if id(p) not in stepped]
            if missing:
                raise ValueError(f"optimizer must step every trainable parameter of model; it does not hold {missing}")
        self.optimizer = optimizer
        self.weight = weight  # validated by the property setter
        self.average = check_choice("average", average, ("uniform", "exponential"))
        self.decay = check_real("decay", decay, minimum=0.0, maximum=1.0, low_open=True, high_open=True)
        self._names: List[str] = [name for name, _ in self._tracked]
        self._params: List[Tensor] = [p for _, p in self._tracked]
        self._averages: Optional[List[Tensor]] = None
        self.num_updates = 0

    @property
    def weight(self) -> float:
        """λ, the weight of the penalty (may be changed between steps)."""
        return self._weight

    @weight.setter
    def weight(self, value: float) -> None:
        # A float even for an int λ: the penalty must stay a float computation.
        self._weight = check_real("weight", value, minimum=0.0, hint="the penalty's λ")

    @property
    def averages(self) -> "OrderedDict[str, Tensor]":
        """The current averages θ̄ by parameter name (empty before the first update)."""
        return OrderedDict(zip(self._names, self._averages or []))

    # ------------------------------------------------------------------------------------------------------
    def _set_up(self, engine: Engine, name: Optional[str], attached: bool) -> List[Removable]:
        # Besides recording at `event`: the published penalty and the optimizer hook.
        if hasattr(engine.state, name):
            advice = f"pass a different name, e.g. name='{name}_generator'"
            raise ValueError(f"engine.state already has an attribute {name!r} (another handler's?); "
                             + (advice if attached else "register it with attach(engine, name=...) instead"))
        setattr(engine.state, name, 0.0)
        return [] if self.optimizer is None else [self.optimizer.register_step_pre_hook(self._step_pre_hook)]

    def _on_event(self, engine: Engine) -> None:
        self.update(iteration=engine.state.iteration)

    # ------------------------------------------------------------------------------------------------------
    def update(self, iteration: Optional[int] = None) -> None:
        """Add the current parameter values to the average (what ``event`` triggers).

        Args:
            iteration: the engine's iteration, only for the message of the errors below.

        Raises:
            ValueError: a parameter holds NaN or infinity (the average would keep it for good), or the model's
                trainable parameters are no longer those the handler was built with.
        """
        check_same_trainable("HistoricalAveraging", self.model, self._tracked)
        when = f"iteration {iteration}" if iteration is not None else f"update {self.num_updates + 1}"
        check_finite_parameters("HistoricalAveraging", self._tracked, when)
        self.num_updates += 1
        with torch.no_grad():
            if self._averages is None:
                self._averages = [p.detach().clone() for p in self._params]
                return
            fraction = 1.0 / self.num_updates if self.average == "uniform" else 1.0 - self.decay
            for index, param in enumerate(self._params):
                # the average follows the parameter's device and dtype (.to() returns it as is when they agree)
                avg = self._averages[index] = self._averages[index].to(device=param.device, dtype=param.dtype)
                avg.lerp_(param.detach(), fraction)  # θ̄ + fraction·(θ - θ̄)

    def penalty(self) -> Tensor:
        """``λ Σ ||θ - θ̄||²`` with the gradient flowing into θ only; zero before the first update.

        For process functions that add the term to the loss themselves (build the handler without an optimizer,
        or the penalty is counted twice).
        """
        check_same_trainable("HistoricalAveraging", self.model, self._tracked)
        if self._averages is None:
            value = torch.zeros((), dtype=self._params[0].dtype, device=self._params[0].device)
        else:
            value = self._weight * historical_average_penalty(self._params, self._averages)
        self._publish(value.detach())
        return value

    def _publish(self, value: Tensor) -> None:
        # Published at once rather than by a handler of its own, so readers need not be registered after one.
        if self.engine is not None and self.state_name is not None:
            setattr(self.engine.state, self.state_name, value)

    def _step_pre_hook(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        check_same_trainable("HistoricalAveraging", self.model, self._tracked)
        if self._averages is None:
            return None
        # autograd of λ·Σ(θ - θ̄)² gives λ·(2·(θ - θ̄)); doubling is exact, so (2λ)·(θ - θ̄) below is bitwise the
        # gradient a hand-written penalty term would add. Multiply, then add: add_(alpha=) may fuse and round once.
        scale = 2.0 * self._weight
        with torch.no_grad():
            terms = []
            for param, avg in zip(self._params, self._averages):
                diff = param - avg.to(device=param.device, dtype=param.dtype)
                grad = diff * scale
                if param.grad is None:
                    param.grad = grad
                else:
                    param.grad.add_(grad)
                terms.append(diff.square().sum())
            self._publish(sum(terms) * self._weight)  # sum starts from the int 0: the same bits as t0 + t1 + ...

    # ------------------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The number of updates and the averages by parameter name (``None`` before the first update)."""
        averages = None if self._averages is None else OrderedDict((k, v.detach()) for k, v in self.averages.items())
        return {"num_updates": self.num_updates, "averages": averages}

    def _load_state(self, state_dict: Mapping[str, Any]) -> None:
        # the averages move to the parameters' devices
        num_updates, averages = self._loaded_average(state_dict, "averages")
        if averages is None and num_updates != 0:
            raise ValueError(f"state_dict['averages'] is None but num_updates is {num_updates}")
        if averages is not None:
            check_state_keys(averages, self._names, "state_dict['averages']")
            averages = [check_tensor_shape(f"state_dict['averages'][{name!r}]", averages[name], param.shape).detach()
                        .to(device=param.device, dtype=param.dtype).clone() for name, param in self._tracked]
        self._averages, self.num_updates = averages, num_updates


def attach_historical_averaging(
    engine: Engine, players: Mapping[str, Tuple[nn.Module, Optimizer]], weight: float
) -> Dict[str, HistoricalAveraging]:
    """Historical averaging on the cost of each player, with its optimizer, attached to ``engine``.

    Player ``p``'s penalty is in ``engine.state.historical_penalty_<p>``. The handlers are created and attached in
    the order of ``players``.

    Args:
        engine: the trainer.
        players: ``{name: (model, optimizer)}``, e.g. ``{"d": (discriminator, d_opt), "g": (generator, g_opt)}``.
        weight: λ of every player's penalty.

    Returns:
        ``{"historical_averaging_<name>": handler}``, to put in a checkpoint's ``to_save``.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> d, g = torch.nn.Linear(2, 1), torch.nn.Linear(2, 2)
        >>> players = {"d": (d, torch.optim.SGD(d.parameters(), lr=0.1)),
        ...            "g": (g, torch.optim.SGD(g.parameters(), lr=0.1))}
        >>> handlers = attach_historical_averaging(Engine(lambda engine, batch: None), players, weight=1e-2)
        >>> sorted(handlers)
        ['historical_averaging_d', 'historical_averaging_g']
    """
    check_instance("players", players, Mapping, "a mapping name -> (model, optimizer)")
    handlers: Dict[str, HistoricalAveraging] = {}
    for player, (model, optimizer) in players.items():
        handler = HistoricalAveraging(model, weight=weight, optimizer=optimizer)
        handler.attach(engine, name=f"{HistoricalAveraging.default_name}_{player}")
        handlers[f"historical_averaging_{player}"] = handler
    return handlers
