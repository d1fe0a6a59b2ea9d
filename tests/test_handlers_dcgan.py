"""The handlers on a hand-written DCGAN-style Ignite engine (the shape of Ignite's examples/gan/dcgan.py, not our
factory): the only change to its process function is reading engine.state.real_target.

1. With one-sided label smoothing, historical averaging for both players and evaluation averaging attached, the
   run equals a plain loop that writes every term out by hand.
2. With all five handlers and a state parameter scheduler, a run checkpointed with ignite's Checkpoint, dropped
   and resumed from the file in fresh objects ends bitwise where an uninterrupted run ends.
"""
from __future__ import annotations

import warnings
from typing import Dict, List

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, PiecewiseLinearStateScheduler
from torch import nn

from ignite_igan.handlers import (
    DataDependentInitialization,
    EvaluationAveraging,
    HistoricalAveraging,
    OneSidedLabelSmoothing,
    VirtualBatchReference,
)
from ignite_igan.models import CIFARGenerator
from ignite_igan.nn import WeightNormLinear

NZ = 4
ITERATIONS = 8
LAMBDA_D, LAMBDA_G = 0.3, 0.2
EMA_RATE = 0.1


def iteration_noise(iteration: int, batch_size: int, nz: int = NZ, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(batch_size, nz, generator=torch.Generator().manual_seed(1000 + iteration), dtype=dtype)


def make_players(seed: int = 0):
    torch.manual_seed(seed)
    net_g = nn.Sequential(nn.Linear(NZ, 8), nn.ReLU(), nn.Linear(8, 6)).double()
    net_d = nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1)).double()
    opt_g = torch.optim.Adam(net_g.parameters(), lr=0.01, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(net_d.parameters(), lr=0.01, betas=(0.5, 0.999))
    return net_g, net_d, opt_g, opt_d


def real_batches() -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randn(10, 6, generator=g, dtype=torch.float64) + 1.0 for _ in range(ITERATIONS)]


def test_attached_handlers_equal_hand_written_terms():
    # ---- the user's engine, as in dcgan.py; the label line reads engine.state.real_target -----------------
    net_g, net_d, opt_g, opt_d = make_players()
    criterion = nn.BCEWithLogitsLoss()
    fake_label, real_label = 0.0, 1.0

    def step(engine, real):
        batch_size = real.shape[0]
        net_d.zero_grad()
        output = net_d(real).view(-1)
        err_d_real = criterion(output, torch.full_like(output, engine.state.real_target))  # the one change
        err_d_real.backward()
        fake = net_g(iteration_noise(engine.state.iteration, batch_size))
        output = net_d(fake.detach()).view(-1)
        err_d_fake = criterion(output, torch.full_like(output, fake_label))
        err_d_fake.backward()
        opt_d.step()
        net_g.zero_grad()
        output = net_d(fake).view(-1)
        err_g = criterion(output, torch.full_like(output, real_label))
        err_g.backward()
        opt_g.step()
        return {"errD": (err_d_real + err_d_fake).item(), "errG": err_g.item()}

    trainer = Engine(step)
    OneSidedLabelSmoothing(real_target=0.9).attach(trainer)
    ha_d = HistoricalAveraging(net_d, weight=LAMBDA_D, optimizer=opt_d)
    ha_g = HistoricalAveraging(net_g, weight=LAMBDA_G, optimizer=opt_g)
    ha_d.attach(trainer, name="historical_penalty_D")
    ha_g.attach(trainer, name="historical_penalty_G")
    ema = EvaluationAveraging(net_d, rate=EMA_RATE, bias_correction=False)
    ema.attach(trainer, event=Events.ITERATION_STARTED)  # the reference's pre-step weights
    logged: Dict[str, List[float]] = {"D": [], "G": []}

    @trainer.on(Events.ITERATION_COMPLETED)
    def log(engine):
        logged["D"].append(float(engine.state.historical_penalty_D))
        logged["G"].append(float(engine.state.historical_penalty_G))

    trainer.run(real_batches(), max_epochs=1)

    # ---- the same training written out by hand --------------------------------------------------------------
    hand_g, hand_d, hand_opt_g, hand_opt_d = make_players()
    history_d: List[List[torch.Tensor]] = []
    history_g: List[List[torch.Tensor]] = []
    ema_expected = [np.zeros(tuple(p.shape)) for p in hand_d.parameters()]
    penalties: Dict[str, List[float]] = {"D": [], "G": []}
    for iteration, real in enumerate(real_batches(), start=1):
        history_d.append([p.detach().clone() for p in hand_d.parameters()])
        history_g.append([p.detach().clone() for p in hand_g.parameters()])
        for average, p in zip(ema_expected, hand_d.parameters()):
            average += EMA_RATE * (p.detach().numpy() - average)
        avg_d = [torch.stack(v).mean(0) for v in zip(*history_d)]
        avg_g = [torch.stack(v).mean(0) for v in zip(*history_g)]
        hand_d.zero_grad()
        real_logits = hand_d(real).view(-1)
        fake = hand_g(iteration_noise(iteration, real.shape[0]))
        fake_logits = hand_d(fake.detach()).view(-1)
        penalty_d = LAMBDA_D * sum(((p - a) ** 2).sum() for p, a in zip(hand_d.parameters(), avg_d))
        loss_d = (
            nn.functional.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, 0.9))
            + nn.functional.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
            + penalty_d
        )
        loss_d.backward()
        hand_opt_d.step()
        hand_g.zero_grad()
        logits = hand_d(fake).view(-1)
        penalty_g = LAMBDA_G * sum(((p - a) ** 2).sum() for p, a in zip(hand_g.parameters(), avg_g))
        loss_g = nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)) + penalty_g
        loss_g.backward()
        hand_opt_g.step()
        penalties["D"].append(penalty_d.item())
        penalties["G"].append(penalty_g.item())

    for got, expected in zip(list(net_g.parameters()) + list(net_d.parameters()),
                             list(hand_g.parameters()) + list(hand_d.parameters())):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-13)
    for got, expected in zip(ema.averaged_model.parameters(), ema_expected):
        np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(logged["D"], penalties["D"], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(logged["G"], penalties["G"], rtol=1e-9, atol=1e-15)
    assert max(penalties["D"]) > 0 and max(penalties["G"]) > 0
    assert trainer.state.real_target == 0.9 and trainer.state.ema_momentum == EMA_RATE


# ---------------------------------------------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------------------------------------------
EPOCH_LENGTH = 3
Z_DIM = 8


def build_run(seed: int):
    """A DCGAN-style engine with a VBN generator, a weight-normalized discriminator and every handler."""
    torch.manual_seed(seed)
    gen = CIFARGenerator(z_dim=Z_DIM, normalization="virtual", widths=(8, 4))  # 3 x 16 x 16
    disc = nn.Sequential(
        nn.Flatten(), WeightNormLinear(3 * 16 * 16, 16), nn.LeakyReLU(0.2),
        WeightNormLinear(16, 1, train_scale=True, init_scale=0.1),
    )
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    criterion = nn.BCEWithLogitsLoss()
    targets: List[float] = []

    def step(engine, real):
        targets.append(engine.state.real_target)
        z = torch.rand(real.shape[0], Z_DIM, generator=torch.Generator().manual_seed(engine.state.iteration))
        disc.zero_grad()
        output = disc(real).view(-1)
        err_d_real = criterion(output, torch.full_like(output, engine.state.real_target))
        fake = gen(z)
        output = disc(fake.detach()).view(-1)
        err_d = err_d_real + criterion(output, torch.zeros_like(output))
        err_d.backward()
        opt_d.step()
        gen.zero_grad()
        output = disc(fake).view(-1)
        err_g = criterion(output, torch.ones_like(output))
        err_g.backward()
        opt_g.step()
        return err_d.item()

    trainer = Engine(step)
    handlers = {
        "smoothing": OneSidedLabelSmoothing(real_target=0.95),
        "scheduler": PiecewiseLinearStateScheduler(param_name="real_target", milestones_values=[(0, 0.95), (5, 0.8)]),
        "ha_d": HistoricalAveraging(disc, weight=0.5, optimizer=opt_d),
        "ha_g": HistoricalAveraging(gen, weight=0.5, optimizer=opt_g, average="exponential", decay=0.9),
        "ema": EvaluationAveraging(disc, rate=1e-2),
        "reference": VirtualBatchReference(gen, size=5, seed=3),
        "init_g": DataDependentInitialization(
            gen, lambda: gen.sample_noise(40, generator=torch.Generator().manual_seed(11))
        ),
        "init_d": DataDependentInitialization(disc, torch.cat(image_batches())),
    }
    handlers["smoothing"].attach(trainer)
    handlers["scheduler"].attach(trainer)
    handlers["ha_d"].attach(trainer, name="historical_penalty_D")
    handlers["ha_g"].attach(trainer, name="historical_penalty_G")
    handlers["ema"].attach(trainer)
    handlers["reference"].attach(trainer)  # before the generator's init: a VBN generator needs its reference
    handlers["init_g"].attach(trainer)
    handlers["init_d"].attach(trainer)
    to_save = {"trainer": trainer, "gen": gen, "disc": disc, "opt_g": opt_g, "opt_d": opt_d, **handlers}
    return trainer, to_save, targets


def image_batches() -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(21)
    return [torch.rand(8, 3, 16, 16, generator=g) * 2 - 1 for _ in range(EPOCH_LENGTH)]


def snapshot(to_save) -> Dict[str, torch.Tensor]:
    tensors = {}
    for key in ("gen", "disc"):
        tensors.update({f"{key}.{k}": v.clone() for k, v in to_save[key].state_dict().items()})
    for key in ("ha_d", "ha_g"):
        tensors.update({f"{key}.{k}": v.clone() for k, v in to_save[key].averages.items()})
    tensors.update({f"ema.{k}": v.clone() for k, v in to_save["ema"].averaged_model.state_dict().items()})
    tensors["reference"] = to_save["reference"].reference.clone()
    return tensors


def test_checkpoint_resume_is_bitwise_identical(tmp_path):
    trainer, to_save, uninterrupted_targets = build_run(seed=0)
    trainer.run(image_batches(), max_epochs=2)
    uninterrupted = snapshot(to_save)

    trainer, to_save, first_targets = build_run(seed=0)
    checkpoint = Checkpoint(to_save, DiskSaver(tmp_path, require_empty=False), n_saved=1)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    trainer.run(image_batches(), max_epochs=1)
    path = checkpoint.last_checkpoint
    del trainer, to_save, checkpoint  # the "killed" process

    trainer, to_save, second_targets = build_run(seed=123)  # other weights: everything must come from the file
    Checkpoint.load_objects(to_save, checkpoint=path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. the data-init handler noticing its state was not restored
        trainer.run(image_batches(), max_epochs=2)
    resumed = snapshot(to_save)

    assert first_targets + second_targets == uninterrupted_targets
    assert uninterrupted_targets[0] == 0.95 and uninterrupted_targets[-1] < 0.95
    assert resumed.keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        assert torch.equal(resumed[name], value), name
    assert to_save["ema"].num_updates == to_save["ha_d"].num_updates == 2 * EPOCH_LENGTH
