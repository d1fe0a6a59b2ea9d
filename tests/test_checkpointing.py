import json
import os
import random

import ignite.distributed as idist
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from ignite_igan.checkpointing import (
    CheckpointError,
    ChecksummedSaver,
    RandomStates,
    attach_checkpointing,
    clean_partial_writes,
    jsonable,
    latest_checkpoint,
    list_checkpoints,
    load_latest_checkpoint,
    verify_checkpoint,
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
    assert load_latest_checkpoint(to_save, tmp_path) == tmp_path / "checkpoint_2.pt"
    trainer.run(range(5), max_epochs=4)
    for a, b in zip(model_straight.parameters(), model_resumed.parameters()):
        assert torch.equal(a, b)


class _Epoch:
    """A stand-in for a run's state: which epoch's checkpoint was loaded."""

    def __init__(self):
        self.epoch = None

    def state_dict(self):
        return {"epoch": torch.tensor(self.epoch)}

    def load_state_dict(self, state):
        self.epoch = int(state["epoch"])


def _names(folder):
    return [p.name for p in list_checkpoints(folder)]


@pytest.mark.parametrize("epochs", [[9, 10], [99, 100], [2, 9, 10, 11, 99, 100, 101]])
def test_checkpoints_are_ordered_by_epoch_number_not_by_file_name(tmp_path, epochs):
    # Files written directly (in a shuffled order): a run of 100 epochs takes no time to test.
    saver = ChecksummedSaver(tmp_path, keep=len(epochs))
    for epoch in random.Random(0).sample(epochs, len(epochs)):
        saver({"state": {"epoch": torch.tensor(epoch)}}, f"checkpoint_{epoch}.pt")
    newest_first = sorted(epochs, reverse=True)
    assert _names(tmp_path) == [f"checkpoint_{e}.pt" for e in newest_first]
    assert latest_checkpoint(tmp_path).name == f"checkpoint_{newest_first[0]}.pt"
    state = _Epoch()
    assert load_latest_checkpoint({"state": state}, tmp_path).name == f"checkpoint_{newest_first[0]}.pt"
    assert state.epoch == newest_first[0]  # a long run resumes from its last epoch, not from epoch 9 or 99


@pytest.mark.parametrize("first, last", [(8, 12), (98, 102)])
def test_pruning_across_epoch_10_and_100_deletes_the_oldest(tmp_path, first, last):
    saver = ChecksummedSaver(tmp_path, keep=2)
    for epoch in range(first, last + 1):
        saver({"state": {"epoch": torch.tensor(epoch)}}, f"checkpoint_{epoch}.pt")
        kept = [epoch, epoch - 1] if epoch > first else [epoch]
        assert _names(tmp_path) == [f"checkpoint_{e}.pt" for e in kept], epoch
        assert sorted(p.name for p in tmp_path.glob("*.sha256")) == sorted(f"checkpoint_{e}.pt.sha256" for e in kept)


def test_a_run_past_epochs_10_and_100_keeps_and_resumes_from_its_newest_checkpoints(tmp_path):
    def training():
        trainer = Engine(lambda engine, batch: None)
        to_save = {"model": torch.nn.Linear(1, 1), "trainer": trainer}
        attach_checkpointing(trainer, to_save, tmp_path)
        return trainer, to_save

    trainer, _ = training()
    trainer.run([0], max_epochs=10)  # killed after epoch 10
    assert _names(tmp_path) == ["checkpoint_10.pt", "checkpoint_9.pt"]
    trainer, to_save = training()
    assert load_latest_checkpoint(to_save, tmp_path).name == "checkpoint_10.pt"
    assert trainer.state.epoch == 10
    trainer.run([0], max_epochs=101)
    assert _names(tmp_path) == ["checkpoint_101.pt", "checkpoint_100.pt"]
    trainer, to_save = training()
    assert load_latest_checkpoint(to_save, tmp_path).name == "checkpoint_101.pt" and trainer.state.epoch == 101


def test_two_newest_checkpoints_are_kept(tmp_path):
    _, trainer, to_save = _make_training()
    attach_checkpointing(trainer, to_save, tmp_path)
    trainer.run(range(2), max_epochs=5)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["checkpoint_4.pt", "checkpoint_5.pt"]
    assert latest_checkpoint(tmp_path).name == "checkpoint_5.pt"
    # Each checkpoint with its checksum, and no temporary files left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_4.pt", "checkpoint_4.pt.sha256", "checkpoint_5.pt", "checkpoint_5.pt.sha256"
    ]
    with pytest.raises(ValueError, match="n_saved must be >= 2.*got 1"):
        attach_checkpointing(trainer, to_save, tmp_path, n_saved=1)


def test_no_checkpoint_means_fresh_start(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert load_latest_checkpoint({}, tmp_path) is None


def test_json_is_written_whole(tmp_path):
    path = tmp_path / "out" / "summary.json"
    write_json_atomic(path, {"error": np.float64(0.25), "count": np.int64(3), "path": tmp_path})
    assert json.loads(path.read_text()) == {"error": 0.25, "count": 3, "path": str(tmp_path)}
    with pytest.raises(TypeError, match="cannot write a object"):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text())["count"] == 3  # the failed write left the old file intact
    assert sorted(os.listdir(path.parent)) == ["summary.json"]


def _free_port() -> int:
    """A port free now (the OS picks it), so that parallel test runs never collide on a fixed one."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@pytest.mark.slow
def test_random_states_of_every_process_are_gathered():
    import multiprocessing as mp

    queue = mp.get_context("spawn").Manager().Queue()
    with idist.Parallel(backend="gloo", nproc_per_node=2, master_port=_free_port()) as parallel:
        parallel.run(_gather_states, queue)
    per_rank = queue.get(timeout=5)
    assert len(per_rank) == 2 and not torch.equal(per_rank[0], per_rank[1])
    torch.manual_seed(1000)
    assert torch.equal(per_rank[0], torch.get_rng_state())
    torch.manual_seed(1001)
    assert torch.equal(per_rank[1], torch.get_rng_state())


def _trained_folder(tmp_path, epochs=3):
    _, trainer, to_save = _make_training()
    attach_checkpointing(trainer, to_save, tmp_path)
    trainer.run(range(2), max_epochs=epochs)
    return to_save


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "flipped":  # a few bytes inside a tensor's storage: the file still loads
        middle = len(data) // 2
        for offset in range(3):
            data[middle + offset] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "empty", "random", "flipped"])
def test_corrupt_newest_checkpoint_is_named_and_the_previous_one_used(tmp_path, how):
    _trained_folder(tmp_path)
    newest = tmp_path / "checkpoint_3.pt"
    _damage(newest, how)
    if how == "flipped":
        torch.load(newest, weights_only=True)  # still loadable: only the checksum can tell
    assert verify_checkpoint(newest) is not None
    _, trainer, to_load = _make_training(seed=1)
    with pytest.warns(UserWarning, match=r"checkpoint_3\.pt: .*Resuming from checkpoint_2\.pt"):
        assert load_latest_checkpoint(to_load, tmp_path) == tmp_path / "checkpoint_2.pt"
    assert trainer.state.epoch == 2
    assert newest.exists()  # nothing is deleted: the next save of epoch 3 replaces it


def test_no_usable_checkpoint_names_every_file(tmp_path):
    _trained_folder(tmp_path)
    _damage(tmp_path / "checkpoint_3.pt", "empty")
    _damage(tmp_path / "checkpoint_2.pt", "truncated")
    _, _, to_load = _make_training()
    with pytest.raises(CheckpointError, match=r"checkpoint_3\.pt: empty file; checkpoint_2\.pt: SHA-256 mismatch"):
        load_latest_checkpoint(to_load, tmp_path)


def test_exactly_two_checkpoints_remain_after_resumes(tmp_path):
    _trained_folder(tmp_path, epochs=2)
    for epochs in (3, 4, 5):  # three resumed processes, each with its own Checkpoint handler
        _, trainer, to_save = _make_training()
        load_latest_checkpoint(to_save, tmp_path)
        attach_checkpointing(trainer, to_save, tmp_path)
        trainer.run(range(2), max_epochs=epochs)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["checkpoint_4.pt", "checkpoint_5.pt"]


def test_partial_writes_are_cleaned_up(tmp_path):
    _trained_folder(tmp_path, epochs=2)
    (tmp_path / "checkpoint_3.pt.partial").write_bytes(b"half")
    (tmp_path / "checkpoint_7.pt.sha256").write_text("0" * 64)  # its checkpoint never arrived
    removed = clean_partial_writes(tmp_path)
    assert sorted(p.name for p in removed) == ["checkpoint_3.pt.partial", "checkpoint_7.pt.sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_1.pt", "checkpoint_1.pt.sha256", "checkpoint_2.pt", "checkpoint_2.pt.sha256"
    ]


def test_full_disk_names_the_path_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import errno

    _, trainer, to_save = _make_training()
    attach_checkpointing(trainer, to_save, tmp_path)
    trainer.run(range(2), max_epochs=2)
    good = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointError, match=r"could not write .*checkpoint_3\.pt.*No space left on device.*intact"):
        trainer.run(range(2), max_epochs=3)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not list(tmp_path.glob("*.partial"))
    # Ignite removed the oldest before writing; the newest good one is untouched and still verifies.
    assert (tmp_path / "checkpoint_2.pt").read_bytes() == good["checkpoint_2.pt"]
    assert verify_checkpoint(tmp_path / "checkpoint_2.pt") is None


def test_json_and_checkpoints_have_the_same_permissions(tmp_path):
    _trained_folder(tmp_path, epochs=1)
    write_json_atomic(tmp_path / "summary.json", {"a": 1})
    mode = lambda p: os.stat(p).st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "summary.json") == mode(tmp_path / "checkpoint_1.pt")


def test_jsonable_is_what_a_json_file_reads_back(tmp_path):
    value = {"path": tmp_path, "pair": (1, 2.5), "half": np.float32(0.5), "count": np.int64(7), "loss": torch.tensor(0.25)}
    write_json_atomic(tmp_path / "v.json", value)
    assert jsonable(value) == json.loads((tmp_path / "v.json").read_text())
    assert jsonable(value) == {"path": str(tmp_path), "pair": [1, 2.5], "half": 0.5, "count": 7, "loss": 0.25}
    assert jsonable({3: 1, "a": 2}) == {"3": 1, "a": 2}  # keys of any kind, as text
    # A table keyed by seed keeps its numeric order in the file (the keys are sorted before they become text).
    write_json_atomic(tmp_path / "seeds.json", {10: "b", 2: "a"})
    assert list(json.loads((tmp_path / "seeds.json").read_text())) == ["2", "10"]


# --- added by tests: atomic writes when the disk fails in the middle of a write ---


class _HalfWrittenFile:
    """Wraps a real file: ``write`` puts the first ``keep`` bytes on disk, then fails as a full disk does."""

    def __init__(self, f, keep):
        self._f, self._keep = f, keep

    def write(self, data):
        self._f.write(data[: self._keep])
        self._f.flush()
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _disk_fills_after(monkeypatch, keep):
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _HalfWrittenFile(real(fd, *a, **k), keep))


def test_a_write_that_fails_midway_leaves_the_old_file_intact_and_no_partial(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"error": 0.25, "rows": list(range(100))})
    old = path.read_bytes()
    _disk_fills_after(monkeypatch, keep=20)
    with pytest.raises(OSError, match=r"could not write .*summary\.json.*No space left on device") as caught:
        write_json_atomic(path, {"error": 0.5, "rows": list(range(200))})
    monkeypatch.undo()
    import errno

    assert caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["summary.json"]


def test_a_rename_that_fails_leaves_the_old_file_intact_and_no_partial(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "summary.json"
    write_json_atomic(path, {"a": 1})
    old = path.read_bytes()

    def no_rename(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match=r"could not write .*summary\.json.*Input/output error"):
        write_json_atomic(path, {"a": 2})
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["summary.json"]


def test_a_stale_partial_file_is_replaced_not_appended_to(tmp_path):
    """A partial file left by a killed process (longer than the new data) must not leak into the new file."""
    path = tmp_path / "summary.json"
    (tmp_path / "summary.json.partial").write_bytes(b"x" * 5000)
    write_json_atomic(path, {"a": 1})
    assert path.read_bytes() == b'{\n  "a": 1\n}\n'
    assert sorted(os.listdir(tmp_path)) == ["summary.json"]


def test_a_checkpoint_that_fails_midway_is_not_left_behind_and_the_run_resumes_from_the_last_good_one(
    tmp_path, monkeypatch
):
    _, trainer, to_save = _make_training()
    attach_checkpointing(trainer, to_save, tmp_path)
    trainer.run(range(2), max_epochs=2)
    good = (tmp_path / "checkpoint_2.pt").read_bytes()
    _disk_fills_after(monkeypatch, keep=1000)
    with pytest.raises(CheckpointError, match=r"checkpoint_3\.pt.*No space left on device"):
        trainer.run(range(2), max_epochs=3)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir() if "checkpoint_3" in p.name) == []
    assert not list(tmp_path.glob("*.partial"))
    assert (tmp_path / "checkpoint_2.pt").read_bytes() == good
    _, resumed, to_load = _make_training(seed=1)
    assert load_latest_checkpoint(to_load, tmp_path) == tmp_path / "checkpoint_2.pt"
    assert resumed.state.epoch == 2


# --- added by tests: a checkpoint that records no run identity ---


def _identified_training(seed=0, accept_unmarked=False):
    from ignite_igan.checkpointing import RunIdentity

    model, trainer, to_save = _make_training(seed)
    to_save["run_identity"] = RunIdentity("demo", "run-a", {"lr": 0.01}, accept_unmarked=accept_unmarked)
    return model, trainer, to_save


def _rewrite(path, change):
    """Rewrites a checkpoint with ``change`` applied to its state, with a valid checksum (a well-formed file)."""
    import hashlib

    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


def _parameters(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("how, problem", [
    ("missing", "records no run identity"),
    ("not_a_mapping", "holds no valid run identity"),
    ("incomplete", "holds no valid run identity"),
])
def test_a_checkpoint_without_a_run_identity_is_skipped_for_the_previous_one(tmp_path, how, problem):
    _, trainer, to_save = _identified_training()
    attach_checkpointing(trainer, to_save, tmp_path)
    trainer.run(range(2), max_epochs=2)
    epoch_1 = torch.load(tmp_path / "checkpoint_1.pt", weights_only=True)["model"]
    changes = {
        "missing": lambda s: s.pop("run_identity"),
        "not_a_mapping": lambda s: s.__setitem__("run_identity", "run-a"),
        "incomplete": lambda s: s["run_identity"].pop("run_id"),
    }
    _rewrite(tmp_path / "checkpoint_2.pt", changes[how])
    model, resumed, to_load = _identified_training(seed=1)
    with pytest.warns(UserWarning, match=rf"checkpoint_2\.pt: {problem}.*Resuming from checkpoint_1\.pt"):
        assert load_latest_checkpoint(to_load, tmp_path) == tmp_path / "checkpoint_1.pt"
    assert resumed.state.epoch == 1
    for p, (key, saved) in zip(model.parameters(), epoch_1.items()):
        assert torch.equal(p.detach(), saved), key


def test_checkpoints_without_a_run_identity_are_refused_and_nothing_is_loaded(tmp_path):
    _, trainer, to_save = _identified_training()
    attach_checkpointing(trainer, to_save, tmp_path)
    trainer.run(range(2), max_epochs=2)
    for epoch in (1, 2):
        _rewrite(tmp_path / f"checkpoint_{epoch}.pt", lambda s: s.pop("run_identity"))
    model, resumed, to_load = _identified_training(seed=1)
    before = _parameters(model)
    with pytest.raises(CheckpointError, match=r"no usable checkpoint.*checkpoint_2\.pt: records no run identity.*"
                                              r"checkpoint_1\.pt: records no run identity"):
        load_latest_checkpoint(to_load, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(before, _parameters(model)))
    assert resumed.state.epoch == 0


def test_a_run_started_before_identities_accepts_its_unmarked_checkpoints(tmp_path):
    _, trainer, to_save = _make_training()  # written with no identity, as an older version did
    attach_checkpointing(trainer, to_save, tmp_path)
    trainer.run(range(2), max_epochs=2)
    _, resumed, to_load = _identified_training(seed=1, accept_unmarked=True)
    assert load_latest_checkpoint(to_load, tmp_path) == tmp_path / "checkpoint_2.pt"
    assert resumed.state.epoch == 2
    # ... but a marked checkpoint of another run is still refused.
    other = {"experiment": "demo", "run_id": "run-b", "config_sha256": to_load["run_identity"].config_sha256}
    _rewrite(tmp_path / "checkpoint_2.pt", lambda s: s.__setitem__("run_identity", other))
    _, resumed, to_load = _identified_training(seed=1, accept_unmarked=True)
    with pytest.warns(UserWarning, match=r"checkpoint_2\.pt: belongs to another run \(run id run-b, not run-a\)"):
        assert load_latest_checkpoint(to_load, tmp_path) == tmp_path / "checkpoint_1.pt"
