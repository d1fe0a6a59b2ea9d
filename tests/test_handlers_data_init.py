"""DataDependentInitialization: runs the init pass once at Events.STARTED, never on resume, with tensors,
sequences, mappings or callables as the batch."""
from __future__ import annotations

import warnings
from typing import List

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from torch import nn

from ignite_igan.handlers import DataDependentInitialization, VirtualBatchReference
from ignite_igan.models import CIFARGenerator
from ignite_igan.nn import WeightNormLinear


def make_disc() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(WeightNormLinear(6, 16), nn.ReLU(), WeightNormLinear(16, 3, train_scale=True, init_scale=0.1))


def init_batch() -> torch.Tensor:
    return torch.randn(500, 6, generator=torch.Generator().manual_seed(5)) * 3.0 + 2.0


def first_layer_stats(disc: nn.Sequential, x: torch.Tensor):
    with torch.no_grad():
        out = disc[0](x).numpy().astype(np.float64)
    return out.mean(axis=0), out.std(axis=0)  # population std, as the reference's sqrt(mean((t-m)^2))


def sgd_engine(disc: nn.Module) -> Engine:
    optimizer = torch.optim.SGD(disc.parameters(), lr=0.5)

    def step(engine, x):
        optimizer.zero_grad()
        disc(x).pow(2).mean().backward()
        optimizer.step()

    return Engine(step)


def test_runs_once_at_start_on_the_given_batch():
    disc = make_disc()
    x = init_batch()
    mean, std = first_layer_stats(disc, x)
    assert np.abs(mean).max() > 0.1 and np.abs(std - 1.0).max() > 0.1  # not normalized before
    init = DataDependentInitialization(disc, x)
    stats_at_first_iteration = []
    trainer = Engine(lambda engine, batch: stats_at_first_iteration.append(first_layer_stats(disc, x)))
    init.attach(trainer)
    assert not init.done  # nothing happens before the run
    trainer.run([0], max_epochs=1)
    assert init.done
    # the pass ran at STARTED, on this batch: zero mean and unit (init_scale) std per unit of the first layer
    mean, std = stats_at_first_iteration[0]
    np.testing.assert_allclose(mean, 0.0, atol=1e-5)
    np.testing.assert_allclose(std, 1.0, rtol=1e-4)
    with torch.no_grad():  # stands for training
        for param in disc.parameters():
            param.add_(0.25)
    trained = {k: v.clone() for k, v in disc.state_dict().items()}
    trainer.state.max_epochs = None
    trainer.run([0, 0], max_epochs=2)  # STARTED fires again: the handler must not re-initialize
    for name, value in disc.state_dict().items():
        assert torch.equal(value, trained[name]), name


def test_not_run_again_on_resume(tmp_path):
    disc = make_disc()
    init = DataDependentInitialization(disc, init_batch())
    trainer = sgd_engine(disc)
    init.attach(trainer)
    checkpoint = Checkpoint(
        {"trainer": trainer, "disc": disc, "init": init}, DiskSaver(tmp_path, require_empty=False)
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    trainer.run([init_batch()[:10]] * 2, max_epochs=1)

    resumed_disc = make_disc()
    calls: List[int] = []

    def batch():
        calls.append(1)
        return init_batch()

    resumed = DataDependentInitialization(resumed_disc, batch)
    resumed_trainer = Engine(lambda engine, x: None)
    resumed.attach(resumed_trainer)
    Checkpoint.load_objects(
        {"trainer": resumed_trainer, "disc": resumed_disc, "init": resumed}, checkpoint=checkpoint.last_checkpoint
    )
    assert resumed.done
    loaded = {k: v.clone() for k, v in resumed_disc.state_dict().items()}
    resumed_trainer.run([init_batch()[:10]] * 2, max_epochs=2)
    assert calls == []  # the batch was not even produced
    for name, value in resumed_disc.state_dict().items():
        assert torch.equal(value, loaded[name]), name


def test_resumed_engine_without_handler_state_is_not_reinitialized():
    disc = make_disc()
    trainer = Engine(lambda engine, x: None)
    trainer.load_state_dict({"iteration": 4, "epoch_length": 2, "max_epochs": 2})
    init = DataDependentInitialization(disc, init_batch())
    init.attach(trainer)
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    with pytest.warns(UserWarning, match="resumes at iteration 4.*skipping the initialization pass"):
        trainer.run([0, 1], max_epochs=3)
    assert init.done
    for name, value in disc.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_callable_sequence_and_mapping_inputs():
    calls: List[int] = []

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = WeightNormLinear(4, 3)

        def forward(self, a, b=None):
            return self.layer(a + (0 if b is None else b))

    a, b = torch.randn(40, 4), torch.randn(40, 4)
    for inputs in ((a, b), [a, b], {"a": a, "b": b}):
        torch.manual_seed(0)
        model = TwoInputs()

        def produce(inputs=inputs):
            calls.append(1)
            return inputs

        init = DataDependentInitialization(model, produce)
        trainer = Engine(lambda engine, x: None)
        init.attach(trainer)
        trainer.run([0, 0], max_epochs=2)
        with torch.no_grad():
            out = model.layer(a + b)
        np.testing.assert_allclose(out.mean(0).numpy(), 0.0, atol=1e-5)
    assert calls == [1, 1, 1]  # once per handler, not per epoch or iteration


def test_generator_initialized_on_its_noise_after_its_reference():
    torch.manual_seed(0)
    gen = CIFARGenerator(z_dim=8, normalization="virtual", widths=(8, 4))
    scale_before = gen.output.scale.detach().clone()
    trainer = Engine(lambda engine, batch: None)
    VirtualBatchReference(gen, size=10, seed=0).attach(trainer)  # first: the VBN generator needs its reference
    init = DataDependentInitialization(gen, lambda: gen.sample_noise(100))
    init.attach(trainer)
    trainer.run([0], max_epochs=1)
    assert init.done and not torch.equal(gen.output.scale, scale_before)
    with torch.no_grad():  # output layer pre-activations on fresh noise now have std about init_scale = 0.1
        images = gen(gen.sample_noise(100))
    assert 0.05 < torch.atanh(images.clamp(-0.999, 0.999)).std().item() < 0.2


def test_state_dict_and_bad_input():
    init = DataDependentInitialization(make_disc(), init_batch())
    assert init.state_dict() == {"done": False}
    init.load_state_dict({"done": True})
    assert init.done
    with pytest.raises(ValueError, match=r"state_dict\['done'\] must be a bool \(True or False\), got int 1"):
        init.load_state_dict({"done": 1})
    with pytest.raises(ValueError, match=r"must have the key \['done'\], got \['finished'\]"):
        init.load_state_dict({"finished": True})
    with pytest.raises(ValueError, match="model must have parameters to initialize, got ReLU"):
        DataDependentInitialization(nn.ReLU(), init_batch())
    with pytest.raises(TypeError, match="inputs must be a tensor, a sequence.*got str"):
        DataDependentInitialization(make_disc(), "data/cifar")
    with pytest.raises(TypeError, match="inputs must be a tensor, a sequence.*got int"):
        DataDependentInitialization(make_disc(), 500)
    with pytest.raises(TypeError, match=r"inputs\(\) must return a tensor, a sequence or a mapping.*got NoneType"):
        DataDependentInitialization(make_disc(), lambda: None).run()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        DataDependentInitialization(None, init_batch())


def test_add_event_handler_gives_the_attach_result_and_registration_once():
    states = []
    for use_attach in (True, False):
        disc = make_disc()
        init = DataDependentInitialization(disc, init_batch())
        trainer = sgd_engine(disc)
        if use_attach:
            init.attach(trainer)
        else:
            trainer.add_event_handler(Events.STARTED, init)
        trainer.run([init_batch()[:8]] * 2, max_epochs=1)
        assert init.done
        states.append(disc.state_dict())
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name
    with pytest.raises(ValueError, match=r"engine already has this DataDependentInitialization registered as an event handler"):
        init.attach(trainer)
    with pytest.raises(TypeError, match="engine must be an ignite.engine.Engine, got int"):
        init(3)
    twice = DataDependentInitialization(make_disc(), init_batch())
    engine = Engine(lambda e, b: None)
    twice.attach(engine)
    with pytest.raises(ValueError, match=r"engine already has this DataDependentInitialization attached; attaching it twice"):
        twice.attach(engine)
    with pytest.raises(ValueError, match=r"engine already has this DataDependentInitialization attached with attach\(\)"):
        twice(engine)
    shared = Engine(lambda e, b: None)
    twice.attach(shared)  # another engine is fine: the pass runs once, whichever engine starts first
    shared.run([0], max_epochs=1)
    assert twice.done


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Linear(6, 4), nn.ReLU()),  # nothing init-capable
        nn.Sequential(WeightNormLinear(6, 4, data_init=False)),  # init-capable but switched off
    ],
)
def test_model_with_nothing_to_initialize_warns(model):
    with pytest.warns(UserWarning, match=r"model \(Sequential\) has no layer with a data-dependent initialization"):
        init = DataDependentInitialization(model, init_batch())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    init.run()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # what the warning said
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DataDependentInitialization(make_disc(), init_batch())  # a model with init layers: silent
