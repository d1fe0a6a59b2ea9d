"""The client scenario of issue 10: a DCGAN written like Ignite's own ``examples/gan/dcgan.py``, with the paper's
techniques attached, the Inception Score and FID against real images every epoch, TensorBoard, and Ignite's
``Checkpoint`` resuming in a new set of objects.

Everything here is what a user writes: the networks and the process function follow ``dcgan.py`` (netG/netD, a
sigmoid discriminator with ``nn.BCELoss``, Adam with betas (0.5, 0.999), ``real, _ = batch``, a loader with
``drop_last=True``), scaled down to 3x16x16 so that a run takes a second on a CPU. The changes to ``dcgan.py`` are
the ones the techniques ask for: the real target read from ``engine.state.real_target``; virtual batch norm in the
generator (which therefore owns its reference noise: ``sample_noise``/``set_reference``); weight-normalized
convolutions in the discriminator (so the data-dependent initialization has something to initialize). Two more
make a resumed run comparable bitwise with an uninterrupted one, since Ignite's ``Checkpoint`` does not save random
states: the noise of each iteration comes from a ``torch.Generator`` seeded by the iteration, and the loader does
not shuffle. The noise is ``(N, nz)``, reshaped to dcgan.py's ``(N, nz, 1, 1)`` inside the generator; the test at
the end checks that a reference of ``(N, nz, 1, 1)`` noise resumes too. The Inception network is replaced by a small CNN (no download on a test machine), wrapped in
``ClassifierExtractor`` with a features function for FID.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ignite_igan.handlers import (
    DataDependentInitialization,
    EvaluationAveraging,
    HistoricalAveraging,
    OneSidedLabelSmoothing,
    VirtualBatchReference,
)
from ignite_igan.logging import ImageGridHandler, attach_tensorboard
from ignite_igan.metrics import FID, ClassifierExtractor, GeneratorEvaluator, InceptionScore, RealImages
from ignite_igan.nn import VirtualBatchNorm, WeightNormConv2d

NZ, NGF, NDF, BATCH_SIZE = 16, 16, 16, 16
N_REAL = 150  # not a multiple of the batch size: drop_last leaves 144, 9 iterations per epoch
EPOCH_LENGTH = N_REAL // BATCH_SIZE
REFERENCE_SIZE = 16


# ---------------------------------------------------------------------------------------------------------------
# The user's code
# ---------------------------------------------------------------------------------------------------------------
class Blobs(Dataset):
    """Real images: a coloured Gaussian blob on black, 3x16x16 in [-1, 1], as ``(image, label)`` pairs."""

    def __init__(self, n: int = N_REAL, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
        centres = torch.rand(n, 2, generator=g) - 0.5
        colours = torch.rand(n, 3, 1, 1, generator=g)
        r2 = (xx - centres[:, 0, None, None]) ** 2 + (yy - centres[:, 1, None, None]) ** 2
        self.images = (2 * colours * torch.exp(-r2 / 0.1)[:, None] - 1).clamp(-1, 1)
        self.labels = torch.randint(0, 10, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


class Generator(nn.Module):
    """dcgan.py's generator at 16x16, with virtual batch norm in place of batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.deconvs = nn.ModuleList([
            nn.ConvTranspose2d(NZ, NGF * 2, 4, 1, 0, bias=False),  # 4x4
            nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False),  # 8x8
        ])
        self.norms = nn.ModuleList([VirtualBatchNorm(NGF * 2), VirtualBatchNorm(NGF)])
        self.out = nn.ConvTranspose2d(NGF, 3, 4, 2, 1, bias=False)  # 16x16
        self.register_buffer("reference_noise", torch.zeros(REFERENCE_SIZE, NZ))

    def sample_noise(self, n, generator=None, device=None):
        return torch.randn(n, NZ, generator=generator, device=device)

    def set_reference(self, z):
        self.reference_noise.copy_(z)

    def forward(self, z):
        r = self.reference_noise.shape[0]
        h = torch.cat([self.reference_noise, z]).view(-1, NZ, 1, 1)  # the reference batch goes through with z
        for deconv, norm in zip(self.deconvs, self.norms):
            h = torch.relu(norm(deconv(h), reference_size=r))
        return torch.tanh(self.out(h))[r:]


class Discriminator(nn.Module):
    """dcgan.py's discriminator at 16x16, weight-normalized (no batch norm), with its sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            WeightNormConv2d(3, NDF, 4, 2, 1), nn.LeakyReLU(0.2),
            WeightNormConv2d(NDF, NDF * 2, 4, 2, 1), nn.LeakyReLU(0.2),
            WeightNormConv2d(NDF * 2, 1, 4, 1, 0, train_scale=True, init_scale=0.1), nn.Sigmoid(),
        )

    def forward(self, x):
        return self.net(x).view(-1, 1).squeeze(1)


class Classifier(nn.Module):
    """Stands in for the Inception network: a small CNN with 32 features and 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(1234)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 32), nn.Tanh())
        self.head = nn.Linear(32, 10)
        with torch.no_grad():
            self.head.weight.mul_(20.0)  # confident enough for an Inception Score above 1
        torch.random.set_rng_state(generator_state)

    def forward(self, x):
        return self.head(self.body(x))


def penultimate(net: Classifier, x: torch.Tensor) -> torch.Tensor:
    return net.body(x)


def build(seed: int, log_dir: Path, cache_dir: Path) -> Dict[str, Any]:
    """Everything a training script sets up, from scratch; ``seed`` only decides the initial weights."""
    torch.manual_seed(seed)
    dataset = Blobs()
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=False, drop_last=True)
    netG, netD = Generator(), Discriminator()
    bce = nn.BCELoss()
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    fake_label, real_label = 0.0, 1.0

    def step(engine, batch):
        real, _ = batch
        netD.zero_grad()
        output = netD(real)
        errD_real = bce(output, torch.full_like(output, engine.state.real_target))  # dcgan.py: real_labels
        D_x = output.mean().item()
        errD_real.backward()
        noise = netG.sample_noise(real.shape[0], generator=torch.Generator().manual_seed(engine.state.iteration))
        fake = netG(noise)
        output = netD(fake.detach())
        errD_fake = bce(output, torch.full_like(output, fake_label))
        D_G_z1 = output.mean().item()
        errD_fake.backward()
        errD = errD_real + errD_fake
        optimizerD.step()

        netG.zero_grad()
        output = netD(fake)
        errG = bce(output, torch.full_like(output, real_label))
        D_G_z2 = output.mean().item()
        errG.backward()
        optimizerG.step()
        return {"errD": errD.item(), "errG": errG.item(), "D_x": D_x, "D_G_z1": D_G_z1, "D_G_z2": D_G_z2}

    trainer = Engine(step)

    # The techniques
    handlers = {
        "smoothing": OneSidedLabelSmoothing(real_target=0.9),
        "historical_D": HistoricalAveraging(netD, weight=1e-3, optimizer=optimizerD),
        "historical_G": HistoricalAveraging(netG, weight=1e-3, optimizer=optimizerG),
        "averaging": EvaluationAveraging(netG, rate=0.05),  # an averaged generator to score beside the live one
        "reference": VirtualBatchReference(netG, size=REFERENCE_SIZE, seed=0),
        "init_D": DataDependentInitialization(netD, dataset.images[:100]),
    }
    handlers["smoothing"].attach(trainer)
    handlers["historical_D"].attach(trainer, name="historical_penalty_D")
    handlers["historical_G"].attach(trainer, name="historical_penalty_G")
    handlers["averaging"].attach(trainer)
    handlers["reference"].attach(trainer)
    handlers["init_D"].attach(trainer)

    # IS and FID every epoch against the real images, through a stand-in classifier
    extractor = ClassifierExtractor(Classifier(), input_range="[-1,1]", features_fn=penultimate)
    fid = FID(extractor, real=RealImages(loader, name="blobs", split="train", cache_dir=cache_dir))
    scorer = GeneratorEvaluator(netG, {"is": InceptionScore(extractor), "fid": fid}, n_samples=200, batch_size=50)
    scorer.attach(trainer, Events.EPOCH_COMPLETED)
    ema_fid = FID(extractor, real=RealImages(loader, name="blobs", split="train", cache_dir=cache_dir))
    ema_scorer = GeneratorEvaluator(
        handlers["averaging"].averaged_model, {"is": InceptionScore(extractor), "fid": ema_fid},
        n_samples=200, batch_size=50,
    )
    ema_scorer.attach(trainer, Events.EPOCH_COMPLETED)

    logger = attach_tensorboard(
        str(log_dir), trainer,
        evaluators={"samples": scorer.engine, "samples_ema": ema_scorer.engine},
        optimizers={"d": optimizerD, "g": optimizerG},
        state_attributes=["real_target", "historical_penalty_D", "historical_penalty_G", "ema_momentum"],
        images=ImageGridHandler(netG), image_every=EPOCH_LENGTH,
    )
    to_save = {"trainer": trainer, "netG": netG, "netD": netD, "optimizerG": optimizerG, "optimizerD": optimizerD,
               **handlers}
    return {"trainer": trainer, "loader": loader, "to_save": to_save, "logger": logger, "scorer": scorer,
            "ema_scorer": ema_scorer, "fid": fid, "ema_fid": ema_fid}


# ---------------------------------------------------------------------------------------------------------------
# Reading the results back
# ---------------------------------------------------------------------------------------------------------------
def read_events(log_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> Dict[int, float]:
    return {event.step: event.value for event in events.Scalars(tag)}


def snapshot(to_save: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    tensors = {}
    for key in ("netG", "netD"):
        tensors.update({f"{key}.{k}": v.clone() for k, v in to_save[key].state_dict().items()})
    for key in ("historical_D", "historical_G"):
        tensors.update({f"{key}.{k}": v.clone() for k, v in to_save[key].averages.items()})
    averaged = to_save["averaging"].averaged_model.state_dict()
    tensors.update({f"averaging.{k}": v.clone() for k, v in averaged.items()})
    tensors["reference"] = to_save["reference"].reference.clone()
    return tensors


def metrics_by_epoch(run: Dict[str, Any], history: List[Dict[str, float]]) -> None:
    def record(trainer: Engine) -> None:
        history.append({
            "epoch": trainer.state.epoch,
            **{f"samples/{k}": v for k, v in run["scorer"].engine.state.metrics.items()},
            **{f"samples_ema/{k}": v for k, v in run["ema_scorer"].engine.state.metrics.items()},
        })

    # attached after the scorers, so it sees this epoch's scores
    run["trainer"].add_event_handler(Events.EPOCH_COMPLETED, record)


# ---------------------------------------------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------------------------------------------
def test_dcgan_with_is_and_fid_every_epoch_tensorboard_and_checkpoint_resume(tmp_path):
    cache_dir = tmp_path / "fid_statistics"

    # 1. Uninterrupted: 3 epochs.
    run = build(seed=0, log_dir=tmp_path / "tb_uninterrupted", cache_dir=cache_dir)
    uninterrupted_scores: List[Dict[str, float]] = []
    metrics_by_epoch(run, uninterrupted_scores)
    run["trainer"].run(run["loader"], max_epochs=3)
    run["logger"].close()
    uninterrupted = snapshot(run["to_save"])

    # IS and FID every epoch, plain floats, with protocol cards that name the stand-in network and the real data.
    assert [s["epoch"] for s in uninterrupted_scores] == [1, 2, 3]
    for scores in uninterrupted_scores:
        assert set(scores) == {"epoch"} | {f"{e}/{m}" for e in ("samples", "samples_ema") for m in ("is", "is_std", "fid")}
        assert all(type(v) is float for k, v in scores.items() if k != "epoch")
        assert scores["samples/fid"] > 0.0
    # The generator moved: three different scores. (The formulas are checked against NumPy in test_functional and
    # test_inception; a bound such as 1 < IS < 10 holds for any 10-class network and would check nothing.)
    assert len({s["samples/fid"] for s in uninterrupted_scores}) == 3
    assert len({s["samples/is"] for s in uninterrupted_scores}) == 3
    assert all(s["samples/is"] != s["samples_ema/is"] for s in uninterrupted_scores)  # the two generators differ
    card = run["scorer"].protocols["fid"]
    assert card.n_samples == 200 and not card.allow_tf32 and card.input_range == "[-1,1]"
    assert card.network == "ClassifierExtractor(Classifier, input [-1,1])"
    assert card.real_statistics.startswith(f"blobs/train, {EPOCH_LENGTH * BATCH_SIZE} images, key ")
    assert run["scorer"].protocols["is"].splits == 10
    # FID's real statistics: computed once (when the first FID was attached), cached, loaded by the second FID.
    cached = sorted(cache_dir.iterdir())
    assert len(cached) == 1 and cached[0].name.startswith("fid_blobs_train_")
    assert run["fid"].real_statistics.count == EPOCH_LENGTH * BATCH_SIZE  # drop_last: the loader's 144 images
    assert torch.equal(run["fid"].real_statistics.sigma, run["ema_fid"].real_statistics.sigma)

    # TensorBoard: the step's outputs, the handlers' values, the learning rates, IS/FID and their cards, images.
    events = read_events(tmp_path / "tb_uninterrupted")
    tags = events.Tags()
    expected_scalars = {f"training/{k}" for k in ("errD", "errG", "D_x", "D_G_z1", "D_G_z2", "real_target",
                                                  "historical_penalty_D", "historical_penalty_G", "ema_momentum")}
    expected_scalars |= {"d/lr/group_0", "g/lr/group_0"}
    expected_scalars |= {f"{e}/{m}" for e in ("samples", "samples_ema") for m in ("is", "is_std", "fid")}
    assert set(tags["scalars"]) == expected_scalars
    assert tags["images"] == ["generated"]
    assert sorted(t for t in tags["tensors"] if t.endswith("/protocol/text_summary")) == [
        "samples/fid/protocol/text_summary", "samples/is/protocol/text_summary",
        "samples_ema/fid/protocol/text_summary", "samples_ema/is/protocol/text_summary",
    ]
    epoch_ends = [EPOCH_LENGTH * e for e in (1, 2, 3)]
    for tag in ("samples/is", "samples/fid", "samples_ema/fid"):
        logged = scalars(events, tag)
        assert sorted(logged) == epoch_ends, tag
        for step, scores in zip(epoch_ends, uninterrupted_scores):
            assert logged[step] == pytest.approx(scores[tag], rel=1e-6), (tag, step)
    assert len(scalars(events, "training/real_target")) == 3 * EPOCH_LENGTH
    assert all(v == pytest.approx(0.9) for v in scalars(events, "training/real_target").values())
    card_text = events.Tensors("samples/fid/protocol/text_summary")[0].tensor_proto.string_val[0].decode()
    assert str(card) in card_text  # the card's one-line form heads the Markdown table
    assert [event.step for event in events.Images("generated")] == epoch_ends

    # 2. Interrupted after 2 epochs, checkpointed with Ignite's Checkpoint ...
    first = build(seed=0, log_dir=tmp_path / "tb_resumed", cache_dir=cache_dir)
    resumed_scores: List[Dict[str, float]] = []
    metrics_by_epoch(first, resumed_scores)
    checkpoint = Checkpoint(first["to_save"], DiskSaver(str(tmp_path / "checkpoints"), require_empty=False), n_saved=1)
    first["trainer"].add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    first["trainer"].run(first["loader"], max_epochs=2)
    first["logger"].close()
    path = checkpoint.last_checkpoint
    del first, checkpoint  # the process ends

    # ... and resumed in a new set of objects (other initial weights: everything must come from the file).
    second = build(seed=123, log_dir=tmp_path / "tb_resumed", cache_dir=cache_dir)
    metrics_by_epoch(second, resumed_scores)
    Checkpoint.load_objects(to_load=second["to_save"], checkpoint=path)
    second["trainer"].run(second["loader"], max_epochs=3)
    second["logger"].close()

    assert resumed_scores == uninterrupted_scores  # the same IS and FID, to the last bit, at every epoch
    resumed = snapshot(second["to_save"])
    assert resumed.keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        assert torch.equal(resumed[name], value), name
    assert second["trainer"].state.iteration == 3 * EPOCH_LENGTH
    assert second["to_save"]["init_D"].done and second["to_save"]["averaging"].num_updates == 3 * EPOCH_LENGTH
    assert len(sorted(cache_dir.iterdir())) == 1  # the new process loaded the real statistics from the cache

    resumed_events = read_events(tmp_path / "tb_resumed")
    for tag in ("samples/is", "samples/fid", "training/errD", "training/historical_penalty_G"):
        assert scalars(resumed_events, tag) == scalars(events, tag), tag


# ---------------------------------------------------------------------------------------------------------------
# What the scenario found
# ---------------------------------------------------------------------------------------------------------------
def test_fid_takes_the_dcgan_loader_with_drop_last_and_refuses_one_that_drops_other_images_every_pass():
    """dcgan.py's loader has ``drop_last=True``: FID must count the images it gives, not the data set's length."""
    dataset = Blobs()
    extractor = ClassifierExtractor(Classifier(), input_range="[-1,1]", features_fn=penultimate)
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=False, drop_last=True)
    from_loader = FID(extractor, real=loader).real_statistics
    from_dataset = FID(extractor, real=RealImages(dataset, samples=EPOCH_LENGTH * BATCH_SIZE)).real_statistics
    assert from_loader.count == from_dataset.count == EPOCH_LENGTH * BATCH_SIZE
    torch.testing.assert_close(from_loader.mu, from_dataset.mu, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(from_loader.sigma, from_dataset.sigma, rtol=1e-12, atol=1e-14)

    shuffled = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, drop_last=True)
    with pytest.raises(ValueError, match="drop_last=True, which leaves out other images on every pass"):
        FID(extractor, real=shuffled)
    everything = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True)  # every image, in any order: fine
    assert FID(extractor, real=everything).real_statistics.count == N_REAL


class DCGANNoiseGenerator(Generator):
    """dcgan.py's noise shape, ``(N, nz, 1, 1)``, instead of ``(N, nz)``."""

    def __init__(self) -> None:
        super().__init__()
        self.reference_noise = torch.zeros(REFERENCE_SIZE, NZ, 1, 1)

    def sample_noise(self, n, generator=None, device=None):
        return torch.randn(n, NZ, 1, 1, generator=generator, device=device)


def test_vbn_reference_of_dcgan_shaped_noise_resumes_from_a_checkpoint(tmp_path):
    generator = DCGANNoiseGenerator()
    trainer = Engine(lambda engine, batch: generator(generator.sample_noise(2)))
    reference = VirtualBatchReference(generator, size=REFERENCE_SIZE, seed=0)
    reference.attach(trainer)
    checkpoint = Checkpoint({"reference": reference}, DiskSaver(str(tmp_path), require_empty=False), n_saved=1)
    trainer.add_event_handler(Events.COMPLETED, checkpoint)
    trainer.run([0], max_epochs=1)

    restored = VirtualBatchReference(DCGANNoiseGenerator(), size=REFERENCE_SIZE, seed=1)
    Checkpoint.load_objects(to_load={"reference": restored}, checkpoint=checkpoint.last_checkpoint)
    assert torch.equal(restored.reference, reference.reference)
