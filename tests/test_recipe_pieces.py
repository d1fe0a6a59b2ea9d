"""The pieces the sample-quality and mixture recipes take from the package: scoring, loaders, flags, checks."""
import argparse
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from torch.utils.data import TensorDataset

from ignite_igan.experiments import cli
from ignite_igan.data import attach_epoch_order, epoch_loader
from ignite_igan.handlers import HistoricalAveraging, attach_historical_averaging
from ignite_igan.logging import log_figure
from ignite_igan.metrics import GeneratorEvaluator, ModeCoverage, generate_samples, ring_mixture
from ignite_igan.models import MixtureDiscriminator, MixtureGenerator
from ignite_igan.optim import ReferenceAdam, linear_decay_factor, linear_decay_scheduler
from ignite_igan.experiments.runs import History
from ignite_igan.experiments.scoring import attach_periodic_score, inception_report, score_network
from ignite_igan.validation import check_fields


def _scorer(n=4):
    return GeneratorEvaluator(torch.nn.Linear(2, 2), {}, n_samples=n, batch_size=2,
                              noise_fn=lambda k, rng: torch.randn(k, 2, generator=rng))


def test_periodic_score_runs_every_n_epochs_and_after_the_last_once():
    trainer = Engine(lambda engine, batch: None)
    history = attach_periodic_score(trainer, _scorer(), every=2)
    trainer.run([0, 1, 2], max_epochs=6)
    assert [(e["epoch"], e["iteration"]) for e in history.entries] == [(2, 6), (4, 12), (6, 18)]
    with pytest.raises(ValueError, match="every must be >= 1"):
        attach_periodic_score(trainer, _scorer(), every=0)
    with pytest.raises(TypeError, match="scorer must be a GeneratorEvaluator"):
        attach_periodic_score(trainer, object(), every=1)


def test_inception_report_matches_the_recipes_lines():
    history = History()
    history.append(epoch=1, iteration=5, **{"is": 1.23456, "is_std": 0.5})
    metrics, lines = inception_report(history, _scorer(), 5000, 10, {"network": "x", "file": None})
    assert list(metrics) == ["inception_score", "inception_score_std", "inception_history", "score_samples",
                             "score_splits", "score_network", "inception_score_protocol"]
    assert lines == ["  score        1.235 ± 0.500 (5,000 samples, x)"]
    with pytest.raises(ValueError, match="no score"):
        inception_report(History(), _scorer(), 1, 1, {"network": "x"})


def test_score_network_refuses_unknown_names_and_reports_missing_weights(tmp_path):
    with pytest.raises(ValueError, match="network must be one of"):
        score_network("inception")
    with pytest.raises(ValueError, match=r"the score's network \(torchvision\) is not available"):
        score_network("torchvision", weights=tmp_path / "none.pth")


def test_epoch_loader_orders_by_seed_and_epoch_and_checks_the_batch():
    data = TensorDataset(torch.arange(20))
    seen = []
    trainer = Engine(lambda engine, batch: seen.append(batch[0].tolist()))
    loader = epoch_loader(data, batch_size=5, seed=3)
    attach_epoch_order(trainer, loader)
    trainer.run(loader, max_epochs=2, epoch_length=2)
    again = epoch_loader(data, batch_size=5, seed=3)
    again.sampler.set_epoch(1)
    assert seen[2:] == [b[0].tolist() for b in again][:2] and seen[:2] != seen[2:]
    with pytest.raises(ValueError, match="fewer than one batch of --batch-size=30"):
        epoch_loader(data, batch_size=30, seed=0)
    with pytest.raises(TypeError, match="set_epoch"):
        attach_epoch_order(trainer, torch.utils.data.DataLoader(data))


def test_score_arguments_and_data_dir_check(tmp_path, capsys):
    parser = cli.recipe_parser("demo", epochs=1, labels_per_class=None, data_dir="data")
    cli.add_score_arguments(parser, every=3, samples=100)
    args = cli.parse_args(parser, ["--data-dir", str(tmp_path / "missing"), "--is-network", "torchvision"])
    assert (args.is_every, args.is_samples, args.is_network, args.inception_weights) == (3, 100, "torchvision", None)
    with pytest.raises(SystemExit):
        cli.check_data_dir(parser, args, "cifar10")
    assert "--data-dir" in capsys.readouterr().err
    cli.check_data_dir(parser, cli.parse_args(parser, ["--data-dir", str(tmp_path)]), "cifar10")


def test_dataclass_from_args_and_check_fields():
    @dataclasses.dataclass
    class Config:
        kind: str = "a"
        epochs: int = 2
        lr: float = 0.1

        def __post_init__(self):
            check_fields(self, minimums={"epochs": 2}, choices={"kind": ("a", "b")},
                         ranges={"lr": (0.0, math.inf, False)})

    args = argparse.Namespace(kind="b", epochs=4, lr=0.5, other=1)
    assert cli.dataclass_from_args(Config, args, lr=0.25) == Config("b", 4, 0.25)
    for bad, error, message in ((dict(epochs=1), ValueError, "epochs must be >= 2, got 1"),
                                (dict(epochs=2.0), TypeError, "epochs must be an int, got float 2.0"),
                                (dict(kind="c"), ValueError, r"kind must be one of \('a', 'b'\), got 'c'"),
                                (dict(lr=math.nan), ValueError, r"lr must be in \(0.0, inf\), got nan"),
                                (dict(lr=True), TypeError, "lr must be a real number, got bool True")):
        with pytest.raises(error, match=message):
            Config(**bad)
    with pytest.raises(TypeError, match="dataclass instance"):
        check_fields(Config)


def test_historical_averaging_on_both_players_and_linear_decay():
    d, g = torch.nn.Linear(2, 1), torch.nn.Linear(2, 2)
    d_opt, g_opt = ReferenceAdam(d.parameters(), lr=1.0), ReferenceAdam(g.parameters(), lr=1.0)
    trainer = Engine(lambda engine, batch: None)
    handlers = attach_historical_averaging(trainer, {"d": (d, d_opt), "g": (g, g_opt)}, weight=0.1)
    assert list(handlers) == ["historical_averaging_d", "historical_averaging_g"]
    assert all(isinstance(h, HistoricalAveraging) and h.weight == 0.1 for h in handlers.values())
    linear_decay_scheduler([d_opt, g_opt], total_epochs=5, decay_epochs=3).attach(trainer)
    trainer.run([0], max_epochs=5)
    assert trainer.state.historical_penalty_d == 0.0 and hasattr(trainer.state, "historical_penalty_g")
    assert d_opt.param_groups[0]["lr"] == g_opt.param_groups[0]["lr"] == linear_decay_factor(4, 5, 3)
    with pytest.raises(ValueError, match="decay_epochs must be in"):
        linear_decay_scheduler(d_opt, total_epochs=2, decay_epochs=3)


def test_generated_samples_are_the_scored_ones_and_the_evaluator_sets_state(tmp_path):
    torch.manual_seed(0)
    mixture, generator = ring_mixture(), MixtureGenerator(scale=2.0)
    scorer = GeneratorEvaluator(generator, {"coverage": ModeCoverage(mixture.centers, mixture.std)},
                                n_samples=300, batch_size=100, seed=4)
    trainer = Engine(lambda engine, batch: None)
    scorer.attach(trainer, Events.EPOCH_COMPLETED, state_attributes={"modes": "coverage"})
    trainer.run([0], max_epochs=1)
    assert trainer.state.modes == mixture.coverage(generate_samples(generator, 300, 100, seed=4))["modes"]
    figure = mixture.plot(generate_samples(generator, 300, seed=4))

    class Writer:
        def add_figure(self, tag, fig, global_step):
            self.got = (tag, global_step)

    writer = Writer()
    assert log_figure(writer, "samples", figure, 7, path=tmp_path / "s.png") == str(tmp_path / "s.png")
    assert writer.got == ("samples", 7) and (tmp_path / "s.png").is_file()


def test_batch_mean_init_of_the_mixture_discriminator():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="no minibatch layer"):
        MixtureDiscriminator(minibatch_kernels=0).init_minibatch_batch_mean(torch.randn(10, 2))
    d = MixtureDiscriminator(minibatch_kernels=4)
    d.init_minibatch_batch_mean(torch.randn(50, 2))
    assert d(torch.randn(8, 2)).shape == (8,)


@pytest.mark.parametrize("script, experiment", [("semi_supervised.py", "digits_ssl"),
                                                ("sample_quality.py", "digits_samples")])
def test_shared_recipe_files_answer_help_and_refuse_no_experiment(script, experiment):
    """`--help` on a recipe file that serves several experiments prints their names and exits 0; nothing exits 1."""
    path = Path(__file__).resolve().parent.parent / "recipes" / script
    helped = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert experiment in helped.stdout and "EXPERIMENT --help" in helped.stdout
    refused = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and experiment in refused.stderr
