"""Labeled-subset selection and the semi-supervised loader (spec §4.1-4.3)."""
import collections

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from torch.utils.data import Dataset, Subset, TensorDataset

from ignite_igan.data import SemiSupervisedBatch, SemiSupervisedLoader, balanced_labeled_subset, dataset_labels, unlabeled_pool


class IdentityDataset(Dataset):
    """Item i is (i as a float input, i as its "label"): any label the loader yields names its example."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return torch.tensor([float(index)]), index


def reference_selection(trainy, count, seed_data):
    """Spec §4.3, as the scripts write it: permute the whole set, take the first `count` of each class."""
    trainx = np.arange(len(trainy))  # stand-in for the images: their original positions
    inds = np.random.RandomState(seed_data).permutation(trainx.shape[0])
    trainx, trainy = trainx[inds], trainy[inds]
    return np.concatenate([trainx[trainy == j][:count] for j in range(int(trainy.max()) + 1)])


def _class_labels(n=230, num_classes=5, seed=0):
    return np.random.default_rng(seed).integers(0, num_classes, size=n)


# ---------------------------------------------------------------------------------------------------------------
# balanced_labeled_subset
# ---------------------------------------------------------------------------------------------------------------
def test_subset_is_the_reference_selection_and_balanced():
    labels = _class_labels()
    chosen = balanced_labeled_subset(labels, per_class=7, seed=1)
    assert chosen.dtype == torch.int64 and chosen.shape == (35,)
    np.testing.assert_array_equal(chosen.numpy(), reference_selection(labels, 7, 1))
    assert collections.Counter(labels[chosen.numpy()].tolist()) == {c: 7 for c in range(5)}
    assert len(set(chosen.tolist())) == 35


def test_subset_same_seed_same_subset_other_seed_other_subset():
    labels = torch.as_tensor(_class_labels())
    a = balanced_labeled_subset(labels, per_class=4, seed=3)
    assert torch.equal(a, balanced_labeled_subset(labels.tolist(), per_class=4, seed=3))
    assert not torch.equal(a, balanced_labeled_subset(labels, per_class=4, seed=4))


def test_subset_errors_name_argument_value_and_expectation():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 6)
    with pytest.raises(ValueError, match=r"per_class=4 is more than class 1 has: it has 3 examples"):
        balanced_labeled_subset(labels, per_class=4, seed=0)
    with pytest.raises(ValueError, match=r"per_class must be >= 1, got 0"):
        balanced_labeled_subset(labels, per_class=0, seed=0)
    with pytest.raises(ValueError, match=r"more than class 3 has: it has 0"):
        balanced_labeled_subset(labels, per_class=1, seed=0, num_classes=4)
    with pytest.raises(ValueError, match=r"labels must be >= 0"):
        balanced_labeled_subset([0, -1, 1], per_class=1, seed=0)
    with pytest.raises(TypeError, match=r"labels must hold integers"):
        balanced_labeled_subset([0.0, 1.0], per_class=1, seed=0)
    with pytest.raises(ValueError, match=r"labels must be 1-D, got shape \(1, 2\)"):
        balanced_labeled_subset([[0, 1]], per_class=1, seed=0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\) \(num_classes\), got values in \[0, 2\]"):
        balanced_labeled_subset([0, 1, 2], per_class=1, seed=0, num_classes=2)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 4294967295\], got -2"):
        balanced_labeled_subset(labels, per_class=1, seed=-2)


def test_dataset_labels_reads_common_layouts():
    y = torch.tensor([2, 0, 1, 1])
    tensor_ds = TensorDataset(torch.zeros(4, 3), y)
    assert dataset_labels(tensor_ds).tolist() == [2, 0, 1, 1]
    assert dataset_labels(Subset(tensor_ds, [3, 0])).tolist() == [1, 2]

    class WithTargets(IdentityDataset):
        targets = [5, 6, 7]

    assert dataset_labels(WithTargets(3)).tolist() == [5, 6, 7]
    assert dataset_labels(IdentityDataset(4)).tolist() == [0, 1, 2, 3]  # falls back to loading the items


# ---------------------------------------------------------------------------------------------------------------
# SemiSupervisedLoader
# ---------------------------------------------------------------------------------------------------------------
def _ids(x):
    return x.reshape(-1).long().tolist()


def test_no_label_outside_the_subset_ever_leaves_the_loader():
    n = 103
    labeled = balanced_labeled_subset(_class_labels(n, 3), per_class=2, seed=5)
    loader = SemiSupervisedLoader(IdentityDataset(n), labeled, batch_size=10, seed=0)
    subset = set(labeled.tolist())
    seen_labels, seen_unlabeled = set(), set()
    for _ in range(3):
        for batch in loader:
            assert isinstance(batch, SemiSupervisedBatch)
            seen_labels.update(batch.y_labeled.tolist())
            assert _ids(batch.x_labeled) == batch.y_labeled.tolist()  # each label with its own example
            # the unlabeled batches are bare inputs: no labels travel with them
            for x in (batch.x_unlabeled, batch.x_unlabeled2):
                assert isinstance(x, torch.Tensor) and x.shape == (10, 1)
                seen_unlabeled.update(_ids(x))
    assert seen_labels == subset
    assert subset <= seen_unlabeled  # labeled examples stay in the unlabeled set


def test_epoch_structure_tiling_and_reshuffling():
    n, b = 103, 10
    labeled = torch.arange(0, 100, 5)  # 20 labeled examples
    loader = SemiSupervisedLoader(IdentityDataset(n), labeled, batch_size=b, seed=2)
    assert len(loader) == n // b == 10
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == 10
        lab = [i for batch in batches for i in _ids(batch.x_labeled)]
        unl = [i for batch in batches for i in _ids(batch.x_unlabeled)]
        unl2 = [i for batch in batches for i in _ids(batch.x_unlabeled2)]
        # 100 labeled slots = 5 copies of the 20 labeled examples, each copy permuted independently
        assert collections.Counter(lab) == {i: 5 for i in labeled.tolist()}
        for copy in range(5):
            assert sorted(lab[20 * copy : 20 * (copy + 1)]) == sorted(labeled.tolist())
        # each unlabeled stream is a permutation of the 103 examples, cut to 100 (remainder dropped)
        for stream in (unl, unl2):
            assert len(stream) == len(set(stream)) == 100 and set(stream) <= set(range(n))
        assert unl != unl2
        epochs.append((lab, unl, unl2))
    assert loader.iteration == 20 and loader.epoch == 2
    for a, b_ in zip(epochs[0], epochs[1]):
        assert a != b_  # re-permuted every epoch


def test_every_labeled_batch_holds_the_whole_subset_when_it_has_batch_size_examples():
    # The reference's MNIST setting: 100 labels, batches of 100 (here 10 and 10).
    labeled = balanced_labeled_subset(_class_labels(60, 5), per_class=2, seed=1)
    loader = SemiSupervisedLoader(IdentityDataset(60), labeled, batch_size=10, seed=0)
    for batch in loader:
        assert sorted(_ids(batch.x_labeled)) == sorted(labeled.tolist())


def test_same_seed_same_batches_other_seed_other_batches():
    def collect(seed):
        loader = SemiSupervisedLoader(IdentityDataset(50), [1, 2, 3], batch_size=5, seed=seed, labeled_batch_size=4)
        return [[_ids(x) for x in (b.x_labeled, b.x_unlabeled, b.x_unlabeled2)] for _ in range(2) for b in loader]

    assert collect(7) == collect(7)
    assert collect(7) != collect(8)


def test_batches_are_a_function_of_seed_and_epoch_only():
    loader = SemiSupervisedLoader(IdentityDataset(40), [0, 9], batch_size=8, seed=3)
    loader.set_epoch(4)
    direct = [_ids(b.x_unlabeled) for b in loader]
    tables = loader.epoch_indices(4)
    assert direct == tables["unlabeled"].tolist()


def test_resume_from_state_dict_mid_epoch():
    def make():
        return SemiSupervisedLoader(IdentityDataset(37), [4, 5, 6], batch_size=6, seed=11)

    full = make()
    expected = [[_ids(x) for x in b[:1] + b[2:]] for _ in range(3) for b in full]
    first = make()
    seen = []
    for _ in range(2):  # epoch length 6: stop in the middle of the second epoch
        for b in first:
            seen.append([_ids(x) for x in b[:1] + b[2:]])
            if first.iteration == 8:
                break
    state = first.state_dict()
    assert state["iteration"] == 8
    resumed = SemiSupervisedLoader(IdentityDataset(37), [0, 1, 2], batch_size=6, seed=99)  # overwritten by the state
    resumed.load_state_dict(state)
    assert resumed.labeled_indices.tolist() == [4, 5, 6] and resumed.seed == 11
    while resumed.iteration < 18:  # to the end of the third epoch
        for b in resumed:
            seen.append([_ids(x) for x in b[:1] + b[2:]])
    assert seen == expected


def test_ignite_engine_resumes_mid_epoch_on_the_same_batches():
    def make_trainer(loader, record):
        return Engine(lambda engine, batch: record.append((engine.state.iteration, _ids(batch.x_unlabeled))))

    uninterrupted = []
    make_trainer(SemiSupervisedLoader(IdentityDataset(30), [1], batch_size=4, seed=0), uninterrupted).run(
        SemiSupervisedLoader(IdentityDataset(30), [1], batch_size=4, seed=0), max_epochs=3
    )
    loader = SemiSupervisedLoader(IdentityDataset(30), [1], batch_size=4, seed=0)
    record = []
    trainer = make_trainer(loader, record)
    saved = {}

    @trainer.on(Events.ITERATION_COMPLETED(once=10))
    def _checkpoint_and_stop(engine):
        saved.update(trainer=engine.state_dict(), loader=loader.state_dict())
        engine.terminate()

    trainer.run(loader, max_epochs=3)
    loader2 = SemiSupervisedLoader(IdentityDataset(30), [1], batch_size=4, seed=0)
    loader2.load_state_dict(saved["loader"])
    trainer2 = make_trainer(loader2, record)
    trainer2.load_state_dict(saved["trainer"])
    trainer2.run(loader2)
    assert record == uninterrupted and len(record) == 21


def test_worker_processes_give_the_same_batches():
    def collect(**kwargs):
        loader = SemiSupervisedLoader(IdentityDataset(40), [2, 3], batch_size=8, seed=5, **kwargs)
        return [[x.tolist() for x in b] for _ in range(2) for b in loader]

    assert collect(num_workers=2) == collect(num_workers=0)
    assert collect(num_workers=2, persistent_workers=True) == collect()


def test_process_slices_make_up_the_global_batch():
    def collect(world_size, rank):
        loader = SemiSupervisedLoader(
            IdentityDataset(50), [0, 1, 2], batch_size=8, labeled_batch_size=4, seed=1, world_size=world_size, rank=rank
        )
        return [b for _ in range(2) for b in loader]

    single = collect(1, 0)
    halves = [collect(2, r) for r in range(2)]
    assert len(halves[0]) == len(halves[1]) == len(single) == 12
    for t, whole in enumerate(single):
        for field in range(4):
            joined = torch.cat([halves[0][t][field], halves[1][t][field]])
            assert torch.equal(joined, whole[field])
        assert halves[0][t].x_unlabeled.shape == (4, 1) and halves[0][t].x_labeled.shape == (2, 1)


def test_without_generator_batch():
    loader = SemiSupervisedLoader(IdentityDataset(20), [0], batch_size=5, seed=0, generator_batch=False)
    batch = next(iter(loader))
    assert batch.x_unlabeled2 is None and batch.x_unlabeled.shape == (5, 1)


def test_unlabeled_pool_restriction():
    loader = SemiSupervisedLoader(IdentityDataset(30), [0, 1], batch_size=4, seed=0, unlabeled_indices=range(10, 30))
    assert len(loader) == 5
    assert all(10 <= i < 30 for b in loader for i in _ids(b.x_unlabeled))


def test_loader_bad_input():
    ds = IdentityDataset(20)
    with pytest.raises(ValueError, match=r"batch_size=32 is larger than the unlabeled data \(20 examples\)"):
        SemiSupervisedLoader(ds, [0], batch_size=32, seed=0)
    with pytest.raises(ValueError, match=r"batch_size=5 must be divisible by the number of processes \(2\)"):
        SemiSupervisedLoader(ds, [0], batch_size=5, seed=0, world_size=2, rank=0)
    with pytest.raises(ValueError, match=r"labeled_indices must lie in \[0, 20\).*got values in \[0, 20\]"):
        SemiSupervisedLoader(ds, [0, 20], batch_size=5, seed=0)
    with pytest.raises(ValueError, match=r"labeled_indices must not repeat an index"):
        SemiSupervisedLoader(ds, [3, 3], batch_size=5, seed=0)
    with pytest.raises(ValueError, match=r"labeled_indices must hold at least one index"):
        SemiSupervisedLoader(ds, [], batch_size=5, seed=0)
    with pytest.raises(ValueError, match=r"batch_size must be >= 1, got 0"):
        SemiSupervisedLoader(ds, [0], batch_size=0, seed=0)
    with pytest.raises(TypeError, match=r"batch_size must be an int"):
        SemiSupervisedLoader(ds, [0], batch_size=5.0, seed=0)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 1\] \(world_size=2\), got 2"):
        SemiSupervisedLoader(ds, [0], batch_size=4, seed=0, world_size=2, rank=2)

    class Bare(IdentityDataset):
        def __getitem__(self, index):
            return torch.zeros(1)

    with pytest.raises(TypeError, match=r"dataset items must be \(input, label, \.\.\.\) tuples"):
        next(iter(SemiSupervisedLoader(Bare(20), [0], batch_size=5, seed=0)))

    loader = SemiSupervisedLoader(ds, [0], batch_size=5, seed=0)
    state = loader.state_dict()
    with pytest.raises(ValueError, match=r"state_dict has batch_size=5 but this loader has batch_size=4"):
        SemiSupervisedLoader(ds, [0], batch_size=4, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match=r"state_dict is missing \['seed'\]"):
        loader.load_state_dict({k: v for k, v in state.items() if k != "seed"})
    with pytest.raises(ValueError, match=r"state_dict is missing \['iteration', .*expected a mapping.*got list"):
        loader.load_state_dict([state])
    with pytest.raises(ValueError, match=r"state_dict\['labeled_indices'\] must lie in \[0, 20\), got values in \[0, 20"):
        loader.load_state_dict({**state, "labeled_indices": torch.tensor([0, 20])})


def test_unlabeled_pool_holds_the_labeled_examples_and_nests():
    labeled = [3, 50, 77]
    small = unlabeled_pool(100, labeled, size=10, seed=4)
    large = unlabeled_pool(100, labeled, size=40, seed=4)
    assert len(small) == 10 and len(set(small.tolist())) == 10 and set(labeled) <= set(small.tolist())
    assert set(small.tolist()) <= set(large.tolist())
    assert torch.equal(small, unlabeled_pool(100, labeled, size=10, seed=4))
    assert not torch.equal(small, unlabeled_pool(100, labeled, size=10, seed=5))
    assert unlabeled_pool(100, labeled, size=100, seed=0).tolist() == list(range(100))


def test_unlabeled_pool_bad_input():
    with pytest.raises(ValueError, match=r"size must be in \[3, 100\] \(from the number of labeled examples to num_examples\), got 2"):
        unlabeled_pool(100, [1, 2, 3], size=2, seed=0)
    with pytest.raises(ValueError, match=r"size must be in \[3, 100\] .*, got 101"):
        unlabeled_pool(100, [1, 2, 3], size=101, seed=0)
    with pytest.raises(ValueError, match=r"labeled_indices must lie in \[0, 100\)"):
        unlabeled_pool(100, [1, 200], size=10, seed=0)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 4294967295\], got -1"):
        unlabeled_pool(100, [1], size=10, seed=-1)
