"""A classifier of scikit-learn's 8x8 digits: the network of the digits "Inception" score.

A scoring tool, not one of the paper's networks: :class:`DigitsClassifier` is a small CNN that stands in for the
Inception network when the samples are 8x8 digits (``ignite_igan.metrics.ClassifierExtractor(classifier,
input_range="[0,1]", num_logits=10)`` turns it into the network of an :class:`~ignite_igan.metrics.InceptionScore`);
:func:`train_digits_classifier` trains one and :func:`load_digits_classifier` reads one saved with
``torch.save(model.state_dict(), path)``. The names are also importable from :mod:`ignite_igan.models`.

Example:
    >>> import torch
    >>> DigitsClassifier()(torch.rand(5, 1, 8, 8)).shape
    torch.Size([5, 10])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Tuple, Union

import torch
import torch.nn.functional as torch_F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ignite_igan.validation import check_device

__all__ = ["DigitsClassifier", "train_digits_classifier", "load_digits_classifier"]


class DigitsClassifier(nn.Module):
    """A small CNN for 8x8 digits: the network of the Inception-Score protocol on scikit-learn's digits.

    ``(N, 64)`` or ``(N, 1, 8, 8)`` pixels in [0, 1] -> conv 3x3 32 -> ReLU -> conv 3x3 32 -> ReLU -> max-pool 2 ->
    dense 128 -> ReLU -> dropout 0.5 -> 10 logits. :func:`train_digits_classifier` trains one (~98.5 % test
    accuracy); ``ignite_igan.metrics.ClassifierExtractor(classifier, input_range="[0,1]", num_logits=10)`` turns it
    into the network of an :class:`~ignite_igan.metrics.InceptionScore`.

    Example:
        >>> DigitsClassifier()(torch.rand(5, 64)).shape
        torch.Size([5, 10])
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.reshape(-1, 1, 8, 8)))


def train_digits_classifier(
    seed: int = 0, epochs: int = 30, device: Union[str, torch.device] = "cpu"
) -> Tuple[DigitsClassifier, float]:
    """Trains :class:`DigitsClassifier` on the 1,297 training digits; returns it (eval mode) and its test accuracy.

    Adam (lr 2e-3), batches of 64, ``epochs`` epochs, dropout on. Initialization and shuffling use their own
    random streams seeded with ``seed``, so the result depends only on ``seed`` (on a given machine and thread
    count). The global random stream advances only by the two numbers that loading the training and test sets
    draws (each :class:`~torch.utils.data.DataLoader` iteration draws one). About 6 s on one CPU core; test
    accuracy ~98.5 %.

    Example:
        >>> model, accuracy = train_digits_classifier(epochs=1)  # doctest: +SKIP
    """
    from ignite_igan.datasets import load_dataset  # imported here: only training reads the data set

    def whole(train: bool) -> Tuple[Tensor, Tensor]:
        dataset = load_dataset("digits", train=train)
        x, y = next(iter(DataLoader(dataset, batch_size=len(dataset))))
        return x.to(device), y.to(device)

    device = check_device("device", device)
    (x, y), (x_test, y_test) = whole(True), whole(False)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = DigitsClassifier().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        order = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            permutation = torch.randperm(len(x), generator=order).to(device)
            for start in range(0, len(x) - 63, 64):  # full batches only
                batch = permutation[start : start + 64]
                loss = torch_F.cross_entropy(model(x[batch]), y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(dim=1) == y_test).float().mean())
    return model, accuracy


def load_digits_classifier(path: Any, device: Union[str, torch.device] = "cpu") -> DigitsClassifier:
    """A :class:`DigitsClassifier` from a state dict saved with ``torch.save(model.state_dict(), path)``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a :class:`DigitsClassifier` state dict (the message names it).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "classifier.pt"
        >>> torch.save(DigitsClassifier().state_dict(), path)
        >>> load_digits_classifier(path).training
        False
    """
    device = check_device("device", device)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = DigitsClassifier()
        model.load_state_dict(state)
    except Exception as error:  # noqa: BLE001 - unpickling and key errors both mean "not such a file"
        why = f"{type(error).__name__}: {error}"
        raise ValueError(f"path: {str(path)!r} is not a DigitsClassifier state dict ({why})") from error
    return model.to(device).eval()
