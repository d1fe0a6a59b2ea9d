"""One-sided label smoothing (Salimans et al., 2016, §3.4) as an Ignite handler."""
from __future__ import annotations

import numbers
import weakref
from typing import Any, Dict, Mapping, Optional, Union

import torch
from ignite.engine import CallableEventWithFilter, Engine, Events, EventsList

from ignite_igan.handlers._common import Registrations

from ignite_igan.validation import ArgumentTypeError, check_real, describe

__all__ = ["OneSidedLabelSmoothing"]

_DEFAULT_NAME = "real_target"

EventType = Union[str, Events, CallableEventWithFilter, EventsList]

_TWO_SIDED_REASON = (
    "two-sided label smoothing is refused: with real targets α and fake targets β the optimal discriminator is "
    "D(x) = (α·p_data(x) + β·p_model(x)) / (p_data(x) + p_model(x)); the p_model term in the numerator means that "
    "where p_data is near zero and p_model is large, bad samples get no incentive to move towards the data "
    "(Salimans et al., 2016, §3.4). Only the real targets are smoothed; the fake targets stay 0"
)


def _as_target(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return check_real(
        name, value, minimum=0.0, maximum=1.0, low_open=True,
        hint="1 = no smoothing; the paper's ImageNet code used 0.75",
    )


class OneSidedLabelSmoothing:
    """Owns the discriminator's target for real data; fake data keeps the target 0 (paper §3.4).

    :meth:`attach` writes the target to ``engine.state.<name>`` (default ``engine.state.real_target``) at once and
    again at :attr:`Events.STARTED` (so a resumed run starts from the checkpointed value). The process function
    reads it, e.g. ``one_sided_label_smoothing_loss(real_logits, fake_logits, engine.state.real_target)`` or
    ``torch.full_like(real_logits, engine.state.real_target)`` as the BCE target: that read is the only change a
    process function needs.

    The target can follow a schedule: attach one of Ignite's state parameter schedulers
    (:mod:`ignite.handlers.state_param_scheduler`, e.g. ``PiecewiseLinearStateScheduler(...,
    param_name="real_target")``) to the same attribute after this handler. At ``event`` (default
    :attr:`Events.ITERATION_STARTED`) the handler reads the attribute back, checks that it is still in (0, 1] (a
    schedule that leaves that range raises a ValueError before the value is used, provided the scheduler fires at
    ``Events.ITERATION_COMPLETED``, its default, or was attached before this handler) and keeps it, so that
    :meth:`state_dict` saves the value in force.

    The reference's ImageNet code smooths the real targets to 0.75 (``d_label_smooth = 0.25``) and trains the
    generator towards ``0.75 / 2``; 0.9 is the common default and ours.

    **attach or callable.** ``engine.add_event_handler(event, smoothing)`` reads back and checks
    ``engine.state.real_target`` at ``event``, as ``attach(engine, event)`` does; its first call publishes the
    handler's target unless the attribute already holds a value (e.g. written by a state scheduler that fired
    first). What only ``attach`` adds: the target is readable in ``engine.state`` as soon as it is attached
    (before the run), it is re-published at every :attr:`Events.STARTED` (a second run starts from the value the
    handler holds), and the attribute's name can be chosen. A handler serves one engine, once: attaching it
    twice, attaching it and registering it as a callable with the same engine, or using it with a second engine
    raises a :class:`ValueError` (its :attr:`real_target` is read back from one engine's state).

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

    def __init__(self, real_target: float = 0.9, fake_target: float = 0.0) -> None:
        if isinstance(fake_target, torch.Tensor) and fake_target.numel() == 1:
            fake_target = fake_target.item()
        if isinstance(fake_target, bool) or not isinstance(fake_target, numbers.Real):
            raise ArgumentTypeError(f"fake_target must be 0, got {describe(fake_target)}")
        if float(fake_target) != 0.0:
            raise ValueError(f"fake_target must be 0, got {fake_target!r}: {_TWO_SIDED_REASON}")
        self._real_target = _as_target("real_target", real_target)
        self._name: Optional[str] = None
        self._engine: Optional["weakref.ReferenceType[Engine]"] = None
        self._registrations = Registrations(
            "OneSidedLabelSmoothing",
            "publish and check the target twice",
            one_engine=True,
            one_engine_reason="its real_target is read back from one engine's state",
        )

    @property
    def fake_target(self) -> float:
        """Always 0, since the fake targets are never smoothed."""
        return 0.0

    @property
    def real_target(self) -> float:
        """The real target in force, the engine's value while attached, else the handler's own."""
        engine = self._engine() if self._engine is not None else None
        if engine is not None and self._name is not None:
            value = getattr(engine.state, self._name, None)
            if value is not None:
                return _as_target(f"engine.state.{self._name}", value)
        return self._real_target

    def attach(self, engine: Engine, event: EventType = Events.ITERATION_STARTED, name: str = _DEFAULT_NAME) -> None:
        """Publish the target as ``engine.state.<name>`` and validate it at ``event``.

        Args:
            engine: the trainer whose process function reads the target.
            event: when the (possibly scheduled) value is read back and checked.
            name: the ``engine.state`` attribute.
        """
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be an ignite.engine.Engine, got {type(engine).__name__}")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"name must be a valid attribute name, got {name!r}")
        self._registrations.before_attach(self, engine)
        self._name = name
        self._engine = weakref.ref(engine)
        setattr(engine.state, name, self._real_target)
        engine.add_event_handler(Events.STARTED, self._publish)
        engine.add_event_handler(event, self._check)
        self._registrations.attached(engine)

    def __call__(self, engine: Engine) -> None:
        """Read back and check ``engine.state.real_target`` (``engine.add_event_handler(event, smoothing)``); the
        first call publishes the handler's target there unless the attribute already holds one."""
        if self._registrations.on_call(engine):
            self._name = _DEFAULT_NAME
            self._engine = weakref.ref(engine)
            # A state scheduler attached before this handler may already have written this event's value.
            if getattr(engine.state, self._name, None) is None:
                self._publish(engine)
        self._check(engine)

    def _publish(self, engine: Engine) -> None:
        assert self._name is not None
        setattr(engine.state, self._name, self._real_target)

    def _check(self, engine: Engine) -> None:
        assert self._name is not None
        value = getattr(engine.state, self._name, None)
        try:
            self._real_target = _as_target(f"engine.state.{self._name}", value)
        except (TypeError, ValueError) as error:
            raise type(error)(
                f"{error} at iteration {engine.state.iteration} (is a state parameter scheduler driving it out of "
                f"range?). Only the real targets may be smoothed, to a value in (0, 1]."
            ) from error

    def state_dict(self) -> Dict[str, Any]:
        """``{"real_target": value in force}``."""
        return {"real_target": self.real_target}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the target (and write it to ``engine.state`` if attached)."""
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"real_target"}:
            got = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
            raise ValueError(f"state_dict must have the key ['real_target'], got {got}")
        self._real_target = _as_target("state_dict['real_target']", state_dict["real_target"])
        engine = self._engine() if self._engine is not None else None
        if engine is not None:
            self._publish(engine)
