"""Tests of ignite_igan.digits_classifier: the CNN of the digits "Inception" score, its trainer and its loader."""
import pytest
import torch
from torch import nn

from ignite_igan import digits_classifier, models
from ignite_igan.digits_classifier import DigitsClassifier, load_digits_classifier, train_digits_classifier


def test_models_keeps_the_names():
    for name in digits_classifier.__all__:
        assert getattr(models, name) is getattr(digits_classifier, name) and name in models.__all__


def test_layers_and_both_input_layouts():
    model = DigitsClassifier().eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.padding) for m in convs] == [
        (1, 32, (3, 3), (1, 1)), (32, 32, (3, 3), (1, 1))
    ]
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in dense] == [(512, 128), (128, 10)]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5]
    x = torch.rand(5, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x.view(5, 1, 8, 8)))
    assert model(x).shape == (5, 10)


def test_training_depends_only_on_the_seed_and_the_global_stream_advances_by_the_two_loads():
    torch.manual_seed(123)
    torch.empty((), dtype=torch.int64).random_(), torch.empty((), dtype=torch.int64).random_()  # a DataLoader's draw
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first, accuracy = train_digits_classifier(seed=2, epochs=1)
    assert torch.equal(torch.rand(3), expected_next)
    again, accuracy_again = train_digits_classifier(seed=2, epochs=1)  # another global state, the same model
    other, _ = train_digits_classifier(seed=3, epochs=1)
    assert accuracy == accuracy_again and 0.5 < accuracy <= 1.0  # one epoch already classifies most digits
    assert not first.training
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert not torch.equal(first.state_dict()["head.4.weight"], other.state_dict()["head.4.weight"])


def test_load_round_trips_and_refuses_other_files(tmp_path):
    torch.manual_seed(0)
    model = DigitsClassifier().eval()
    torch.save(model.state_dict(), tmp_path / "classifier.pt")
    loaded = load_digits_classifier(tmp_path / "classifier.pt")
    assert not loaded.training
    x = torch.rand(4, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(FileNotFoundError, match="path: no such file .*missing.pt"):
        load_digits_classifier(tmp_path / "missing.pt")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"path: .*other.pt' is not a DigitsClassifier state dict \(RuntimeError"):
        load_digits_classifier(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not a DigitsClassifier state dict"):
        load_digits_classifier(str(tmp_path / "text.pt"))
