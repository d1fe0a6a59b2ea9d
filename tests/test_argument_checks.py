"""Every public helper checks its arguments where they enter, and infinities follow the NaN policy page.

- NumPy integers are integers everywhere (also in a configuration dataclass, whose record must stay JSON).
- Strings, floats, booleans and None where a number, a flag or a device belongs are refused with a message that
  names the argument, never Python's ``'<' not supported`` or torch's ``Found no NVIDIA driver``.
- An optimizer state that would make the first step NaN is refused when it is loaded, naming the entry.
- An infinite input of the minibatch features gives what the formula gives (a NumPy oracle), in both computations.
"""
import copy
import dataclasses
import json
import math
import re
from typing import Optional

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from ignite_igan import _fast_paths, models
from ignite_igan import functional as F
from ignite_igan.data import epoch_loader, init_batch
from ignite_igan.datasets import ScaledImages
from ignite_igan.device_data import DeviceSemiSupervisedLoader, dataset_bytes, fits_on_device
from ignite_igan.digits_classifier import DigitsClassifier, load_digits_classifier
from ignite_igan.metrics import GeneratorEvaluator, InceptionScore, ModeCoverage, SemiSupervisedError
from ignite_igan.metrics.ssl_error import ErrorEvaluator
from ignite_igan.nn import MinibatchDiscrimination, minibatch_batch_mean_init
from ignite_igan.optim import ReferenceAdam
from ignite_igan.validation import ArgumentTypeError, check_device, check_fields, check_int, check_int_tuple


def _dataset(n=60):
    return TensorDataset(torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 5), torch.arange(n) % 3)


# --------------------------------------------------------------------------------------------------------------
# NumPy integers are integers
# --------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Config:
    batch_size: int = 100
    lr: float = 0.1
    resume: bool = False
    decay_epochs: Optional[int] = None

    def __post_init__(self):
        check_fields(self, ranges={"lr": (0.0, math.inf, False)})


@dataclasses.dataclass(frozen=True)
class _FrozenConfig:
    epochs: int = 3

    def __post_init__(self):
        check_fields(self)


def test_a_configuration_takes_numpy_numbers_as_python_numbers():
    config = _Config(batch_size=np.int64(50), lr=np.float32(0.5), resume=np.bool_(True), decay_epochs=np.int32(4))
    # Stored as Python's numbers: the run's record is JSON, which cannot write NumPy's.
    assert json.loads(json.dumps(dataclasses.asdict(config))) == {"batch_size": 50, "lr": 0.5, "resume": True,
                                                                  "decay_epochs": 4}
    assert type(config.batch_size) is int and type(config.lr) is float and type(config.resume) is bool
    assert type(config.decay_epochs) is int
    assert _FrozenConfig(epochs=np.int32(7)).epochs == 7 and type(_FrozenConfig(epochs=np.int32(7)).epochs) is int
    assert _Config(lr=np.int16(2)).lr == 2


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", np.float64(2.0), "batch_size must be an int, got float64"),
    ("batch_size", True, "batch_size must be an int, got bool"),
    ("batch_size", np.bool_(True), "batch_size must be an int, got bool"),
    ("lr", "0.1", "lr must be a real number, got str"),
    ("resume", np.int64(1), "resume must be a bool, got int64"),
])
def test_a_configuration_refuses_what_is_not_its_kind(field, value, message):
    with pytest.raises(TypeError, match=message):
        _Config(**{field: value})


def test_integer_checks_take_numpy_integers_and_vectors():
    assert check_int("splits", np.uint8(3), minimum=1) == 3 and type(check_int("n", np.int16(3))) is int
    assert check_int_tuple("widths", np.array([96, 192]), minimum=1) == (96, 192)
    assert check_int_tuple("stride", np.int64(2), minimum=1, length=2, repeat_int=True) == (2, 2)
    with pytest.raises(ArgumentTypeError, match=r"stride must be an int or a sequence of ints, got bool True"):
        check_int_tuple("stride", True, minimum=1, length=2, repeat_int=True)


def test_helpers_give_the_same_result_for_numpy_and_python_integers():
    data = _dataset()
    assert torch.equal(init_batch(data, np.int64(7), seed=np.int64(3)), init_batch(data, 7, seed=3))
    numpy_order = [b[0].tolist() for b in epoch_loader(data, np.int64(8), seed=np.int64(5), num_workers=np.int64(0))]
    assert numpy_order == [b[0].tolist() for b in epoch_loader(data, 8, seed=5)]
    loader = DeviceSemiSupervisedLoader(data, [0, 1, 2], batch_size=np.int64(10), seed=np.int64(1), device="cpu",
                                        num_classes=np.int64(3))
    assert len(loader) == 6


# --------------------------------------------------------------------------------------------------------------
# Wrong kinds of arguments, refused where they enter
# --------------------------------------------------------------------------------------------------------------
def _device_loader(**kwargs):
    arguments = dict(dataset=_dataset(), labeled_indices=[0, 1, 2], batch_size=10, seed=1, device="cpu")
    return DeviceSemiSupervisedLoader(**{**arguments, **kwargs})


def _images(**kwargs):
    return ScaledImages(torch.zeros(4, 3, dtype=torch.uint8), torch.zeros(4), **{"offset": 0.0, "scale": 255.0,
                                                                                **kwargs})


WRONG = [
    # (call, the error's type, what the message must say)
    (lambda: init_batch(_dataset(), 4, seed="1"), ArgumentTypeError, r"seed must be an int, got str '1'"),
    (lambda: init_batch(_dataset(), 4, seed=1.0), ArgumentTypeError, r"seed must be an int, got float 1.0"),
    (lambda: init_batch(_dataset(), 4, seed=None), ArgumentTypeError, r"seed must be an int, got NoneType"),
    (lambda: epoch_loader(_dataset(), 4, seed="1"), ArgumentTypeError, r"seed must be an int, got str '1'"),
    (lambda: epoch_loader(_dataset(), 4, seed=True), ArgumentTypeError, r"seed must be an int, got bool"),
    (lambda: epoch_loader(_dataset(), 4, seed=1, num_workers="2"), ArgumentTypeError,
     r"num_workers must be an int, got str '2'"),
    (lambda: epoch_loader(_dataset(), 4, seed=1, num_workers=-1), ValueError, r"num_workers must be >= 0, got -1"),
    (lambda: epoch_loader(_dataset(), 4, seed=1, pin_memory="no"), ArgumentTypeError,
     r"pin_memory must be a bool \(True or False\), got str 'no'"),
    (lambda: _device_loader(num_classes="3"), ArgumentTypeError, r"num_classes must be an int or None, got str '3'"),
    (lambda: _device_loader(num_classes=3.0), ArgumentTypeError, r"num_classes must be an int or None, got float"),
    (lambda: _device_loader(num_classes=0), ValueError, r"num_classes must be >= 1 or None, got 0"),
    (lambda: _device_loader(device=1.5), ArgumentTypeError, r"device must be a torch.device, a string .*got float"),
    (lambda: _device_loader(device=None), ArgumentTypeError, r"device must be a torch.device, .*got NoneType"),
    (lambda: _device_loader(device="gpu"), ValueError, r"device must be a device such as 'cpu', .*got 'gpu'"),
    (lambda: fits_on_device(_dataset(), device="cpu:x"), ValueError, r"device must be a device such as .*'cpu:x'"),
    (lambda: fits_on_device(_dataset(), device="cpu", fraction="0.5"), ArgumentTypeError,
     r"fraction must be a real number, got str"),
    (lambda: dataset_bytes("images/"), ArgumentTypeError, r"dataset must be a map-style data set .*got str"),
    (lambda: dataset_bytes(None), ArgumentTypeError, r"dataset must have a __len__\(\) method"),
    (lambda: _images(flatten="yes"), ArgumentTypeError, r"flatten must be a bool \(True or False\), got str"),
    (lambda: _images(flatten=1), ArgumentTypeError, r"flatten must be a bool \(True or False\), got int"),
    (lambda: _images(scale=float("nan")), ValueError, r"scale must be > 0, got nan"),
    (lambda: _images(scale=np.float32("inf")), ValueError, r"scale must be a finite number > 0"),
    (lambda: _images(scale="255"), ArgumentTypeError, r"scale must be a real number, got str"),
    (lambda: _images(offset=float("inf")), ValueError, r"offset must be a finite number"),
    (lambda: minibatch_batch_mean_init(MinibatchDiscrimination(8, 3, 2), "features"), ArgumentTypeError,
     r"features must be a tensor \(N, in_features\), got str"),
    (lambda: minibatch_batch_mean_init(MinibatchDiscrimination(8, 3, 2), torch.randn(10, 8), target="2"),
     ArgumentTypeError, r"target must be a real number, got str"),
]


@pytest.mark.parametrize("call, error, message", WRONG, ids=[f"wrong{i}" for i in range(len(WRONG))])
def test_a_wrong_argument_is_refused_naming_it(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --------------------------------------------------------------------------------------------------------------
# A device the machine does not have, named as the argument
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without CUDA, whatever it has: no test touches a GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def _classifier_file(tmp_path):
    path = tmp_path / "classifier.pt"
    torch.save(DigitsClassifier().state_dict(), path)
    return path


DEVICE_ENTRIES = {
    "DeviceSemiSupervisedLoader": lambda device, tmp: _device_loader(device=device),
    "fits_on_device": lambda device, tmp: fits_on_device(_dataset(), device),
    "InceptionScore": lambda device, tmp: InceptionScore(extractor=torch.nn.Flatten(), device=device),
    "SemiSupervisedError": lambda device, tmp: SemiSupervisedError(device=device),
    "ErrorEvaluator": lambda device, tmp: ErrorEvaluator(torch.nn.Linear(2, 2), [], device=device),
    "ModeCoverage": lambda device, tmp: ModeCoverage(torch.zeros(2, 2), std=0.1, device=device),
    "GeneratorEvaluator": lambda device, tmp: GeneratorEvaluator(models.digits_generator(), {}, n_samples=4,
                                                                 batch_size=2, device=device),
    "load_digits_classifier": lambda device, tmp: load_digits_classifier(_classifier_file(tmp), device=device),
    "sample_noise": lambda device, tmp: models.digits_generator().sample_noise(2, device=device),
}


@pytest.mark.parametrize("entry", sorted(DEVICE_ENTRIES))
def test_a_missing_cuda_device_is_named_as_the_argument(entry, no_cuda, tmp_path):
    with pytest.raises(ValueError, match=r"device is 'cuda:1', but CUDA is not available on this machine"):
        DEVICE_ENTRIES[entry]("cuda:1", tmp_path)
    with pytest.raises(ValueError, match=r"device is 0 \(torch reads it as 'cuda:0'\), but CUDA is not available"):
        DEVICE_ENTRIES[entry](np.int64(0), tmp_path)
    with pytest.raises(ValueError, match=r"device must be a device such as 'cpu', 'cuda' or 'cuda:1', got 'gpu'"):
        DEVICE_ENTRIES[entry]("gpu", tmp_path)
    DEVICE_ENTRIES[entry]("cpu", tmp_path)  # and the machine's own device is taken


def test_a_cuda_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("device", "cuda:1") == torch.device("cuda", 1)  # the last one there (an inclusive bound)
    with pytest.raises(ValueError, match=r"device is 'cuda:2', but this machine has 2 CUDA device\(s\) \(indices 0 to 1\)"):
        check_device("device", "cuda:2")
    assert check_device("device", None, allow_none=True) is None


# --------------------------------------------------------------------------------------------------------------
# An optimizer state that would make the first step NaN
# --------------------------------------------------------------------------------------------------------------
def _adam_state():
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(4))
    optimizer = ReferenceAdam([param], lr=0.01, betas=(0.5, 0.999))
    for _ in range(2):
        param.grad = torch.randn(4)
        optimizer.step()
    return optimizer.state_dict()


def _set(path, value):
    def change(state):
        target = state
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value  # an entry of a mapping or list, or an element of a tensor
    return change


BAD_STATES = [
    (_set(("param_groups", 0, "lr"), float("nan")), r"state_dict\['param_groups'\]\[0\]\['lr'\] must be >= 0, got nan"),
    (_set(("param_groups", 0, "lr"), float("inf")), r"\['lr'\] must be a finite number >= 0, got inf"),
    (_set(("param_groups", 0, "lr"), -0.1), r"\['lr'\] must be >= 0, got -0.1"),
    (_set(("param_groups", 0, "eps"), float("nan")), r"\['eps'\] must be >= 0, got nan"),
    (_set(("param_groups", 0, "betas"), (0.5, 1.0)), r"\['betas'\]\[1\] must be in \[0, 1\), got 1.0"),
    (_set(("param_groups", 0, "betas"), (float("nan"), 0.9)), r"\['betas'\]\[0\] must be in \[0, 1\), got nan"),
    (_set(("state", 0, "exp_avg", 2), float("nan")),
     r"NaN or infinity in state_dict\['state'\]\[0\]\['exp_avg'\] \(1 of 4 values\)"),
    (_set(("state", 0, "exp_avg_sq", 0), float("inf")),
     r"NaN or infinity in state_dict\['state'\]\[0\]\['exp_avg_sq'\] \(1 of 4 values\)"),
    (_set(("state", 0, "exp_avg_sq", 3), -1e-3), r"state_dict\['state'\]\[0\]\['exp_avg_sq'\] holds negative values"),
    (_set(("state", 0, "step"), -1), r"state_dict\['state'\]\[0\]\['step'\] must be a count >= 0, got int -1"),
    (_set(("state", 0, "step"), 1.5), r"\['step'\] must be a count >= 0, got float 1.5"),
]


@pytest.mark.parametrize("change, message", BAD_STATES, ids=[f"state{i}" for i in range(len(BAD_STATES))])
def test_an_optimizer_state_that_would_step_to_nan_is_refused(change, message):
    state = copy.deepcopy(_adam_state())
    change(state)
    param = torch.nn.Parameter(torch.zeros(4))
    optimizer = ReferenceAdam([param], lr=0.01, betas=(0.5, 0.999))
    with pytest.raises(ValueError, match=r"ReferenceAdam.load_state_dict: .*" + message):
        optimizer.load_state_dict(state)
    assert optimizer.state_dict()["state"] == {} and optimizer.param_groups[0]["lr"] == 0.01  # nothing loaded


def test_a_healthy_optimizer_state_loads_and_steps_as_the_formula_says():
    state = _adam_state()
    param = torch.nn.Parameter(torch.zeros(4, dtype=torch.float32))
    optimizer = ReferenceAdam([param], lr=0.5, betas=(0.1, 0.2), eps=1.0)
    state["state"][0]["step"] = torch.tensor(2.0, dtype=torch.float64)  # as the capturable optimizer keeps it
    optimizer.load_state_dict(state)
    m, v = state["state"][0]["exp_avg"].double().numpy(), state["state"][0]["exp_avg_sq"].double().numpy()
    grad = np.array([1.0, -2.0, 0.5, 0.0])
    param.grad = torch.tensor(grad, dtype=torch.float32)
    optimizer.step()
    # The loaded hyperparameters (lr 0.01, betas (0.5, 0.999), eps 1e-8), not the constructor's, at step t = 3.
    m, v = 0.5 * m + 0.5 * grad, 0.999 * v + 0.001 * grad**2
    expected = -0.01 * (m / (1 - 0.5**3)) / np.sqrt(v / (1 - 0.999**3) + 1e-8)
    np.testing.assert_allclose(param.detach().double().numpy(), expected, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------------------------
# Infinities in the minibatch features follow the page
# --------------------------------------------------------------------------------------------------------------
def _features_oracle(m):
    """o[i, b] = sum_{j != i} exp(-sum_k |m[i, b, k] - m[j, b, k]|), in NumPy, the self term left out by index."""
    n, b, _ = m.shape
    with np.errstate(invalid="ignore"):
        distances = np.abs(m[:, None] - m[None, :]).sum(axis=3)  # (N, N, B)
        self_distance = np.abs(m - m).sum(axis=2)  # (N, B): 0, or NaN for a non-finite entry (inf - inf)
        similarity = np.exp(-distances)
        sums = similarity.sum(axis=1) - np.exp(-self_distance)
    # Without the self term by construction where it is finite; NaN stays NaN.
    return np.where(np.isnan(self_distance), np.nan, sums)


@pytest.mark.parametrize("where, value", [((1, 0, 2), np.inf), ((3, 1, 0), -np.inf), ((0, 0, 1), np.nan),
                                          (((1, 0, 2), (2, 0, 2)), np.inf)])
def test_an_infinite_input_gives_the_features_of_the_formula(where, value):
    rng = np.random.default_rng(0)
    m = rng.normal(size=(5, 2, 3))
    for index in (where if isinstance(where[0], tuple) else (where,)):
        m[index] = value
    expected = _features_oracle(m)
    tensor = torch.tensor(m)
    for name, features in (("formula", F.minibatch_features), ("fast path", _fast_paths.minibatch_features)):
        got = features(tensor).numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=name)
        np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=1e-12, err_msg=name)
    # The example with the infinite entry is never given finite features in its kernel: nothing hides it.
    first = where if not isinstance(where[0], tuple) else where[0]
    assert np.isnan(F.minibatch_features(tensor).numpy()[first[0], first[1]])


def test_the_layer_passes_an_infinite_input_on_as_nan():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(4, num_kernels=3, kernel_dim=2)
    x = torch.randn(6, 4)
    x[2, 1] = math.inf  # every projection of example 2 is infinite (no weight of T is 0)
    features = layer(x)[:, 4:]
    assert torch.isnan(features[2]).all()
    assert torch.isfinite(features[[0, 1, 3, 4, 5]]).all()  # the others' are exact: example 2 is no neighbour
    finite = layer(x[[0, 1, 3, 4, 5]])[:, 4:]
    torch.testing.assert_close(features[[0, 1, 3, 4, 5]], finite)  # up to the order of the sums


@pytest.mark.parametrize("factory", ["create_semi_supervised_trainer", "create_gan_trainer"])
@pytest.mark.parametrize("device, message", [
    ("gpu", "device must be a device such as 'cpu', 'cuda' or 'cuda:1', got 'gpu'"),
    (1.5, "device must be a torch.device, a string such as 'cpu' or 'cuda', or a device index or None, got"),
])
def test_the_trainer_factories_name_a_bad_device(factory, device, message):
    import ignite_igan.engines as engines
    from ignite_igan.models import digits_discriminator, digits_generator
    from ignite_igan.optim import ReferenceAdam

    generator, discriminator = digits_generator(), digits_discriminator(num_classes=10 if "semi" in factory else 1)
    optimizers = [ReferenceAdam(m.parameters(), lr=1e-3) for m in (discriminator, generator)]
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        getattr(engines, factory)(generator, discriminator, *optimizers, device=device)
