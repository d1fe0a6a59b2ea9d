"""The semi-supervised classification error of the K-class discriminator, and an evaluator that reports it.

The reference scripts print the test error of the averaged discriminator every epoch, computed in deterministic mode
as ``mean(argmax(logits) != y)`` over the K real classes (:ref:`ref-ssl-loss`, :ref:`ref-evaluation-averaging`); the
paper reports MNIST as a count of misclassified images out of 10,000 and CIFAR-10/SVHN as a percentage.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ignite.engine import Engine, Events
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from ignite.utils import convert_tensor

from ignite_igan.metrics.modes import evaluation_mode
from ignite_igan.validation import check_device

__all__ = ["SemiSupervisedError", "ErrorEvaluator"]


class SemiSupervisedError(Metric):
    """Classification error of K-class logits: the rate and the count of misclassified samples.

    ``update((y_pred, y))`` takes logits ``(N, K)`` (the K real-class logits of the discriminator) and integer labels
    ``(N,)`` in ``[0, K)``; a sample is an error when ``argmax(y_pred) != y``. The counts are summed over processes,
    so the result under ``ignite.distributed`` equals one process's result on the union of the samples (as long as
    the processes see disjoint samples: ``DistributedSampler`` pads with repeats unless the set divides evenly).

    Attached under ``name``, it writes the error rate (a fraction in [0, 1]) to ``engine.state.metrics[name]`` and the
    number of errors to ``engine.state.metrics[name + "_count"]``.

    Args:
        output_transform: maps the engine's output to ``(y_pred, y)`` (or a dict with ``y_pred`` and ``y``).
        device: where the counts are kept.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> evaluator = Engine(lambda engine, batch: batch)  # batches of (logits, labels)
        >>> SemiSupervisedError().attach(evaluator, "error")
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
        >>> state = evaluator.run([(logits, torch.tensor([0, 0, 0]))])
        >>> state.metrics["error"], state.metrics["error_count"]
        (0.3333333333333333, 1)
    """

    _state_dict_all_req_keys = ("_num_errors", "_num_examples")

    def __init__(
        self, output_transform: Callable = lambda x: x, device: Union[str, torch.device] = torch.device("cpu")
    ) -> None:
        device = check_device("device", device)
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    @reinit__is_reduced
    def reset(self) -> None:
        self._num_errors = torch.tensor(0, dtype=torch.int64, device=self._device)
        self._num_examples = torch.tensor(0, dtype=torch.int64, device=self._device)

    @reinit__is_reduced
    def update(self, output: Sequence[Tensor]) -> None:
        y_pred, y = output
        # The one check: argmax and != would count out-of-range labels, NaN logits and broadcast shapes silently.
        k = y_pred.shape[-1] if y_pred.dim() == 2 else 0
        low, high = (int(y.min()), int(y.max())) if y.numel() else (0, 0)
        if y.shape != y_pred.shape[:1] or y.is_floating_point() or not 0 <= low <= high < k or y_pred.isnan().any():
            raise ValueError(
                "update takes (y_pred, y): floating-point logits (N, K) without NaN and N integer labels in [0, K-1]; "
                f"got y_pred {y_pred.dtype} of shape {tuple(y_pred.shape)}{' with NaN' * bool(y_pred.isnan().any())} "
                f"and y {y.dtype} of shape {tuple(y.shape)} with labels in [{low}, {high}]"
            )
        errors = (y_pred.detach().argmax(dim=1) != y.to(y_pred.device)).sum()
        self._num_errors += errors.to(self._device)
        self._num_examples += y.shape[0]

    @sync_all_reduce("_num_errors", "_num_examples")
    def compute(self) -> Dict[str, Any]:
        """Returns ``{"rate": errors / total, "count": errors, "total": total}``."""
        total = int(self._num_examples)
        if total == 0:
            raise NotComputableError("SemiSupervisedError must have at least one example before it can be computed")
        count = int(self._num_errors)
        return {"rate": count / total, "count": count, "total": total}

    def completed(self, engine: Engine, name: str) -> None:
        """Writes ``name`` (the rate) and ``name + "_count"`` into ``engine.state.metrics``."""
        result = self.compute()
        engine.state.metrics[name] = result["rate"]
        engine.state.metrics[f"{name}_count"] = result["count"]


def _default_prepare_batch(batch: Any, device: Optional[torch.device], non_blocking: bool) -> Tuple[Tensor, Tensor]:
    return convert_tensor(batch[0], device, non_blocking), convert_tensor(batch[1], device, non_blocking)


class ErrorEvaluator:
    """Scores a K-class discriminator's error on a labeled set, e.g. the averaged copy after every epoch.

    The model runs in eval mode (the reference's ``deterministic=True``: no input noise, no dropout) under
    ``torch.no_grad()``, and its train/eval flags are restored afterwards, so evaluating the live discriminator
    does not leave it in eval mode. With minibatch discrimination the predictions depend on the other images in the
    batch; the reference evaluates in batches of 100, so use a loader with ``batch_size=100`` to match it.

    Args:
        model: the discriminator to evaluate, or a zero-argument callable returning it (for a copy that is created
            or replaced later, e.g. by an averaging handler). Its output is the logits, or a tuple whose first item
            is the logits.
        loader: the labeled evaluation data, batches ``(x, y)``.
        name: the metric name: the rate is ``state.metrics[name]``, the count ``state.metrics[name + "_count"]``.
        device: move each batch there (``None``: leave the batches where they are).
        prepare_batch: ``prepare_batch(batch, device, non_blocking) -> (x, y)``.
        non_blocking: passed to ``prepare_batch``.

    Attributes:
        engine: the Ignite evaluator ``Engine``; attach loggers or ``Checkpoint`` to it.

    Example:
        >>> evaluator = ErrorEvaluator(lambda: averaging.ema_model, test_loader)  # doctest: +SKIP
        >>> evaluator.attach(trainer)  # every epoch  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Union[nn.Module, Callable[[], nn.Module]],
        loader: Iterable,
        name: str = "error",
        device: Optional[Union[str, torch.device]] = None,
        prepare_batch: Callable = _default_prepare_batch,
        non_blocking: bool = False,
    ) -> None:
        if not callable(model):  # a module or a function that returns one
            raise TypeError(f"model must be an nn.Module or a callable returning one, got {type(model).__name__}")
        self._model = model
        self.loader = loader
        self.name = name
        self.device = check_device("device", device, allow_none=True)
        self._prepare_batch = prepare_batch
        self._non_blocking = non_blocking
        self._current: Optional[nn.Module] = None
        self.engine = Engine(self._step)
        SemiSupervisedError(device=self.device or torch.device("cpu")).attach(self.engine, name)

    @property
    def model(self) -> nn.Module:
        """The module evaluated now."""
        model = self._model if isinstance(self._model, nn.Module) else self._model()
        if not isinstance(model, nn.Module):  # once per evaluation: a callable that has no model to give yet
            raise TypeError(f"model() must return an nn.Module, got {type(model).__name__}")
        return model

    def _step(self, engine: Engine, batch: Any) -> Tuple[Tensor, Tensor]:
        x, y = self._prepare_batch(batch, self.device, self._non_blocking)
        logits = self._current(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        return logits, y

    def run(self) -> Dict[str, Any]:
        """Evaluates the model on the whole loader and returns ``engine.state.metrics`` (a copy)."""
        self._current = self.model
        try:
            with torch.no_grad(), evaluation_mode(self._current):
                self.engine.run(self.loader, max_epochs=1)
        finally:
            self._current = None
        return dict(self.engine.state.metrics)

    def __call__(self, engine: Optional[Engine] = None) -> Dict[str, Any]:
        """Event-handler form of :meth:`run`."""
        return self.run()

    def attach(self, trainer: Engine, event: Any = Events.EPOCH_COMPLETED) -> Any:
        """Runs the evaluation on ``trainer``'s ``event`` (every epoch by default); returns the event handle."""
        return trainer.add_event_handler(event, self)
