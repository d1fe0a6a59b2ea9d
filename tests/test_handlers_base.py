"""The protocol every handler shares (ignite_igan.handlers.base.Handler): detach, names, the base's own checks; and
step_update's arithmetic against EMAHandler's (the one update written beside it)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler

from ignite_igan.handlers import (
    DataDependentInitialization, EvaluationAveraging, Handler, HistoricalAveraging, OneSidedLabelSmoothing,
)
from ignite_igan.handlers.evaluation_averaging import _ema_update_
from ignite_igan.nn import WeightNormLinear


class Count(Handler):
    default_event, twice, one_engine, state_keys = Events.ITERATION_COMPLETED, "count twice", "", ("count",)

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def _on_event(self, engine: Engine) -> None:
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def _load_state(self, state_dict):
        self.count = state_dict["count"]


def test_detach_stops_the_event_logic_and_allows_a_new_attach():
    counter, engine = Count(), Engine(lambda e, b: None)
    counter.attach(engine)
    engine.run([0, 1], max_epochs=1)
    counter.detach(engine)
    engine.run([0, 1], max_epochs=1)
    assert counter.count == 2 and counter.engine is None
    counter.attach(engine, Events.ITERATION_STARTED(every=2))
    engine.run([0, 1, 2, 3], max_epochs=1)
    assert counter.count == 4


@pytest.mark.parametrize("make, event, name", [
    (lambda: OneSidedLabelSmoothing(0.8), Events.ITERATION_STARTED, "target_d"),
    (lambda: EvaluationAveraging(torch.nn.Linear(2, 2), rate=0.1), Events.ITERATION_COMPLETED, "momentum_d"),
    (lambda: HistoricalAveraging(torch.nn.Linear(2, 2), weight=0.1), Events.ITERATION_STARTED, "penalty_d"),
])
def test_every_handler_detaches_with_its_state_attribute(make, event, name):
    handler, engine = make(), Engine(lambda e, b: None)
    handler.attach(engine, event, name=name)
    engine.run([0], max_epochs=1)
    state = handler.state_dict()
    assert hasattr(engine.state, name)
    handler.detach(engine)
    assert not hasattr(engine.state, name)
    engine.run([0, 1], max_epochs=1)  # nothing of the handler runs any more
    assert repr(handler.state_dict()) == repr(state)
    handler.attach(Engine(lambda e, b: None))  # its engine is free again: a second engine is no longer refused


def test_the_base_checks_the_engine_the_name_and_the_state_keys():
    counter = Count()
    with pytest.raises(TypeError, match="Count publishes nothing in engine.state: attach takes no name"):
        counter.attach(Engine(lambda e, b: None), name="count")
    init = DataDependentInitialization(torch.nn.Sequential(WeightNormLinear(2, 2)), torch.randn(4, 2))
    with pytest.raises(TypeError, match="publishes nothing"):
        init.attach(Engine(lambda e, b: None), name="init")
    with pytest.raises(ValueError, match="name must be a valid attribute name, got 'a b'"):
        OneSidedLabelSmoothing().attach(Engine(lambda e, b: None), name="a b")
    with pytest.raises(TypeError, match="engine must be an ignite.engine.Engine, got NoneType"):
        counter.attach(None)
    with pytest.raises(ValueError, match=r"state_dict must have the key \['count'\], got \['n'\]"):
        counter.load_state_dict({"n": 1})
    counter.load_state_dict({"count": 5})
    assert counter.count == 5


def test_step_updates_arithmetic_is_emahandlers_bit_for_bit_with_a_float_momentum():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Linear(5, 3))
    ema = EMAHandler(model, momentum=0.013)
    engine = Engine(lambda e, b: None)
    ema.attach(engine, name="m", event=Events.ITERATION_COMPLETED)
    averages = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        engine.fire_event(Events.ITERATION_COMPLETED)
        _ema_update_(averages, [p.detach() for p in model.parameters()], 0.013)
    for got, expected in zip(averages, ema.ema_model.parameters()):
        assert torch.equal(got, expected)


def test_step_updates_device_momentum_is_the_formula_in_numpy():
    # a 0-d float64 momentum (the bias-corrected one of a captured step): ema <- (1 - m)·ema + m·θ, to rounding
    rng = np.random.default_rng(0)
    average, value, m = rng.normal(size=6), rng.normal(size=6), 0.3
    averages = [torch.tensor(average, dtype=torch.float32)]
    _ema_update_(averages, [torch.tensor(value, dtype=torch.float32)], torch.tensor(m, dtype=torch.float64))
    np.testing.assert_allclose(averages[0].numpy(), (1 - m) * average + m * value, rtol=1e-6, atol=1e-7)
