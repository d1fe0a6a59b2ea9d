"""Wrong inputs, as a user would pass them, get an error (or a warning) that names what is wrong.

Five classes of input, each met from the public API: numbers of the wrong type or kind, files that are not what
they claim, non-finite state loaded into handlers, inputs of the wrong meaning, and the command line.
"""
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from ignite_igan import functional as F
from ignite_igan import models
from ignite_igan.checkpointing import CheckpointError, ChecksummedSaver, load_latest_checkpoint
from ignite_igan.data import balanced_labeled_subset
from ignite_igan.engines import create_semi_supervised_trainer
from ignite_igan.handlers import EvaluationAveraging, HistoricalAveraging, OneSidedLabelSmoothing, VirtualBatchReference
from ignite_igan.metrics import (
    GeneratorEvaluator,
    InceptionScore,
    ModeCoverage,
    TFInceptionV3,
    TorchvisionInceptionV3,
    ring_mixture,
)
from ignite_igan.nn import GaussianNoise, MinibatchDiscrimination, VirtualBatchNorm, WeightNormLinear
from ignite_igan.optim import ReferenceAdam, linear_decay_factor
from ignite_igan.validation import ArgumentTypeError

ROOT = Path(__file__).resolve().parents[1]


def _linear():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def _ssl_trainer(**kwargs):
    generator, discriminator = models.digits_generator(), models.digits_discriminator()
    return create_semi_supervised_trainer(
        generator, discriminator, ReferenceAdam(discriminator.parameters()), ReferenceAdam(generator.parameters()),
        **kwargs,
    )


# --------------------------------------------------------------------------------------------------------------
# Numbers of the wrong type or kind
# --------------------------------------------------------------------------------------------------------------
# (call with the bad value, the argument's name); one for each part of the package.
WRONG_TYPE = {
    "functional": lambda v: F.virtual_batch_norm(torch.randn(4, 3), torch.randn(8, 3), eps=v),
    "functional_splits": lambda v: F.inception_score(torch.randn(20, 5), splits=v),
    "nn": lambda v: GaussianNoise(sigma=v),
    "nn_int": lambda v: MinibatchDiscrimination(4, num_kernels=v),
    "handlers": lambda v: HistoricalAveraging(_linear(), weight=v),
    "handlers_rate": lambda v: EvaluationAveraging(_linear(), rate=v),
    "handlers_smoothing": lambda v: OneSidedLabelSmoothing(real_target=v),
    "metrics": lambda v: InceptionScore(extractor=torch.nn.Flatten(), splits=v),
    "metrics_std": lambda v: ring_mixture(std=v),
    "metrics_evaluator": lambda v: GeneratorEvaluator(models.digits_generator(), {}, n_samples=v),
    "engines": lambda v: _ssl_trainer(unlabeled_weight=v),
    "optim": lambda v: ReferenceAdam(_linear().parameters(), lr=v),
    "optim_schedule": lambda v: linear_decay_factor(v, 10, 5),
    "data": lambda v: balanced_labeled_subset(np.arange(20) % 2, per_class=v, seed=0),
}
NAMES = {
    "functional": "eps", "functional_splits": "splits", "nn": "sigma", "nn_int": "num_kernels", "handlers": "weight",
    "handlers_rate": "rate", "handlers_smoothing": "real_target", "metrics": "splits", "metrics_std": "std",
    "metrics_evaluator": "n_samples", "engines": "unlabeled_weight", "optim": "lr", "optim_schedule": "epoch",
    "data": "per_class",
}


@pytest.mark.parametrize("where", sorted(WRONG_TYPE))
@pytest.mark.parametrize("bad", ["1", True])
def test_strings_and_booleans_are_refused_naming_the_argument(where, bad):
    with pytest.raises(ArgumentTypeError) as caught:
        WRONG_TYPE[where](bad)
    message = str(caught.value)
    assert message.startswith(f"{NAMES[where]} must be ") and f"got {type(bad).__name__} {bad!r}" in message
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)  # either may be caught


def test_numpy_numbers_are_accepted_where_python_numbers_are():
    logits = torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
    assert F.inception_score(logits, splits=np.int64(2)) == F.inception_score(logits, splits=2)
    assert InceptionScore(extractor=torch.nn.Flatten(), splits=np.int64(2))._splits == 2
    labels = np.arange(20) % 2
    assert torch.equal(balanced_labeled_subset(labels, per_class=np.int64(3), seed=np.uint32(4)),
                       balanced_labeled_subset(labels, per_class=3, seed=4))
    assert ReferenceAdam(_linear().parameters(), lr=np.float32(0.5)).param_groups[0]["lr"] == 0.5
    assert ring_mixture(num_modes=np.int64(8), std=np.float64(0.02)).num_modes == 8
    evaluator = GeneratorEvaluator(models.digits_generator(), {}, n_samples=np.int64(4), batch_size=np.int32(2))
    assert evaluator.batches() == [(0, 2), (2, 4)]
    assert MinibatchDiscrimination(np.int64(4), num_kernels=np.int16(3)).num_kernels == 3
    assert HistoricalAveraging(_linear(), weight=np.float32(0.25)).weight == 0.25


@pytest.mark.parametrize("call, message", [
    (lambda: F.virtual_batch_norm(torch.randn(4, 3), torch.randn(8, 3), eps=math.inf), "eps must be a finite number > 0, got inf"),
    (lambda: ring_mixture(std=math.inf), "std must be a finite number > 0, got inf"),
    (lambda: ModeCoverage(ring_mixture().centers, std=math.inf), "std must be a finite number > 0, got inf"),
    (lambda: ReferenceAdam(_linear().parameters(), lr=math.inf), "lr must be a finite number >= 0, got inf"),
    (lambda: HistoricalAveraging(_linear(), weight=math.inf), "weight must be a finite number >= 0"),
    (lambda: VirtualBatchNorm(3, eps=math.nan), "eps must be >= 0, got nan"),
    (lambda: WeightNormLinear(3, 2, init_scale=math.inf), "init_scale must be a finite number > 0, got inf"),
    (lambda: _ssl_trainer(unlabeled_weight=math.inf), "unlabeled_weight must be a finite number >= 0, got inf"),
])
def test_infinite_and_nan_hyperparameters_are_refused(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_integer_hyperparameters_give_float_results():
    model = _linear()
    averaging = HistoricalAveraging(model, weight=1)  # an int λ
    assert type(averaging.weight) is float
    with torch.no_grad():
        model.weight.add_(1.0)
    trainer = Engine(lambda engine, batch: None)
    averaging.attach(trainer)
    trainer.run([0], max_epochs=1)
    assert averaging.penalty().dtype == torch.float32
    loss = F.one_sided_label_smoothing_loss(torch.randn(4, 1), torch.randn(4, 1), real_target=1)
    assert loss.dtype == torch.float32
    assert type(EvaluationAveraging(model, rate=np.float64(0.5)).rate) is float
    assert type(ReferenceAdam(model.parameters(), lr=1).param_groups[0]["lr"]) is float


# --------------------------------------------------------------------------------------------------------------
# Files that are not what they claim
# --------------------------------------------------------------------------------------------------------------
def test_random_bytes_as_inception_weights_name_the_file_and_what_was_expected(tmp_path):
    weights = tmp_path / "inception.pth"
    weights.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=rf"weights file '{weights}' could not be read as the state dict of "
                                         r"torch-fidelity's inception-v3-compat network"):
        TFInceptionV3(weights_path=weights, sha256=None)
    with pytest.raises(ValueError, match=rf"weights file '{weights}' could not be read as the state dict of "
                                         r"torchvision's inception_v3"):
        TorchvisionInceptionV3(weights_path=weights)


def test_another_networks_weights_are_refused_naming_the_file(tmp_path):
    weights = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), weights)
    with pytest.raises(ValueError, match=rf"weights file '{weights}' does not hold the state dict of "
                                         r"torch-fidelity's inception-v3-compat network.*Missing key"):
        TFInceptionV3(weights_path=weights, sha256=None)
    torch.save([1, 2, 3], weights)
    with pytest.raises(ValueError, match=rf"weights file '{weights}' must hold .*got list"):
        TorchvisionInceptionV3(weights_path=weights)


def _stepped(optimizer_class, model):
    optimizer = optimizer_class(model.parameters(), lr=0.1)
    model(torch.randn(5, model.in_features)).sum().backward()
    optimizer.step()
    return optimizer


def test_another_models_optimizer_state_is_refused_at_load_not_at_the_first_step():
    ours, theirs = torch.nn.Linear(3, 2), torch.nn.Linear(4, 2)  # as many parameters, other shapes
    optimizer = ReferenceAdam(ours.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"ReferenceAdam.load_state_dict: the optimizer state is of other "
                                         r"parameters: its 'exp_avg' for parameter 0 of group 0 has shape \(2, 4\), "
                                         r"the parameter has \(2, 3\)"):
        optimizer.load_state_dict(_stepped(ReferenceAdam, theirs).state_dict())
    assert not optimizer.state  # nothing was loaded
    optimizer.load_state_dict(_stepped(ReferenceAdam, torch.nn.Linear(3, 2)).state_dict())  # the right one loads


def test_a_checkpoint_with_another_models_optimizer_state_names_the_file(tmp_path):
    theirs = torch.nn.Linear(4, 2)
    ChecksummedSaver(tmp_path)({"optimizer": _stepped(torch.optim.Adam, theirs).state_dict()}, "checkpoint_1.pt")
    ours = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(ours.parameters(), lr=0.1)  # torch's own Adam: checked by the loader
    with pytest.raises(CheckpointError, match=rf"checkpoint '{tmp_path / 'checkpoint_1.pt'}', entry 'optimizer': "
                                              r"the optimizer state is of other parameters"):
        load_latest_checkpoint({"optimizer": optimizer}, tmp_path)
    assert not optimizer.state


# --------------------------------------------------------------------------------------------------------------
# Non-finite state loaded from outside
# --------------------------------------------------------------------------------------------------------------
def test_nan_historical_averages_are_refused_at_load():
    model = _linear()
    averaging = HistoricalAveraging(model, weight=1e-3)
    state = {"num_updates": 3, "averages": {name: p.detach().clone() for name, p in model.named_parameters()}}
    state["averages"]["bias"][0] = math.nan
    with pytest.raises(ValueError, match=r"HistoricalAveraging.load_state_dict: the loaded state holds NaN or "
                                         r"infinity in state_dict\['averages'\]\['bias'\] \(1 of 2 values\)"):
        averaging.load_state_dict(state)
    assert averaging.num_updates == 0 and not averaging.averages  # unchanged


def test_non_finite_reference_batch_is_refused_at_load():
    generator = models.CIFARGenerator(z_dim=4, normalization="virtual", widths=(8, 4))
    reference = VirtualBatchReference(generator, size=4)
    noise = torch.randn(4, 4)
    noise[2, 1] = math.inf
    with pytest.raises(ValueError, match=r"VirtualBatchReference.load_state_dict: .*state_dict\['reference_noise'\] "
                                         r"\(1 of 16 values\)"):
        reference.load_state_dict({"reference_noise": noise})
    assert reference.reference is None


def test_non_finite_evaluation_average_is_refused_at_load_and_through_a_checkpoint_names_the_file(tmp_path):
    model = _linear()
    averaging = EvaluationAveraging(model, rate=1e-3)
    state = averaging.state_dict()
    state["averaged_model"] = {k: torch.full_like(v, math.nan) for k, v in state["averaged_model"].items()}
    with pytest.raises(ValueError, match=r"EvaluationAveraging.load_state_dict: .*NaN or infinity"):
        averaging.load_state_dict(state)
    ChecksummedSaver(tmp_path)({"average": state}, "checkpoint_4.pt")
    with pytest.raises(CheckpointError, match=rf"checkpoint '{tmp_path / 'checkpoint_4.pt'}' does not fit .*NaN"):
        load_latest_checkpoint({"average": averaging}, tmp_path)
    assert all(torch.isfinite(v).all() for v in averaging.averaged_model.state_dict().values())


# --------------------------------------------------------------------------------------------------------------
# Inputs of the wrong meaning
# --------------------------------------------------------------------------------------------------------------
def test_probabilities_passed_as_logits_warn():
    logits = torch.randn(40, 10, generator=torch.Generator().manual_seed(0)) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # logits and log-probabilities: no warning
        F.inception_score(logits, splits=2)
        F.inception_score(torch.log_softmax(logits, dim=1), splits=2)
    with pytest.warns(UserWarning, match="logits look like probabilities"):
        F.inception_score(torch.softmax(logits, dim=1), splits=2)
    # The metric too, when the user's classifier ends in a softmax.
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.Softmax(dim=1))
    metric = InceptionScore(extractor=classifier, input_range="[0,1]", splits=2)
    metric.update(torch.rand(8, 1, 8, 8))
    with pytest.warns(UserWarning, match="logits look like probabilities"):
        metric.compute()


@pytest.mark.parametrize("n_samples, batch_size", [(1, 100), (11, 10), (5, 1)])
def test_a_batch_of_one_in_the_generator_evaluator_is_refused_by_the_generator(n_samples, batch_size):
    evaluator = GeneratorEvaluator(models.digits_generator(), {}, n_samples=n_samples, batch_size=batch_size,
                                   mode="train")
    # The generator's batch statistics name the problem; the evaluator passes its error on.
    with pytest.raises(ValueError, match=r"batch of one|values per channel"):
        evaluator.run()


# --------------------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, value", [  # a recipe's process each: one by default, the rest with -m slow
    ("--lr", "inf"), pytest.param("--lr", "nan", marks=pytest.mark.slow),
    pytest.param("--unlabeled-weight", "1e-3x", marks=pytest.mark.slow),
    pytest.param("--ema-rate", "inf", marks=pytest.mark.slow),
])
def test_non_finite_and_malformed_numbers_on_the_command_line_are_refused(flag, value, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "digits_ssl.py"), flag, value, "--output-dir", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 2
    assert f"{flag}: expected" in result.stderr and repr(value) in result.stderr
    assert not (tmp_path / "o").exists()


# --- added by tests: the bounds of the checks, at the bound and one float either side ---
from ignite_igan.validation import check_int, check_int_tuple, check_indices, check_real  # noqa: E402

_UP, _DOWN = math.inf, -math.inf


@pytest.mark.parametrize("low_open", [False, True])
@pytest.mark.parametrize("high_open", [False, True])
def test_check_real_at_its_bounds_and_one_float_either_side(low_open, high_open):
    low, high = -0.5, 2.0
    accepted = {
        low: not low_open, high: not high_open,  # a bound is in the range unless it is open
        math.nextafter(low, _UP): True, math.nextafter(high, _DOWN): True,  # just inside
        math.nextafter(low, _DOWN): False, math.nextafter(high, _UP): False,  # just outside
        0.75: True,
    }
    interval = f"{'(' if low_open else '['}-0.5, 2{')' if high_open else ']'}"
    for value, inside in accepted.items():
        kwargs = dict(minimum=low, maximum=high, low_open=low_open, high_open=high_open)
        if inside:
            assert check_real("x", value, **kwargs) == value
        else:
            message = rf"^x must be in {re.escape(interval)}, got {re.escape(repr(value))}$"
            with pytest.raises(ValueError, match=message):
                check_real("x", value, **kwargs)


@pytest.mark.parametrize("bound, side", [("minimum", _DOWN), ("maximum", _UP)])
@pytest.mark.parametrize("is_open", [False, True])
def test_check_real_with_one_bound(bound, side, is_open):
    flag = {"minimum": "low_open", "maximum": "high_open"}[bound]
    kwargs = {bound: 1.0, flag: is_open}
    symbol = {("minimum", False): ">=", ("minimum", True): ">", ("maximum", False): "<=", ("maximum", True): "<"}
    assert check_real("x", math.nextafter(1.0, -side), **kwargs) == math.nextafter(1.0, -side)
    for value, inside in ((1.0, not is_open), (math.nextafter(1.0, side), False)):
        if inside:
            assert check_real("x", value, **kwargs) == 1.0
        else:
            with pytest.raises(ValueError, match=rf"^x must be {symbol[bound, is_open]} 1, got "):
                check_real("x", value, **kwargs)


def test_check_real_infinities_against_bounds():
    assert check_real("x", math.inf, minimum=0.0, finite=False) == math.inf
    assert check_real("x", -math.inf, maximum=0.0, finite=False) == -math.inf
    with pytest.raises(ValueError, match=r"^x must be <= 1, got inf$"):
        check_real("x", math.inf, maximum=1.0, finite=False)
    with pytest.raises(ValueError, match=r"^x must be a finite number >= 0, got inf$"):
        check_real("x", math.inf, minimum=0.0)
    with pytest.raises(ValueError, match=r"^x must be in \[0, 1\], got nan$"):
        check_real("x", math.nan, minimum=0.0, maximum=1.0, finite=False)


def test_check_int_bounds_are_inclusive_and_exact_beyond_float_precision():
    assert check_int("n", 3, minimum=3, maximum=7) == 3
    assert check_int("n", 7, minimum=3, maximum=7) == 7
    for value in (2, 8):
        with pytest.raises(ValueError, match=rf"^n must be in \[3, 7\], got {value}$"):
            check_int("n", value, minimum=3, maximum=7)
    big = 2**63 - 1  # one above 2**53 would compare equal to it as a float
    assert check_int("seed", big, maximum=big) == big
    with pytest.raises(ValueError, match=rf"^seed must be <= {2**53}, got {2**53 + 1}$"):
        check_int("seed", 2**53 + 1, maximum=2**53)
    with pytest.raises(ValueError, match=rf"^seed must be >= {2**53 + 1}, got {2**53}$"):
        check_int("seed", np.int64(2**53), minimum=2**53 + 1)
    assert check_int_tuple("widths", (1, 5), minimum=1) == (1, 5)
    with pytest.raises(ValueError, match=r"^widths\[0\] must be >= 1, got 0$"):
        check_int_tuple("widths", (0, 5), minimum=1)


def test_check_indices_range_is_zero_to_size_exclusive():
    assert check_indices("i", [0, 3], size=4).tolist() == [0, 3]
    with pytest.raises(ValueError, match=r"^i must lie in \[0, 4\), got values in \[0, 4\]$"):
        check_indices("i", [0, 4], size=4)
    with pytest.raises(ValueError, match=r"^i must lie in \[0, 4\), got values in \[-1, 2\]$"):
        check_indices("i", [-1, 2], size=4)
    with pytest.raises(ValueError, match=r"^i must be >= 0, got values in \[-1, 9\]$"):
        check_indices("i", [9, -1])
    assert check_indices("i", [0, 10**12]).tolist() == [0, 10**12]


def test_public_arguments_at_their_bounds():
    """Where a user meets the bounds: an open end refused at the bound, accepted one float inside."""
    from ignite_igan.experiments import cli

    params = [torch.nn.Parameter(torch.zeros(2))]
    ReferenceAdam(params, lr=1e-3, betas=(0.0, math.nextafter(1.0, 0.0)))  # [0, 1): 0 in, just below 1 in
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\), got 1\.0"):
        ReferenceAdam(params, lr=1e-3, betas=(0.5, 1.0))
    with pytest.raises(ValueError, match=r"betas\[0\] must be in \[0, 1\), got -5e-324"):
        ReferenceAdam(params, lr=1e-3, betas=(math.nextafter(0.0, -1.0), 0.9))
    assert OneSidedLabelSmoothing(1.0).real_target == 1.0  # (0, 1]: 1 means no smoothing
    assert OneSidedLabelSmoothing(5e-324).real_target == 5e-324
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        OneSidedLabelSmoothing(0.0)
    assert cli.fraction("1") == 1.0 and cli.ema_rate("0.5") == 0.5 and cli.positive_float("5e-324") == 5e-324
    for parse, text in ((cli.fraction, "0"), (cli.ema_rate, "0.5000000000000001"), (cli.positive_float, "0"),
                        (cli.seed_int, str(cli.MAX_SEED + 1)), (cli.positive_int, "0")):
        with pytest.raises(Exception, match="expected"):
            parse(text)
    assert cli.seed_int(str(cli.MAX_SEED)) == cli.MAX_SEED and cli.seed_int("0") == 0
