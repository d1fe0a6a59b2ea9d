"""Test-time parameter averaging of the discriminator (the reference's ``disc_param_avg``, spec §4.5).

A thin layer around :class:`ignite.handlers.EMAHandler`, which does the averaging itself.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from ignite.engine import CallableEventWithFilter, Engine, Events, EventsList
from ignite.handlers import EMAHandler
from torch import nn

from ignite_igan.handlers._common import Registrations, first_non_finite

from ignite_igan.validation import check_bool, check_finite_state, check_int, check_real

__all__ = ["EvaluationAveraging"]

_DEFAULT_NAME = "ema_momentum"

EventType = Union[str, Events, CallableEventWithFilter, EventsList]


class EvaluationAveraging:
    """An exponential moving average of a model's weights to evaluate with (spec §4.5).

    The reference evaluates the classifier with ``a ← a + 1e-4·(p - a)`` per discriminator step, for every
    *trainable* parameter p, with ``a`` starting at zero and no bias correction. The averaging is done by
    :class:`ignite.handlers.EMAHandler`; this class adds what the reference needs around it.

    **Mapping onto EMAHandler's momentum.** In Ignite 0.5.x ``EMAHandler`` updates
    ``ema ← (1 - momentum)·ema + momentum·param`` at each event, so ``momentum`` is the weight of the *new* value:
    the reference's rate 1e-4 (its decay 0.9999) is ``momentum=1e-4``, not 0.9999. This class passes ``rate``
    through and writes the momentum of each update to ``engine.state.<name>`` (EMAHandler reads it from there).

    **Start and bias correction.**

    - ``bias_correction=False`` is the reference: the average starts at zero and is never corrected, so after n
      updates it is shrunk by the factor ``1 - (1 - rate)^n`` (about 0.05 after one CIFAR epoch of 500 steps at
      1e-4, 0.99 after 50k steps; early test errors are poor by construction).
    - ``bias_correction=True`` (default) divides that same zero-started average by ``1 - (1 - rate)^n``: the
      normalized exponentially weighted mean of the weights seen so far, neither shrunk towards zero nor tied to
      the random initialization. It is implemented as EMAHandler momentum ``rate / (1 - (1 - rate)^n)`` at the
      n-th update (1 at the first). This is what a user expects from "evaluate with the averaged weights" from
      the first epoch on; after ~5/rate updates the two agree to < 1%. Before the first update the averaged
      model is a copy of the model.

    **Frozen tensors.** Like the reference, only trainable parameters (``requires_grad=True``) are averaged.
    Frozen parameters (the hidden weight-norm scales ``g``, set once by the data-dependent initialization) and
    buffers are copied from the model as they are, after every update and whenever :attr:`averaged_model` is
    read, so an initialization that runs after this handler was built is picked up.

    **When.** The reference averages the weights *before* each discriminator step (Theano's simultaneous
    updates). The default ``event=Events.ITERATION_COMPLETED`` averages the weights after the iteration's step
    (Ignite's convention; the average then includes the final weights). ``event=Events.ITERATION_STARTED``
    reproduces the reference exactly when the iteration makes one discriminator step.

    **Device and checkpoint.** The averaged copy is moved to the model's device at :attr:`Events.STARTED` and
    whenever :attr:`averaged_model` is read. :meth:`state_dict` holds the averaged weights and the update count,
    so ``ignite.handlers.Checkpoint`` saves and restores them.

    **Non-finite weights are refused.** Before each update every trainable parameter is checked (one
    ``isfinite().all()`` per tensor, one host transfer per device); a NaN or infinity raises a :class:`ValueError`
    that names the iteration, the parameter and the value, instead of poisoning the average for good.

    **attach or callable.** ``attach(engine, event)`` and ``engine.add_event_handler(event, averaging)`` give the
    same average: each call of the handler is one update. ``attach`` adds only the choice of the ``engine.state``
    attribute that receives the momentum (the callable writes ``engine.state.ema_momentum``) and moves the copy
    to the model's device at :attr:`Events.STARTED` (the callable does that at every call). A handler serves one
    engine, once: attaching it twice, attaching it and registering it as a callable with the same engine, or
    using it with a second engine raises a :class:`ValueError` (the average would be updated twice per event, or
    mix two runs).

    Args:
        model: the model to average, usually the discriminator/classifier (``DistributedDataParallel`` is
            unwrapped by EMAHandler).
        rate: the weight of the new value at each update, in (0, 1); the reference's 1e-4 by default. Beware of
            the convention: many EMA implementations take the *decay* (0.9999) instead; a ``rate`` above 0.5 warns,
            as it makes the "average" follow the live weights.
        bias_correction: see above; ``False`` reproduces the reference.
        check_finite: before every update, check that the model's weights are finite and refuse the update
            otherwise (a NaN would stay in the average for good). The check reads every weight, which on a CPU
            costs several times the update itself: pass False where a guard that runs first already stops training
            at the first non-finite loss (:func:`ignite_igan.runs.attach_nonfinite_guard`, as the recipes do).

    Example:
        >>> import torch
        >>> from ignite.engine import Engine, Events
        >>> from ignite_igan.handlers import EvaluationAveraging
        >>> model = torch.nn.Linear(2, 1)
        >>> trainer = Engine(lambda engine, batch: None)
        >>> averaging = EvaluationAveraging(model, rate=1e-4)
        >>> averaging.attach(trainer)
        >>> _ = trainer.run([0] * 3, max_epochs=1)
        >>> averaging.num_updates, averaging.averaged_model.training
        (3, False)
        >>> as_callable = EvaluationAveraging(model, rate=1e-4)
        >>> _ = trainer.add_event_handler(Events.ITERATION_COMPLETED, as_callable)  # same as attach(trainer)
    """

    def __init__(
        self, model: nn.Module, rate: float = 1e-4, bias_correction: bool = True, check_finite: bool = True
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                f"model must have at least one trainable parameter (requires_grad=True) to average, "
                f"got {type(model).__name__} with none"
            )
        rate = check_real(
            "rate", rate, minimum=0.0, maximum=1.0, low_open=True, high_open=True,
            hint="the reference uses 1e-4, i.e. decay 0.9999",
        )
        if float(rate) > 0.5:
            # Other EMA code takes the decay (0.9999): passed here it would make the "average" the live weights.
            warnings.warn(
                f"rate={rate!r} is the weight of the NEW value in each update, ema <- (1 - rate)·ema + rate·θ (the "
                f"reference uses rate=1e-4, i.e. decay 0.9999); above 0.5 the average mostly follows the live "
                f"weights. If you meant a decay of {rate!r}, pass rate={1.0 - float(rate):.6g}",
                UserWarning,
                stacklevel=2,
            )
        bias_correction = check_bool("bias_correction", bias_correction)
        check_finite = check_bool("check_finite", check_finite)
        self.rate = float(rate)
        self.bias_correction = bias_correction
        self.check_finite = check_finite
        self.ema_handler = EMAHandler(model, momentum=self.rate, handle_buffers="copy")
        self.model: nn.Module = self.ema_handler.model
        self._num_updates = 0
        self._device_count: Optional[torch.Tensor] = None  # the count on the device, once step_update is used
        self._step_tensors: Tuple[List[torch.Tensor], ...] = ()  # step_update's averaged, live, frozen tensors
        self._on_engine = False
        self._registrations = Registrations(
            "EvaluationAveraging",
            "update the average twice per event",
            one_engine=True,
            one_engine_reason="one average fed by two engines would mix their updates",
        )
        if not bias_correction:
            with torch.no_grad():
                for ema_param, param in zip(self.ema_handler.ema_model.parameters(), self.model.parameters()):
                    if param.requires_grad:
                        ema_param.zero_()

    # ------------------------------------------------------------------------------------------------------
    @property
    def num_updates(self) -> int:
        """Updates of the average so far (read from the device after :meth:`step_update`: that waits for it)."""
        if self._device_count is not None:
            return int(self._device_count)
        return self._num_updates

    @num_updates.setter
    def num_updates(self, value: int) -> None:
        self._num_updates = value
        if self._device_count is not None:
            self._device_count.fill_(value)

    def step_update(self) -> None:
        """One update of the average made of device operations only, for a trainer's fused step.

        Pass it to the trainer (``after_step=[averaging.step_update]`` in
        :func:`~ignite_igan.engines.create_semi_supervised_trainer`, or ``before_step`` for the reference's
        pre-step average) instead of attaching the handler: it then runs inside the step, compiled or captured in
        a CUDA graph with it. The count and the momentum live on the device (float64, the host's formula), so
        nothing waits for the device; the update is EMAHandler's ``ema ← (1 - m)·ema + m·θ``, equal to the
        attached handler's to float rounding. It does not check the weights for NaN (that would wait for the
        device): the trainer's non-finite guard stops a diverged run before its next checkpoint.

        Raises:
            RuntimeError: if the handler is also attached to an engine (the average would be updated twice).
        """
        if self._on_engine:
            raise RuntimeError("EvaluationAveraging is attached to an engine already; step_update would average "
                               "twice per iteration. Use one of the two")
        if self._device_count is None:  # the first call: the count moves to the device, the pairs are kept
            self._follow_device()
            pairs = list(zip(self.ema_handler.ema_model.parameters(), self.model.parameters()))
            trained = [(e, p.detach()) for e, p in pairs if p.requires_grad]
            frozen = [(e, p.detach()) for e, p in pairs if not p.requires_grad]
            self._step_tensors = tuple([t[i] for t in group] for group in (trained, frozen) for i in (0, 1))
            self._device_count = torch.full((), float(self._num_updates), dtype=torch.float64,
                                            device=pairs[0][1].device)
        emas, params, frozen_emas, frozen_params = self._step_tensors
        self._device_count.add_(1)
        with torch.no_grad():
            if self.bias_correction:  # rate / (1 - (1 - rate)^n), as momentum() computes it on the host
                momentum = (self.rate / -torch.expm1(self._device_count * math.log1p(-self.rate))).clamp(max=1.0)
                torch._foreach_mul_(emas, (1.0 - momentum).to(emas[0].dtype))
                torch._foreach_add_(emas, torch._foreach_mul(params, momentum.to(emas[0].dtype)))
            else:  # a constant momentum: EMAHandler's own arithmetic, ema·(1 - rate) + rate·θ
                torch._foreach_mul_(emas, 1.0 - self.rate)
                torch._foreach_add_(emas, params, alpha=self.rate)
            if frozen_emas:  # as the attached handler does after each update
                torch._foreach_copy_(frozen_emas, frozen_params)

    def momentum(self, update: int) -> float:
        """The EMAHandler momentum of the ``update``-th update (1-based)."""
        if not self.bias_correction:
            return self.rate
        # 1 - (1 - rate)^n without cancellation
        total_weight = -math.expm1(update * math.log1p(-self.rate))
        return min(1.0, self.rate / total_weight)

    @property
    def averaged_model(self) -> nn.Module:
        """The averaged copy, in eval mode, on the model's device, with the model's frozen tensors."""
        ema_model = self.ema_handler.ema_model
        self._follow_device()
        with torch.no_grad():
            for ema_param, param in zip(ema_model.parameters(), self.model.parameters()):
                if not param.requires_grad or (self.bias_correction and self.num_updates == 0):
                    ema_param.copy_(param.detach())
            for ema_buffer, buffer in zip(ema_model.buffers(), self.model.buffers()):
                ema_buffer.data = buffer.data
        return ema_model.eval()

    # ------------------------------------------------------------------------------------------------------
    def attach(
        self, engine: Engine, event: EventType = Events.ITERATION_COMPLETED, name: str = _DEFAULT_NAME
    ) -> None:
        """Update the average at ``event`` (filtered events allowed).

        Args:
            engine: the trainer.
            event: when to average; one update per discriminator step reproduces the reference's rate.
            name: the ``engine.state`` attribute holding the momentum of the latest update.
        """
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be an ignite.engine.Engine, got {type(engine).__name__}")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"name must be a valid attribute name, got {name!r}")
        self._registrations.before_attach(self, engine)
        if self._device_count is not None:
            raise RuntimeError("EvaluationAveraging updates inside a trainer's step (step_update); attaching it to "
                               "an engine too would average twice per iteration")
        self._on_engine = True
        engine.add_event_handler(Events.STARTED, self._on_started)
        # Handlers of one event run in the order they were added: check and set the momentum, let EMAHandler
        # average, then restore the frozen tensors it averaged too.
        engine.add_event_handler(event, self._before_update, name)
        self.ema_handler.attach(engine, name=name, event=event)
        engine.add_event_handler(event, self._after_update)
        self._registrations.attached(engine)

    def __call__(self, engine: Engine) -> None:
        """One update of the average: ``engine.add_event_handler(event, averaging)`` does what ``attach`` does.

        The momentum of the update is written to ``engine.state.ema_momentum``; the averaged copy follows the
        model's device at every call.
        """
        self._registrations.on_call(engine)
        self._on_engine = True
        self._follow_device()
        # The same three steps, in the same order, as the handlers attach() registers.
        self._before_update(engine, _DEFAULT_NAME)
        self.ema_handler._update_ema_model(engine, _DEFAULT_NAME)
        self._after_update(engine)

    def _on_started(self, engine: Engine) -> None:
        self._follow_device()

    def _before_update(self, engine: Engine, name: str) -> None:
        # Checked before the count moves, so a refused update leaves the handler's state as it was.
        bad = None
        if self.check_finite:
            bad = first_non_finite([(n, p) for n, p in self.model.named_parameters() if p.requires_grad])
        if bad is not None:
            param_name, value, count = bad
            raise ValueError(
                f"EvaluationAveraging: parameter {param_name!r} of the model holds {value} ({count} non-finite "
                f"entr{'y' if count == 1 else 'ies'}) at iteration {engine.state.iteration}; refusing to take it "
                f"into the average, which would stay non-finite for good. The training diverged before this update"
            )
        self.num_updates += 1
        setattr(engine.state, name, self.momentum(self.num_updates))

    def _after_update(self, engine: Engine) -> None:
        with torch.no_grad():
            for ema_param, param in zip(self.ema_handler.ema_model.parameters(), self.model.parameters()):
                if not param.requires_grad:
                    ema_param.copy_(param.detach())

    def _follow_device(self) -> None:
        reference = next(iter(self.model.parameters()))
        ema_reference = next(iter(self.ema_handler.ema_model.parameters()))
        if ema_reference.device != reference.device:
            self.ema_handler.ema_model.to(reference.device)

    # ------------------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The averaged weights (``averaged_model``'s state dict) and the number of updates so far."""
        return {"averaged_model": self.ema_handler.ema_model.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"averaged_model", "num_updates"}:
            got = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
            raise ValueError(f"state_dict must have the keys ['averaged_model', 'num_updates'], got {got}")
        num_updates = state_dict["num_updates"]
        num_updates = check_int("state_dict['num_updates']", num_updates, minimum=0)
        # Refused here, not at the first evaluation: NaN averaged weights would score as a broken model.
        check_finite_state(
            "EvaluationAveraging.load_state_dict", "state_dict['averaged_model']", state_dict["averaged_model"]
        )
        self.ema_handler.ema_model.load_state_dict(state_dict["averaged_model"])
        self.num_updates = num_updates
