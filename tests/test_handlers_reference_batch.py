"""VirtualBatchReference: drawn once and seeded, kept through Checkpoint, not redrawn on resume, identical on two
gloo processes (with DataDependentInitialization's broadcast checked in the same processes)."""
from __future__ import annotations

import socket
from pathlib import Path

import ignite.distributed as idist
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from torch import nn

from ignite_igan.handlers import DataDependentInitialization, VirtualBatchReference
from ignite_igan.models import CIFARGenerator
from ignite_igan.nn import WeightNormLinear

Z_DIM = 8
SIZE = 6


def make_generator() -> CIFARGenerator:
    return CIFARGenerator(z_dim=Z_DIM, normalization="virtual", widths=(8, 4))


def sampling_engine(gen: CIFARGenerator) -> Engine:
    return Engine(lambda engine, batch: gen(gen.sample_noise(3)))


def test_drawn_once_at_start_from_the_seed_and_set_on_the_generator():
    gen = make_generator()
    reference = VirtualBatchReference(gen, size=SIZE, seed=7)
    trainer = sampling_engine(gen)
    reference.attach(trainer)
    assert reference.reference is None and gen.reference_noise.shape == (0, Z_DIM)  # nothing before the run
    trainer.run(range(3), max_epochs=2)
    expected = torch.rand(SIZE, Z_DIM, generator=torch.Generator().manual_seed(7))  # U[0,1), the model's noise
    assert torch.equal(reference.reference, expected)
    assert torch.equal(gen.reference_noise, expected)
    trainer.state.max_epochs = None
    trainer.run(range(3), max_epochs=1)  # a second run from the start keeps it
    assert torch.equal(reference.reference, expected)


def test_unseeded_draw_follows_torch_manual_seed():
    draws = []
    for _ in range(2):
        gen = make_generator()
        torch.manual_seed(3)
        reference = VirtualBatchReference(gen, size=SIZE)
        reference.attach(Engine(lambda e, b: None))
        draws.append(reference.setup())
    assert torch.equal(draws[0], draws[1])
    torch.manual_seed(4)
    assert not torch.equal(VirtualBatchReference(make_generator(), size=SIZE).setup(), draws[0])


def test_same_after_checkpoint_and_not_redrawn_on_resume(tmp_path):
    gen = make_generator()
    reference = VirtualBatchReference(gen, size=SIZE, seed=1)
    trainer = sampling_engine(gen)
    reference.attach(trainer)
    checkpoint = Checkpoint(
        {"trainer": trainer, "reference": reference}, DiskSaver(tmp_path, require_empty=False)
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    trainer.run(range(2), max_epochs=1)
    drawn = reference.reference.clone()

    resumed_gen = make_generator()
    resumed = VirtualBatchReference(resumed_gen, size=SIZE, seed=99)  # another seed would draw another batch
    resumed_trainer = sampling_engine(resumed_gen)
    resumed.attach(resumed_trainer)
    Checkpoint.load_objects({"trainer": resumed_trainer, "reference": resumed}, checkpoint=checkpoint.last_checkpoint)

    assert resumed_trainer.state.iteration == 2
    resumed_trainer.run(range(2), max_epochs=2)
    assert resumed_trainer.state.iteration == 4
    assert torch.equal(resumed.reference, drawn)
    assert torch.equal(resumed_gen.reference_noise, drawn)


def test_state_dict_round_trip_and_bad_state():
    reference = VirtualBatchReference(make_generator(), size=SIZE, seed=0)
    assert reference.state_dict() == {"reference_noise": None}
    reference.setup()
    other = VirtualBatchReference(make_generator(), size=SIZE, seed=5)
    other.load_state_dict(reference.state_dict())
    assert torch.equal(other.reference, reference.reference)
    with pytest.raises(ValueError, match=r"state_dict\['reference_noise'\] must be a tensor of size=6 noise .*\(4, 8\)"):
        other.load_state_dict({"reference_noise": torch.zeros(4, Z_DIM)})
    with pytest.raises(ValueError, match=r"must have the key \['reference_noise'\], got \['noise'\]"):
        other.load_state_dict({"noise": None})
    legacy = VirtualBatchReference(make_generator(), size=SIZE, seed=5)
    legacy.load_state_dict({"reference": reference.reference})  # checkpoints written with the earlier key
    assert torch.equal(legacy.reference, reference.reference)


def test_bad_input():
    with pytest.raises(TypeError, match=r"generator must have a sample_noise\(\) method.*Linear"):
        VirtualBatchReference(nn.Linear(2, 2), size=4)
    with pytest.raises(ValueError, match=r"size must be >= 1 \(the reference batch size\), got 0"):
        VirtualBatchReference(make_generator(), size=0)
    with pytest.raises(ValueError, match="size must be an int, got float 2.5"):
        VirtualBatchReference(make_generator(), size=2.5)
    with pytest.raises(TypeError, match="seed must be an int or None, got str"):
        VirtualBatchReference(make_generator(), size=4, seed="0")
    with pytest.raises(TypeError, match="generator must be a torch.nn.Module"):
        VirtualBatchReference("gen", size=4)
    batch_norm_gen = CIFARGenerator(z_dim=Z_DIM, normalization="batch", widths=(8, 4))
    with pytest.raises(ValueError, match="set_reference needs normalization='virtual'"):
        VirtualBatchReference(batch_norm_gen, size=4).setup()


# ---------------------------------------------------------------------------------------------------------------
# two gloo processes
# ---------------------------------------------------------------------------------------------------------------
def _distributed_worker(local_rank: int, out_dir: str) -> None:
    rank = idist.get_rank()
    torch.manual_seed(100 + rank)  # every process starts from different weights and a different RNG
    gen = make_generator()
    reference = VirtualBatchReference(gen, size=SIZE, seed=rank)  # rank 1 alone would draw another batch
    disc = nn.Sequential(WeightNormLinear(5, 7), nn.ReLU(), WeightNormLinear(7, 1, train_scale=True, init_scale=0.1))
    init_disc = DataDependentInitialization(disc, torch.randn(50, 5) * (1 + rank) + rank)  # per-process batch
    init_gen = DataDependentInitialization(gen, lambda: gen.sample_noise(20))
    trainer = Engine(lambda engine, batch: gen(gen.sample_noise(2)).sum().item())
    reference.attach(trainer)
    init_gen.attach(trainer)
    init_disc.attach(trainer)
    trainer.run([0, 1], max_epochs=1)
    torch.save(
        {
            "reference": reference.reference,
            "gen_reference": gen.reference_noise,
            "gen": gen.state_dict(),
            "disc": disc.state_dict(),
            "output": trainer.state.output,
            "world_size": idist.get_world_size(),
        },
        Path(out_dir) / f"rank{rank}.pt",
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_identical_on_two_gloo_processes(tmp_path):
    with idist.Parallel(backend="gloo", nproc_per_node=2, master_port=_free_port()) as parallel:
        parallel.run(_distributed_worker, str(tmp_path))
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    assert [r["world_size"] for r in results] == [2, 2]
    rank0_draw = torch.rand(SIZE, Z_DIM, generator=torch.Generator().manual_seed(0))
    for result in results:
        assert torch.equal(result["reference"], rank0_draw)
        assert torch.equal(result["gen_reference"], rank0_draw)
    for key in ("gen", "disc"):
        assert results[0][key].keys() == results[1][key].keys()
        for name in results[0][key]:
            assert torch.equal(results[0][key][name], results[1][key][name]), f"{key}.{name} differs across ranks"
    assert results[0]["output"] != pytest.approx(0.0)


def test_add_event_handler_gives_the_attach_result_and_registration_once():
    references = []
    for use_attach in (True, False):
        gen = make_generator()
        reference = VirtualBatchReference(gen, size=SIZE, seed=5)
        trainer = sampling_engine(gen)
        if use_attach:
            reference.attach(trainer)
        else:
            trainer.add_event_handler(Events.STARTED, reference)
        trainer.run(range(2), max_epochs=1)
        assert torch.equal(gen.reference_noise, reference.reference)
        references.append(reference.reference)
    assert torch.equal(references[0], references[1])
    with pytest.raises(ValueError, match=r"engine already has this VirtualBatchReference registered as an event handler"):
        reference.attach(trainer)
    evaluator = Engine(lambda e, b: None)
    reference.attach(evaluator)  # several engines may share it: they all set the same reference
    with pytest.raises(ValueError, match=r"engine already has this VirtualBatchReference attached; attaching it twice"):
        reference.attach(evaluator)
    with pytest.raises(ValueError, match=r"engine already has this VirtualBatchReference attached with attach\(\)"):
        reference(evaluator)
