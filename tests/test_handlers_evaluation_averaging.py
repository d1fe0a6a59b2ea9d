"""EvaluationAveraging: EMAHandler's momentum against the reference's recursion a <- a + r (p - a) (NumPy),
the zero start, bias correction, frozen tensors, evaluation copy and checkpoint."""
from __future__ import annotations

import warnings
from typing import List

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from torch import nn

from ignite_igan.handlers import EvaluationAveraging


class Disc(nn.Module):
    """Float64 model with a frozen gain (like a hidden weight-norm g), a buffer and dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.gain = nn.Parameter(torch.ones(3), requires_grad=False)
        self.register_buffer("calls", torch.zeros(()))
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        if self.training:
            self.calls += 1
        return self.dropout(self.linear(x)) * self.gain


def make_disc() -> Disc:
    torch.manual_seed(0)
    return Disc().double()


def train(averaging_kwargs, event, steps=30, attach_kwargs=None):
    """SGD on a fixed regression; returns the model, the handler and the trainable parameters at every event."""
    model = make_disc()
    averaging = EvaluationAveraging(model, **averaging_kwargs)
    optimizer = torch.optim.SGD(model.linear.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(steps)]
    recorded: List[np.ndarray] = []
    momenta: List[float] = []

    def step(engine, x):
        optimizer.zero_grad()
        model.eval()
        (model(x) - x[:, :3].cos()).pow(2).mean().backward()
        optimizer.step()

    trainer = Engine(step)
    def record():
        recorded.append(torch.cat([model.linear.weight.flatten(), model.linear.bias]).detach().numpy().copy())

    trainer.add_event_handler(event, record)
    averaging.attach(trainer, event=event, **(attach_kwargs or {}))
    trainer.add_event_handler(event, lambda: momenta.append(trainer.state.ema_momentum))
    trainer.run(batches, max_epochs=1)
    return model, averaging, np.stack(recorded), momenta


def averaged_vector(averaging: EvaluationAveraging) -> np.ndarray:
    ema = averaging.averaged_model
    return torch.cat([ema.linear.weight.flatten(), ema.linear.bias]).detach().numpy()


def reference_recursion(values: np.ndarray, rate: float) -> np.ndarray:
    """spec §4.5: a starts at 0, a <- a + rate * (p - a) per step, no bias correction."""
    average = np.zeros_like(values[0])
    for value in values:
        average = average + rate * (value - average)
    return average


@pytest.mark.parametrize("rate", [1e-4, 0.05])
def test_reference_mode_is_the_reference_recursion_on_pre_step_weights(rate):
    # ITERATION_STARTED sees the weights before the step, like the reference's simultaneous Theano updates
    model, averaging, recorded, momenta = train({"rate": rate, "bias_correction": False}, Events.ITERATION_STARTED)
    expected = reference_recursion(recorded, rate)
    np.testing.assert_allclose(averaged_vector(averaging), expected, rtol=1e-12, atol=1e-18)
    assert momenta == [rate] * len(recorded)  # EMAHandler momentum == the reference's rate, not 0.9999
    # shrunk towards the zero start by 1 - (1 - rate)^n, as the reference is
    shrink = 1 - (1 - rate) ** len(recorded)
    assert np.abs(averaged_vector(averaging)).sum() < shrink * np.abs(recorded).max(0).sum() + 1e-12


def test_default_event_averages_post_step_weights():
    rate = 0.05
    model, averaging, recorded, _ = train({"rate": rate, "bias_correction": False}, Events.ITERATION_COMPLETED)
    np.testing.assert_allclose(averaged_vector(averaging), reference_recursion(recorded, rate), rtol=1e-12)
    final = torch.cat([model.linear.weight.flatten(), model.linear.bias]).detach().numpy()
    np.testing.assert_array_equal(recorded[-1], final)


@pytest.mark.parametrize("rate", [1e-4, 0.05])
def test_bias_correction_divides_the_zero_started_average(rate):
    _, averaging, recorded, momenta = train({"rate": rate}, Events.ITERATION_COMPLETED)
    n = len(recorded)
    expected = reference_recursion(recorded, rate) / (1 - (1 - rate) ** n)
    np.testing.assert_allclose(averaged_vector(averaging), expected, rtol=1e-9)
    assert momenta[0] == 1.0
    np.testing.assert_allclose(momenta, [rate / (1 - (1 - rate) ** t) for t in range(1, n + 1)], rtol=1e-12)
    # a weighted mean of the weights seen (weights summing to 1): inside their range, unlike the shrunk one
    assert np.all(averaged_vector(averaging) >= recorded.min(0) - 1e-12)
    assert np.all(averaged_vector(averaging) <= recorded.max(0) + 1e-12)


def test_filtered_event_counts_updates():
    _, averaging, recorded, _ = train({"rate": 0.1}, Events.ITERATION_COMPLETED(every=3))
    assert averaging.num_updates == len(recorded) == 10


def test_frozen_tensors_are_copied_not_averaged():
    model = make_disc()
    averaging = EvaluationAveraging(model, rate=0.01, bias_correction=False)
    ema = averaging.ema_handler.ema_model
    assert torch.count_nonzero(ema.linear.weight) == 0  # the reference's zero start
    with torch.no_grad():
        model.gain.mul_(3.0)  # e.g. data-dependent init after the handler was built
    assert torch.equal(averaging.averaged_model.gain, model.gain)
    trainer = Engine(lambda engine, batch: model.train()(torch.ones(2, 4, dtype=torch.float64)))
    averaging.attach(trainer)
    trainer.run([0] * 5, max_epochs=1)
    assert torch.equal(averaging.averaged_model.gain, torch.full((3,), 3.0, dtype=torch.float64))
    assert averaging.averaged_model.calls.item() == 5  # buffers follow the model
    expected_weight = (1 - (1 - 0.01) ** 5) * model.linear.weight
    torch.testing.assert_close(averaging.averaged_model.linear.weight, expected_weight, rtol=1e-12, atol=0)


def test_averaged_model_for_evaluation():
    model = make_disc()
    averaging = EvaluationAveraging(model)
    ema = averaging.averaged_model
    assert ema is averaging.ema_handler.ema_model and ema is not model
    # before any update the bias-corrected average is the model itself
    assert torch.equal(ema.linear.weight, model.linear.weight)
    ema.train()
    assert averaging.averaged_model.training is False
    assert all(not p.requires_grad for p in ema.parameters())
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(averaging.averaged_model(x), model.eval()(x))  # deterministic: dropout off


def test_state_dict_round_trip_through_checkpoint(tmp_path):
    _, averaging, _, _ = train({"rate": 0.05}, Events.ITERATION_COMPLETED)
    checkpoint = Checkpoint({"ema": averaging}, DiskSaver(tmp_path, require_empty=False))
    checkpoint(Engine(lambda e, b: None))
    restored = EvaluationAveraging(make_disc(), rate=0.05)
    Checkpoint.load_objects({"ema": restored}, checkpoint=checkpoint.last_checkpoint)
    assert restored.num_updates == averaging.num_updates == 30
    for (name, got), expected in zip(
        restored.ema_handler.ema_model.named_parameters(), averaging.ema_handler.ema_model.parameters()
    ):
        if name.startswith("linear"):
            assert torch.equal(got, expected), name
    with pytest.raises(ValueError, match=r"must have the keys \['averaged_model', 'num_updates'\], got \['model'\]"):
        restored.load_state_dict({"model": {}})


def test_bad_input():
    with pytest.raises(ValueError, match=r"model must have at least one trainable parameter.*Tanh"):
        EvaluationAveraging(nn.Tanh())
    for rate in (0.0, 1.0, -1e-4):
        with pytest.raises(ValueError, match=rf"rate must be in \(0, 1\).*got {rate!r}"):
            EvaluationAveraging(nn.Linear(2, 2), rate=rate)
    with pytest.raises(TypeError, match="rate must be a real number, got str"):
        EvaluationAveraging(nn.Linear(2, 2), rate="1e-4")
    with pytest.raises(TypeError, match="bias_correction must be a bool"):
        EvaluationAveraging(nn.Linear(2, 2), bias_correction="no")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        EvaluationAveraging(lambda x: x)


# ---------------------------------------------------------------------------------------------------------------
# Callable, registration once, non-finite weights, the rate convention
# ---------------------------------------------------------------------------------------------------------------
def sgd_trainer(model: nn.Module, steps: int = 8):
    optimizer = torch.optim.SGD(model.linear.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(steps)]

    def step(engine, x):
        optimizer.zero_grad()
        (model(x) - x[:, :3].cos()).pow(2).mean().backward()
        optimizer.step()

    return Engine(step), batches


@pytest.mark.parametrize("event, updates", [(Events.ITERATION_COMPLETED, 8), (Events.ITERATION_STARTED(every=2), 4)])
@pytest.mark.parametrize("bias_correction", [True, False])
def test_add_event_handler_gives_the_attach_result(event, updates, bias_correction):
    results = []
    for use_attach in (True, False):
        model = make_disc()
        averaging = EvaluationAveraging(model, rate=0.05, bias_correction=bias_correction)
        trainer, batches = sgd_trainer(model)
        if use_attach:
            averaging.attach(trainer, event=event)
        else:
            trainer.add_event_handler(event, averaging)
        trainer.run(batches, max_epochs=1)
        results.append((averaging.num_updates, trainer.state.ema_momentum, averaging.state_dict()["averaged_model"]))
    (n_attach, momentum_attach, attached), (n_call, momentum_call, called) = results
    assert n_attach == n_call == updates
    assert momentum_attach == momentum_call
    assert attached.keys() == called.keys()
    for key in attached:
        assert torch.equal(attached[key], called[key]), key
    assert not torch.equal(attached["linear.weight"], make_disc().linear.weight.detach())  # it did average


def test_registered_twice_with_one_engine_is_refused():
    model = make_disc()
    trainer, _ = sgd_trainer(model)
    averaging = EvaluationAveraging(model)
    averaging.attach(trainer)
    with pytest.raises(ValueError, match=r"engine already has this EvaluationAveraging attached.*twice per event"):
        averaging.attach(trainer)
    with pytest.raises(ValueError, match=r"engine already has this EvaluationAveraging attached with attach\(\)"):
        averaging(trainer)  # as if also registered with add_event_handler
    with pytest.raises(ValueError, match=r"engine is not the engine this EvaluationAveraging is registered with"):
        averaging.attach(Engine(lambda e, b: None))  # one average, one run

    callable_first = EvaluationAveraging(model)
    other, batches = sgd_trainer(model)
    other.add_event_handler(Events.ITERATION_COMPLETED, callable_first)
    with pytest.raises(ValueError, match=r"engine already has this EvaluationAveraging registered as an event handler"):
        callable_first.attach(other)
    other.run(batches[:2], max_epochs=1)
    assert callable_first.num_updates == 2  # the refused attach left nothing behind
    with pytest.raises(ValueError, match="engine is not the engine"):
        callable_first(trainer)
    with pytest.raises(TypeError, match="engine must be an ignite.engine.Engine, got str"):
        EvaluationAveraging(model)("trainer")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_with_iteration_parameter_and_value(bad):
    model = make_disc()
    averaging = EvaluationAveraging(model, rate=0.05)
    trainer, batches = sgd_trainer(model)

    @trainer.on(Events.ITERATION_COMPLETED(once=3))
    def diverge():
        with torch.no_grad():
            model.linear.bias[1] = bad

    averaging.attach(trainer)  # after `diverge`: it sees the bad weight at iteration 3
    with pytest.raises(ValueError, match=rf"parameter 'linear.bias' holds {bad} \(1 non-finite entry\) at iteration 3"):
        trainer.run(batches, max_epochs=1)
    assert averaging.num_updates == 2
    assert torch.isfinite(averaging.ema_handler.ema_model.linear.bias).all()  # the average was not touched
    # a frozen tensor is not averaged, so it is not checked either (it is copied as it is)
    frozen_nan = make_disc()
    with torch.no_grad():
        frozen_nan.gain[0] = float("nan")
    fine = EvaluationAveraging(frozen_nan, rate=0.05)
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.ITERATION_COMPLETED, fine)
    engine.run([0], max_epochs=1)
    assert fine.num_updates == 1


def test_rate_above_one_half_warns_about_the_convention():
    with pytest.warns(UserWarning, match=r"rate=0\.9999 is the weight of the NEW value.*pass rate=0\.0001"):
        EvaluationAveraging(nn.Linear(2, 2), rate=0.9999)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EvaluationAveraging(nn.Linear(2, 2), rate=0.5)
        EvaluationAveraging(nn.Linear(2, 2), rate=1e-4)


# --- added by tests: what the state keeps of frozen weights and buffers, and what loading restores ---


def _train_with_frozen_changes(model, averaging, steps, start=0, fused=False):
    """SGD steps that also change the frozen gain (at steps 3 and 6) and the buffer (each training forward).

    Returns the trainable parameters after each step, flattened (the values the average sees)."""
    optimizer = torch.optim.SGD(model.linear.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(7)
    batches = [torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(start + steps)][start:]
    recorded = []

    def step(engine, x):
        t = start + engine.state.iteration
        with torch.no_grad():
            if t in (3, 6):  # e.g. a data-dependent init or a user's edit of a frozen tensor
                model.gain.fill_(float(t))
        optimizer.zero_grad()
        torch.manual_seed(t)  # the dropout mask of step t, whatever run it is in
        (model.train()(x) - x[:, :3].cos()).pow(2).mean().backward()
        optimizer.step()
        if fused:
            averaging.step_update()
        recorded.append(torch.cat([model.linear.weight.flatten(), model.linear.bias]).detach().numpy().copy())

    trainer = Engine(step)
    if not fused:
        averaging.attach(trainer)
    trainer.run(batches, max_epochs=1)
    return recorded


@pytest.mark.parametrize("fused", [False, True], ids=["attached", "step_update"])
def test_state_dict_keeps_the_average_and_the_frozen_tensors_and_buffers_of_the_last_update(fused):
    rate = 0.2
    model = make_disc()
    averaging = EvaluationAveraging(model, rate=rate)
    recorded = np.stack(_train_with_frozen_changes(model, averaging, steps=8, fused=fused))
    state = averaging.state_dict()
    assert state["num_updates"] == 8
    saved = state["averaged_model"]
    assert sorted(saved) == ["calls", "gain", "linear.bias", "linear.weight"]
    assert torch.equal(saved["gain"], torch.full((3,), 6.0, dtype=torch.float64))
    assert saved["calls"].item() == 8  # the model's buffer, whether or not averaged_model was read
    n = len(recorded)
    expected = reference_recursion(recorded, rate) / (1 - (1 - rate) ** n)  # the bias-corrected average
    got = torch.cat([saved["linear.weight"].flatten(), saved["linear.bias"]]).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)
    # The frozen gain is the model's (6 since step 6), not an average of 1, 3 and 6.
    assert torch.equal(averaging.averaged_model.gain, torch.full((3,), 6.0, dtype=torch.float64))
    assert torch.equal(averaging.state_dict()["averaged_model"]["gain"], torch.full((3,), 6.0, dtype=torch.float64))
    assert averaging.state_dict()["averaged_model"]["calls"].item() == 8  # the buffer follows the model


@pytest.mark.parametrize("fused", [False, True], ids=["attached", "step_update"])
def test_a_resumed_average_equals_the_uninterrupted_one_frozen_tensors_and_buffers_included(fused):
    rate = 0.2
    straight_model = make_disc()
    straight = EvaluationAveraging(straight_model, rate=rate)
    _train_with_frozen_changes(straight_model, straight, steps=9, fused=fused)

    first_model = make_disc()
    first = EvaluationAveraging(first_model, rate=rate)
    _train_with_frozen_changes(first_model, first, steps=5, fused=fused)  # stopped after step 5 (gain 3)
    saved_model = {k: v.clone() for k, v in first_model.state_dict().items()}
    saved_average = first.state_dict()
    saved_average = {"averaged_model": {k: v.clone() for k, v in saved_average["averaged_model"].items()},
                     "num_updates": saved_average["num_updates"]}

    resumed_model = make_disc()  # gain 1, no calls: everything must come from the checkpoint
    resumed = EvaluationAveraging(resumed_model, rate=rate)
    resumed_model.load_state_dict(saved_model)
    resumed.load_state_dict(saved_average)
    assert resumed.num_updates == 5
    for key, value in resumed.ema_handler.ema_model.state_dict().items():
        assert torch.equal(value, saved_average["averaged_model"][key]), key
    assert torch.equal(resumed.averaged_model.gain, torch.full((3,), 3.0, dtype=torch.float64))
    assert resumed.averaged_model.calls.item() == 5
    _train_with_frozen_changes(resumed_model, resumed, steps=4, start=5, fused=fused)
    expected, got = straight.averaged_model.state_dict(), resumed.averaged_model.state_dict()
    assert sorted(got) == sorted(expected) == ["calls", "gain", "linear.bias", "linear.weight"]
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    assert torch.equal(got["gain"], torch.full((3,), 6.0, dtype=torch.float64)) and got["calls"].item() == 9


def test_loading_a_state_without_the_frozen_tensors_or_buffers_is_refused():
    model = make_disc()
    averaging = EvaluationAveraging(model, rate=0.2)
    state = averaging.state_dict()
    for key in ("gain", "calls"):
        partial = {k: v for k, v in state["averaged_model"].items() if k != key}
        with pytest.raises(RuntimeError, match=key):
            EvaluationAveraging(make_disc(), rate=0.2).load_state_dict({"averaged_model": partial, "num_updates": 1})


def test_loading_the_average_leaves_the_models_buffers_alone():
    """averaged_model shares the model's buffers: a load must not write the checkpoint's into the live model."""
    model = make_disc()
    averaging = EvaluationAveraging(model, rate=0.2)
    _train_with_frozen_changes(model, averaging, steps=2)
    saved = {"averaged_model": {k: v.clone() for k, v in averaging.state_dict()["averaged_model"].items()},
             "num_updates": 2}  # calls = 2, as a checkpoint file holds it
    _train_with_frozen_changes(model, averaging, steps=3, start=2)
    assert averaging.averaged_model.calls.item() == 5
    averaging.load_state_dict(saved)
    assert model.calls.item() == 5
    assert averaging.ema_handler.ema_model.calls.item() == 2  # as loaded, until the model's are shared again
    assert averaging.averaged_model.calls.item() == 5
