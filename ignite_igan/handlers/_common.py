"""What the handlers share: which engines a handler serves (and how it was registered), and the finite check of
the averaging handlers.

Private: the public behaviour is documented on each handler.

Example:
    >>> import torch
    >>> from ignite_igan.handlers._common import first_non_finite
    >>> first_non_finite([("a", torch.ones(2)), ("b", torch.tensor([1.0, float("nan"), float("inf")]))])
    ('b', nan, 2)
"""
from __future__ import annotations

import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from ignite.engine import Engine
from torch import Tensor

__all__ = ["Registrations", "first_non_finite"]

_ATTACHED = "attach"
_CALLED = "call"


class Registrations:
    """The engines a handler is registered with, by ``attach`` or as a callable (``engine.add_event_handler``).

    Refuses, with a :class:`ValueError` that says why:

    - a second ``attach`` to the same engine, and ``attach`` to an engine where the handler is already registered
      as a callable (or the reverse: the callable called by an engine it was attached to), since the handler
      would then act twice per event;
    - with ``one_engine=True``, any registration with a second engine (the handler's state belongs to one run).

    Engines are held weakly, so a handler does not keep a finished trainer alive.

    Args:
        owner: the handler's class name, for messages.
        twice: what acting twice per event would do, completing "... would ...".
        one_engine: whether the handler serves one engine only.
        one_engine_reason: why, completing "it serves one engine only: ...".

    Example:
        >>> from ignite.engine import Engine
        >>> registrations = Registrations("Thing", "count twice")
        >>> engine = Engine(lambda e, b: None)
        >>> registrations.before_attach(object(), engine)
        >>> registrations.attached(engine)
        >>> registrations.before_attach(object(), engine)
        Traceback (most recent call last):
        ...
        ValueError: engine already has this Thing attached; attaching it twice would count twice
    """

    def __init__(self, owner: str, twice: str, one_engine: bool = False, one_engine_reason: str = "") -> None:
        self._owner = owner
        self._twice = twice
        self._one_engine = one_engine
        self._one_engine_reason = one_engine_reason
        self._engines: "weakref.WeakKeyDictionary[Engine, str]" = weakref.WeakKeyDictionary()

    def engines(self) -> List[Engine]:
        """The live engines the handler is registered with."""
        return list(self._engines.keys())

    def _check_other_engines(self, engine: Engine) -> None:
        if self._one_engine and any(other is not engine for other in self._engines.keys()):
            raise ValueError(
                f"engine is not the engine this {self._owner} is registered with, and it serves one engine only: "
                f"{self._one_engine_reason}. Build one {self._owner} per engine"
            )

    def before_attach(self, handler: Any, engine: Engine) -> None:
        """Raise if ``attach(engine)`` would register the handler a second time (or with a second engine)."""
        how = self._engines.get(engine)
        if how == _ATTACHED:
            raise ValueError(
                f"engine already has this {self._owner} attached; attaching it twice would {self._twice}"
            )
        if how == _CALLED or engine.has_event_handler(handler):
            raise ValueError(
                f"engine already has this {self._owner} registered as an event handler "
                f"(engine.add_event_handler(event, handler)); use attach() or the callable, not both, or it would "
                f"{self._twice}"
            )
        self._check_other_engines(engine)

    def attached(self, engine: Engine) -> None:
        """Record a successful ``attach(engine)``."""
        self._engines[engine] = _ATTACHED

    def on_call(self, engine: Engine) -> bool:
        """Record a call as an event handler; True at the first call from ``engine`` (time for lazy set-up)."""
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be an ignite.engine.Engine, got {type(engine).__name__}")
        how = self._engines.get(engine)
        if how == _CALLED:
            return False
        if how == _ATTACHED:
            raise ValueError(
                f"engine already has this {self._owner} attached with attach(); registering it as an event handler "
                f"as well would {self._twice}"
            )
        self._check_other_engines(engine)
        self._engines[engine] = _CALLED
        return True

    def remove(self, engine: Engine) -> None:
        """Forget ``engine`` (after a detach)."""
        self._engines.pop(engine, None)


def first_non_finite(named_tensors: Sequence[Tuple[str, Tensor]]) -> Optional[Tuple[str, float, int]]:
    """``(name, first non-finite value, number of non-finite entries)`` of the first tensor holding NaN or
    infinity, or None when all are finite.

    The common case (all finite) costs one ``isfinite().all()`` per tensor and one host transfer per device: the
    per-tensor flags are reduced on their device before being read.
    """
    flags: Dict[torch.device, List[Tensor]] = {}
    for _, tensor in named_tensors:
        flags.setdefault(tensor.device, []).append(torch.isfinite(tensor.detach()).all())
    if all(bool(torch.stack(group).all()) for group in flags.values()):
        return None
    for name, tensor in named_tensors:
        bad = ~torch.isfinite(tensor.detach())
        if bool(bad.any()):
            return name, float(tensor.detach()[bad].flatten()[0]), int(bad.sum())
    return None  # pragma: no cover - the flags said otherwise
