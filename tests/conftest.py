"""Shared test settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """The whole suite runs on one intra-op thread.

    The tests use small tensors, for which a second thread costs more in synchronization than it saves (on the
    2-core CI machine a small convolution took 3.4 ms with two threads and 0.29 ms with one). Session scope, so
    that fixtures of every scope compute with the same thread count as the tests that compare against them.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic_seed():
    """Every test starts from the same global RNG state, so a failure reproduces."""
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _no_flushed_denormals():
    """Every test starts with denormal floats kept.

    A run started in the test's own process (``Run.start`` on a CPU) flushes denormals to zero for the rest of the
    process; the flag is the CPU's, so it also makes Python compare the smallest float, -5e-324, as equal to 0 and
    would let a later test's bound check pass where it must fail.
    """
    torch.set_flush_denormal(False)
    yield
