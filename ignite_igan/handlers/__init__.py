"""Ignite handlers for the techniques of *Improved Techniques for Training GANs*.

Each handler is attached to a user's own trainer with ``attach(engine, event=...)``, or registered like any Ignite
handler with ``engine.add_event_handler(event, handler)`` (each class says what ``attach`` adds beyond the
callable), and keeps what a resumed run needs in ``state_dict()``/``load_state_dict()``, so that
:class:`ignite.handlers.Checkpoint` saves it. That protocol is written once, in :class:`Handler` (subclass it
for a handler of your own; :class:`AveragingHandler` for one that averages a model's parameters); registering a
handler twice with one engine raises a ``ValueError``:

- :class:`HistoricalAveraging` (paper §3.3): ``λ||θ - θ̄||²`` for a player, through an optimizer step hook;
  :func:`attach_historical_averaging` puts it on both players.
- :class:`OneSidedLabelSmoothing` (paper §3.4): the discriminator's real target in ``engine.state``.
- :class:`EvaluationAveraging` (:ref:`ref-evaluation-averaging`): the reference's averaged discriminator for evaluation,
  around :class:`ignite.handlers.EMAHandler`.
- :class:`VirtualBatchReference` (paper §3.4): the generator's fixed VBN reference noise.
- :class:`DataDependentInitialization` (:ref:`ref-data-init`): the weight-norm initialization pass, once.
"""
from ignite_igan.handlers.base import AveragingHandler, Handler
from ignite_igan.handlers.data_init import DataDependentInitialization
from ignite_igan.handlers.evaluation_averaging import EvaluationAveraging
from ignite_igan.handlers.historical_averaging import HistoricalAveraging, attach_historical_averaging
from ignite_igan.handlers.label_smoothing import OneSidedLabelSmoothing
from ignite_igan.handlers.reference_batch import VirtualBatchReference

__all__ = [
    "AveragingHandler",
    "DataDependentInitialization",
    "EvaluationAveraging",
    "Handler",
    "HistoricalAveraging",
    "OneSidedLabelSmoothing",
    "VirtualBatchReference",
    "attach_historical_averaging",
]
