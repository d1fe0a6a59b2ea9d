"""The non-finite guard: at once for numbers, at the next check for outputs read from the device rarely; never
after a checkpoint handler has seen the bad epoch."""
import math

import pytest
import torch
from ignite.engine import Engine, Events

from ignite_igan.experiments.runs import NonFiniteLossError, attach_nonfinite_guard


def _engine(bad_at, as_tensor):
    def step(engine, batch):
        loss = math.nan if engine.state.iteration in bad_at else 0.5
        return {"loss": torch.tensor(loss) if as_tensor else loss, "other": torch.tensor(1.0) if as_tensor else 1.0}

    return Engine(step)


def _run(engine, saved, epochs=3, length=20):
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: saved.append(e.state.epoch))  # a checkpoint stand-in
    with pytest.raises(NonFiniteLossError) as raised:
        engine.run(range(length), max_epochs=epochs)
    return str(raised.value), engine.state.iteration


def test_numbers_stop_at_the_bad_iteration():
    engine, saved = _engine(bad_at={7}, as_tensor=False), []
    attach_nonfinite_guard(engine)
    message, stopped = _run(engine, saved)
    assert stopped == 7 and "iteration 7 (epoch 1)" in message and "loss = nan" in message and saved == []


def test_deferred_outputs_stop_at_the_next_check_naming_the_first_bad_iteration():
    engine, saved = _engine(bad_at={7, 9}, as_tensor=True), []
    attach_nonfinite_guard(engine, check_every=5, defer=True)
    message, stopped = _run(engine, saved)
    assert stopped == 10 and "iteration 7 (epoch 1)" in message and saved == []


def test_deferred_outputs_are_read_before_the_epochs_checkpoint():
    engine, saved = _engine(bad_at={38}, as_tensor=True), []
    attach_nonfinite_guard(engine, check_every=100, defer=True)
    message, stopped = _run(engine, saved)
    assert stopped == 40 and "iteration 38 (epoch 2)" in message
    assert saved == [1], "the checkpoint of the bad epoch was written"


def test_deferred_good_run_completes():
    engine = _engine(bad_at=set(), as_tensor=True)
    attach_nonfinite_guard(engine, check_every=3, defer=True)
    assert engine.run(range(20), max_epochs=2).iteration == 40
