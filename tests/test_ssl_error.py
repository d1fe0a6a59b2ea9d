"""SemiSupervisedError and ErrorEvaluator."""
import numpy as np
import pytest
import torch
from torch import nn

from ignite.engine import Engine, Events
from ignite.exceptions import NotComputableError

from ignite_igan.metrics import ErrorEvaluator, SemiSupervisedError


def numpy_error(logits, labels):
    """The reference's test error: mean(argmax(output_before_softmax) != y)."""
    predictions = np.argmax(np.asarray(logits), axis=1)
    wrong = predictions != np.asarray(labels)
    return wrong.mean(), int(wrong.sum())


def test_rate_and_count_match_numpy_and_do_not_depend_on_batching():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1000, 10, generator=generator)
    labels = torch.randint(0, 10, (1000,), generator=generator)
    rate, count = numpy_error(logits.numpy(), labels.numpy())
    for batch_size in (1000, 100, 37):
        engine = Engine(lambda engine, batch: batch)
        SemiSupervisedError().attach(engine, "error")
        state = engine.run(list(zip(logits.split(batch_size), labels.split(batch_size))))
        assert state.metrics["error"] == pytest.approx(rate, abs=1e-15)
        assert state.metrics["error_count"] == count
        assert isinstance(state.metrics["error_count"], int)


def test_known_values_and_dict_output():
    metric = SemiSupervisedError()
    y_pred = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    metric.update((y_pred, torch.tensor([0, 1, 2, 2])))
    assert metric.compute() == {"rate": 0.25, "count": 1, "total": 4}
    engine = Engine(lambda engine, batch: {"y_pred": y_pred, "y": torch.tensor([1, 1, 1, 1])})
    SemiSupervisedError().attach(engine, "err")
    state = engine.run([0])
    assert state.metrics["err"] == 0.75 and state.metrics["err_count"] == 3
    metric.reset()
    with pytest.raises(NotComputableError):
        metric.compute()


def test_state_dict_round_trip():
    metric = SemiSupervisedError()
    metric.update((torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1])))
    other = SemiSupervisedError()
    other.load_state_dict(metric.state_dict())
    assert other.compute() == {"rate": 0.5, "count": 1, "total": 2}


def test_bad_input_errors_name_the_argument():
    metric = SemiSupervisedError()
    logits = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"got y_pred torch.float32 of shape \(3, 4\) and y torch.int64 of shape "
                                         r"\(3,\) with labels in \[0, 4\]"):
        metric.update((logits, torch.tensor([0, 1, 4])))
    with pytest.raises(ValueError, match=r"labels in \[-1, 1\]"):
        metric.update((logits, torch.tensor([-1, 1, 0])))
    with pytest.raises(ValueError, match="N integer labels in .* and y torch.float32"):
        metric.update((logits, torch.tensor([0.0, 1.0, 2.0])))
    with pytest.raises(ValueError, match=r"shape \(3, 4\) and y torch.int64 of shape \(2,\)"):
        metric.update((logits, torch.tensor([0, 1])))
    with pytest.raises(ValueError, match=r"logits \(N, K\) .*got y_pred torch.float32 of shape \(3,\) and"):
        metric.update((torch.zeros(3), torch.tensor([0, 1, 2])))
    with pytest.raises(ValueError, match=r"got y_pred torch.float32 of shape \(3, 4\) with NaN"):
        metric.update((torch.full((3, 4), float("nan")), torch.tensor([0, 1, 2])))


class NoisyClassifier(nn.Module):
    """Gaussian input noise and dropout, as the discriminators have; returns (logits, features)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.dropout = nn.Dropout(0.9)

    def forward(self, x):
        if self.training:
            x = x + 100.0 * torch.randn_like(x)
        h = self.dropout(x)
        return self.linear(h), h


def _labeled_data(n=60):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=generator)
    return x, torch.randint(0, 3, (n,), generator=generator)


def test_error_evaluator_evaluates_in_eval_mode_and_restores_the_mode():
    model = NoisyClassifier().train()
    x, y = _labeled_data()
    loader = list(zip(x.split(25), y.split(25)))
    evaluator = ErrorEvaluator(model, loader, name="test_error")
    first = evaluator.run()
    assert model.training and model.dropout.training
    second = evaluator.run()
    assert first == second  # deterministic: no noise, no dropout
    with torch.no_grad():
        rate, count = numpy_error(model.eval()(x)[0].numpy(), y.numpy())
    assert first == {"test_error": pytest.approx(rate), "test_error_count": count}


def test_error_evaluator_runs_every_epoch_on_the_current_copy():
    models = [NoisyClassifier(), NoisyClassifier()]
    current = {"model": models[0]}
    x, y = _labeled_data()
    evaluator = ErrorEvaluator(lambda: current["model"], [(x, y)])
    history = []
    evaluator.engine.add_event_handler(Events.COMPLETED, lambda e: history.append(e.state.metrics["error_count"]))

    def step(engine, batch):
        current["model"] = models[engine.state.epoch % 2]  # e.g. an averaging handler replacing its copy

    trainer = Engine(step)
    evaluator.attach(trainer)
    trainer.run([0], max_epochs=3)
    expected = []
    for epoch in (1, 2, 3):
        with torch.no_grad():
            expected.append(numpy_error(models[epoch % 2].eval()(x)[0].numpy(), y.numpy())[1])
    assert history == expected
    with pytest.raises(TypeError, match="model must be an nn.Module or a callable"):
        ErrorEvaluator(3, [])
    x, y = _labeled_data()
    with pytest.raises(TypeError, match=r"model\(\) must return an nn.Module, got NoneType"):
        ErrorEvaluator(lambda: None, [(x, y)]).run()  # e.g. an average that does not exist yet
