"""The pieces the sample-quality and mixture recipes take from the package: scoring, loaders, flags, checks."""
import argparse
import dataclasses
import math
import runpy
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


# --- The recipes' command line: --help of every file, defaults shown once, groups, one name per idea ------------------
RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SHARED_FILES = {"semi_supervised.py": "digits_ssl", "sample_quality.py": "digits_samples"}


def _recipe_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPES))
    import mixture
    import sample_quality
    import semi_supervised
    return semi_supervised, sample_quality, mixture


def _recipe_parsers(monkeypatch):
    """Every recipe's parser: each experiment of the two shared files, and the mixture's."""
    semi_supervised, sample_quality, mixture = _recipe_modules(monkeypatch)
    parsers = {name: module.build_parser(name) for module in (semi_supervised, sample_quality)
               for name in module.SETTINGS}
    parsers["mixture"] = mixture.build_parser()
    return parsers


def _flag_blocks(text):
    """``--help`` text -> {first option string: its invocation and help on one line}."""
    blocks, current = {}, None
    for line in text.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            blocks[current] = line
        elif line.startswith("   ") and current is not None:  # the help's continuation (a group's text has 2)
            blocks[current] += " " + line
        else:
            current = None
    return {flag: " ".join(block.split()) for flag, block in blocks.items()}


@pytest.mark.parametrize("argv", [[path.name, "--help"] for path in sorted(RECIPES.glob("*.py"))]
                         + [[name, experiment, "--help"] for name, experiment in SHARED_FILES.items()])
def test_every_recipe_file_answers_help_with_status_0(argv, monkeypatch, capsys):
    """Run as a script (``__main__``), each file of recipes/ prints its help and exits 0."""
    _recipe_modules(monkeypatch)  # the thin scripts import their shared file as python does (its folder on the path)
    monkeypatch.setattr(sys, "argv", [str(RECIPES / argv[0])] + argv[1:])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(RECIPES / argv[0]), run_name="__main__")
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    if len(argv) == 2 and argv[0] in SHARED_FILES:  # the list of experiments
        assert SHARED_FILES[argv[0]] in out
    else:  # an experiment's flags, named after the way it was called
        assert "--output-dir DIR" in out and "[more flags below]" in out
        assert out.startswith(f"usage: {' '.join(argv[:-1])} [-h]")


def test_every_flag_has_help_and_its_default_shown_once(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    for name, parser in _recipe_parsers(monkeypatch).items():
        blocks = _flag_blocks(parser.format_help())
        for action in parser._actions:
            flag = action.option_strings[0]
            assert action.help and action.help.strip(), f"{name} {flag}: no help"
            block = blocks[flag]
            assert block.lower().count("default") <= 1, f"{name}: {block}"
            for value in ("None", "True", "False"):
                assert f"(default: {value})" not in block, f"{name}: {block}"
            states_one = "default" in action.help.lower()
            if action.nargs != 0 and action.default is not None and not states_one:  # a value with a default
                assert f"(default: {action.default})" in block, f"{name}: {block}"
            if isinstance(action, argparse.BooleanOptionalAction) and action.default is not None:
                assert f"(default: {'on' if action.default else 'off'})" in block, f"{name}: {block}"


def test_the_help_shows_the_right_defaults(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    blocks = {name: _flag_blocks(parser.format_help()) for name, parser in _recipe_parsers(monkeypatch).items()}
    assert blocks["digits_ssl"]["--output-dir"].endswith("(default: runs/digits_ssl)")
    assert blocks["mixture"]["--output-dir"].endswith("(default: runs/mixture)")
    assert blocks["digits_ssl"]["--lr"].endswith("(default: 0.003)")
    assert blocks["cifar10_ssl"]["--lr"].endswith("(default: 0.0003)")
    assert blocks["digits_ssl"]["--baseline"].endswith("(default: on)")
    assert blocks["mnist_ssl"]["--baseline"].endswith("(default: off)")
    assert blocks["digits_ssl"]["--device"].endswith("(default: cuda when available, else cpu)")
    assert blocks["cifar10_samples"]["--no-verify-checksums"].endswith("(re-packed or cut-down copies)")
    assert blocks["mixture"]["--lr-decay-epochs"].endswith("(default: half of --epochs)")


def test_the_usage_line_names_the_main_flags_and_the_rest_is_grouped(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    parsers = _recipe_parsers(monkeypatch)
    for name, parser in parsers.items():
        text = parser.format_help()
        usage = text.split("\n\n")[0]
        assert all(len(line) <= 80 for line in usage.splitlines()), usage
        assert "[--epochs N]" in usage and "[--output-dir DIR]" in usage and "[--resume]" in usage
        assert usage.endswith("[more flags below]") and "--batch-size" not in usage and "--nproc" not in usage
        titles = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
        assert titles[0] in ("options", "optional arguments") and set(titles[1:]) <= set(cli.GROUPS), titles
        assert sorted(_flag_blocks(text.split("\n\n", 3)[2])) == ["--config", "-h"]  # the rest is in a group
        assert "[more flags: --help]" in parser.format_usage()
    usage = parsers["digits_ssl"].format_usage()
    assert "[--seeds SEEDS]" in usage and "[--baseline | --no-baseline]" in usage and "--data-dir" not in usage
    assert "[--no-minibatch-discrimination]" in parsers["cifar10_samples"].format_usage()


def test_one_name_per_idea_across_the_recipes_and_the_aliases_parse(monkeypatch):
    parsers = _recipe_parsers(monkeypatch)
    primaries, aliases = set(), set()
    for parser in parsers.values():
        for action in parser._actions:
            names = action.option_strings[:1 if isinstance(action, argparse.BooleanOptionalAction) else None]
            primaries.add(names[0])
            aliases.update(names[1:])
    assert not primaries & aliases  # no name is a flag in one recipe and another flag's alias in the next
    for name, primary, alias, value, dest in [
        ("digits_ssl", "--lr-decay-epochs", "--decay-epochs", "3", "lr_decay_epochs"),
        ("cifar10_samples", "--lr-decay-epochs", "--decay-epochs", "3", "lr_decay_epochs"),
        ("mixture", "--lr-decay-epochs", "--decay-epochs", "3", "decay_epochs"),
        ("digits_samples", "--historical-averaging-weight", "--historical-weight", "0.5",
         "historical_averaging_weight"),
        ("mixture", "--historical-averaging-weight", "--historical-weight", "0.5", "historical_weight"),
        ("mixture", "--init-examples", "--init-samples", "7", "init_samples"),
        ("digits_samples", "--no-minibatch-discrimination", "--no-minibatch-features", None, "no_minibatch_features"),
        ("digits_ssl", "--ema-reference", "--ema-reference-start", None, "ema_reference"),
    ]:
        parser = parsers[name]
        with_primary = cli.parse_args(parser, [primary] + ([value] if value else []))
        with_alias = cli.parse_args(parser, [alias] + ([value] if value else []))
        assert with_primary == with_alias != cli.parse_args(parser, [])
        assert getattr(with_alias, dest) == (float(value) if value and "." in value else int(value) if value else True)
