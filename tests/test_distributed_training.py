"""A real 2-process run (gloo on CPU, ignite.distributed.Parallel) of the semi-supervised trainer and loader."""
import os

import ignite.distributed as idist
import pytest
from ignite.engine import Events
import torch
from torch.utils.data import TensorDataset

from ignite_igan.data import SemiSupervisedLoader, balanced_labeled_subset
from ignite_igan.engines import create_semi_supervised_trainer
from ignite_igan.handlers import DataDependentInitialization, VirtualBatchReference
from ignite_igan.models import CIFARDiscriminator, CIFARGenerator
from ignite_igan.optim import ReferenceAdam

ITERATIONS = 3


def _dataset():
    g = torch.Generator().manual_seed(5)
    # input channel 0, pixel (0, 0) carries the example's index, so the test can tell which examples a process saw
    images = torch.rand(48, 3, 16, 16, generator=g) * 2 - 1
    images[:, 0, 0, 0] = torch.arange(48, dtype=torch.float32)
    return TensorDataset(images, torch.arange(48) % 10)


def _training(local_rank, output_dir):
    torch.set_num_threads(1)
    rank = idist.get_rank()
    torch.manual_seed(0)  # the same initial weights everywhere (DDP would broadcast rank 0's anyway)
    gen = CIFARGenerator(widths=(8, 4), normalization="virtual")
    disc = CIFARDiscriminator(widths=(4, 8), input_corruption="noise", minibatch_kernels=3, minibatch_kernel_dim=2)
    gen, disc = idist.auto_model(gen), idist.auto_model(disc)
    d_opt = ReferenceAdam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    g_opt = ReferenceAdam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999))

    dataset = _dataset()
    labeled = balanced_labeled_subset(dataset.tensors[1], per_class=1, seed=1)
    loader = SemiSupervisedLoader(dataset, labeled, batch_size=8, seed=3)  # global batch: 4 per process
    trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt, feature_matching_distance="mean_absolute")

    torch.manual_seed(100 + rank)  # different noise per process, and different draws of the reference batch
    reference = VirtualBatchReference(gen, size=4)
    reference.attach(trainer)
    DataDependentInitialization(disc, dataset.tensors[0][8 * rank : 8 * rank + 8]).attach(trainer)

    seen = {"labeled": [], "unlabeled": [], "unlabeled2": [], "outputs": []}

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        batch = engine.state.batch
        seen["labeled"].append(batch.x_labeled[:, 0, 0, 0].long().tolist())
        seen["unlabeled"].append(batch.x_unlabeled[:, 0, 0, 0].long().tolist())
        seen["unlabeled2"].append(batch.x_unlabeled2[:, 0, 0, 0].long().tolist())
        seen["outputs"].append(engine.state.output)

    trainer.run(loader, max_iters=ITERATIONS)
    torch.save(
        {
            "world_size": idist.get_world_size(),
            "reference": reference.reference,
            "generator_reference": gen.module.reference_noise.cpu(),
            "labeled_indices": torch.as_tensor(loader.labeled_indices),
            "discriminator": {k: v.detach().cpu() for k, v in disc.module.state_dict().items()},
            "generator": {k: v.detach().cpu() for k, v in gen.module.state_dict().items()},
            "seen": seen,
            "epoch_tables": loader.epoch_indices(0),
        },
        os.path.join(output_dir, f"rank{rank}.pt"),
    )


def _free_port() -> int:
    """A port free now (the OS picks it), so that parallel test runs never collide on a fixed one."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("distributed"))
    with idist.Parallel(backend="gloo", nproc_per_node=2, master_port=_free_port()) as parallel:
        parallel.run(_training, output_dir)
    return [torch.load(os.path.join(output_dir, f"rank{r}.pt"), weights_only=False) for r in range(2)]


def test_two_processes_ran(results):
    assert [r["world_size"] for r in results] == [2, 2]
    for r in results:
        assert len(r["seen"]["outputs"]) == ITERATIONS
        assert all(torch.isfinite(torch.tensor(list(o.values()))).all() for o in r["seen"]["outputs"])


def test_reference_batch_and_labeled_subset_identical_on_both_processes(results):
    a, b = results
    assert torch.equal(a["reference"], b["reference"])  # drawn with different seeds, broadcast from rank 0
    assert torch.equal(a["generator_reference"], a["reference"]) and torch.equal(b["generator_reference"], b["reference"])
    assert torch.equal(a["labeled_indices"], b["labeled_indices"])
    labels = _dataset().tensors[1]
    assert sorted(labels[a["labeled_indices"]].tolist()) == list(range(10))


def test_models_stay_synchronized(results):
    # Different data and noise on each process, yet DDP keeps both players identical: the generator's
    # restricted backward pass (inputs=its parameters) still triggers DDP's gradient averaging.
    a, b = results
    for player in ("discriminator", "generator"):
        for key in a[player]:
            assert torch.equal(a[player][key], b[player][key]), f"{player}.{key} differs between processes"


def test_each_process_gets_its_share_of_the_global_batches(results):
    a, b = results
    tables = a["epoch_tables"]
    for t in range(ITERATIONS):
        for stream, per_process in (("labeled", 4), ("unlabeled", 4), ("unlabeled2", 4)):
            first, second = a["seen"][stream][t], b["seen"][stream][t]
            assert len(first) == len(second) == per_process
            # the two shares are the two halves of the iteration's global batch
            assert first + second == tables[stream][t].tolist()
        assert not set(a["seen"]["unlabeled"][t]) & set(b["seen"]["unlabeled"][t])
    labeled = set(a["labeled_indices"].tolist())
    assert all(i in labeled for r in results for batch in r["seen"]["labeled"] for i in batch)
