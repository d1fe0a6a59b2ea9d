"""Checkpoint at iteration k, stop, resume in fresh objects, train to 2k: bitwise the uninterrupted run (CPU).

Everything a run carries is in the checkpoint: both models and optimizers, the trainer, the loader (position, seed,
labeled indices), the random states, and the handlers (both historical averages, the evaluation average, the VBN
reference batch, the data-dependent init's "done" flag, the label-smoothing target).
"""
import pytest
import torch
from ignite.engine import Events
from ignite.handlers import Checkpoint, DiskSaver
from torch.utils.data import TensorDataset

from ignite_igan.checkpointing import RandomStates
from ignite_igan.data import SemiSupervisedLoader, balanced_labeled_subset
from ignite_igan.engines import create_gan_trainer, create_semi_supervised_trainer
from ignite_igan.handlers import (
    DataDependentInitialization,
    EvaluationAveraging,
    HistoricalAveraging,
    OneSidedLabelSmoothing,
    VirtualBatchReference,
)
from ignite_igan.models import CIFARDiscriminator, CIFARGenerator
from ignite_igan.optim import EpochLRScheduler, ReferenceAdam



@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one intra-op thread is faster than two fighting over a busy machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _dataset():
    g = torch.Generator().manual_seed(123)
    images = torch.rand(40, 3, 16, 16, generator=g) * 2 - 1
    return TensorDataset(images, torch.arange(40) % 10)


def build(kind):
    """A complete run's objects, built from seed 0 as a training script would."""
    torch.manual_seed(0)
    dataset = _dataset()
    gen = CIFARGenerator(widths=(16, 8), normalization="virtual")
    disc = CIFARDiscriminator(widths=(8, 16), input_corruption="noise", minibatch_kernels=4, minibatch_kernel_dim=3)
    d_opt = ReferenceAdam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    g_opt = ReferenceAdam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999))
    objects = dict(generator=gen, discriminator=disc, d_optimizer=d_opt, g_optimizer=g_opt)
    if kind == "semi_supervised":
        labeled = balanced_labeled_subset(dataset.tensors[1], per_class=1, seed=1)
        data = SemiSupervisedLoader(dataset, labeled, batch_size=8, seed=7)
        trainer = create_semi_supervised_trainer(gen, disc, d_opt, g_opt, feature_matching_distance="mean_absolute")
        objects["loader"] = data
    else:
        data = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False)
        trainer = create_gan_trainer(gen, disc, d_opt, g_opt, generator_loss="minimax", generator_steps=2,
                                     conditional=True)
    # Handlers, in the order a script attaches them: the reference batch before the generator's init.
    reference = VirtualBatchReference(gen, size=4)  # drawn from the global RNG: the checkpoint must keep it
    reference.attach(trainer)
    d_init = DataDependentInitialization(disc, dataset.tensors[0][:16])
    d_init.attach(trainer)
    g_init = DataDependentInitialization(gen, lambda: gen.sample_noise(8))
    g_init.attach(trainer)
    ha_d = HistoricalAveraging(disc, weight=0.05, optimizer=d_opt)
    ha_d.attach(trainer, name="historical_penalty_d")
    ha_g = HistoricalAveraging(gen, weight=0.05, optimizer=g_opt, average="exponential", decay=0.9)
    ha_g.attach(trainer, name="historical_penalty_g")
    averaging = EvaluationAveraging(disc, rate=0.2, bias_correction=False)
    averaging.attach(trainer)
    smoothing = OneSidedLabelSmoothing(real_target=0.9)
    smoothing.attach(trainer)
    EpochLRScheduler([d_opt, g_opt], lambda epoch: 1.0 / (1 + epoch)).attach(trainer)
    objects.update(
        trainer=trainer, reference=reference, d_init=d_init, g_init=g_init, ha_d=ha_d, ha_g=ha_g,
        averaging=averaging, smoothing=smoothing, random_states=RandomStates(),
    )
    return trainer, data, objects


def snapshot(objects):
    """Everything that must match, as plain tensors."""
    state = {}
    for name in ("generator", "discriminator"):
        state.update({f"{name}.{k}": v.clone() for k, v in objects[name].state_dict().items()})
    for name in ("ha_d", "ha_g"):
        state.update({f"{name}.{k}": v.clone() for k, v in objects[name].averages.items()})
    state.update({f"ema.{k}": v.clone() for k, v in objects["averaging"].averaged_model.state_dict().items()})
    state["reference"] = objects["reference"].reference.clone()
    for name in ("d_optimizer", "g_optimizer"):
        for index, param_state in objects[name].state_dict()["state"].items():
            state[f"{name}.{index}.exp_avg"] = param_state["exp_avg"].clone()
            state[f"{name}.{index}.exp_avg_sq"] = param_state["exp_avg_sq"].clone()
    if "loader" in objects:
        state["labeled_indices"] = torch.as_tensor(objects["loader"].labeled_indices)
    return state


def _record_outputs(trainer, outputs):
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append((e.state.iteration, e.state.output)))


# k=7 stops in the middle of the second epoch (5 iterations each), k=5 at an epoch boundary. The GAN trainer reads a
# plain DataLoader, which Ignite's Engine restarts from the beginning of an epoch on resume: only epoch boundaries
# resume exactly there (the SemiSupervisedLoader resumes anywhere).
@pytest.mark.parametrize("kind, k", [("semi_supervised", 7), ("semi_supervised", 5), ("gan", 5)])
def test_resume_equals_uninterrupted_run_bitwise(tmp_path, kind, k):
    total = 2 * k
    # Uninterrupted.
    trainer, data, objects = build(kind)
    uninterrupted_outputs = []
    _record_outputs(trainer, uninterrupted_outputs)
    trainer.run(data, max_iters=total)
    expected = snapshot(objects)

    # Interrupted at k: checkpoint (atomically, to disk) and stop.
    trainer, data, objects = build(kind)
    outputs = []
    _record_outputs(trainer, outputs)
    checkpoint = Checkpoint(objects, DiskSaver(str(tmp_path), atomic=True, require_empty=False), n_saved=1)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=k), checkpoint)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=k), lambda e: e.terminate())
    trainer.run(data, max_iters=total)
    assert trainer.state.iteration == k
    del trainer, data, objects

    # Fresh objects, another global RNG state (as a new process would have), then load and continue.
    torch.manual_seed(999)
    trainer, data, objects = build(kind)
    torch.manual_seed(999)
    _record_outputs(trainer, outputs)
    saved = torch.load(checkpoint.last_checkpoint, map_location="cpu", weights_only=True)
    Checkpoint.load_objects(to_load=objects, checkpoint=saved)
    assert objects["d_init"].done and objects["reference"].reference is not None
    trainer.run(data)
    assert trainer.state.iteration == total
    resumed = snapshot(objects)

    assert [i for i, _ in outputs] == list(range(1, total + 1))
    assert outputs == uninterrupted_outputs
    assert resumed.keys() == expected.keys()
    mismatched = [key for key in expected if not torch.equal(expected[key], resumed[key])]
    assert not mismatched, f"differ after resuming: {mismatched}"
    # the comparison is not vacuous: training moved the weights and the averages away from each other
    assert not torch.equal(expected["ema.classifier.bias"], expected["discriminator.classifier.bias"])
    assert objects["ha_d"].num_updates == total


def test_resume_without_the_random_states_diverges(tmp_path):
    # The same procedure with the random states left out of the checkpoint: the noise after the resume differs,
    # which shows the test above can fail.
    trainer, data, objects = build("semi_supervised")
    trainer.run(data, max_iters=6)
    expected = snapshot(objects)

    trainer, data, objects = build("semi_supervised")
    to_save = {name: obj for name, obj in objects.items() if name != "random_states"}
    checkpoint = Checkpoint(to_save, DiskSaver(str(tmp_path), atomic=True, require_empty=False), n_saved=1)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), checkpoint)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    trainer.run(data, max_iters=6)
    torch.manual_seed(999)
    trainer, data, objects = build("semi_supervised")
    torch.manual_seed(999)
    to_load = {name: obj for name, obj in objects.items() if name != "random_states"}
    Checkpoint.load_objects(to_load=to_load, checkpoint=torch.load(checkpoint.last_checkpoint, weights_only=True))
    trainer.run(data)
    resumed = snapshot(objects)
    assert torch.equal(resumed["labeled_indices"], expected["labeled_indices"])
    assert torch.equal(resumed["reference"], expected["reference"])
    assert not torch.equal(resumed["discriminator.classifier.bias"], expected["discriminator.classifier.bias"])
