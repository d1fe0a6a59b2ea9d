"""HistoricalAveraging: the hook-added gradient against a hand-written penalty, the running average against the
mean of the recorded parameters, state, and bad input."""
from __future__ import annotations

from typing import Callable, Dict, List

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from torch import nn

from ignite_igan.handlers import HistoricalAveraging

K_STEPS = 12
WEIGHT = 0.7


class TinyModel(nn.Module):
    """Float64 MLP with a frozen parameter and a trainable one that the loss never touches."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 5)
        self.out = nn.Linear(5, 1)
        self.frozen_gain = nn.Parameter(torch.tensor(1.5), requires_grad=False)
        self.unused = nn.Parameter(torch.randn(2))  # only the penalty gives it a gradient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x))) * self.frozen_gain


def make_model(seed: int = 0) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel().double()


def make_batches(n: int = K_STEPS) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return [torch.randn(8, 3, generator=g, dtype=torch.float64) for _ in range(n)]


def data_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (model(x) - x.sum(dim=1, keepdim=True).sin()).pow(2).mean()


OPTIMIZERS: Dict[str, Callable] = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01, betas=(0.5, 0.999)),
}


def trainable(model: nn.Module) -> List[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def run_with_handler(optimizer_name: str, **handler_kwargs):
    model = make_model()
    optimizer = OPTIMIZERS[optimizer_name](trainable(model))
    recorded: List[List[torch.Tensor]] = []

    def step(engine, x):
        optimizer.zero_grad()
        loss = data_loss(model, x)
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer = Engine(step)
    # attached first, so it sees the parameters the handler records at the same event
    trainer.add_event_handler(
        Events.ITERATION_STARTED, lambda: recorded.append([p.detach().clone() for p in trainable(model)])
    )
    handler = HistoricalAveraging(model, weight=WEIGHT, optimizer=optimizer, **handler_kwargs)
    handler.attach(trainer)
    trainer.run(make_batches(), max_epochs=1)
    return model, handler, recorded, trainer


def run_by_hand(optimizer_name: str):
    """The paper's cost written out: f(θ) + λ||θ - mean(θ[1..t])||², θ[t] being the current value."""
    model = make_model()
    params = trainable(model)
    optimizer = OPTIMIZERS[optimizer_name](params)
    history: List[List[torch.Tensor]] = []
    for x in make_batches():
        history.append([p.detach().clone() for p in params])
        averages = [torch.stack(values).mean(dim=0) for values in zip(*history)]
        optimizer.zero_grad()
        penalty = sum(((p - a) ** 2).sum() for p, a in zip(params, averages))
        loss = data_loss(model, x) + WEIGHT * penalty
        loss.backward()
        optimizer.step()
    return model


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_hook_matches_hand_written_penalty(optimizer_name):
    model, handler, _, _ = run_with_handler(optimizer_name)
    reference = run_by_hand(optimizer_name)
    for (name, got), expected in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14, msg=f"parameter {name}")
    # the run must actually be pulled by the penalty: without it the parameters end elsewhere
    free = make_model()
    optimizer = OPTIMIZERS[optimizer_name](trainable(free))
    for x in make_batches():
        optimizer.zero_grad()
        data_loss(free, x).backward()
        optimizer.step()
    assert not torch.allclose(free.hidden.weight, model.hidden.weight, atol=1e-6)
    # the penalty alone reaches the parameter the loss never uses (as autograd would); the frozen one is left alone
    assert model.unused.grad is not None
    assert model.frozen_gain.grad is None and model.frozen_gain.item() == 1.5


def test_running_average_is_mean_of_recorded_parameters():
    model, handler, recorded, _ = run_with_handler("adam")
    assert handler.num_updates == K_STEPS
    assert list(handler.averages) == ["unused", "hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    for index, (name, average) in enumerate(handler.averages.items()):
        expected = np.mean(np.stack([step[index].numpy() for step in recorded]), axis=0)
        np.testing.assert_allclose(average.numpy(), expected, rtol=1e-13, atol=1e-15, err_msg=name)


def test_exponential_average_matches_numpy_recursion():
    decay = 0.8
    _, handler, recorded, _ = run_with_handler("sgd", average="exponential", decay=decay)
    for index, average in enumerate(handler.averages.values()):
        expected = recorded[0][index].numpy().copy()
        for step in recorded[1:]:
            expected = decay * expected + (1 - decay) * step[index].numpy()
        np.testing.assert_allclose(average.numpy(), expected, rtol=1e-13, atol=1e-15)


def test_manual_penalty_matches_hook():
    hooked, _, _, _ = run_with_handler("adam")
    model = make_model()
    optimizer = OPTIMIZERS["adam"](trainable(model))
    handler = HistoricalAveraging(model, weight=WEIGHT)  # no optimizer: the user adds penalty() to the loss

    def step(engine, x):
        optimizer.zero_grad()
        loss = data_loss(model, x) + handler.penalty()
        loss.backward()
        optimizer.step()

    trainer = Engine(step)
    handler.attach(trainer)
    trainer.run(make_batches(), max_epochs=1)
    for got, expected in zip(model.parameters(), hooked.parameters()):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_penalty_published_in_engine_state():
    model = make_model()
    optimizer = OPTIMIZERS["sgd"](trainable(model))
    handler = HistoricalAveraging(model, weight=WEIGHT, optimizer=optimizer)
    history: List[List[torch.Tensor]] = []
    expected_penalties: List[float] = []
    published: List[float] = []

    def step(engine, x):
        params = trainable(model)
        averages = [torch.stack(values).mean(dim=0) for values in zip(*history)]
        expected_penalties.append(WEIGHT * sum(((p - a) ** 2).sum().item() for p, a in zip(params, averages)))
        optimizer.zero_grad()
        data_loss(model, x).backward()
        optimizer.step()

    trainer = Engine(step)
    trainer.add_event_handler(
        Events.ITERATION_STARTED, lambda: history.append([p.detach().clone() for p in trainable(model)])
    )
    handler.attach(trainer, name="penalty_D")
    assert trainer.state.penalty_D == 0.0
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda: published.append(float(trainer.state.penalty_D)))
    trainer.run(make_batches(), max_epochs=1)
    assert expected_penalties[0] == 0.0  # the average of one value is that value
    assert expected_penalties[-1] > 0.0
    np.testing.assert_allclose(published, expected_penalties, rtol=1e-12, atol=1e-15)


def test_filtered_event_records_only_those_iterations():
    model = make_model()
    optimizer = OPTIMIZERS["sgd"](trainable(model))
    handler = HistoricalAveraging(model, weight=WEIGHT, optimizer=optimizer)
    recorded: List[torch.Tensor] = []
    seen_before_first_update: List[torch.Tensor] = []

    def step(engine, x):
        if engine.state.iteration < 3:
            seen_before_first_update.append(model.unused.detach().clone())
        optimizer.zero_grad()
        data_loss(model, x).backward()
        optimizer.step()

    trainer = Engine(step)
    trainer.add_event_handler(
        Events.ITERATION_STARTED(every=3), lambda: recorded.append(model.hidden.weight.detach().clone())
    )
    handler.attach(trainer, event=Events.ITERATION_STARTED(every=3))
    trainer.run(make_batches(), max_epochs=1)
    assert handler.num_updates == K_STEPS // 3 == len(recorded)
    torch.testing.assert_close(handler.averages["hidden.weight"], torch.stack(recorded).mean(0), rtol=1e-13, atol=0)
    # until the first update (iteration 3) there is no past and no penalty: `unused` gets no gradient
    assert all(torch.equal(value, seen_before_first_update[0]) for value in seen_before_first_update)


def test_one_instance_per_player_and_unique_state_names():
    gen, disc = make_model(1), make_model(2)
    opt_g, opt_d = OPTIMIZERS["sgd"](trainable(gen)), OPTIMIZERS["sgd"](trainable(disc))
    trainer = Engine(lambda engine, batch: None)
    ha_g = HistoricalAveraging(gen, weight=0.1, optimizer=opt_g)
    ha_d = HistoricalAveraging(disc, weight=0.2, optimizer=opt_d)
    ha_g.attach(trainer, name="historical_penalty_G")
    ha_d.attach(trainer, name="historical_penalty_D")
    with pytest.raises(ValueError, match="historical_penalty_D"):
        HistoricalAveraging(disc, weight=0.2).attach(trainer, name="historical_penalty_D")
    with pytest.raises(ValueError, match="engine is not the engine this HistoricalAveraging is registered with"):
        ha_g.attach(Engine(lambda engine, batch: None), name="other")
    trainer.run([0, 1], max_epochs=1)
    assert ha_g.num_updates == ha_d.num_updates == 2
    ha_g.detach(trainer)
    assert not hasattr(trainer.state, "historical_penalty_G")
    ha_g.attach(trainer, name="historical_penalty_G")  # can come back
    ha_g.detach(trainer)
    before = [p.clone() for p in trainable(gen)]
    opt_g.zero_grad(set_to_none=False)
    opt_g.step()  # no hook any more: zero gradients leave SGD's parameters as they are
    assert all(torch.equal(a, b) for a, b in zip(before, trainable(gen)))


def test_state_dict_round_trip_through_checkpoint(tmp_path):
    _, handler, _, _ = run_with_handler("adam")
    checkpoint = Checkpoint({"ha": handler}, DiskSaver(tmp_path, require_empty=False))
    checkpoint(Engine(lambda e, b: None))
    fresh_model = make_model()
    fresh = HistoricalAveraging(fresh_model, weight=WEIGHT)
    assert fresh.state_dict() == {"num_updates": 0, "averages": None}
    Checkpoint.load_objects({"ha": fresh}, checkpoint=checkpoint.last_checkpoint)
    assert fresh.num_updates == K_STEPS
    for (name, got), expected in zip(fresh.averages.items(), handler.averages.values()):
        assert torch.equal(got, expected), name
        assert got.data_ptr() != expected.data_ptr()
    # continue recording: the restored count weighs the next value by 1/(t+1)
    fresh.update()
    expected = handler.averages["out.bias"] + (fresh_model.out.bias - handler.averages["out.bias"]) / (K_STEPS + 1)
    torch.testing.assert_close(fresh.averages["out.bias"], expected.detach(), rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="hidden.weight"):
        fresh.load_state_dict({"num_updates": 1, "averages": {"hidden.weight": torch.zeros(5, 3)}})
    with pytest.raises(ValueError, match=r"shape \(5, 3\)"):
        bad = dict(handler.state_dict()["averages"])
        bad["hidden.weight"] = torch.zeros(3, 5)
        fresh.load_state_dict({"num_updates": 1, "averages": bad})


def test_bad_input():
    model = make_model()
    with pytest.raises(ValueError, match=r"model must have at least one trainable parameter.*ReLU"):
        HistoricalAveraging(nn.ReLU(), weight=0.1)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="trainable parameter"):
        HistoricalAveraging(frozen, weight=0.1)
    with pytest.raises(ValueError, match=r"weight must be >= 0.*-0\.5"):
        HistoricalAveraging(model, weight=-0.5)
    with pytest.raises(ValueError, match=r"weight.*nan"):
        HistoricalAveraging(model, weight=float("nan"))
    with pytest.raises(TypeError, match=r"weight must be a real number.*str"):
        HistoricalAveraging(model, weight="0.1")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        HistoricalAveraging([torch.zeros(2)], weight=0.1)
    with pytest.raises(ValueError, match=r"average must be one of \('uniform', 'exponential'\), got 'mean'"):
        HistoricalAveraging(model, weight=0.1, average="mean")
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\), got 1\.5"):
        HistoricalAveraging(model, weight=0.1, average="exponential", decay=1.5)
    other = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"optimizer must step every trainable parameter.*hidden.weight"):
        HistoricalAveraging(model, weight=0.1, optimizer=other)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        HistoricalAveraging(model, weight=0.1, optimizer="adam")
    with pytest.raises(TypeError, match="engine must be an ignite.engine.Engine"):
        HistoricalAveraging(model, weight=0.1).attach(object())


# ---------------------------------------------------------------------------------------------------------------
# Callable, registration once, non-finite parameters, parameters frozen or unfrozen later
# ---------------------------------------------------------------------------------------------------------------
def sgd_run(register, steps: int = K_STEPS):
    """A run whose handler is registered by `register(trainer, handler)`; returns the model, handler, trainer and
    the penalties published after each iteration."""
    model = make_model()
    optimizer = OPTIMIZERS["adam"](trainable(model))
    handler = HistoricalAveraging(model, weight=WEIGHT, optimizer=optimizer)

    def step(engine, x):
        optimizer.zero_grad()
        data_loss(model, x).backward()
        optimizer.step()

    trainer = Engine(step)
    register(trainer, handler)
    published: List[float] = []
    # registered before the handler's set-up: the published value must not depend on the order (the callable
    # creates the attribute at its first event, attach at once)
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda: published.append(float(getattr(trainer.state, "historical_penalty", 0.0)))
    )
    trainer.run(make_batches(steps), max_epochs=1)
    return model, handler, trainer, published


@pytest.mark.parametrize("event, updates", [(Events.ITERATION_STARTED, K_STEPS), (Events.ITERATION_STARTED(every=3), K_STEPS // 3)])
def test_add_event_handler_gives_the_attach_result(event, updates):
    attached = sgd_run(lambda trainer, handler: handler.attach(trainer, event=event))
    called = sgd_run(lambda trainer, handler: trainer.add_event_handler(event, handler))
    (model_a, ha_a, _, published_a), (model_c, ha_c, trainer_c, published_c) = attached, called
    assert ha_a.num_updates == ha_c.num_updates == updates
    for (name, a), c in zip(model_a.named_parameters(), model_c.parameters()):
        assert torch.equal(a, c), name
    for name in ha_a.averages:
        assert torch.equal(ha_a.averages[name], ha_c.averages[name]), name
    assert published_a == published_c and published_c[-1] > 0  # the lazily registered publisher and hook worked
    # detach undoes the callable's set-up too (the callable itself is the user's to remove)
    ha_c.detach(trainer_c)
    assert not ha_c.optimizer._optimizer_step_pre_hooks and not hasattr(trainer_c.state, "historical_penalty")


def test_registered_twice_or_with_two_engines_is_refused():
    model = make_model()
    handler = HistoricalAveraging(model, weight=WEIGHT, optimizer=OPTIMIZERS["sgd"](trainable(model)))
    trainer = Engine(lambda engine, batch: None)
    handler.attach(trainer)
    with pytest.raises(ValueError, match=r"engine already has this HistoricalAveraging attached; attaching it twice"):
        handler.attach(trainer, name="other_name")
    with pytest.raises(ValueError, match=r"engine already has this HistoricalAveraging attached with attach\(\)"):
        handler(trainer)
    with pytest.raises(ValueError, match=r"engine is not the engine this HistoricalAveraging is registered with"):
        handler(Engine(lambda engine, batch: None))
    handler.detach(trainer)
    other = Engine(lambda engine, batch: None)
    other.add_event_handler(Events.ITERATION_STARTED, handler)
    with pytest.raises(ValueError, match=r"engine already has this HistoricalAveraging registered as an event handler"):
        handler.attach(other)
    other.run([0, 1], max_epochs=1)
    assert handler.num_updates == 2
    # a second callable handler on the same engine would publish under the same name: refused, with the way out
    second = HistoricalAveraging(make_model(3), weight=WEIGHT)
    with pytest.raises(ValueError, match=r"engine.state already has an attribute 'historical_penalty'.*attach\(engine, name=\.\.\.\)"):
        second(other)
    second.attach(other, name="historical_penalty_G")  # the refused call left no registration behind


@pytest.mark.parametrize("bad", [float("nan"), float("-inf")])
def test_non_finite_parameter_is_refused_with_iteration_parameter_and_value(bad):
    model = make_model()
    optimizer = OPTIMIZERS["sgd"](trainable(model))
    handler = HistoricalAveraging(model, weight=WEIGHT, optimizer=optimizer)
    trainer = Engine(lambda engine, batch: None)

    @trainer.on(Events.ITERATION_STARTED(once=4))
    def diverge():
        with torch.no_grad():
            model.out.weight[0, 2] = bad

    handler.attach(trainer)
    with pytest.raises(ValueError, match=rf"parameter 'out.weight' holds {bad} \(1 non-finite entry\) at iteration 4"):
        trainer.run(make_batches(), max_epochs=1)
    assert handler.num_updates == 3 and torch.isfinite(handler.averages["out.weight"]).all()
    with pytest.raises(ValueError, match=rf"'out.weight' holds {bad} .* at update 4"):
        handler.update()  # called by hand: the update count stands in for the iteration


def test_parameters_frozen_or_unfrozen_later_are_refused_not_dropped():
    model = make_model()
    optimizer = OPTIMIZERS["sgd"](list(model.parameters()))
    handler = HistoricalAveraging(model, weight=WEIGHT, optimizer=optimizer)
    handler.update()
    model.hidden.bias.requires_grad_(False)
    with pytest.raises(ValueError, match=r"model: its trainable parameters changed.*no longer trainable .*\['hidden.bias'\]"):
        handler.update()
    with pytest.raises(ValueError, match=r"no longer trainable.*hidden.bias"):
        handler.penalty()
    handler.attach(Engine(lambda engine, batch: None))
    before = model.hidden.weight.detach().clone()
    with pytest.raises(ValueError, match="hidden.bias"):
        optimizer.step()  # the step hook refuses too, before anything moves
    assert torch.equal(model.hidden.weight, before)
    model.hidden.bias.requires_grad_(True)
    handler.update()  # back as it was built: accepted
    model.frozen_gain.requires_grad_(True)
    with pytest.raises(ValueError, match=r"trainable but not averaged \(unfrozen or added after the handler was built\): \['frozen_gain'\]"):
        handler.update()
    assert handler.num_updates == 2
