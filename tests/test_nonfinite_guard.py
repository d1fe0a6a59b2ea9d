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


# --- added by tests: the exact iteration and epoch named, infinities as well as NaN, in every output ---


def _bad_in_second_output(bad_at, value, kind):
    """``loss`` is always finite; ``other`` holds ``value`` at iteration ``bad_at`` (inside a vector for tensors)."""
    def step(engine, batch):
        v = value if engine.state.iteration == bad_at else 1.0
        if kind == "float":
            return {"loss": 0.5, "other": v}
        return {"loss": torch.tensor(0.5), "other": torch.tensor([0.25, v, 0.75])}

    return Engine(step)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("bad_at, epoch", [(1, 1), (20, 1), (21, 2), (39, 2), (40, 2), (41, 3)])
def test_every_output_is_checked_for_nan_and_infinities_and_the_exact_iteration_is_named(value, bad_at, epoch):
    for kind, defer in (("float", None), ("tensor", False), ("tensor", True)):
        engine, saved = _bad_in_second_output(bad_at, value, kind), []
        attach_nonfinite_guard(engine, check_every=1000, defer=defer)
        message, stopped = _run(engine, saved, epochs=3, length=20)
        # Read at once, or (deferred) at the end of the bad iteration's epoch; always before its checkpoint.
        assert stopped == (bad_at if not defer else 20 * epoch), (kind, defer)
        assert saved == list(range(1, epoch)), (kind, defer)
        assert message.startswith(f"iteration {bad_at} (epoch {epoch}) produced non-finite values: "), message
        if not defer:
            shown = str(value) if kind == "float" else f"[0.25, {value}, 0.75]"
            assert f"other = {shown}" in message and "loss" not in message, message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "+inf", "-inf"])
def test_deferred_checks_every_few_iterations_name_the_first_bad_one(value):
    engine, saved = _bad_in_second_output(22, value, "tensor"), []
    attach_nonfinite_guard(engine, check_every=3, defer=True)
    message, stopped = _run(engine, saved, epochs=3, length=20)
    assert stopped == 24 and saved == [1]
    assert message.startswith("iteration 22 (epoch 2) produced non-finite values: (at iteration 24: "), message


@pytest.mark.parametrize("output, shown", [
    (math.inf, "output = inf"), (-math.inf, "output = -inf"), (torch.tensor([1.0, -math.inf]), "output = [1.0, -inf]"),
])
def test_a_bare_output_is_checked(output, shown):
    engine, saved = Engine(lambda e, b: output if e.state.iteration == 3 else 1.0), []
    attach_nonfinite_guard(engine)
    message, stopped = _run(engine, saved, epochs=1, length=5)
    assert stopped == 3 and message.startswith(f"iteration 3 (epoch 1) produced non-finite values: {shown}. ")


def test_the_epoch_is_named_for_a_run_resumed_mid_way():
    """A resumed run's iteration counter goes on from the checkpoint: the epoch is that of the whole run."""
    engine, saved = _bad_in_second_output(47, math.inf, "tensor"), []
    attach_nonfinite_guard(engine, check_every=1000, defer=True)
    engine.load_state_dict({"iteration": 40, "epoch_length": 20, "max_epochs": 4})
    message, stopped = _run(engine, saved, epochs=4, length=20)
    assert stopped == 60 and message.startswith("iteration 47 (epoch 3) ")
