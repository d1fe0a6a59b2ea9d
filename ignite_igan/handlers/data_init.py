"""Data-dependent initialization of weight-normalized networks (:ref:`ref-weight-norm`, :ref:`ref-data-init`) as an
Ignite handler."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Sequence, Tuple, Union

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from torch import Tensor, nn

from ignite_igan.handlers.base import Handler, unwrap
from ignite_igan.nn import DataDependentInit, data_dependent_init
from ignite_igan.validation import check_bool, check_instance

__all__ = ["DataDependentInitialization"]

Inputs = Union[Tensor, Sequence[Any], Mapping[str, Any]]


class DataDependentInitialization(Handler):
    """Runs :func:`ignite_igan.nn.data_dependent_init` on one batch when training starts, and never again.

    The reference initializes every weight-normalized layer with one extra forward pass over the first 500
    training examples, with dropout and noise on (:ref:`ref-data-init`); the CIFAR/SVHN generator's output layer is
    initialized on one generated batch (100 noise vectors). Use one instance per network: for a discriminator,
    ``inputs`` is the batch of examples; for a generator, its noise (e.g.
    ``lambda: gen.sample_noise(100)``).

    At ``event`` (default :attr:`Events.STARTED`) the handler runs the initialization pass unless it has already run
    (``done``, kept in :meth:`~ignite_igan.handlers.Handler.state_dict`, so a run resumed with
    ``ignite.handlers.Checkpoint`` does not re-initialize trained weights). If the engine is already past iteration 0 at
    that point although ``done`` is False (a resumed run whose checkpoint lacks this handler), it skips the pass with a
    warning rather than overwrite trained weights. Under :mod:`ignite.distributed` the parameters and buffers computed
    by rank 0 are broadcast afterwards, so all processes start from the same model (each may pass its own batch).

    A model without any layer that initializes itself from data (no :class:`ignite_igan.nn.DataDependentInit`
    layer with ``data_init=True``, e.g. a plain ``torch.nn`` network, or the MNIST generator whose only such layer
    has ``data_init=False``) gets a :class:`UserWarning` at construction: the pass would leave it unchanged.

    Registered as a callable (``engine.add_event_handler(Events.STARTED, init)``) it does what ``attach(engine)``
    does. Several engines may share it (the pass runs once, whichever starts first); registering it twice with one
    engine raises a :class:`ValueError`.

    Args:
        model: the network (``DistributedDataParallel``/``DataParallel`` are unwrapped).
        inputs: the batch: a tensor, a sequence of positional arguments, a mapping of keyword arguments, or a
            callable with no arguments that returns one of these (called only when the pass runs). Tensors are
            moved to the model's device.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine, Events
        >>> from ignite_igan.nn import WeightNormLinear
        >>> from ignite_igan.handlers import DataDependentInitialization
        >>> model = torch.nn.Sequential(WeightNormLinear(4, 8), torch.nn.ReLU(), WeightNormLinear(8, 2))
        >>> trainer = Engine(lambda engine, batch: None)
        >>> init = DataDependentInitialization(model, torch.randn(500, 4))
        >>> init.attach(trainer)
        >>> _ = trainer.run([0], max_epochs=1)
        >>> init.done
        True
        >>> again = DataDependentInitialization(model, torch.randn(500, 4))
        >>> _ = trainer.add_event_handler(Events.STARTED, again)  # the same as again.attach(trainer)
    """

    default_event = Events.STARTED
    twice = "register the initialization twice"
    state_keys = ("done",)

    def __init__(self, model: nn.Module, inputs: Union[Inputs, Callable[[], Inputs]]) -> None:
        super().__init__()
        model = unwrap(check_instance("model", model, nn.Module, "a torch.nn.Module"))
        if next(iter(model.parameters()), None) is None:
            raise ValueError(f"model must have parameters to initialize, got {type(model).__name__} with none")
        if not callable(inputs):
            _arguments(inputs, "inputs must be", ", or a callable returning one")
        if not any(isinstance(m, DataDependentInit) and m.data_init for m in model.modules()):
            # Harmless but almost certainly not what the caller meant: say so instead of reporting done=True.
            warnings.warn(f"model ({type(model).__name__}) has no layer with a data-dependent initialization (no "
                          f"ignite_igan.nn.DataDependentInit layer with data_init=True, such as WeightNormLinear, "
                          f"WeightNormConv2d or MinibatchDiscrimination): the initialization pass will leave it "
                          f"unchanged", UserWarning, stacklevel=2)
        self.model = model
        self.inputs = inputs
        self.done = False

    def _on_event(self, engine: Engine) -> None:
        if self.done:
            return
        if engine.state.iteration > 0:
            warnings.warn(f"DataDependentInitialization: the engine resumes at iteration {engine.state.iteration} "
                          f"but this handler's state was not restored (done=False); skipping the initialization pass "
                          f"so as not to overwrite trained weights. Save the handler with Checkpoint to silence this "
                          f"warning.", UserWarning)
            self.done = True
            return
        self.run()

    def run(self) -> Any:
        """Run the initialization pass now (whatever ``done`` says) and return the model's output."""
        inputs = self.inputs() if callable(self.inputs) else self.inputs
        args, kwargs = _arguments(inputs, "inputs() must return")
        device = next(iter(self.model.parameters())).device
        args = [value.to(device) if isinstance(value, Tensor) else value for value in args]
        kwargs = {key: value.to(device) if isinstance(value, Tensor) else value for key, value in kwargs.items()}
        output = data_dependent_init(self.model, *args, **kwargs)
        if idist.get_world_size() > 1:  # rank 0's initialization for all
            with torch.no_grad():
                for tensor in list(self.model.parameters()) + list(self.model.buffers()):
                    if tensor.numel() > 0:
                        tensor.copy_(idist.broadcast(tensor.detach().contiguous(), src=0))
        self.done = True
        return output

    def _load_state(self, state_dict: Mapping[str, Any]) -> None:
        self.done = check_bool("state_dict['done']", state_dict["done"])


def _arguments(inputs: Any, what: str, also: str = "") -> Tuple[Sequence[Any], Mapping[str, Any]]:
    """``inputs`` as positional and keyword arguments; ``what`` (and ``also``) begin the error's message."""
    if isinstance(inputs, Tensor):
        return (inputs,), {}
    if isinstance(inputs, Mapping):
        return (), inputs
    if isinstance(inputs, Sequence) and not isinstance(inputs, str):
        return inputs, {}
    raise TypeError(f"{what} a tensor, a sequence or a mapping of inputs{also}, got {type(inputs).__name__}")
