"""One-sided label smoothing (Salimans et al., 2016, §3.4) as an Ignite handler."""
from __future__ import annotations

import numbers
from typing import Any, List, Mapping, Optional

import torch
from ignite.engine import Engine, Events

from ignite_igan.handlers.base import Handler, Removable
from ignite_igan.validation import ArgumentTypeError, check_real, describe

__all__ = ["OneSidedLabelSmoothing"]

_TWO_SIDED_REASON = (
    "two-sided label smoothing is refused: with real targets α and fake targets β the optimal discriminator is "
    "D(x) = (α·p_data(x) + β·p_model(x)) / (p_data(x) + p_model(x)); the p_model term in the numerator means that "
    "where p_data is near zero and p_model is large, bad samples get no incentive to move towards the data "
    "(Salimans et al., 2016, §3.4). Only the real targets are smoothed; the fake targets stay 0"
)


def _as_target(name: str, value: Any) -> float:
    return check_real(name, value, minimum=0.0, maximum=1.0, low_open=True, allow_tensor=True,
                      hint="1 = no smoothing; the paper's ImageNet code used 0.75")


class OneSidedLabelSmoothing(Handler):
    """Owns the discriminator's target for real data; fake data keeps the target 0 (paper §3.4).

    :meth:`~ignite_igan.handlers.Handler.attach` writes the target to ``engine.state.<name>`` (default
    ``engine.state.real_target``) at once and again at :attr:`Events.STARTED` (so a resumed run starts from the
    checkpointed value). The process function reads it, e.g. ``one_sided_label_smoothing_loss(real_logits, fake_logits,
    engine.state.real_target)`` or ``torch.full_like(real_logits, engine.state.real_target)`` as the BCE target: that
    read is the only change a process function needs.

    The target can follow a schedule: attach one of Ignite's state parameter schedulers
    (:mod:`ignite.handlers.state_param_scheduler`, e.g. ``PiecewiseLinearStateScheduler(...,
    param_name="real_target")``) to the same attribute after this handler. At ``event`` (default
    :attr:`Events.ITERATION_STARTED`) the handler reads the attribute back, checks that it is still in (0, 1] (a
    schedule that leaves that range raises a ValueError before the value is used, provided the scheduler fires at
    ``Events.ITERATION_COMPLETED``, its default, or was attached before this handler) and keeps it, so that
    :meth:`~ignite_igan.handlers.Handler.state_dict` saves the value in force.

    The reference's ImageNet code smooths the real targets to 0.75 (``d_label_smooth = 0.25``) and trains the
    generator towards ``0.75 / 2``; 0.9 is the common default and ours.

    **attach or callable.** ``engine.add_event_handler(event, smoothing)`` reads back and checks
    ``engine.state.real_target`` at ``event``, as ``attach(engine, event)`` does; its first call publishes the
    handler's target unless the attribute already holds a value (e.g. written by a state scheduler that fired
    first). What only ``attach`` adds: the target is readable in ``engine.state`` as soon as it is attached
    (before the run), it is re-published at every :attr:`Events.STARTED` (a second run starts from the value the
    handler holds), and the attribute's name can be chosen. A handler serves one engine, once (its
    :attr:`real_target` is read back from one engine's state).

    Args:
        real_target: the discriminator's target for real data, in (0, 1]; 1 means no smoothing.
        fake_target: must be 0. It exists only to refuse two-sided smoothing with an explanation.

    Raises:
        ValueError: ``real_target`` outside (0, 1], or ``fake_target`` other than 0 (two-sided smoothing).

    Example:
        >>> from ignite.engine import Engine, Events
        >>> from ignite_igan.handlers import OneSidedLabelSmoothing
        >>> trainer = Engine(lambda engine, batch: engine.state.real_target)
        >>> OneSidedLabelSmoothing(real_target=0.9).attach(trainer)
        >>> trainer.run([0, 1], max_epochs=1).output
        0.9
        >>> other = Engine(lambda engine, batch: engine.state.real_target)
        >>> _ = other.add_event_handler(Events.ITERATION_STARTED, OneSidedLabelSmoothing(real_target=0.8))
        >>> other.run([0, 1], max_epochs=1).output
        0.8
    """

    default_event = Events.ITERATION_STARTED
    default_name = "real_target"
    twice = "publish and check the target twice"
    one_engine = "its real_target is read back from one engine's state"
    state_keys = ("real_target",)

    def __init__(self, real_target: float = 0.9, fake_target: float = 0.0) -> None:
        super().__init__()
        if isinstance(fake_target, torch.Tensor) and fake_target.numel() == 1:
            fake_target = fake_target.item()
        if isinstance(fake_target, bool) or not isinstance(fake_target, numbers.Real):
            raise ArgumentTypeError(f"fake_target must be 0, got {describe(fake_target)}")
        if float(fake_target) != 0.0:
            raise ValueError(f"fake_target must be 0, got {fake_target!r}: {_TWO_SIDED_REASON}")
        self._real_target = _as_target("real_target", real_target)

    @property
    def fake_target(self) -> float:
        """Always 0, since the fake targets are never smoothed."""
        return 0.0

    @property
    def real_target(self) -> float:
        """The real target in force, the engine's value while attached, else the handler's own."""
        value = getattr(self.engine.state, self.state_name, None) if self.engine and self.state_name else None
        return self._real_target if value is None else _as_target(f"engine.state.{self.state_name}", value)

    def _set_up(self, engine: Engine, name: Optional[str], attached: bool) -> List[Removable]:
        # The callable leaves a value in place: a state scheduler registered before it may have written this
        # event's value already.
        if attached or getattr(engine.state, name, None) is None:
            setattr(engine.state, name, self._real_target)
        return [engine.add_event_handler(Events.STARTED, self._publish)] if attached else []

    def _publish(self, engine: Engine) -> None:
        setattr(engine.state, self.state_name, self._real_target)

    def _on_event(self, engine: Engine) -> None:
        # Read back and checked at every event: a scheduler out of (0, 1] would train on it silently.
        value = getattr(engine.state, self.state_name, None)
        try:
            self._real_target = _as_target(f"engine.state.{self.state_name}", value)
        except (TypeError, ValueError) as error:
            where = f"at iteration {engine.state.iteration} (is a state parameter scheduler driving it out of range?)"
            raise type(error)(f"{error} {where}. Only the real targets may be smoothed, to a value in (0, 1].") \
                from error

    def _load_state(self, state_dict: Mapping[str, Any]) -> None:
        # written to engine.state at once if registered
        self._real_target = _as_target("state_dict['real_target']", state_dict["real_target"])
        if self.engine is not None:
            self._publish(self.engine)
