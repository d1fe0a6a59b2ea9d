"""The package's checks of numeric arguments and of state loaded from outside, in one place.

Every public function, layer, handler, metric, engine factory, optimizer and data helper of the package checks its
numeric arguments through this module, so that a wrong one gets the same kind of error everywhere:

- Python and NumPy numbers are accepted alike (``np.int64(2)`` where an int is valid, ``np.float32(0.5)`` where a
  float is), and returned as Python ``int``/``float``: an integer-valued hyperparameter (``weight=1``) never turns
  a float computation into an integer one.
- Strings, booleans and other objects are refused with :class:`ArgumentTypeError`, before any comparison could
  fail with Python's ``'>' not supported between 'str' and 'int'``.
- NaN and infinities are refused unless the caller says an infinite value is meaningful (``finite=False``):
  ``eps=inf`` or ``std=inf`` would not fail, they would give degenerate numbers.
- The message names the argument, what it got (type and value) and what was expected.

:class:`ArgumentTypeError` is both a :class:`TypeError` (the kind of the value is wrong) and a :class:`ValueError`
(the value of the argument is wrong), so that code catching either keeps working.

:func:`check_finite_state` is the check of tensors loaded from outside (a handler's ``load_state_dict``): NaN or
infinity there is refused at load time, naming the entry, rather than surfacing later as a diverging run.

:func:`check_fields` checks every field of a configuration dataclass against its annotation at once.

Example:
    >>> import numpy as np
    >>> check_int("splits", np.int64(2), minimum=1)
    2
    >>> type(check_real("weight", 1, minimum=0.0))
    <class 'float'>
    >>> check_real("eps", "1e-5", minimum=0.0, low_open=True)
    Traceback (most recent call last):
    ...
    ignite_igan.validation.ArgumentTypeError: eps must be a real number, got str '1e-5'
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "ArgumentTypeError",
    "check_bool",
    "check_fields",
    "check_finite_state",
    "check_int",
    "check_optimizer_state",
    "check_real",
    "describe",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong kind (a string where a number belongs, a bool where an int belongs, ...)."""


def describe(value: Any) -> str:
    """``"<type> <repr>"`` of ``value``, shortened: what an error message says it got."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def _interval(
    minimum: Optional[float], maximum: Optional[float], low_open: bool, high_open: bool
) -> str:
    def text(bound: float) -> str:
        return str(bound) if isinstance(bound, int) else f"{bound:g}"

    if minimum is not None and maximum is not None:
        return f"in {'(' if low_open else '['}{text(minimum)}, {text(maximum)}{')' if high_open else ']'}"
    if minimum is not None:
        return f"{'>' if low_open else '>='} {text(minimum)}"
    if maximum is not None:
        return f"{'<' if high_open else '<='} {text(maximum)}"
    return ""


def _unwrap_scalar(value: Any, allow_tensor: bool) -> Any:
    # A one-element tensor is a number to a user who reads it from a scheduler or a state; only where the caller
    # allows it (elsewhere a tensor is most likely a mistake of argument order).
    if allow_tensor and isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad:
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value


def check_real(
    name: str,
    value: Any,
    *,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    allow_none: bool = False,
    allow_tensor: bool = False,
    hint: str = "",
) -> Optional[float]:
    """``value`` as a Python float, checked to be a real number in the given range.

    Args:
        name: the argument's name, as the caller's signature spells it.
        value: what was passed: a Python or NumPy real number (ints included), or a 0-d NumPy array.
        minimum: lower bound, or None for none.
        maximum: upper bound, or None for none.
        low_open: the lower bound itself is excluded.
        high_open: the upper bound itself is excluded.
        finite: refuse ±inf (NaN is always refused).
        allow_none: None is passed through (an optional argument).
        allow_tensor: a one-element tensor (without gradient) counts as its number.
        hint: appended to the range error (e.g. the reference's value).

    Returns:
        ``float(value)``, or None when ``value`` is None and ``allow_none``.

    Raises:
        ArgumentTypeError: not a real number (a string, a bool, a tensor, None where it is not allowed, ...).
        ValueError: NaN, an infinity where ``finite``, or outside the range.
    """
    bounds = _interval(minimum, maximum, low_open, high_open)
    none = " or None" if allow_none else ""
    if value is None and allow_none:
        return None
    value = _unwrap_scalar(value, allow_tensor)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a real number{none}, got {describe(value)}")
    number = float(value)
    outside = math.isnan(number)
    if minimum is not None:
        outside = outside or (number <= minimum if low_open else number < minimum)
    if maximum is not None:
        outside = outside or (number >= maximum if high_open else number > maximum)
    infinite = finite and math.isinf(number)
    if outside or infinite:
        # "in (0, 1], got nan" says it all; an infinity inside the bounds needs the word "finite".
        expected = bounds if outside and bounds else "a finite number" + (f" {bounds}" if bounds else "")
        raise ValueError(f"{name} must be {expected}{none}" + (f" ({hint})" if hint else "") + f", got {value!r}")
    return number


def check_int(
    name: str,
    value: Any,
    *,
    minimum: Optional[int] = None,
    maximum: Optional[int] = None,
    allow_none: bool = False,
    hint: str = "",
) -> Optional[int]:
    """``value`` as a Python int, checked to be an integer in ``[minimum, maximum]``.

    Python and NumPy integers are accepted; floats (even ``2.0``), strings and booleans are not.

    Args:
        name: the argument's name.
        value: what was passed.
        minimum: lower bound (inclusive), or None.
        maximum: upper bound (inclusive), or None.
        allow_none: None is passed through.
        hint: appended to the range error.

    Returns:
        ``int(value)``, or None when ``value`` is None and ``allow_none``.

    Raises:
        ArgumentTypeError: not an integer.
        ValueError: outside the range.
    """
    bounds = _interval(minimum, maximum, False, False)
    none = " or None" if allow_none else ""
    if value is None and allow_none:
        return None
    value = _unwrap_scalar(value, False)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an int{none}, got {describe(value)}")
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{name} must be {bounds}{none}" + (f" ({hint})" if hint else "") + f", got {number}")
    return number


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a Python bool; only ``True``, ``False`` and NumPy booleans are accepted (not 0, 1 or "yes").

    Raises:
        ArgumentTypeError: anything else.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ArgumentTypeError(f"{name} must be a bool (True or False), got {describe(value)}")


def _tensors(value: Any, prefix: str) -> Iterable[Tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _tensors(item, f"{prefix}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{prefix}[{index}]")


def check_optimizer_state(owner: str, optimizer: torch.optim.Optimizer, state_dict: Any) -> None:
    """Refuses an optimizer state that belongs to other parameters, before any of it is loaded.

    :meth:`torch.optim.Optimizer.load_state_dict` checks the number of groups and of parameters per group only;
    another model's state with as many parameters loads, and fails at the first step with a shape error that names
    no parameter. This checks, for every parameter, that each of its state tensors that is not a scalar (Adam's
    moments, SGD's momentum buffer) has the parameter's shape.

    Args:
        owner: who is loading, for the message (e.g. ``"load_latest_checkpoint('.../checkpoint_3.pt')"``).
        optimizer: the optimizer about to load ``state_dict``.
        state_dict: what :meth:`torch.optim.Optimizer.state_dict` returned.

    Raises:
        ValueError: not an optimizer state, or one of other parameters; the message names the parameter
            (group and index) with both shapes.
    """
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
        got = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
        raise ValueError(f"{owner}: not an optimizer state (expected the keys ['param_groups', 'state']), got {got}")
    groups, saved_groups = optimizer.param_groups, state_dict["param_groups"]
    sizes = [len(group["params"]) for group in groups]
    saved_sizes = [len(group.get("params", ())) for group in saved_groups]
    if sizes != saved_sizes:
        raise ValueError(
            f"{owner}: the optimizer state is of other parameters: {saved_sizes} parameters per group, this "
            f"optimizer has {sizes}"
        )
    state = state_dict["state"]
    for group_index, (group, saved) in enumerate(zip(groups, saved_groups)):
        for position, (param, key) in enumerate(zip(group["params"], saved["params"])):
            for name, value in (state.get(key) or {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise ValueError(
                        f"{owner}: the optimizer state is of other parameters: its {name!r} for parameter {position} "
                        f"of group {group_index} has shape {tuple(value.shape)}, the parameter has "
                        f"{tuple(param.shape)}. Load the state saved with this model"
                    )


def check_finite_state(owner: str, name: str, value: Any) -> None:
    """Refuses NaN or infinity in the tensors of ``value`` (nested mappings and sequences), loaded from outside.

    Call it in ``load_state_dict`` of anything whose state must be finite to be meaningful (averages, reference
    batches): training on such a state would stop later, blaming the run's own divergence.

    Args:
        owner: who is loading, for the message (e.g. ``"HistoricalAveraging.load_state_dict"``).
        name: the entry's name in the state dict (e.g. ``"state_dict['averages']"``).
        value: a tensor, or mappings/sequences of them.

    Raises:
        ValueError: naming each entry with non-finite values and how many there are.
    """
    bad = []
    for where, tensor in _tensors(value, name):
        if tensor.is_floating_point() or tensor.is_complex():
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad.append(f"{where} ({count} of {tensor.numel()} values)")
    if bad:
        raise ValueError(
            f"{owner}: the loaded state holds NaN or infinity in {', '.join(bad[:5])}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            + "; it comes from a diverged or damaged run. Load a state saved before the divergence"
        )


_KINDS = {bool: "a bool", int: "an int", float: "a real number", str: "a string"}


def check_fields(
    config: Any,
    minimums: Optional[Mapping[str, int]] = None,
    choices: Optional[Mapping[str, Sequence[Any]]] = None,
    ranges: Optional[Mapping[str, Tuple[float, float, bool]]] = None,
    default_minimum: int = 1,
) -> None:
    """Checks the fields of a dataclass instance (a run's configuration), in this order, at the first wrong one:

    1. every field annotated ``bool``, ``int``, ``float`` or ``str`` holds a value of that kind (a ``float`` field
       takes an ``int`` too; no field but a ``bool`` one takes a ``bool``): else a ``TypeError``;
    2. every ``int`` field is at least its minimum (``minimums[name]``, else ``default_minimum``);
    3. every field of ``choices`` is one of its choices;
    4. every field of ``ranges``, ``name: (low, high, low_closed)``, is ``None`` or in ``(low, high)`` (``[low,
       high)`` if ``low_closed``); NaN is refused.

    Fields are checked in their declaration order; other annotations (``Optional[float]``) are checked by 3 and 4
    only. Raises ``ValueError`` (``TypeError`` for 1) naming the field: ``"lr must be in (0.0, inf), got -1.0"``.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class Config:
        ...     mixture: str = "ring"
        ...     batch_size: int = 100
        ...     lr: float = 1e-3
        ...     def __post_init__(self):
        ...         check_fields(self, minimums={"batch_size": 2}, choices={"mixture": ("ring", "grid")},
        ...                      ranges={"lr": (0.0, math.inf, False)})
        >>> Config(batch_size=1)
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be >= 2, got 1
        >>> Config(lr=True)
        Traceback (most recent call last):
        ...
        TypeError: lr must be a real number, got bool True
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    minimums, choices, ranges = minimums or {}, choices or {}, ranges or {}
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        annotation = hints.get(field.name, field.type)
        value, kind = getattr(config, field.name), {float: (int, float)}.get(annotation, annotation)
        if annotation in _KINDS and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
            raise TypeError(f"{field.name} must be {_KINDS[annotation]}, got {type(value).__name__} {value!r}")
        if kind is int and value < minimums.get(field.name, default_minimum):
            raise ValueError(f"{field.name} must be >= {minimums.get(field.name, default_minimum)}, got {value}")
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"{name} must be one of {tuple(allowed)}, got {getattr(config, name)!r}")
    for name, (low, high, closed) in ranges.items():
        value = getattr(config, name)
        if value is not None and not (low < value < high or (closed and value == low)):
            raise ValueError(f"{name} must be in {'[' if closed else '('}{low}, {high}), got {value!r}")


# --- added by metrics ---
def check_points(name: str, value: Any, columns: int = 2) -> torch.Tensor:
    """``value`` if it is a finite floating-point tensor of ``columns``-dimensional points ``(N, columns)``.

    Example:
        >>> check_points("samples", torch.zeros(10, 3))
        Traceback (most recent call last):
        ...
        ValueError: samples must have shape (N, 2), got (10, 3)
    """
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        got = value.dtype if isinstance(value, torch.Tensor) else describe(value)
        raise TypeError(f"{name} must be a torch.Tensor of floating point, got {got}")
    if value.dim() != 2 or value.shape[1] != columns:
        raise ValueError(f"{name} must have shape (N, {columns}), got {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or inf")
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a ``ValueError`` that names them.

    Example:
        >>> check_choice("mode", "test", ("eval", "train"))
        Traceback (most recent call last):
        ...
        ValueError: mode must be 'eval' or 'train', got 'test'
    """
    if value not in choices:
        raise ValueError(f"{name} must be {' or '.join(repr(choice) for choice in choices)}, got {value!r}")
    return value
