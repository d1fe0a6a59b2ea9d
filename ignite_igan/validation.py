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

The module's sections: numbers; sequences and tensors; modules and optimizers; state loaded from outside and
configurations.

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
import os
import typing
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

__all__ = ["ArgumentTypeError", "check_bool", "check_choice", "check_device", "check_fields",
           "check_finite_parameters", "check_finite_state", "check_identifier", "check_indices", "check_input_dtype",
           "check_instance", "check_int", "check_int_list", "check_int_tuple", "check_mapping", "check_methods",
           "check_optimizer_state", "check_path", "check_players", "check_points", "check_real",
           "check_same_trainable", "check_state_keys", "check_statistics", "check_string", "check_strings",
           "check_tensor_shape", "check_trainable", "describe"]


# ---------------------------------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------------------------------
class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong kind (a string where a number belongs, a bool where an int belongs, ...)."""


def describe(value: Any) -> str:
    """``"<type> <repr>"`` of ``value``, shortened: what an error message says it got."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def _interval(minimum: Optional[float], maximum: Optional[float], low_open: bool, high_open: bool) -> str:
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


def _is_integer(value: Any) -> bool:
    # numbers.Integral covers Python's int and NumPy's integer types (NumPy registers them); a bool is an Integral
    # too, but True where a count belongs is a mistake.
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (numbers.Real, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _within(
    name: str, number: Any, got: Any, minimum: Optional[float], maximum: Optional[float], low_open: bool,
    high_open: bool, finite: bool, allow_none: bool, hint: str,
) -> Any:
    """``number``, checked to lie in the range (and to be finite where ``finite``): the range check and message of
    :func:`check_real` and :func:`check_int`; ``got`` is the value the message shows."""
    outside = number != number  # NaN is outside every range (an int never is NaN)
    if minimum is not None:
        outside = outside or (number <= minimum if low_open else number < minimum)
    if maximum is not None:
        outside = outside or (number >= maximum if high_open else number > maximum)
    if outside or (finite and math.isinf(number)):
        bounds, none = _interval(minimum, maximum, low_open, high_open), " or None" if allow_none else ""
        # "in (0, 1], got nan" says it all; an infinity inside the bounds needs the word "finite".
        expected = bounds if outside and bounds else "a finite number" + (f" {bounds}" if bounds else "")
        raise ValueError(f"{name} must be {expected}{none}" + (f" ({hint})" if hint else "") + f", got {got!r}")
    return number


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
    if value is None and allow_none:
        return None
    value = _unwrap_scalar(value, allow_tensor)
    if not _is_real(value):
        none = " or None" if allow_none else ""
        raise ArgumentTypeError(f"{name} must be a real number{none}, got {describe(value)}")
    return _within(name, float(value), value, minimum, maximum, low_open, high_open, finite, allow_none, hint)


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
    if value is None and allow_none:
        return None
    value = _unwrap_scalar(value, False)
    if not _is_integer(value):
        raise ArgumentTypeError(f"{name} must be an int{' or None' if allow_none else ''}, got {describe(value)}")
    number = int(value)  # compared as an int: a float would round seeds beyond 2**53
    return _within(name, number, number, minimum, maximum, False, False, False, allow_none, hint)


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a Python bool; only ``True``, ``False`` and NumPy booleans are accepted (not 0, 1 or "yes").

    Raises:
        ArgumentTypeError: anything else.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ArgumentTypeError(f"{name} must be a bool (True or False), got {describe(value)}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` itself, checked to be one of ``choices``.

    Example:
        >>> check_choice("average", "mean", ("uniform", "exponential"))
        Traceback (most recent call last):
        ...
        ValueError: average must be one of ('uniform', 'exponential'), got 'mean'
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_identifier(name: str, value: Any) -> str:
    """``value``, checked to be a valid attribute name (for ``engine.state.<value>``)."""
    if not isinstance(value, str) or not value.isidentifier():
        raise ValueError(f"{name} must be a valid attribute name, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# Sequences and tensors
# ---------------------------------------------------------------------------------------------------------------------
def _entries(name: str, value: Any, kind: str, entry: Callable[[str, Any], Any]) -> List[Any]:
    """The entries of ``value`` (a sequence or a 1-d NumPy array, not a string; else refused as not ``kind``), each
    checked by ``entry(f"{name}[{i}]", item)``: what the checks of sequences share."""
    if isinstance(value, np.ndarray) and value.ndim == 1:  # a NumPy vector is a sequence to its user
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ArgumentTypeError(f"{name} must be {kind}, got {describe(value)}")
    return [entry(f"{name}[{i}]", item) for i, item in enumerate(value)]


def check_int_tuple(
    name: str, value: Any, *, minimum: Optional[int] = None, length: Optional[int] = None, repeat_int: bool = False
) -> Tuple[int, ...]:
    """``value``, a non-empty sequence (layer widths, say), as a tuple of Python ints checked by :func:`check_int`.

    Args:
        name: the argument's name; an entry is named ``name[i]`` in the message.
        value: what was passed: a list or tuple of Python or NumPy integers.
        minimum: lower bound of every entry (inclusive), or None.
        length: the number of entries required, or None for any number of at least one.
        repeat_int: a single int stands for ``length`` copies of itself, as torch's convolutions take a kernel
            size, a stride or a padding.

    Raises:
        ArgumentTypeError: not a sequence (a string is not one), or an entry that is not an int.
        ValueError: empty, not of ``length`` entries, or an entry below ``minimum``.

    Example:
        >>> check_int_tuple("widths", [96, np.int64(192)], minimum=1, length=2)
        (96, 192)
        >>> check_int_tuple("stride", 2, minimum=1, length=2, repeat_int=True)
        (2, 2)
        >>> check_int_tuple("hidden", (500, 0), minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: hidden[1] must be >= 1, got 0
    """
    if repeat_int and length is not None and _is_integer(value):
        value = (value,) * length
    kind = "an int or a sequence of ints" if repeat_int else "a sequence of ints"
    entries = _entries(name, value, kind, lambda key, item: check_int(key, item, minimum=minimum))
    if not entries or (length is not None and len(entries) != length):
        expected = "at least one entry" if length is None else f"{length} entries"
        raise ValueError(f"{name} must have {expected}, got {len(entries)}: {tuple(entries)!r}")
    return tuple(entries)


def check_indices(
    name: str,
    values: Any,
    *,
    size: Optional[int] = None,
    unique: bool = False,
    allow_empty: bool = True,
    hint: str = "",
) -> np.ndarray:
    """``values`` (a tensor, array or sequence of integers) as a 1-D int64 NumPy array of indices into ``size`` items.

    Args:
        name: the argument's name.
        values: what was passed.
        size: the indices must lie in ``[0, size)``; None: they must be >= 0.
        unique: refuse repeated indices.
        allow_empty: accept an empty sequence.
        hint: what ``size`` is, for the range error (e.g. ``"the dataset's size"``).

    Raises:
        ArgumentTypeError: not integers.
        ValueError: not 1-D, empty where not allowed, outside the range or repeated.

    Example:
        >>> check_indices("labeled_indices", [3, 0], size=4)
        array([3, 0])
        >>> check_indices("labeled_indices", [3, 4], size=4, hint="the dataset's size")
        Traceback (most recent call last):
        ...
        ValueError: labeled_indices must lie in [0, 4) (the dataset's size), got values in [3, 4]
    """
    array = np.asarray(values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ArgumentTypeError(f"{name} must hold integers, got dtype {array.dtype}")
    if not array.size and not allow_empty:
        raise ValueError(f"{name} must hold at least one index, got an empty sequence")
    low, high = (int(array.min()), int(array.max())) if array.size else (0, -1)
    if low < 0 or (size is not None and high >= size):
        expected = f"lie in [0, {size})" + (f" ({hint})" if hint else "") if size is not None else "be >= 0"
        raise ValueError(f"{name} must {expected}, got values in [{low}, {high}]")
    repeats = array.size - np.unique(array).size if unique else 0
    if repeats:
        raise ValueError(f"{name} must not repeat an index, got {repeats} repeats")
    return array.astype(np.int64, copy=False)


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


def check_statistics(name_mu: str, mu: Any, name_sigma: str, sigma: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """A Gaussian's mean and covariance from outside (``frechet_distance``, ``FeatureStatistics``), as tensors.

    NumPy arrays are taken as tensors; the mean must be a finite non-empty ``(D,)`` vector of real numbers and the
    covariance a finite ``(D, D)`` matrix of them.

    Raises:
        TypeError: not a tensor or array of real numbers.
        ValueError: NaN or infinity, or a shape other than ``(D,)`` and ``(D, D)``.
    """
    mu, sigma = (torch.as_tensor(value) if isinstance(value, np.ndarray) else value for value in (mu, sigma))
    for name, value in ((name_mu, mu), (name_sigma, sigma)):
        dtype = value.dtype if isinstance(value, torch.Tensor) else None
        if dtype is None or not (dtype.is_floating_point or dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a torch.Tensor (or a NumPy array) of real numbers, got {describe(value)}")
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} must be finite, got NaN or inf")
    d = mu.shape[0] if mu.ndim == 1 else 0
    if d == 0:
        raise ValueError(f"{name_mu} must be a non-empty 1-D mean vector (D,), got shape {tuple(mu.shape)}")
    if tuple(sigma.shape) != (d, d):
        raise ValueError(f"{name_sigma} must be a ({d}, {d}) covariance matching {name_mu}, got shape "
                         f"{tuple(sigma.shape)}")
    return mu, sigma


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The low-precision dtype of the ``torch.autocast`` region active for ``device_type``, or None outside one."""
    try:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    except (RuntimeError, TypeError, ValueError):  # a device type autocast does not know
        return None


def check_input_dtype(x: torch.Tensor, expected: torch.dtype) -> None:
    """Refuses a layer's input whose dtype is not the layer's (its parameters'), except the mixes of autocast.

    For the layers whose arithmetic would otherwise promote silently (a float64 input to a float32 normalization
    layer gives a float64 output); a matrix product or a convolution refuses a mismatch itself. Inside
    ``torch.autocast`` for the input's device type, activations in autocast's dtype (bfloat16 or float16) meet
    float32 weights by design, so float32 and that dtype may meet in any combination; float64, and the other
    low-precision dtype, never mix.

    Raises:
        TypeError: naming ``input``, the dtype it got and the one expected.
    """
    if x.dtype == expected:
        return
    low = _autocast_dtype(x.device.type)
    if low is None or not {x.dtype, expected} <= {torch.float32, low}:
        raise TypeError(
            f"input must have the layer's dtype {expected} (the dtype of its parameters), got dtype {x.dtype}; convert "
            f"the input with .to({expected}) or the layer with .to({x.dtype}) (inside torch.autocast, inputs in its "
            f"dtype are accepted by a float32 layer)"
        )


# ---------------------------------------------------------------------------------------------------------------------
# Modules and optimizers
# ---------------------------------------------------------------------------------------------------------------------
def check_instance(name: str, value: Any, kind: Any, expected: str) -> Any:
    """``value`` itself, checked to be an instance of ``kind`` (a type or a tuple of types).

    Raises:
        ArgumentTypeError: ``"{name} must be {expected}, got {type}"``.
    """
    if not isinstance(value, kind):
        raise ArgumentTypeError(f"{name} must be {expected}, got {type(value).__name__}")
    return value


def check_methods(name: str, value: Any, methods: Sequence[str], example: str) -> Any:
    """``value`` itself, checked to have each of ``methods`` (``example`` names a class that has them)."""
    for method in methods:
        if not callable(getattr(value, method, None)):
            raise ArgumentTypeError(
                f"{name} must have a {method}() method (e.g. {example}), got {type(value).__name__} without one"
            )
    return value


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_players(
    generator: Any, discriminator: Any, d_optimizer: Any, g_optimizer: Any, *, stacklevel: int = 3
) -> None:
    """Two models and one optimizer per player, each stepping its own player's parameters (a GAN trainer's check).

    A parameter of the other player means swapped optimizers (the player would never train, the other one would
    be stepped by the wrong loss), one of neither model a stale optimizer: both raise. A trainable parameter of a
    model that its optimizer does not hold never changes, which can be meant (a partly trained model) but is
    usually a mistake: it warns. Models wrapped in ``DistributedDataParallel`` are seen through.

    Raises:
        TypeError: a model that is not a module, an optimizer that is not an optimizer.
        ValueError: an optimizer without trainable parameters, the same optimizer twice, or one holding
            parameters of the other player or of neither model.
    """
    named = {}  # each model's (name, parameter) by the parameter's id, seen through DistributedDataParallel
    for name, model in (("generator", generator), ("discriminator", discriminator)):
        model = check_instance(name, model, torch.nn.Module, "a torch.nn.Module")
        model = model.module if isinstance(model, DistributedDataParallel) else model
        named[name] = {id(p): (key, p) for key, p in model.named_parameters()}
    held = {}  # each optimizer's parameters by id
    for name, optimizer in (("d_optimizer", d_optimizer), ("g_optimizer", g_optimizer)):
        check_instance(name, optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
        held[name] = {id(p): p for group in optimizer.param_groups for p in group["params"]}
        if not any(p.requires_grad for p in held[name].values()):
            raise ValueError(f"{name} has no parameter that requires a gradient; expected the player's parameters")
    if d_optimizer is g_optimizer:
        raise ValueError("d_optimizer and g_optimizer must be two optimizers (one per player), got the same object")
    for name, own, other in (("d_optimizer", "discriminator", "generator"),
                             ("g_optimizer", "generator", "discriminator")):
        strays = [p for i, p in held[name].items() if i not in named[own]]  # parameters not of its own model
        swapped = [named[other][id(p)][0] for p in strays if id(p) in named[other]]
        if swapped:
            raise ValueError(
                f"{name} must step the {own}'s parameters, but it holds {len(swapped)} parameter(s) of the "
                f"{other} ({_names(swapped)}): are d_optimizer and g_optimizer swapped? Expected "
                f"(generator, discriminator, d_optimizer, g_optimizer)"
            )
        if strays:
            raise ValueError(
                f"{name} must step only the {own}'s parameters, but it holds {len(strays)} parameter(s) of "
                f"neither model (shapes {[tuple(p.shape) for p in strays[:5]]}): was it built for another instance "
                f"of the {own}?"
            )
        missing = [key for i, (key, p) in named[own].items() if p.requires_grad and i not in held[name]]
        if missing:
            warnings.warn(
                f"{name} does not step {len(missing)} trainable parameter(s) of the {own} ({_names(missing)}): "
                f"they will never change. Build it from {own}.parameters(), or set requires_grad=False on the "
                "parameters meant to stay fixed",
                UserWarning,
                stacklevel=stacklevel,
            )


def check_trainable(name: str, model: torch.nn.Module, purpose: str = "") -> List[Tuple[str, torch.Tensor]]:
    """The ``(name, parameter)`` pairs of ``model`` with ``requires_grad=True``, checked to be at least one.

    Raises:
        ValueError: none is trainable (the message ends with ``purpose``, e.g. ``" to average"``).
    """
    named = [(key, param) for key, param in model.named_parameters() if param.requires_grad]
    if not named:
        raise ValueError(
            f"{name} must have at least one trainable parameter (requires_grad=True){purpose}, "
            f"got {type(model).__name__} with none"
        )
    return named


def check_same_trainable(owner: str, model: torch.nn.Module, tracked: Sequence[Tuple[str, torch.Tensor]]) -> None:
    """Refuses a model whose trainable parameters are no longer exactly ``tracked`` (``(name, parameter)`` pairs
    taken when ``owner``, an averaging handler, was built): a parameter frozen since would keep being pulled, one
    unfrozen or added since would be silently left out.

    Raises:
        ValueError: naming the parameters no longer trainable and those trainable but not tracked.
    """
    current = [(key, param) for key, param in model.named_parameters() if param.requires_grad]
    if len(current) == len(tracked) and all(p is q for (_, p), (_, q) in zip(current, tracked)):
        return
    current_ids, tracked_ids = {id(p) for _, p in current}, {id(p) for _, p in tracked}
    raise ValueError(
        f"model: its trainable parameters changed since this {owner} was built; no longer trainable (frozen with "
        f"requires_grad=False, or removed): {[key for key, p in tracked if id(p) not in current_ids]}; trainable "
        f"but not averaged (unfrozen or added after the handler was built): "
        f"{[key for key, p in current if id(p) not in tracked_ids]}. The handler averages exactly the parameters "
        f"that were trainable when it was built: build a new {owner} (detach this one) after changing which "
        f"parameters train"
    )


def check_finite_parameters(owner: str, named_tensors: Sequence[Tuple[str, torch.Tensor]], when: str) -> None:
    """Refuses NaN or infinity in tensors about to be averaged (an average would keep it for good).

    The common case (all finite) costs one ``isfinite().all()`` per tensor and one host transfer per device: the
    per-tensor flags are reduced on their device before being read.

    Args:
        owner: who averages, for the message (e.g. ``"HistoricalAveraging"``).
        named_tensors: ``(name, tensor)`` pairs, e.g. a model's trainable parameters.
        when: when, for the message (e.g. ``"iteration 3"``).

    Raises:
        ValueError: naming the first tensor with a non-finite value, the value and how many there are.
    """
    flags: dict = {}
    for _, tensor in named_tensors:
        flags.setdefault(tensor.device, []).append(torch.isfinite(tensor.detach()).all())
    if all(bool(torch.stack(group).all()) for group in flags.values()):
        return
    key, values, _ = _non_finite(named_tensors)[0]
    raise ValueError(
        f"{owner}: parameter {key!r} holds {float(values[0])} ({len(values)} non-finite "
        f"entr{'y' if len(values) == 1 else 'ies'}) at {when}; refusing to take it into the average, which would "
        f"stay non-finite for good. The training diverged before this update"
    )


# ---------------------------------------------------------------------------------------------------------------------
# State loaded from outside and configurations
# ---------------------------------------------------------------------------------------------------------------------
def check_state_keys(
    state_dict: Any, keys: Sequence[str], name: str = "state_dict", *, exact: bool = True, owner: str = ""
) -> Mapping[str, Any]:
    """``state_dict``, checked to be a mapping with exactly ``keys`` (what a ``load_state_dict`` is given), or with
    at least ``keys`` when not ``exact`` (a state that may hold more than the loader reads).

    Args:
        state_dict: what was given to load.
        keys: the keys expected.
        name: the state's name in the message (``"state_dict['averages']"`` for a nested one).
        exact: refuse other keys too; else only missing ones.
        owner: who is loading, to begin the message with (e.g. ``"MixtureStream.load_state_dict"``), or "".

    Raises:
        ArgumentTypeError: not a mapping (a TypeError and a ValueError).
        ValueError: other keys (exact: the message names the keys expected and got) or missing ones (not exact: the
            message names those missing).

    Example:
        >>> check_state_keys({"count": 2}, ["count", "total"])
        Traceback (most recent call last):
        ...
        ValueError: state_dict must have the keys ['count', 'total'], got ['count']
        >>> check_state_keys({}, ["generator"], exact=False, owner="MixtureStream.load_state_dict")
        Traceback (most recent call last):
        ...
        ValueError: MixtureStream.load_state_dict: state_dict is missing ['generator']; expected a mapping ...
    """
    is_mapping, who = isinstance(state_dict, Mapping), f"{owner}: " if owner else ""
    error = ValueError if is_mapping else ArgumentTypeError  # not a mapping: a TypeError as well
    if exact and (not is_mapping or set(state_dict) != set(keys)):
        got = sorted(state_dict) if is_mapping else type(state_dict).__name__
        raise error(f"{who}{name} must have the key{'s' if len(keys) > 1 else ''} {sorted(keys)}, got {got}")
    missing = [key for key in keys if not is_mapping or key not in state_dict]
    if missing:
        raise error(f"{who}{name} is missing {missing}; expected a mapping with the keys {list(keys)}, "
                    f"got {describe(state_dict)}")
    return state_dict


def check_tensor_shape(name: str, value: Any, shape: Sequence[int]) -> torch.Tensor:
    """``value``, checked to be a tensor of ``shape`` (a tensor loaded from outside)."""
    if not isinstance(value, torch.Tensor) or value.shape != tuple(shape):
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a tensor of shape {tuple(shape)}, got {got}")
    return value


def _non_finite(named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> List[Tuple[str, torch.Tensor, int]]:
    """``(name, its non-finite values as a 1-d tensor, its size)`` of each tensor that holds NaN or infinity."""
    found = []
    for key, tensor in named_tensors:
        values = tensor.detach()[~torch.isfinite(tensor.detach())]
        if values.numel():
            found.append((key, values, tensor.numel()))
    return found


def _tensors(value: Any, prefix: str) -> Iterable[Tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _tensors(item, f"{prefix}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{prefix}[{index}]")


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
    bad = [f"{where} ({len(values)} of {size} values)" for where, values, size in _non_finite(_tensors(value, name))]
    if bad:
        raise ValueError(
            f"{owner}: the loaded state holds NaN or infinity in {', '.join(bad[:5])}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            + "; it comes from a diverged or damaged run. Load a state saved before the divergence"
        )


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
        ValueError: not an optimizer state (a mapping without the keys ``param_groups`` and ``state``), or one of
            other parameters; the message names the parameter (group and index) with both shapes.
    """
    check_state_keys(state_dict, ["param_groups", "state"], exact=False, owner=owner)
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    saved_sizes = [len(group.get("params", ())) for group in state_dict["param_groups"]]
    if sizes != saved_sizes:
        raise ValueError(
            f"{owner}: the optimizer state is of other parameters: {saved_sizes} parameters per group, this "
            f"optimizer has {sizes}"
        )
    for group_index, (group, saved) in enumerate(zip(optimizer.param_groups, state_dict["param_groups"])):
        for position, (param, key) in enumerate(zip(group["params"], saved["params"])):
            for name, value in (state_dict["state"].get(key) or {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise ValueError(
                        f"{owner}: the optimizer state is of other parameters: its {name!r} for parameter {position} "
                        f"of group {group_index} has shape {tuple(value.shape)}, the parameter has "
                        f"{tuple(param.shape)}. Load the state saved with this model"
                    )


# What a field annotated with each kind holds (NumPy's numbers of that kind too), and how a message names it.
_KINDS = {bool: (lambda value: isinstance(value, (bool, np.bool_)), "a bool"), int: (_is_integer, "an int"),
          float: (_is_real, "a real number"), str: (lambda value: isinstance(value, str), "a string")}


def _optional_of(annotation: Any) -> Any:
    """``X`` of an ``Optional[X]`` annotation, else the annotation itself."""
    arguments = [argument for argument in typing.get_args(annotation) if argument is not type(None)]
    return arguments[0] if typing.get_origin(annotation) is typing.Union and len(arguments) == 1 else annotation


def check_fields(
    config: Any,
    minimums: Optional[Mapping[str, int]] = None,
    choices: Optional[Mapping[str, Sequence[Any]]] = None,
    ranges: Optional[Mapping[str, Tuple[float, float, bool]]] = None,
    default_minimum: int = 1,
) -> None:
    """Checks the fields of a dataclass instance (a run's configuration), in this order, at the first wrong one:

    1. every field annotated ``bool``, ``int``, ``float`` or ``str`` holds a value of that kind (a ``float`` field
       takes an ``int`` too; no field but a ``bool`` one takes a ``bool``; NumPy numbers count as Python's and are
       replaced by them in the instance, also in ``Optional`` fields, so that it stays writable as JSON): else a
       ``TypeError``;
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
        annotation, value = hints.get(field.name, field.type), getattr(config, field.name)
        holds, kind = _KINDS.get(_optional_of(annotation), (None, ""))
        if holds is not None and isinstance(value, np.generic) and holds(value):
            value = value.item()  # a NumPy number as the Python number it stands for (json cannot write NumPy's)
            object.__setattr__(config, field.name, value)  # object's: a frozen dataclass is checked alike
        if annotation in _KINDS and not holds(value):
            raise TypeError(f"{field.name} must be {kind}, got {type(value).__name__} {value!r}")
        if annotation is int:
            check_int(field.name, value, minimum=minimums.get(field.name, default_minimum))
    for name, allowed in choices.items():
        check_choice(name, getattr(config, name), allowed)
    for name, (low, high, closed) in ranges.items():
        value = getattr(config, name)
        if value is not None and not (low < value < high or (closed and value == low)):
            raise ValueError(f"{name} must be in {'[' if closed else '('}{low}, {high}), got {value!r}")


# ---------------------------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------------------------
def check_device(name: str, value: Any, *, allow_none: bool = False) -> Optional[torch.device]:
    """``value`` as a :class:`torch.device`, checked to name a device this machine has.

    Without this check, a device that is not there surfaces later, from deep inside torch, without naming the
    argument (``"Found no NVIDIA driver on your system"`` when a tensor is first moved to ``"cuda"``). The check
    costs no device work: only for a CUDA device, :func:`torch.cuda.device_count` asks how many GPUs there are
    (through NVML where it can, which leaves CUDA uninitialized in this process).

    Args:
        name: the argument's name.
        value: a :class:`torch.device`, a string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...) or an int (an
            accelerator's index, as torch reads it).
        allow_none: None is passed through (a device left to the caller's default).

    Returns:
        ``torch.device(value)``, or None when ``value`` is None and ``allow_none``.

    Raises:
        ArgumentTypeError: not a device, a string or an int (a float, a bool, ...).
        ValueError: a string torch does not read as a device, a negative index, or a CUDA or MPS device this
            machine does not have.

    Example:
        >>> check_device("device", "cpu")
        device(type='cpu')
        >>> check_device("device", "gpu")
        Traceback (most recent call last):
        ...
        ValueError: device must be a device such as 'cpu', 'cuda' or 'cuda:1', got 'gpu'
    """
    if value is None and allow_none:
        return None
    index = _is_integer(value)  # an accelerator's index, as torch reads it
    if not index and not isinstance(value, (torch.device, str)):
        none = " or None" if allow_none else ""
        raise ArgumentTypeError(
            f"{name} must be a torch.device, a string such as 'cpu' or 'cuda', or a device index{none}, got "
            f"{describe(value)}"
        )
    try:
        device = torch.device(int(value) if index else value)
    except RuntimeError:  # torch's "Invalid device string" or "Device index must not be negative"
        raise ValueError(f"{name} must be a device such as 'cpu', 'cuda' or 'cuda:1', got {value!r}") from None
    # For an index, say which device torch read it as.
    given = f"{int(value)} (torch reads it as {str(device)!r})" if index else repr(str(device))
    if device.type == "cuda":
        count = torch.cuda.device_count()  # NVML's count where it can: unlike is_available(), it leaves CUDA unused
        if count == 0:
            raise ValueError(
                f"{name} is {given}, but CUDA is not available on this machine (no NVIDIA GPU, driver or "
                "CUDA build of torch); pass 'cpu' instead"
            )
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"{name} is {given}, but this machine has {count} CUDA device(s) (indices 0 to {count - 1})"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name} is 'mps', but MPS is not available on this machine; pass 'cpu' instead")
    return device


# ---------------------------------------------------------------------------------------------------------------------
# Strings, paths, lists and mappings (the experiments' helpers)
# ---------------------------------------------------------------------------------------------------------------------
def check_string(name: str, value: Any, *, allow_empty: bool = False, allow_none: bool = False) -> Optional[str]:
    """``value`` itself, checked to be a string (non-empty unless ``allow_empty``).

    Example:
        >>> check_string("experiment", "digits_ssl")
        'digits_ssl'
        >>> check_string("experiment", 3)
        Traceback (most recent call last):
        ...
        ignite_igan.validation.ArgumentTypeError: experiment must be a string, got int 3
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a string{' or None' if allow_none else ''}, got {describe(value)}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must be a non-empty string, got ''")
    return value


def check_strings(name: str, value: Any, *, allow_empty: bool = False, example: str = "") -> List[str]:
    """``value``, a sequence of strings (a command line, say), as a list; one string is refused, not split.

    Args:
        name: the argument's name; an entry is named ``name[i]``.
        value: a list or tuple of strings.
        allow_empty: an empty sequence is accepted.
        example: what a right value looks like, for the message (e.g. ``"['python', 'train.py']"``).

    Example:
        >>> check_strings("command", "python train.py", example="['python', 'train.py']")
        Traceback (most recent call last):
        ...
        ignite_igan.validation.ArgumentTypeError: command must be a sequence of strings (e.g. ['python', \
'train.py']), got str 'python train.py'
    """
    expected = "a sequence of strings" + (f" (e.g. {example})" if example else "")
    entries = _entries(name, value, expected, lambda key, item: check_string(key, item, allow_empty=True))
    if not entries and not allow_empty:
        raise ValueError(f"{name} must be {expected} with at least one entry, got {describe(value)}")
    return entries


def check_path(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """``value`` as a :class:`pathlib.Path`, checked to be a non-empty string or path.

    Example:
        >>> check_path("output_dir", "runs/x").as_posix()
        'runs/x'
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ArgumentTypeError(f"{name} must be a path (a str or os.PathLike), got {describe(value)}")
    if not os.fspath(value):
        raise ValueError(f"{name} must be a non-empty path, got {value!r}")
    return Path(value)


def check_int_list(
    name: str,
    value: Any,
    *,
    minimum: Optional[int] = None,
    maximum: Optional[int] = None,
    unique: bool = False,
    allow_empty: bool = False,
) -> List[int]:
    """``value``, a sequence (non-empty unless ``allow_empty``) or 1-d NumPy array of Python or NumPy integers (seeds,
    say), as a list of Python ints, each in ``[minimum, maximum]``, each once where ``unique``.

    Raises:
        ArgumentTypeError: not a sequence (a string is not one), or an entry that is not an int.
        ValueError: empty (unless ``allow_empty``), an entry out of range, or an entry given twice where ``unique``.

    Example:
        >>> check_int_list("seeds", np.arange(1, 4), minimum=0, unique=True)
        [1, 2, 3]
        >>> check_int_list("seeds", [1, 2, 1], unique=True)
        Traceback (most recent call last):
        ...
        ValueError: seeds must hold each entry once, got 1 twice in [1, 2, 1]
    """
    entries = _entries(name, value, "a sequence of ints",
                       lambda key, item: check_int(key, item, minimum=minimum, maximum=maximum))
    if not entries and not allow_empty:
        raise ValueError(f"{name} must have at least one entry, got {describe(entries)}")
    if unique and len(set(entries)) != len(entries):
        twice = next(n for i, n in enumerate(entries) if n in entries[:i])
        shown = repr(entries) if len(entries) <= 20 else repr(entries[:20])[:-1] + ", ...]"
        raise ValueError(f"{name} must hold each entry once, got {twice} twice in {shown}")
    return entries


def check_mapping(name: str, value: Any, expected: str = "a mapping", *, allow_empty: bool = False) -> Mapping:
    """``value`` itself, checked to be a mapping (a dict), non-empty unless ``allow_empty``; ``expected`` says what
    it should hold (e.g. ``"a mapping of seed to summary"``).

    Example:
        >>> check_mapping("charts", [], "a mapping of titles to lists of tags")
        Traceback (most recent call last):
        ...
        ignite_igan.validation.ArgumentTypeError: charts must be a mapping of titles to lists of tags, got list []
    """
    if not isinstance(value, Mapping):
        raise ArgumentTypeError(f"{name} must be {expected}, got {describe(value)}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must be {expected} with at least one entry, got {describe(value)}")
    return value
