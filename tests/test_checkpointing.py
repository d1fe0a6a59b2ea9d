import json
import os
import random

import ignite.distributed as idist
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from ignite_igan.checkpointing import (
    RandomStates,
    attach_checkpointing,
    latest_checkpoint,
    resume_from_checkpoint,
    write_json_atomic,
)


def _make_training(seed=0):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def step(engine, _):
        # Every source of randomness a GAN step uses: torch noise, dropout, NumPy and Python draws.
        x = torch.rand(16, 4) + float(np.random.rand()) + random.random()
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer = Engine(step)
    to_save = {"model": model, "optimizer": optimizer, "trainer": trainer, "random_states": RandomStates()}
    return model, trainer, to_save


def test_killed_run_resumes_bitwise(tmp_path):
    model_straight, trainer, _ = _make_training()
    trainer.run(range(5), max_epochs=4)

    model_first, trainer, to_save = _make_training()
    attach_checkpointing(trainer, to_save, tmp_path)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda engine: engine.terminate())
    trainer.run(range(5), max_epochs=4)  # "killed" after the second epoch's checkpoint

    torch.manual_seed(123)  # a new process starts from other random states
    np.random.seed(123)
    random.seed(123)
    model_resumed, trainer, to_save = _make_training(seed=99)
    assert resume_from_checkpoint(to_save, tmp_path) == tmp_path / "checkpoint_2.pt"
    trainer.run(range(5), max_epochs=4)
    for a, b in zip(model_straight.parameters(), model_resumed.parameters()):
        assert torch.equal(a, b)


def test_two_newest_checkpoints_are_kept(tmp_path):
    _, trainer, to_save = _make_training()
    attach_checkpointing(trainer, to_save, tmp_path)
    trainer.run(range(2), max_epochs=5)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["checkpoint_4.pt", "checkpoint_5.pt"]
    assert latest_checkpoint(tmp_path).name == "checkpoint_5.pt"
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".pt"]  # no temporary files left behind
    with pytest.raises(ValueError, match="n_saved must be >= 2.*got 1"):
        attach_checkpointing(trainer, to_save, tmp_path, n_saved=1)


def test_no_checkpoint_means_fresh_start(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert resume_from_checkpoint({}, tmp_path) is None


def test_json_is_written_whole(tmp_path):
    path = tmp_path / "out" / "summary.json"
    write_json_atomic(path, {"error": np.float64(0.25), "count": np.int64(3), "path": tmp_path})
    assert json.loads(path.read_text()) == {"error": 0.25, "count": 3, "path": str(tmp_path)}
    with pytest.raises(TypeError, match="cannot write a object"):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text())["count"] == 3  # the failed write left the old file intact
    assert sorted(os.listdir(path.parent)) == ["summary.json"]


def _gather_states(local_rank, results):
    torch.manual_seed(1000 + idist.get_rank())
    expected = torch.get_rng_state()
    states = RandomStates()
    sd = states.state_dict()
    torch.rand(10)  # move on, then restore
    states.load_state_dict(sd)
    assert torch.equal(torch.get_rng_state(), expected)
    if idist.get_rank() == 0:
        results.put([s["torch"] for s in sd["per_rank"]])


def test_random_states_of_every_process_are_gathered():
    import multiprocessing as mp

    queue = mp.get_context("spawn").Manager().Queue()
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_gather_states, queue)
    per_rank = queue.get(timeout=5)
    assert len(per_rank) == 2 and not torch.equal(per_rank[0], per_rank[1])
    torch.manual_seed(1000)
    assert torch.equal(per_rank[0], torch.get_rng_state())
    torch.manual_seed(1001)
    assert torch.equal(per_rank[1], torch.get_rng_state())
