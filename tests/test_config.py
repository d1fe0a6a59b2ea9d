"""The command line and ``--config`` files: every value is checked when parsed, with an error naming the flag or key."""
import json
import sys
from pathlib import Path

import pytest
import torch

from ignite_igan.experiments import cli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import semi_supervised  # noqa: E402  (recipes/semi_supervised.py)


def parse(argv, config=None, tmp_path=None):
    parser = semi_supervised.build_parser("digits_ssl")
    if config is not None:
        path = tmp_path / "config.json"
        path.write_text(config if isinstance(config, str) else json.dumps(config))
        argv = ["--config", str(path)] + list(argv)
    return cli.parse_args(parser, argv)


def error_of(capsys, argv, config=None, tmp_path=None):
    with pytest.raises(SystemExit) as stop:
        parse(argv, config, tmp_path)
    assert stop.value.code == 2
    return capsys.readouterr().err


def test_config_values_are_used_and_the_command_line_wins(tmp_path):
    args = parse(["--seed", "7"], {"seed": 3, "lr": 1, "baseline": False, "epochs": 5, "generator_loss": "minimax"},
                 tmp_path)
    assert (args.seed, args.lr, args.baseline, args.epochs, args.generator_loss) == (7, 1.0, False, 5, "minimax")


@pytest.mark.parametrize("config, message", [
    ({"baseline": "false"}, "key 'baseline' must be true or false (a JSON boolean), got 'false'"),
    ({"no_progress": 1}, "key 'no_progress' must be true or false"),
    ({"epochs": "3"}, "key 'epochs' must be an integer, got '3'"),
    ({"epochs": 3.5}, "key 'epochs' must be an integer, got 3.5"),
    ({"epochs": 0}, "key 'epochs': expected a positive integer, got '0'"),
    ({"lr": "0.1"}, "key 'lr' must be a number, got '0.1'"),
    ({"lr": True}, "key 'lr' must be a number, got True"),
    ({"seed": 2**40}, "key 'seed': expected an integer in [0,"),
    ({"generator_loss": "hinge"}, "key 'generator_loss' must be one of ['feature_matching', 'minimax'], got 'hinge'"),
    ({"ema_rate": 0.9999}, "key 'ema_rate': expected a rate in (0, 0.5]"),
    ({"learning_rate": 0.1}, "unknown key(s) ['learning_rate']"),
    ([1, 2], "must hold a JSON object of flag values, got a list"),
    ("{not json", "is not valid JSON"),
])
def test_config_files_are_checked_like_the_command_line(tmp_path, capsys, config, message):
    assert message in error_of(capsys, [], config, tmp_path)


def test_a_missing_config_file_is_named(tmp_path, capsys):
    assert f"--config: no such file {str(tmp_path / 'none.json')!r}" in error_of(
        capsys, ["--config", str(tmp_path / "none.json")])


@pytest.mark.parametrize("argv, message", [
    (["--ema-rate", "1"], "--ema-rate: expected a rate in (0, 0.5]"),
    (["--ema-rate", "0.9999"], "the reference uses 1e-4"),
    (["--seed", str(2**40)], "--seed: expected an integer in [0, "),
    (["--seed-data", "-1"], "--seed-data: expected an integer in [0, "),
    (["--init-examples", "1"], "--init-examples: expected an integer >= 2"),
    (["--device", "gpu"], "--device: expected cpu, cuda or cuda:N, got 'gpu'"),
    (["--lr", "nan"], "--lr: expected a finite number > 0, got 'nan'"),
    (["--unlabeled-weight", "-1"], "--unlabeled-weight: expected a finite number > 0"),
    (["--extend"], "--extend: extends a run, so it goes with --resume"),
    # A negative number is the flag's value, checked by the flag, not an option argparse does not know.
    (["--lr", "-inf"], "argument --lr: expected a finite number > 0, got '-inf'"),
    (["--lr", "-Infinity"], "argument --lr: expected a finite number > 0, got '-Infinity'"),
    (["--lr", "-nan"], "argument --lr: expected a finite number > 0, got '-nan'"),
    (["--lr", "-1e-3"], "argument --lr: expected a finite number > 0, got '-1e-3'"),
    (["--lr", "-.5"], "argument --lr: expected a finite number > 0, got '-.5'"),
    (["--ema-rate", "-1E+2"], "argument --ema-rate: expected a rate in (0, 0.5]"),
    (["--epochs", "-3"], "argument --epochs: expected a positive integer, got '-3'"),
    (["--epochs", "-2.5"], "argument --epochs: expected a positive integer, got '-2.5'"),
    (["--lr", "0.1", "-inf"], "unrecognized arguments: -inf"),  # a stray negative number is still refused
    (["--lr", "-in"], "argument --lr: expected one argument"),  # not a number: an option, as before
])
def test_every_range_is_checked_at_parse_time(capsys, argv, message):
    assert message in error_of(capsys, argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of CUDA flags on a machine without CUDA")
def test_cuda_flags_on_a_machine_without_cuda(capsys):
    assert "--device: got 'cuda', but CUDA is not available" in error_of(capsys, ["--device", "cuda"])
    assert "--backend nccl needs CUDA" in error_of(capsys, ["--backend", "nccl"])


def test_values_the_parser_accepts_are_accepted_by_the_run(tmp_path):
    """The edges of each range run: the smallest init batch, the largest rate, the largest seed."""
    argv = ["--epochs", "1", "--iterations-per-epoch", "1", "--batch-size", "20", "--init-examples", "2",
            "--ema-rate", "0.5", "--seed", str(cli.MAX_SEED), "--seed-data", str(cli.MAX_SEED), "--no-progress",
            "--no-baseline", "--output-dir", str(tmp_path / "run")]
    result = semi_supervised.train(0, parse(argv), "digits_ssl")
    assert result["iterations"] == 1 and isinstance(result["test_error"], float)


def _sample_quality_parser():
    import sample_quality  # noqa: E402  (recipes/sample_quality.py)
    return sample_quality.build_parser("cifar10_samples")


def _mixture_parser():
    import mixture  # noqa: E402  (recipes/mixture.py)
    return mixture.build_parser()


@pytest.mark.parametrize("build, config, dest, expected", [
    # A flag's alias and its destination are keys too, as its name is.
    (lambda: semi_supervised.build_parser("digits_ssl"), {"lr_decay_epochs": 3}, "lr_decay_epochs", 3),
    (lambda: semi_supervised.build_parser("digits_ssl"), {"decay_epochs": 3}, "lr_decay_epochs", 3),
    (_mixture_parser, {"lr_decay_epochs": 3}, "decay_epochs", 3),
    (_mixture_parser, {"decay_epochs": 3}, "decay_epochs", 3),
    (_mixture_parser, {"historical_averaging_weight": 0.5}, "historical_weight", 0.5),
    (_mixture_parser, {"historical_weight": 0.5}, "historical_weight", 0.5),
    (_mixture_parser, {"init_examples": 7}, "init_samples", 7),
    # A switch's name as a key: true is the switch given, whatever its destination is called.
    (lambda: semi_supervised.build_parser("digits_ssl"), {"ema_reference_start": True}, "ema_reference", True),
    (lambda: semi_supervised.build_parser("digits_ssl"), {"no_baseline": True}, "baseline", False),
    (lambda: semi_supervised.build_parser("mnist_ssl"), {"no_baseline": False}, "baseline", True),
    (lambda: semi_supervised.build_parser("mnist_ssl"), {"baseline": True}, "baseline", True),
    (_sample_quality_parser, {"no_verify_checksums": True}, "verify_checksums", False),
    (_sample_quality_parser, {"no_verify_checksums": False}, "verify_checksums", True),
    (_sample_quality_parser, {"verify_checksums": False}, "verify_checksums", False),
    (_sample_quality_parser, {"no_minibatch_discrimination": True}, "no_minibatch_features", True),
])
def test_config_keys_are_the_flags_names_and_aliases(tmp_path, build, config, dest, expected):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert getattr(cli.parse_args(build(), ["--config", str(path)]), dest) == expected


def test_two_names_of_one_flag_in_a_config_file_are_refused(tmp_path, capsys):
    assert "keys 'decay_epochs' and 'lr_decay_epochs' set the same flag; keep one of them" in error_of(
        capsys, [], {"decay_epochs": 3, "lr_decay_epochs": 4}, tmp_path)
    assert "keys 'baseline' and 'no_baseline' set the same flag" in error_of(
        capsys, [], {"baseline": True, "no_baseline": True}, tmp_path)
