"""DeviceSemiSupervisedLoader yields SemiSupervisedLoader's batches, from tensors on the device."""
import pytest
import torch
from torch.utils.data import TensorDataset

from ignite_igan.data import SemiSupervisedLoader, balanced_labeled_subset
from ignite_igan.datasets import ScaledImages
from ignite_igan.device_data import DeviceSemiSupervisedLoader, dataset_bytes, fits_on_device


def _images(n=90, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=generator)
    return ScaledImages(images, torch.arange(n) % 3, offset=0.0, scale=255.0, flatten=True)


def _batches(loader, count):
    out = []
    while len(out) < count:
        for batch in loader:
            out.append(batch)
            if len(out) == count:
                break
    return out


def _assert_same(expected, actual):
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual):
        for x, y in zip(a, b):
            if x is None:
                assert y is None
            else:
                assert x.dtype == y.dtype and torch.equal(x, y.cpu())


@pytest.mark.parametrize("dataset", [_images(), TensorDataset(torch.randn(90, 4), torch.arange(90) % 3)],
                         ids=["scaled_images", "tensor_dataset"])
@pytest.mark.parametrize("generator_batch", [True, False])
def test_same_batches_as_the_host_loader_over_epochs(dataset, generator_batch):
    labeled = balanced_labeled_subset(torch.arange(90) % 3, per_class=2, seed=4)
    kwargs = dict(batch_size=20, seed=7, labeled_batch_size=10, generator_batch=generator_batch)
    host = SemiSupervisedLoader(dataset, labeled, **kwargs)
    device = DeviceSemiSupervisedLoader(dataset, labeled, device="cpu", num_classes=3, **kwargs)
    assert len(host) == len(device) == 4
    _assert_same(_batches(host, 10), _batches(device, 10))  # two and a half epochs


def test_same_slices_per_process_and_pool():
    dataset = _images(120)
    labeled = [0, 1, 2, 3, 4, 5]
    pool = list(range(0, 120, 2))
    for rank in (0, 1):
        kwargs = dict(batch_size=10, seed=3, unlabeled_indices=pool, world_size=2, rank=rank)
        host = SemiSupervisedLoader(dataset, labeled, **kwargs)
        device = DeviceSemiSupervisedLoader(dataset, labeled, device="cpu", **kwargs)
        _assert_same(_batches(host, 8), _batches(device, 8))


def test_resumes_mid_epoch_from_either_loaders_state():
    dataset = _images()
    labeled = [0, 1, 2]
    straight = _batches(DeviceSemiSupervisedLoader(dataset, labeled, batch_size=10, seed=5, device="cpu"), 14)
    first = SemiSupervisedLoader(dataset, labeled, batch_size=10, seed=5)
    _batches(first, 6)  # stopped inside the first epoch (9 iterations per epoch)
    resumed = DeviceSemiSupervisedLoader(dataset, labeled, batch_size=10, seed=99, device="cpu")
    resumed.load_state_dict(first.state_dict())  # the seed comes from the checkpoint
    _assert_same(straight[6:], _batches(resumed, 8))
    assert resumed.iteration == 14 and resumed.epoch == 1


def test_labeled_labels_are_checked_once_against_num_classes():
    dataset = TensorDataset(torch.randn(30, 2), torch.arange(30) % 5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\) \(num_classes\), got values in \[0, 4\]"):
        DeviceSemiSupervisedLoader(dataset, [0, 4], batch_size=10, seed=0, device="cpu", num_classes=3)
    floats = TensorDataset(torch.randn(30, 2), torch.rand(30))
    with pytest.raises(TypeError, match="labels must hold integers, got dtype float32"):
        DeviceSemiSupervisedLoader(floats, [0], batch_size=10, seed=0, device="cpu")


def test_size_and_fit():
    assert dataset_bytes(_images(90)) == 90 * 36 + 90 * 8
    assert dataset_bytes(TensorDataset(torch.randn(10, 4), torch.arange(10))) == 10 * (16 + 8)
    assert fits_on_device(_images(90), "cpu")
    with pytest.raises(ValueError, match="fraction"):
        fits_on_device(_images(90), "cpu", fraction=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_batches_on_cuda():
    dataset = _images()
    host = SemiSupervisedLoader(dataset, [0, 1, 2], batch_size=10, seed=2)
    device = DeviceSemiSupervisedLoader(dataset, [0, 1, 2], batch_size=10, seed=2, device="cuda")
    batches = _batches(device, 12)
    assert batches[0].x_labeled.is_cuda
    _assert_same(_batches(host, 12), batches)


# --- added by tests: the length of an epoch (drop_last), host and device alike ---


@pytest.mark.parametrize("pool_size, batch_size, world_size", [
    (90, 10, 1),   # divides: 9 full batches
    (90, 20, 1),   # does not divide: 4 full batches, the last 10 examples dropped
    (99, 20, 1),   # one short of a 5th batch
    (100, 20, 1),  # exactly 5
    (20, 20, 1),   # exactly one batch
    (39, 20, 1),   # one batch and 19 left over
    (90, 20, 2),   # global batches, split between 2 processes: the length does not depend on the rank's share
])
def test_len_is_the_number_of_full_batches_of_an_epoch(pool_size, batch_size, world_size):
    dataset = _images(120)
    pool = list(range(pool_size))
    expected = pool_size // batch_size  # oracle: the reference drops the last partial batch
    for rank in range(world_size):
        kwargs = dict(batch_size=batch_size, seed=1, unlabeled_indices=pool, world_size=world_size, rank=rank)
        for loader in (SemiSupervisedLoader(dataset, [0, 1, 2], **kwargs),
                       DeviceSemiSupervisedLoader(dataset, [0, 1, 2], device="cpu", **kwargs)):
            assert len(loader) == expected, type(loader).__name__
            epoch = list(loader)  # one epoch: exactly len() batches, every one full
            assert len(epoch) == expected, type(loader).__name__
            assert all(b.x_unlabeled.shape[0] == batch_size // world_size for b in epoch)
            assert all(b.x_labeled.shape[0] == batch_size // world_size for b in epoch)
            assert loader.epoch == 1 and loader.iteration == expected
            # The length is that of an epoch, not what is left of the current one.
            next(iter(loader))
            assert len(loader) == expected
            loader.set_epoch(3)
            assert len(loader) == expected


def test_an_epoch_draws_each_unlabeled_example_at_most_once():
    """drop_last: no example is repeated to fill a last batch; the leftover of the pool is left out."""
    dataset = TensorDataset(torch.arange(47.).unsqueeze(1), torch.arange(47) % 3)
    for loader in (SemiSupervisedLoader(dataset, [0, 1, 2], batch_size=10, seed=3),
                   DeviceSemiSupervisedLoader(dataset, [0, 1, 2], batch_size=10, seed=3, device="cpu")):
        epoch = list(loader)
        assert len(epoch) == 4
        seen = torch.cat([b.x_unlabeled.squeeze(1) for b in epoch]).long().tolist()
        assert len(seen) == 40 and len(set(seen)) == 40  # 7 of 47 dropped, none drawn twice


def test_ignite_engine_epochs_follow_len():
    """Ignite takes the epoch length from len(): a wrong one shifts every epoch's batches."""
    from ignite.engine import Engine, Events

    dataset = TensorDataset(torch.arange(57.).unsqueeze(1), torch.arange(57) % 3)
    loader = DeviceSemiSupervisedLoader(dataset, [0, 1, 2], batch_size=10, seed=8, device="cpu")
    seen = {}
    engine = Engine(lambda e, b: seen.setdefault(e.state.epoch, []).append(b.x_unlabeled.squeeze(1).long()))
    ends = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: ends.append(e.state.iteration))
    engine.run(loader, max_epochs=3)
    assert ends == [5, 10, 15]  # 57 // 10 = 5 iterations per epoch
    for epoch in (1, 2, 3):
        expected = torch.from_numpy(loader.epoch_indices(epoch - 1)["unlabeled"])
        assert torch.equal(torch.stack(seen[epoch]), expected)
