"""OneSidedLabelSmoothing: the target in engine.state, under Ignite's state parameter schedulers, through a
checkpoint, and the refusal of two-sided smoothing."""
from __future__ import annotations

import math
from typing import List

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, LambdaStateScheduler, PiecewiseLinearStateScheduler

from ignite_igan.handlers import OneSidedLabelSmoothing


def recording_engine(seen: List[float]) -> Engine:
    def step(engine, batch):
        seen.append(engine.state.real_target)

    return Engine(step)


def test_target_is_in_engine_state_for_the_process_function():
    seen: List[float] = []
    trainer = recording_engine(seen)
    smoothing = OneSidedLabelSmoothing()
    smoothing.attach(trainer)
    assert trainer.state.real_target == 0.9  # available as soon as attached
    trainer.run(range(3), max_epochs=2)
    assert seen == [0.9] * 6
    assert smoothing.real_target == 0.9 and smoothing.fake_target == 0.0
    assert smoothing.state_dict() == {"real_target": 0.9}


def test_custom_attribute_name_and_no_smoothing():
    trainer = Engine(lambda engine, batch: engine.state.d_real_target)
    OneSidedLabelSmoothing(real_target=1.0).attach(trainer, name="d_real_target")
    assert trainer.run([0], max_epochs=1).output == 1.0


def test_follows_piecewise_linear_state_scheduler():
    seen: List[float] = []
    trainer = recording_engine(seen)
    smoothing = OneSidedLabelSmoothing(real_target=0.9)
    smoothing.attach(trainer)
    scheduler = PiecewiseLinearStateScheduler(
        param_name="real_target", milestones_values=[(0, 0.9), (4, 0.7), (8, 0.7)]
    )
    scheduler.attach(trainer)  # default event ITERATION_COMPLETED: the value set after iteration i is used in i+1
    trainer.run(range(10), max_epochs=1)
    scheduled = [value for _, value in PiecewiseLinearStateScheduler.simulate_values(
        num_events=9, param_name="real_target", milestones_values=[(0, 0.9), (4, 0.7), (8, 0.7)]
    )]
    assert seen[0] == 0.9
    assert seen[1:] == pytest.approx(scheduled, abs=1e-12)
    assert seen[5] == pytest.approx(0.7, abs=1e-12)
    # the value in force after the last iteration is what a checkpoint would save
    assert smoothing.state_dict()["real_target"] == pytest.approx(trainer.state.real_target, abs=0)


def test_scheduler_leaving_the_range_is_refused():
    seen: List[float] = []
    trainer = recording_engine(seen)
    OneSidedLabelSmoothing(real_target=0.9).attach(trainer)
    LambdaStateScheduler(lambda event: 0.9 + 0.06 * event, param_name="real_target").attach(trainer)
    with pytest.raises(ValueError, match=r"engine\.state\.real_target must be in \(0, 1\].*1\.02.*iteration 3"):
        trainer.run(range(10), max_epochs=1)
    assert seen == pytest.approx([0.9, 0.96])  # the out-of-range value never reached the process function


def test_resumed_run_continues_the_schedule(tmp_path):
    milestones = [(0, 0.95), (6, 0.75)]

    def build():
        seen: List[float] = []
        trainer = recording_engine(seen)
        smoothing = OneSidedLabelSmoothing(real_target=0.95)
        smoothing.attach(trainer)
        scheduler = PiecewiseLinearStateScheduler(param_name="real_target", milestones_values=milestones)
        scheduler.attach(trainer)
        return trainer, smoothing, scheduler, seen

    trainer, _, _, uninterrupted = build()
    trainer.run(range(4), max_epochs=2)

    trainer, smoothing, scheduler, first_half = build()
    to_save = {"trainer": trainer, "smoothing": smoothing, "scheduler": scheduler}
    checkpoint = Checkpoint(to_save, DiskSaver(tmp_path, require_empty=False))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    trainer.run(range(4), max_epochs=1)

    trainer, smoothing, scheduler, second_half = build()
    Checkpoint.load_objects(
        {"trainer": trainer, "smoothing": smoothing, "scheduler": scheduler}, checkpoint=checkpoint.last_checkpoint
    )
    assert smoothing.real_target == pytest.approx(uninterrupted[4], abs=0)
    trainer.run(range(4), max_epochs=2)
    assert first_half + second_half == uninterrupted
    assert len(set(uninterrupted)) > 4


@pytest.mark.parametrize("value", [0.0, -0.1, 1.2, float("nan"), float("inf")])
def test_real_target_out_of_range(value):
    with pytest.raises(ValueError, match=rf"real_target must be in \(0, 1\].*got {value!r}"):
        OneSidedLabelSmoothing(real_target=value)


def test_two_sided_smoothing_is_refused_with_the_papers_reason():
    with pytest.raises(ValueError, match=r"fake_target must be 0, got 0\.1: two-sided label smoothing") as info:
        OneSidedLabelSmoothing(real_target=0.9, fake_target=0.1)
    assert "p_model" in str(info.value) and "§3.4" in str(info.value)
    OneSidedLabelSmoothing(real_target=0.9, fake_target=0.0)  # explicit 0 is fine
    OneSidedLabelSmoothing(real_target=0.9, fake_target=torch.tensor(0.0))


def test_bad_types_and_state():
    with pytest.raises(TypeError, match=r"real_target must be a real number, got str '0.9'"):
        OneSidedLabelSmoothing(real_target="0.9")
    with pytest.raises(TypeError, match="fake_target must be 0, got NoneType"):
        OneSidedLabelSmoothing(fake_target=None)
    with pytest.raises(TypeError, match="engine must be an ignite.engine.Engine"):
        OneSidedLabelSmoothing().attach("trainer")
    smoothing = OneSidedLabelSmoothing()
    with pytest.raises(ValueError, match=r"state_dict\['real_target'\] must be in \(0, 1\]"):
        smoothing.load_state_dict({"real_target": 1.5})
    with pytest.raises(ValueError, match=r"must have the key \['real_target'\], got \['target'\]"):
        smoothing.load_state_dict({"target": 0.8})
    smoothing.load_state_dict({"real_target": 0.8})
    assert math.isclose(smoothing.real_target, 0.8)


# ---------------------------------------------------------------------------------------------------------------
# Callable, registration once
# ---------------------------------------------------------------------------------------------------------------
def scheduled_run(register) -> List[float]:
    """A run with a state scheduler attached before the smoothing handler, registered by `register`."""
    seen: List[float] = []
    trainer = recording_engine(seen)
    PiecewiseLinearStateScheduler(
        param_name="real_target", milestones_values=[(0, 0.9), (4, 0.7)], create_new=True
    ).attach(trainer, Events.ITERATION_STARTED)
    smoothing = OneSidedLabelSmoothing(real_target=0.95)
    register(trainer, smoothing)
    trainer.run(range(6), max_epochs=1)
    assert smoothing.real_target == seen[-1]  # the value in force is what a checkpoint saves
    return seen


def test_add_event_handler_gives_the_attach_result():
    # alone: the callable's first call publishes the handler's target
    seen: List[float] = []
    trainer = recording_engine(seen)
    smoothing = OneSidedLabelSmoothing(real_target=0.8)
    trainer.add_event_handler(Events.ITERATION_STARTED, smoothing)
    trainer.run(range(3), max_epochs=1)
    assert seen == [0.8] * 3 and smoothing.state_dict() == {"real_target": 0.8}
    # under a scheduler that fires first: the callable keeps the scheduler's values, as attach does
    attached = scheduled_run(lambda trainer, smoothing: smoothing.attach(trainer))
    called = scheduled_run(lambda trainer, smoothing: trainer.add_event_handler(Events.ITERATION_STARTED, smoothing))
    assert called == attached and called[0] == pytest.approx(0.85) and called[-1] == pytest.approx(0.7)
    assert 0.95 not in called  # the handler did not overwrite the value the scheduler wrote first
    # and checks the value like attach's event handler
    trainer = recording_engine([])
    trainer.add_event_handler(Events.ITERATION_STARTED, OneSidedLabelSmoothing())
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: setattr(e.state, "real_target", 1.5))
    with pytest.raises(ValueError, match=r"engine.state.real_target must be in \(0, 1\].*1\.5 at iteration 2"):
        trainer.run(range(3), max_epochs=1)


def test_restored_target_is_published_by_the_callable():
    smoothing = OneSidedLabelSmoothing(real_target=0.9)
    smoothing.load_state_dict({"real_target": 0.6})  # a resumed run, before the engine exists
    trainer = Engine(lambda engine, batch: engine.state.real_target)
    trainer.add_event_handler(Events.ITERATION_STARTED, smoothing)
    assert trainer.run([0], max_epochs=1).output == 0.6
    smoothing.load_state_dict({"real_target": 0.7})  # bound now: written to the engine at once
    assert trainer.state.real_target == 0.7


def test_registered_twice_or_with_two_engines_is_refused():
    trainer = recording_engine([])
    smoothing = OneSidedLabelSmoothing()
    smoothing.attach(trainer)
    with pytest.raises(ValueError, match=r"engine already has this OneSidedLabelSmoothing attached; attaching it twice"):
        smoothing.attach(trainer)
    with pytest.raises(ValueError, match=r"engine already has this OneSidedLabelSmoothing attached with attach\(\)"):
        smoothing(trainer)
    with pytest.raises(ValueError, match=r"engine is not the engine this OneSidedLabelSmoothing is registered with.*one engine's state"):
        smoothing.attach(recording_engine([]))
    called = OneSidedLabelSmoothing()
    other = recording_engine([])
    other.add_event_handler(Events.ITERATION_STARTED, called)
    with pytest.raises(ValueError, match=r"engine already has this OneSidedLabelSmoothing registered as an event handler"):
        called.attach(other)
    other.run([0], max_epochs=1)
    with pytest.raises(ValueError, match="engine is not the engine"):
        called(trainer)
