"""The registration protocol every handler of :mod:`ignite_igan.handlers` shares, written once.

A handler is attached with ``handler.attach(engine, event)`` or registered like any Ignite handler with
``engine.add_event_handler(event, handler)``: both run the same event logic, so they train alike. The callable's
first call from an engine does the set-up ``attach`` does at once (an ``engine.state`` attribute, an optimizer
hook), under the class's default ``engine.state`` name. A handler acts once per event: registering it twice with
one engine is refused, and so is a second engine for a handler whose state belongs to one run.

Example:
    >>> from ignite.engine import Engine, Events
    >>> class Count(Handler):
    ...     twice, state_keys = "count twice", ("count",)
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.count = 0
    ...     def _on_event(self, engine):  # the event logic
    ...         self.count += 1
    ...     def _load_state(self, state_dict):
    ...         self.count = state_dict["count"]
    >>> counter, trainer = Count(), Engine(lambda engine, batch: None)
    >>> counter.attach(trainer)
    >>> _ = trainer.run([0, 1, 2])
    >>> counter.state_dict()
    {'count': 3}
    >>> counter(trainer)
    Traceback (most recent call last):
    ...
    ValueError: engine already has this Count attached with attach(); registering it as an event handler as well ...
"""
from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ignite.engine import CallableEventWithFilter, Engine, Events, EventsList
from ignite.engine.events import RemovableEventHandle
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ignite_igan.validation import (
    check_finite_state, check_identifier, check_instance, check_int, check_state_keys,
    check_trainable,
)

__all__ = ["AveragingHandler", "Handler"]

EventType = Union[str, Events, CallableEventWithFilter, EventsList]
Removable = Union[RemovableEventHandle, RemovableHandle]  # what detach removes: event handlers, torch hooks

# What registering a handler again says, by (how it is registered, how again); each ends "... would <twice>".
_TWICE = {
    ("attach", "attach"): "attached; attaching it twice",
    ("attach", "call"): "attached with attach(); registering it as an event handler as well",
    ("call", "attach"): "registered as an event handler (engine.add_event_handler(event, handler)); use attach() or "
                        "the callable, not both, or it",
}


class Handler(ABC):
    """Base of the package's handlers: ``attach``, the callable form, ``detach`` and the checked state.

    A subclass gives its event logic (``_on_event``), optionally the set-up that precedes it
    (``_set_up``, whose handles :meth:`detach` removes), its state (:meth:`state_dict`, ``_load_state`` and
    :attr:`state_keys`), and these class attributes:

    Attributes:
        default_event: the event ``attach`` uses when given none.
        default_name: the ``engine.state`` attribute the handler publishes by default; None if it publishes none.
        twice: what acting twice per event would do, completing "... would ...".
        one_engine: why the handler serves one engine only (its state belongs to one run); "" if several engines
            may share it.
        state_keys: the keys of :meth:`state_dict`: by default the attributes of these names.
    """

    default_event: EventType = Events.ITERATION_COMPLETED
    default_name: Optional[str] = None
    twice: str = "act twice per event"
    one_engine: str = ""
    state_keys: Sequence[str] = ()

    def __init__(self) -> None:
        # engine -> (how it was registered, the handles the set-up added); weak, so a finished trainer can go
        self._engines: "weakref.WeakKeyDictionary[Engine, Tuple[str, List[Removable]]]" = (
            weakref.WeakKeyDictionary()
        )
        self.state_name: Optional[str] = None  # the engine.state attribute in use, once registered

    # ------------------------------------------------------------------------------------------------------
    def attach(self, engine: Engine, event: Optional[EventType] = None, name: Optional[str] = None) -> None:
        """Run the handler at ``event`` (filtered events allowed), after the set-up of the class.

        Args:
            engine: the trainer (or evaluator).
            event: when the handler acts; the class's :attr:`default_event` if None.
            name: the ``engine.state`` attribute the handler publishes, for the handlers that publish one (its
                :attr:`default_name` if None); give each of two such handlers on one engine its own.
        """
        self._refuse_twice(engine, "attach")
        if name is not None and self.default_name is None:
            raise TypeError(f"{type(self).__name__} publishes nothing in engine.state: attach takes no name")
        name = self.default_name if name is None else check_identifier("name", name)
        handles = self._set_up(engine, name, True)
        handles.append(engine.add_event_handler(self.default_event if event is None else event, self._on_event))
        self._engines[engine], self.state_name = ("attach", handles), name

    def __call__(self, engine: Engine) -> None:
        """Act at the event it was registered for (``engine.add_event_handler(event, handler)``); the first call
        from an engine does ``attach``'s set-up with the default ``engine.state`` name."""
        if engine not in self._engines:  # the first call from this engine
            self._refuse_twice(engine, "call")
            handles = self._set_up(engine, self.default_name, False)
            self._engines[engine], self.state_name = ("call", handles), self.default_name
        elif self._engines[engine][0] == "attach":
            self._refuse_twice(engine, "call")
        self._on_event(engine)

    def detach(self, engine: Engine) -> None:
        """Undo :meth:`attach` (or the callable's set-up: the callable itself is removed with
        ``engine.remove_event_handler(handler, event)``)."""
        _, handles = self._engines.pop(engine, ("", []))
        for handle in handles:
            handle.remove()
        if self.state_name is not None and hasattr(engine.state, self.state_name):
            delattr(engine.state, self.state_name)
        self.state_name = None

    @property
    def engine(self) -> Optional[Engine]:
        """The engine the handler serves (a live one, for the handlers that serve one engine), else None."""
        return next(iter(self._engines.keys()), None)

    def _refuse_twice(self, engine: Engine, how: str) -> None:
        # how: "attach" or "call", the registration about to be made
        check_instance("engine", engine, Engine, "an ignite.engine.Engine")
        registered = self._engines.get(engine, ("",))[0]
        if how == "attach" and engine.has_event_handler(self):  # registered as a callable, not yet called
            registered = registered or "call"
        owner = type(self).__name__
        if registered:
            raise ValueError(f"engine already has this {owner} {_TWICE[registered, how]} would {self.twice}")
        if self.one_engine and any(other is not engine for other in self._engines.keys()):
            raise ValueError(f"engine is not the engine this {owner} is registered with, and it serves one engine "
                             f"only: {self.one_engine}. Build one {owner} per engine")

    # --- what a subclass gives ---------------------------------------------------------------------------------
    def _set_up(self, engine: Engine, name: Optional[str], attached: bool) -> List[Removable]:
        """Before the first event, with the ``engine.state`` name to publish: ``attach`` calls it at once
        (``attached=True``), the callable at its first call. It returns the handles of what it registered (event
        handlers, optimizer hooks), which :meth:`detach` removes."""
        return []

    @abstractmethod
    def _on_event(self, engine: Engine) -> None:
        """What the handler does at its event."""

    # --- state -------------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """What a resumed run needs, for :class:`ignite.handlers.Checkpoint`: by default the attributes named by
        :attr:`state_keys`."""
        return {key: getattr(self, key) for key in self.state_keys}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (its keys are checked, then each value)."""
        self._load_state(check_state_keys(state_dict, self.state_keys))

    @abstractmethod
    def _load_state(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state whose keys were checked (each value is the subclass's to check)."""

    def _finite_entry(self, state_dict: Mapping[str, Any], key: str) -> Any:
        """``state_dict[key]``, refused if it holds NaN or infinity: at loading, not later in training, where the
        failure would be blamed on the run's own divergence."""
        check_finite_state(f"{type(self).__name__}.load_state_dict", f"state_dict[{key!r}]", state_dict[key])
        return state_dict[key]


class AveragingHandler(Handler):
    """Base of the handlers that average a model's trainable parameters over their updates
    (:class:`~ignite_igan.handlers.HistoricalAveraging`, :class:`~ignite_igan.handlers.EvaluationAveraging`): the
    model checked once, the parameters it averages (those trainable when the handler is built) and the checked
    count and average of a loaded state.

    A subclass reads ``self.model`` (unwrapped) and ``self._tracked``, the ``(name, parameter)`` pairs it averages,
    and loads its state through ``self._loaded_average(state_dict, key)``.

    Args:
        model: the model (``DistributedDataParallel``/``DataParallel`` are unwrapped); it must have a trainable
            parameter.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> class RunningMean(AveragingHandler):  # the uniform mean of the parameters, as one vector
        ...     state_keys = ("num_updates", "mean")
        ...     def __init__(self, model):
        ...         super().__init__(model)
        ...         self.num_updates, self.mean = 0, None
        ...     def _on_event(self, engine):
        ...         value = torch.cat([p.detach().flatten() for _, p in self._tracked])
        ...         self.num_updates += 1
        ...         self.mean = value if self.mean is None else self.mean + (value - self.mean) / self.num_updates
        ...     def _load_state(self, state_dict):
        ...         self.num_updates, self.mean = self._loaded_average(state_dict, "mean")
        >>> handler = RunningMean(torch.nn.Linear(2, 1))
        >>> trainer = Engine(lambda engine, batch: None)
        >>> handler.attach(trainer)
        >>> _ = trainer.run([0, 1, 2])
        >>> handler.num_updates, handler.mean.shape
        (3, torch.Size([3]))
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = unwrap(check_instance("model", model, nn.Module, "a torch.nn.Module"))
        # (name, parameter) of the parameters trainable when the handler is built
        self._tracked: List[Tuple[str, Tensor]] = check_trainable("model", self.model, " to average")

    def _loaded_average(self, state_dict: Mapping[str, Any], key: str) -> Tuple[int, Any]:
        """The update count and the average ``state_dict[key]`` of a state to load, checked."""
        count = check_int("state_dict['num_updates']", state_dict["num_updates"], minimum=0)
        return count, self._finite_entry(state_dict, key)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel``/``DataParallel``, else ``model``: what a handler acts on."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model
