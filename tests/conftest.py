"""Shared test settings."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_seed():
    """Every test starts from the same global RNG state, so a failure reproduces."""
    torch.manual_seed(0)
    yield
