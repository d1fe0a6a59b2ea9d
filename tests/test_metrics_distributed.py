"""Two real gloo processes (ignite.distributed.Parallel) give exactly the single-process results."""
import json
import os
import socket

import pytest

import torch
from torch import nn
from torch.utils.data import DistributedSampler

import ignite.distributed as idist
from ignite.engine import Engine
from torch.utils.data import DataLoader, TensorDataset

from ignite_igan.logging import InactiveLogger, attach_tensorboard
from ignite_igan.metrics import (
    FID,
    RealImages,
    ClassifierExtractor,
    GeneratorEvaluator,
    ImageExtractor,
    InceptionScore,
    ModeCoverage,
    SemiSupervisedError,
    grid_mixture,
)

N_IS = 301
SHARD_BOUNDS = [0, 130, N_IS]  # uneven contiguous shards


class LookupExtractor(ImageExtractor):
    """Row i of a logit table for the image encoding i in its first two pixels."""

    channels = 3

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table))

    def forward(self, images):
        return self.table[images[:, 0, 0, 0].long() * 256 + images[:, 0, 0, 1].long()]


def encode(indices):
    indices = torch.as_tensor(list(indices))
    images = torch.zeros(len(indices), 3, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = (indices // 256).to(torch.uint8)
    images[:, 0, 0, 1] = (indices % 256).to(torch.uint8)
    return images


class TinyGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 12)
        self.bn = nn.BatchNorm1d(12)

    def sample_noise(self, n, generator=None, device=None):
        return torch.rand(n, 4, generator=generator, device=device)

    def forward(self, z):
        return torch.tanh(self.bn(self.linear(z))).view(-1, 3, 2, 2)


def fixtures():
    """Everything both runs use, built deterministically."""
    generator = torch.Generator().manual_seed(0)
    is_logits = torch.randn(N_IS, 13, generator=generator, dtype=torch.float64) * 3
    ssl_logits = torch.randn(1000, 10, generator=generator)
    ssl_labels = torch.randint(0, 10, (1000,), generator=generator)
    mixture = grid_mixture()
    points = torch.cat([mixture.sample(700, generator=generator), torch.rand(300, 2, generator=generator) * 10 - 5])
    torch.manual_seed(1)
    gan = TinyGenerator()
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(12, 7))
    return is_logits, ssl_logits, ssl_labels, mixture, points, gan, classifier


def _run(metric, batches):
    engine = Engine(lambda engine, batch: batch)
    metric.attach(engine, "m")
    return engine.run(batches).metrics


def evaluate(rank, world_size, log_dir):
    """The same evaluation, run on this process's share of the samples."""
    is_logits, ssl_logits, ssl_labels, mixture, points, gan, classifier = fixtures()
    results = {}
    if world_size == 1:
        shard = range(N_IS)
    else:
        shard = range(SHARD_BOUNDS[rank], SHARD_BOUNDS[rank + 1])
    images = encode(shard)
    results["is_contiguous"] = _run(
        InceptionScore(extractor=LookupExtractor(is_logits), input_range="uint8"), list(images.split(32))
    )
    # DistributedSampler interleaves and pads with repeats; the indices put the samples back in order.
    sampler = DistributedSampler(range(N_IS), num_replicas=world_size, rank=rank, shuffle=False)
    indices = torch.tensor(list(sampler))
    results["is_interleaved"] = _run(
        InceptionScore(extractor=LookupExtractor(is_logits), input_range="uint8"),
        [(encode(part), part) for part in indices.split(40)],
    )
    half = slice(rank * 1000 // world_size, (rank + 1) * 1000 // world_size)
    results["ssl"] = _run(
        SemiSupervisedError(), list(zip(ssl_logits[half].split(64), ssl_labels[half].split(64)))
    )
    results["modes"] = _run(ModeCoverage(mixture.centers, mixture.std), list(points[half].split(100)))
    scorer = GeneratorEvaluator(
        gan,
        {"is": InceptionScore(extractor=ClassifierExtractor(classifier, "[-1,1]"), splits=5)},
        n_samples=250,
        batch_size=20,
        mode="train",  # batch statistics: the batches must be the same ones as in one process
    )
    results["generator"] = scorer.run()
    assert gan.training  # nn.Module default, restored

    # FID against real data (a tensor data set sharded by rank; a DataLoader dealt out batch by batch), next to IS,
    # with the real statistics cached in a directory all processes share.
    real = torch.rand(203, 3, 2, 2, generator=torch.Generator().manual_seed(5)) * 2 - 1
    extractor = ClassifierExtractor(classifier, "[-1,1]", features_fn=lambda net, x: net[1](net[0](x)))
    cache = f"{os.path.dirname(log_dir)}/fid_cache_{world_size}"  # one directory for all processes of a run
    fid_metrics = {
        "is": InceptionScore(extractor, splits=5),
        "fid": FID(extractor, real=RealImages(real, name="toy", cache_dir=cache)),
        "fid_loader": FID(extractor, real=DataLoader(TensorDataset(real), batch_size=40)),
    }
    fid_scorer = GeneratorEvaluator(gan, fid_metrics, n_samples=250, batch_size=20, mode="train")
    results["fid"] = fid_scorer.run()
    results["fid_cards"] = {name: str(card) for name, card in fid_scorer.protocols.items()}
    # A second FID with the same key: rank 0 loads the cache and sends the statistics to the others.
    again = FID(extractor, real=RealImages(real, name="toy", cache_dir=cache))
    rows = []
    hook = classifier[1].register_forward_hook(lambda module, args, out: rows.append(out.shape[0]))
    again.real_statistics  # collective: every process asks at the same point
    hook.remove()
    results["fid_cached_rows"] = sum(rows)
    results["fid_cached"] = GeneratorEvaluator(gan, {"fid": again}, n_samples=250, batch_size=20, mode="train").run()
    results["fid_real_mu"] = again.real_statistics.mu.tolist()

    trainer = Engine(lambda engine, batch: {"loss": 1.0})
    logger = attach_tensorboard(log_dir, trainer)
    trainer.run([0, 1], max_epochs=1)
    logger.close()
    results["logger"] = type(logger).__name__
    return results


def _worker(local_rank, out_dir):
    rank, world_size = idist.get_rank(), idist.get_world_size()
    assert world_size == 2 and idist.backend() == "gloo"
    results = evaluate(rank, world_size, f"{out_dir}/tb_rank{rank}")
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(results, f)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process(tmp_path):
    with idist.Parallel(backend="gloo", nproc_per_node=2, master_port=_free_port()) as parallel:
        parallel.run(_worker, str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    single = json.loads(json.dumps(evaluate(0, 1, str(tmp_path / "tb_single"))))

    for key in ("is_contiguous", "is_interleaved", "ssl", "modes", "generator"):
        assert ranks[0][key] == single[key], key  # bit-for-bit the same numbers
        assert ranks[1][key] == single[key], key
    # FID: float64 sums all-reduced, so equal up to the order of the additions.
    for rank in ranks:
        assert rank["fid"]["is"] == single["fid"]["is"]
        for key in ("fid", "fid_loader"):
            assert rank["fid"][key] == pytest.approx(single["fid"][key], rel=1e-10, abs=1e-12), key
        assert rank["fid_cached"]["fid"] == ranks[0]["fid"]["fid"]  # the cached statistics, on every rank
        assert rank["fid_cached_rows"] == 0  # loaded, not recomputed
        assert rank["fid_real_mu"] == ranks[0]["fid_real_mu"]
        assert rank["fid_cards"] == single["fid_cards"]  # the same protocol (same cache key) everywhere
    assert single["fid"]["fid"] == pytest.approx(single["fid"]["fid_loader"], rel=1e-10)
    assert single["fid"]["fid"] > 0
    assert len(list((tmp_path / "fid_cache_2").iterdir())) == 1  # written once, by rank 0
    assert single["is_contiguous"] == single["is_interleaved"]
    assert set(single["is_contiguous"]) == {"m", "m_std"}
    assert single["ssl"]["m_count"] > 0 and single["modes"]["m_any"] > 0

    assert ranks[0]["logger"] == "TensorboardLogger" and ranks[1]["logger"] == InactiveLogger.__name__
    assert any((tmp_path / "tb_rank0").iterdir())
    assert not (tmp_path / "tb_rank1").exists()  # only rank 0 writes
