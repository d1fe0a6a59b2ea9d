"""Test-time parameter averaging of the discriminator (the reference's ``disc_param_avg``,
:ref:`ref-evaluation-averaging`).

A thin layer around :class:`ignite.handlers.EMAHandler`, which does the averaging itself: this module adds the
reference's zero start, the optional bias correction, the frozen tensors and an update for a captured step.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch import Tensor, nn

from ignite_igan.handlers.base import AveragingHandler, Removable
from ignite_igan.validation import check_bool, check_finite_parameters, check_real

__all__ = ["EvaluationAveraging"]

_UPDATE = Events.ITERATION_COMPLETED  # the private engine's event at which EMAHandler updates


class EvaluationAveraging(AveragingHandler):
    """An exponential moving average of a model's weights to evaluate with (:ref:`ref-evaluation-averaging`).

    The reference evaluates the classifier with ``a ← a + 1e-4·(p - a)`` per discriminator step, for every
    *trainable* parameter p, with ``a`` starting at zero and no bias correction. The averaging is done by
    :class:`ignite.handlers.EMAHandler`; this class adds what the reference needs around it.

    **Mapping onto EMAHandler's momentum.** In Ignite 0.5.x ``EMAHandler`` updates
    ``ema ← (1 - momentum)·ema + momentum·param`` at each event, so ``momentum`` is the weight of the *new* value:
    the reference's rate 1e-4 (its decay 0.9999) is ``momentum=1e-4``, not 0.9999. The rate has one name, ``rate``,
    from the recipes' ``--ema-rate`` to ``rate``; the momentum is the weight of one update (the rate, or more
    with the bias correction below), published as ``engine.state.<name>`` as EMAHandler publishes it.

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

    **Device and checkpoint.** The averaged copy is moved to the model's device at every update and whenever
    :attr:`averaged_model` is read. :meth:`state_dict` holds the averaged weights and the update count,
    so ``ignite.handlers.Checkpoint`` saves and restores them.

    **Non-finite weights are refused.** Before each update every trainable parameter is checked (one
    ``isfinite().all()`` per tensor, one host transfer per device); a NaN or infinity raises a :class:`ValueError`
    that names the iteration, the parameter and the value, instead of poisoning the average for good.

    **attach or callable.** ``attach(engine, event)`` and ``engine.add_event_handler(event, averaging)`` give the
    same average: each event is one update. ``attach`` adds only the choice of the ``engine.state`` attribute that
    receives the momentum (the callable writes ``engine.state.ema_momentum``). A handler serves one engine, once
    (one average fed by two engines would mix their updates).

    Args:
        model: the model to average, usually the discriminator/classifier (``DistributedDataParallel`` and
            ``DataParallel`` are unwrapped).
        rate: the weight of the new value at each update, in (0, 1); the reference's 1e-4 by default. Beware of
            the convention: many EMA implementations take the *decay* (0.9999) instead; a ``rate`` above 0.5 warns,
            as it makes the "average" follow the live weights.
        bias_correction: see above; ``False`` reproduces the reference.
        check_finite: before every update, check that the model's weights are finite and refuse the update
            otherwise (a NaN would stay in the average for good). The check reads every weight, which on a CPU
            costs several times the update itself: pass False where a guard that runs first already stops training
            at the first non-finite loss (:func:`ignite_igan.experiments.runs.attach_nonfinite_guard`, as the
            recipes do).

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

    default_event = Events.ITERATION_COMPLETED
    default_name = "ema_momentum"
    twice = "update the average twice per event"
    one_engine = "one average fed by two engines would mix their updates"
    state_keys = ("averaged_model", "num_updates")

    def __init__(
        self, model: nn.Module, rate: float = 1e-4, bias_correction: bool = True, check_finite: bool = True
    ) -> None:
        super().__init__(model)
        self.rate = check_real("rate", rate, minimum=0.0, maximum=1.0, low_open=True, high_open=True,
                               hint="the reference uses 1e-4, i.e. decay 0.9999")
        if self.rate > 0.5:
            # Other EMA code takes the decay (0.9999): passed here it would make the "average" the live weights.
            warnings.warn(f"rate={self.rate!r} is the weight of the NEW value in each update, ema <- (1 - rate)·ema + "
                          f"rate·θ (the reference uses rate=1e-4, i.e. decay 0.9999); above 0.5 the average mostly "
                          f"follows the live weights. If you meant a decay of {self.rate!r}, pass "
                          f"rate={1.0 - self.rate:.6g}", UserWarning, stacklevel=2)
        self.bias_correction = check_bool("bias_correction", bias_correction)
        self.check_finite = check_bool("check_finite", check_finite)
        self.ema_handler = EMAHandler(model, momentum=self.rate, handle_buffers="copy")
        # EMAHandler updates its copy at an event of the engine it is attached to: attached to a private engine
        # whose event this handler fires once per update, it serves attach and the callable alike.
        self._updates = Engine(lambda engine, batch: None)
        self.ema_handler.attach(self._updates, name="momentum", event=_UPDATE)
        self._num_updates = 0
        self._device_count: Optional[Tensor] = None  # the count on the device, once step_update is used
        self._step_tensors: Tuple[List[Tensor], ...] = ()  # step_update's averaged, live, frozen tensors
        # the reference's zero start, for the trainable parameters (docs/reference.md, Evaluation)
        if not self.bias_correction:
            with torch.no_grad():
                for ema_param, param in self._pairs():
                    if param.requires_grad:
                        ema_param.zero_()

    def _pairs(self) -> List[Tuple[Tensor, Tensor]]:
        return list(zip(self.ema_handler.ema_model.parameters(), self.model.parameters()))

    @property
    def num_updates(self) -> int:
        """Updates of the average so far, read from the device after :meth:`step_update` (which waits for it)."""
        return self._num_updates if self._device_count is None else int(self._device_count)

    @num_updates.setter
    def num_updates(self, value: int) -> None:
        self._num_updates = value
        if self._device_count is not None:
            self._device_count.fill_(value)

    def momentum(self, update: int) -> float:
        """The EMAHandler momentum of the ``update``-th update (1-based)."""
        if not self.bias_correction:
            return self.rate
        # 1 - (1 - rate)^n without cancellation
        total_weight = -math.expm1(update * math.log1p(-self.rate))
        return min(1.0, self.rate / total_weight)

    # ------------------------------------------------------------------------------------------------------
    def _set_up(self, engine: Engine, name: Optional[str], attached: bool) -> List[Removable]:
        if self._device_count is not None:
            raise RuntimeError("EvaluationAveraging updates inside a trainer's step (step_update): not at an event too")
        if not hasattr(engine.state, name):  # readable before the first update, as EMAHandler.attach makes it
            setattr(engine.state, name, self.rate)
        return []

    def _on_event(self, engine: Engine) -> None:
        if self.check_finite:  # before the count moves, so a refused update leaves the handler's state as it was
            trained = [(key, p) for key, p in self.model.named_parameters() if p.requires_grad]
            check_finite_parameters("EvaluationAveraging", trained, f"iteration {engine.state.iteration}")
        self.num_updates += 1
        momentum = self._updates.state.momentum = self.momentum(self.num_updates)
        setattr(engine.state, self.state_name, momentum)
        self._follow_device()
        self._updates.fire_event(_UPDATE)  # EMAHandler: ema <- (1 - momentum)·ema + momentum·θ, every parameter
        self._copy_from_model(trained=False)

    def step_update(self) -> None:
        """One update of the average made of device operations only, for a trainer's fused step.

        Pass it to the trainer (``after_step=[averaging.step_update]`` in
        :func:`~ignite_igan.engines.create_semi_supervised_trainer`, or ``before_step`` for the reference's
        pre-step average) instead of attaching the handler: it then runs inside the step, compiled or captured in
        a CUDA graph with it. The count and the momentum live on the device (float64, the host's formula), so
        nothing waits for the device; the update is EMAHandler's ``ema ← (1 - m)·ema + m·θ``
        (``_ema_update_``), equal to the attached handler's to float rounding. It does not check the weights
        for NaN (that would wait for the device): the trainer's non-finite guard stops a diverged run before its
        next checkpoint.

        Raises:
            RuntimeError: if the handler is also registered with an engine (the average would be updated twice).
        """
        if self._device_count is None:  # the first call: the count moves to the device, the tensors are kept
            if self.engine is not None:  # (later, _set_up refuses an engine)
                raise RuntimeError("EvaluationAveraging is attached to an engine already: step_update would average "
                                   "twice")
            self._follow_device()
            pairs = self._pairs()
            trained = [(e, p.detach()) for e, p in pairs if p.requires_grad]
            frozen = [(e, p.detach()) for e, p in pairs if not p.requires_grad]
            self._step_tensors = tuple([t[i] for t in group] for group in (trained, frozen) for i in (0, 1))
            self._device_count = torch.full((), float(self._num_updates), dtype=torch.float64,
                                            device=pairs[0][1].device)
        emas, params, frozen_emas, frozen_params = self._step_tensors
        self._device_count.add_(1)
        with torch.no_grad():
            momentum: Union[float, Tensor] = self.rate
            if self.bias_correction:  # rate / (1 - (1 - rate)^n), as momentum() computes it on the host
                momentum = (self.rate / -torch.expm1(self._device_count * math.log1p(-self.rate))).clamp(max=1.0)
            _ema_update_(emas, params, momentum)
            if frozen_emas:  # as the attached handler does after each update
                torch._foreach_copy_(frozen_emas, frozen_params)

    @property
    def averaged_model(self) -> nn.Module:
        """The averaged copy, in eval mode, on the model's device, with the model's frozen tensors."""
        ema_model = self.ema_handler.ema_model
        self._follow_device()
        self._copy_from_model(trained=self.bias_correction and self.num_updates == 0)  # bias-corrected, no update
        self._share_buffers()
        return ema_model.eval()

    def _share_buffers(self) -> None:
        # The buffers (batch-norm statistics, counters) are the model's, not averaged: shared, they follow it.
        for ema_buffer, buffer in zip(self.ema_handler.ema_model.buffers(), self.model.buffers()):
            ema_buffer.data = buffer.data

    def _copy_from_model(self, trained: bool) -> None:
        # The frozen tensors are used as they are, not averaged (with `trained`, the trainable ones too).
        with torch.no_grad():
            for ema_param, param in self._pairs():
                if trained or not param.requires_grad:
                    ema_param.copy_(param.detach())

    def _follow_device(self) -> None:
        device = next(iter(self.model.parameters())).device
        if next(iter(self.ema_handler.ema_model.parameters())).device != device:
            self.ema_handler.ema_model.to(device)

    # ------------------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The averaged weights (``averaged_model``'s state dict, the frozen tensors as last copied) and the number
        of updates so far; the buffers are the model's, as :attr:`averaged_model` has them."""
        # step_update copies no buffer (and nothing may have read averaged_model yet): share them now, so that a
        # checkpoint holds the model's buffers whichever way the average is updated.
        self._share_buffers()
        return {"averaged_model": self.ema_handler.ema_model.state_dict(), "num_updates": self.num_updates}

    def _load_state(self, state_dict: Mapping[str, Any]) -> None:
        num_updates, averaged = self._loaded_average(state_dict, "averaged_model")
        for ema_buffer in self.ema_handler.ema_model.buffers():  # shared with the model: load into a copy
            ema_buffer.data = ema_buffer.data.clone()
        self.ema_handler.ema_model.load_state_dict(averaged)
        self.num_updates = num_updates


def _ema_update_(averages: List[Tensor], params: List[Tensor], momentum: Union[float, Tensor]) -> None:
    """EMAHandler's update ``ema ← (1 - m)·ema + m·θ`` on lists of tensors, in device operations only (for
    :meth:`EvaluationAveraging.step_update`, inside a compiled or captured step).

    A float ``m`` gets EMAHandler's own arithmetic (``mul_(1 - m)`` then ``add_(θ, alpha=m)``), bit for bit. A 0-d
    tensor ``m`` (the bias-corrected momentum, computed on the device in float64) cannot be an ``alpha``: ``m·θ`` is
    rounded before the sum, which agrees with EMAHandler's to float rounding.
    """
    if isinstance(momentum, Tensor):
        dtype = averages[0].dtype
        torch._foreach_mul_(averages, (1.0 - momentum).to(dtype))
        torch._foreach_add_(averages, torch._foreach_mul(params, momentum.to(dtype)))
    else:
        torch._foreach_mul_(averages, 1.0 - momentum)
        torch._foreach_add_(averages, params, alpha=momentum)
