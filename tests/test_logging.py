"""attach_tensorboard: the event files are read back with TensorBoard's own reader."""
import io

import numpy as np
import pytest
import torch
from torch import nn

from ignite.engine import Engine, Events
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ignite_igan.logging import ImageGridHandler, InactiveLogger, attach_tensorboard, log_charts, output_scalars
from ignite_igan.metrics import SemiSupervisedError


class TinyGenerator(nn.Module):
    def __init__(self, flat=False):
        super().__init__()
        self.flat = flat
        self.linear = nn.Linear(3, 3 * 4 * 4)

    def sample_noise(self, n, generator=None, device=None):
        return torch.rand(n, 3, generator=generator, device=device)

    def forward(self, z):
        x = torch.tanh(self.linear(z))
        return x if self.flat else x.view(-1, 3, 4, 4)


def read_events(log_dir):
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def _training_setup():
    generator = TinyGenerator()
    discriminator = nn.Linear(3 * 4 * 4, 1)
    opt_d = torch.optim.SGD(discriminator.parameters(), lr=0.1)
    opt_g = torch.optim.SGD(generator.parameters(), lr=0.01)

    def step(engine, batch):
        opt_d.zero_grad()
        fake = generator(generator.sample_noise(8))
        loss_d = discriminator(fake.flatten(1)).mean() ** 2
        loss_d.backward()
        opt_d.step()
        engine.state.real_target = 0.9  # what a label-smoothing handler would maintain
        if engine.state.iteration >= 3:
            engine.state.historical_average_penalty = 0.1 * engine.state.iteration
        return {"loss_d": loss_d, "loss_g": float(engine.state.iteration), "samples": fake.detach()}

    trainer = Engine(step)
    evaluator = Engine(lambda engine, batch: (torch.tensor([[1.0, 0.0]]), torch.tensor([batch])))
    SemiSupervisedError().attach(evaluator, "error")
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run([0, 1, 1]))
    return trainer, evaluator, generator, discriminator, opt_d, opt_g


def test_scalars_handler_values_metrics_and_image_are_in_the_event_file(tmp_path):
    trainer, evaluator, generator, discriminator, opt_d, opt_g = _training_setup()
    generator.train()
    logger = attach_tensorboard(
        str(tmp_path),
        trainer,
        evaluators={"test": evaluator},
        optimizers={"d": opt_d, "g": opt_g},
        state_attributes=["real_target", "historical_average_penalty"],
        images=ImageGridHandler(generator),
        image_every=2,
        models={"discriminator": discriminator},
        grad_norms=True,
        weight_histograms=True,
    )
    with _no_warning():
        trainer.run(range(3), max_epochs=2)  # 6 iterations
    logger.close()
    assert generator.training  # the image grid did not leave it in eval mode

    events = read_events(tmp_path)
    tags = events.Tags()
    scalars = set(tags["scalars"])
    assert {"training/loss_d", "training/loss_g", "training/real_target", "training/historical_average_penalty"} <= scalars
    assert "training/samples" not in scalars  # not a scalar
    assert {"d/lr/group_0", "g/lr/group_0", "test/error", "test/error_count"} <= scalars
    assert any(tag.startswith("discriminator/grads_norm/") for tag in scalars)
    assert [e.step for e in events.Scalars("training/loss_g")] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in events.Scalars("training/loss_g")] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert [e.step for e in events.Scalars("training/historical_average_penalty")] == [3, 4, 5, 6]
    assert [e.value for e in events.Scalars("g/lr/group_0")] == pytest.approx([0.01] * 6)
    error = events.Scalars("test/error")
    assert [e.step for e in error] == [3, 6]  # evaluation metrics against the trainer's iteration
    assert error[0].value == pytest.approx(2 / 3)
    images = events.Images("generated")
    assert [e.step for e in images] == [2, 4, 6]  # every 2 iterations; the end of training is not logged twice
    assert images[0].width == 2 + 8 * (4 + 2) and images[0].height == 2 + 8 * (4 + 2)  # 8 x 8 grid of 4x4 images
    # The picture is the generator's output on the default fixed noise (64 draws with seed 0), mapped to [0, 1].
    from PIL import Image
    from torchvision.utils import make_grid

    with torch.no_grad():
        noise = generator.sample_noise(64, generator=torch.Generator().manual_seed(0))
        expected = make_grid((generator.eval()(noise) + 1) / 2, nrow=8, padding=2)
    decoded = torch.from_numpy(np.array(Image.open(io.BytesIO(images[-1].encoded_image_string)))).float() / 255
    assert decoded.shape[:2] == expected.shape[1:]
    assert torch.allclose(decoded[..., :3].permute(2, 0, 1), expected, atol=1.5 / 255)
    assert events.Tags()["histograms"]


class _no_warning:
    """Fails the test if logging warns (e.g. about unloggable values or missing attributes)."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._records = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        messages = [str(r.message) for r in self._records if "Logger" in str(r.message) or "missing" in str(r.message)]
        assert not messages, messages


def test_flat_generator_with_image_shape_and_fixed_noise(tmp_path):
    generator = TinyGenerator(flat=True)
    trainer = Engine(lambda engine, batch: 0.5)
    noise = torch.rand(4, 3)
    logger = attach_tensorboard(
        str(tmp_path), trainer, images=ImageGridHandler(generator, noise, image_shape=(3, 4, 4)), image_every=1
    )
    trainer.run([0, 1], max_epochs=1)
    logger.close()
    events = read_events(tmp_path)
    assert [e.value for e in events.Scalars("training/loss")] == [0.5, 0.5]
    assert [e.step for e in events.Images("generated")] == [1, 2]


def test_output_scalars_and_argument_errors(tmp_path):
    assert output_scalars({"a": torch.tensor(2.0), "b": 3, "c": torch.ones(3), "d": "x"}) == {"a": 2.0, "b": 3.0}
    assert output_scalars(torch.tensor([1.5])) == {"loss": 1.5}
    assert output_scalars(None) == {}
    trainer = Engine(lambda engine, batch: None)
    with pytest.raises(ValueError, match="image_every must be >= 1, got 0"):
        attach_tensorboard(str(tmp_path), trainer, image_every=0)
    with pytest.raises(ValueError, match="grad_norms and weight_histograms need models"):
        attach_tensorboard(str(tmp_path), trainer, grad_norms=True)
    with pytest.raises(ValueError, match=r"image_range must be one of .*got '0-1'"):
        ImageGridHandler(TinyGenerator(), image_range="0-1")
    with pytest.raises(TypeError, match="fixed_noise"):
        ImageGridHandler(nn.Linear(2, 2))
    assert not list(tmp_path.iterdir())  # nothing written by failed calls


def test_processes_other_than_rank_0_write_nothing_and_attach_nothing(tmp_path, monkeypatch):
    import ignite.distributed as idist

    trainer, evaluator, generator, discriminator, opt_d, opt_g = _training_setup()
    handlers_before = {event: len(handlers) for event, handlers in trainer._event_handlers.items() if handlers}
    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    with attach_tensorboard(
        str(tmp_path / "tb"), trainer, evaluators={"test": evaluator}, optimizers={"d": opt_d}, images=ImageGridHandler(generator),
        models={"discriminator": discriminator}, grad_norms=True, weight_histograms=True, image_every=1,
    ) as logger:
        assert isinstance(logger, InactiveLogger)
        trainer.run([0, 1], max_epochs=2)
        logger.close()  # closing twice (here and on leaving the block) is harmless
    assert not (tmp_path / "tb").exists()  # no event file, not even the folder
    handlers_after = {event: len(handlers) for event, handlers in trainer._event_handlers.items() if handlers}
    assert handlers_after == handlers_before  # no logging handler left behind on the trainer


def test_protocol_cards_are_logged_as_text_once_per_evaluator_and_metric(tmp_path):
    from ignite_igan.metrics import FID, ClassifierExtractor, GeneratorEvaluator, InceptionScore

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 12)

        def sample_noise(self, n, generator=None, device=None):
            return torch.rand(n, 3, generator=generator, device=device)

        def forward(self, z):
            return torch.tanh(self.linear(z)).view(-1, 3, 2, 2)

    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 4))
    extractor = ClassifierExtractor(net, "[-1,1]", features_fn=lambda net, x: net[1](net[0](x)))
    real = torch.rand(50, 3, 2, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scorer = GeneratorEvaluator(
        Generator(), {"is": InceptionScore(extractor, splits=2), "fid": FID(extractor, real=real)},
        n_samples=20, batch_size=10,
    )
    trainer = Engine(lambda engine, batch: 0.0)
    scorer.attach(trainer, Events.EPOCH_COMPLETED)
    logger = attach_tensorboard(str(tmp_path), trainer, evaluators={"samples": scorer.engine})
    trainer.run([0, 1], max_epochs=3)  # evaluations at iterations 2, 4, 6: the same cards
    scorer.n_samples = 30  # another protocol: logged again
    trainer.run([0, 1], max_epochs=4)  # one more epoch: iteration 8
    logger.close()

    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    text_tags = sorted(tag for tag in events.Tags()["tensors"] if "protocol" in tag)
    assert text_tags == ["samples/fid/protocol/text_summary", "samples/is/protocol/text_summary"]
    for metric in ("is", "fid"):
        logged = events.Tensors(f"samples/{metric}/protocol/text_summary")
        assert [e.step for e in logged] == [2, 8]
        texts = [e.tensor_proto.string_val[0].decode("utf-8") for e in logged]
        card = scorer.protocols[metric]
        assert card.n_samples == 30 and str(card) in texts[1] and f"| digest | {card.digest} |" in texts[1]
        assert "n=20" in texts[0] and "n=30" in texts[1]
    values = [e.value for e in events.Scalars("samples/is")]
    assert len(values) == 4 and values[0] == values[1] == values[2]  # the score itself is logged every time
    assert "samples/fid" in events.Tags()["scalars"] and not any("protocol" in t for t in events.Tags()["scalars"])


# ---------------------------------------------------------------------------------------------------------------
# HParams: a run's configuration and final numbers, in the run's own folder
# ---------------------------------------------------------------------------------------------------------------
def _hparams_plugin_records(log_dir):
    """``{tag: which}`` of the HParams plugin's summaries, parsed with the plugin's own protobuf."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = read_events(log_dir)
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(content).WhichOneof("data")
            for tag, content in events.PluginTagToContent("hparams").items()}


def test_log_hparams_writes_the_plugins_records_and_the_metric_scalars_into_the_run_folder(tmp_path):
    from ignite_igan.logging import log_hparams, read_hparams

    log_hparams(tmp_path, {"experiment": "digits_ssl", "seed": 3, "lr": 3e-3, "baseline": True,
                           "data_dir": tmp_path / "data"}, {"final/test_error": 0.25, "final/iterations": 2400},
                step=2400)
    assert [p.parent for p in tmp_path.rglob("events.out.tfevents.*")] == [tmp_path]  # no time-stamped subfolder
    assert _hparams_plugin_records(tmp_path) == {"_hparams_/experiment": "experiment",
                                                 "_hparams_/session_start_info": "session_start_info",
                                                 "_hparams_/session_end_info": "session_end_info"}
    events = read_events(tmp_path)
    assert [(e.step, e.value) for e in events.Scalars("final/test_error")] == [(2400, 0.25)]
    assert read_hparams(tmp_path) == {"baseline": 1.0, "data_dir": str(tmp_path / "data"), "experiment": "digits_ssl",
                                      "lr": pytest.approx(3e-3), "seed": 3.0}


def test_log_hparams_into_an_open_writer_or_ignite_logger(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from ignite_igan.logging import log_hparams, read_hparams

    trainer, *_ = _training_setup()
    logger = attach_tensorboard(str(tmp_path / "logger"), trainer)
    trainer.run([0, 1], max_epochs=1)
    log_hparams(logger, {"seed": 1}, {"final/loss": torch.tensor(0.5)}, step=2)
    logger.writer.add_scalar("after", 1.0, 3)  # the logger's writer stays open
    logger.close()
    writer = SummaryWriter(str(tmp_path / "writer"))
    log_hparams(writer, {"seed": 2}, {"final/loss": 0.5})
    writer.close()
    assert read_hparams(tmp_path / "logger") == {"seed": 1.0} and read_hparams(tmp_path / "writer") == {"seed": 2.0}
    assert {"training/loss_d", "final/loss", "after"} <= set(read_events(tmp_path / "logger").Tags()["scalars"])


def test_log_hparams_refuses_what_tensorboard_cannot_store_naming_the_entry(tmp_path):
    from ignite_igan.logging import hparams_from_config, log_hparams, log_run_hparams, read_hparams

    with pytest.raises(TypeError, match=r"hparams\['milestones'\] must be a bool, int, float, str or path, got list"):
        log_hparams(tmp_path, {"milestones": [1, 2]}, {"final/x": 1.0})
    with pytest.raises(TypeError, match=r"metrics\['final/error'\] must be a real number, got str"):
        log_hparams(tmp_path, {"seed": 1}, {"final/error": "0.2"})
    with pytest.raises(ValueError, match="hparams must be a mapping of names to values with at least one entry"):
        log_hparams(tmp_path, {}, {"final/x": 1.0})
    with pytest.raises(ValueError, match="metrics must be a mapping of tags to numbers with at least one entry"):
        log_hparams(tmp_path, {"seed": 1}, {})
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        log_hparams(tmp_path, {"seed": 1}, {"final/x": 1.0}, step=-1)
    with pytest.raises(TypeError, match="log_dir_or_writer must be a directory, a .*SummaryWriter.* got int"):
        log_hparams(3, {"seed": 1}, {"final/x": 1.0})
    with pytest.raises(TypeError, match="config must be a mapping"):
        hparams_from_config(["lr"])
    with pytest.raises(TypeError, match="metrics must be a mapping"):
        log_run_hparams(object(), [0.2], step=0)
    with pytest.raises(ValueError, match="log_dir must be an existing directory"):
        read_hparams(tmp_path / "missing")
    assert not list(tmp_path.iterdir())  # nothing written by failed calls
    assert read_hparams(tmp_path) == {}


def test_log_hparams_writes_nothing_off_rank_zero(tmp_path, monkeypatch):
    import ignite.distributed as idist

    from ignite_igan.logging import log_hparams

    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    log_hparams(tmp_path, {"seed": 1}, {"final/x": 1.0})
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------------------
# One chart of several curves, the columns the HParams dashboard shows first, the console's lines
# ---------------------------------------------------------------------------------------------------------------
def _custom_scalars_charts(log_dir):
    """``{(category, title): [tag pattern, ...]}`` of the Custom Scalars layout in the event files of ``log_dir``."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    (event,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    return {(category.title, chart.title): list(chart.multiline.tag)
            for category in layout.category for chart in category.chart}


def test_evaluators_under_one_name_and_their_curves_on_one_chart(tmp_path):
    import re

    trainer = Engine(lambda engine, batch: {"loss": 0.5})
    evaluators = []
    for name, prediction in (("error_averaged", [1.0, 0.0]), ("error_live", [0.0, 1.0])):
        evaluator = Engine(lambda engine, batch, p=prediction: (torch.tensor([p]), torch.tensor([batch])))
        SemiSupervisedError().attach(evaluator, name)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _, scored=evaluator: scored.run([0, 1, 1]))
        evaluators.append(evaluator)
    tags = ["test/error_averaged", "test/error_live", "baseline/error"]
    logger = attach_tensorboard(str(tmp_path), trainer, evaluators={"test": evaluators})
    log_charts(logger, {"test error": tags})
    trainer.run([0, 1], max_epochs=2)
    logger.writer.add_scalar("baseline/error", 0.5, 4)  # a curve logged elsewhere, on the same chart
    logger.close()

    events = read_events(tmp_path)
    # predicting class 0 for labels 0, 1, 1 is wrong twice; class 1 once
    for tag, error in (("test/error_averaged", 2 / 3), ("test/error_live", 1 / 3)):
        assert [e.step for e in events.Scalars(tag)] == [2, 4]
        assert [e.value for e in events.Scalars(tag)] == pytest.approx([error, error])
    assert [e.value for e in events.Scalars("test/error_live_count")] == [1.0, 1.0]
    (key, patterns), = _custom_scalars_charts(tmp_path).items()
    assert key == ("charts", "test error")
    # The dashboard matches each pattern at the start of a tag (re.match): each draws its own tag, not the counts.
    scalars = events.Tags()["scalars"]
    assert [[tag for tag in scalars if re.match(pattern, tag)] for pattern in patterns] == [[tag] for tag in tags]


def test_charts_and_evaluators_are_checked_where_they_enter(tmp_path):
    from ignite_igan.logging import custom_scalars_layout

    trainer = Engine(lambda engine, batch: None)
    with pytest.raises(TypeError, match=r"evaluators\['test'\] must be an Engine or a sequence of Engines, got str"):
        attach_tensorboard(str(tmp_path / "a"), trainer, evaluators={"test": ["engine"]})
    with pytest.raises(ValueError, match=r"charts\['errors'\] must be a non-empty list of scalar tags, got 'test/e'"):
        log_charts(InactiveLogger(), {"errors": "test/e"})  # checked on every process, rank 0 or not
    with pytest.raises(ValueError, match="charts must be a mapping of titles to lists of tags with at least one entry"):
        custom_scalars_layout({})
    assert not list(tmp_path.iterdir())  # refused before any event file
    assert custom_scalars_layout({"lr": ["d/lr.0"]}, category="c") == {"c": {"lr": ["Multiline", [r"^d/lr\.0$"]]}}


def _hparams_experiment(log_dir):
    """``([(name, differs), ...], [metric tag, ...])`` of the HParams experiment in the event files of ``log_dir``."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = read_events(log_dir).PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    return [(i.name, i.differs) for i in experiment.hparam_infos], [i.name.tag for i in experiment.metric_infos]


def test_log_hparams_marks_what_sets_a_run_apart_for_the_dashboards_first_columns(tmp_path):
    from ignite_igan.logging import log_hparams

    log_hparams(tmp_path / "run", {"amp": "off", "batch_size": 100, "lr": 0.1, "seed": 2},
                {"final/test_error": 0.2, "final/test_error_live": 0.1}, differing=["seed", "lr"])
    infos, metrics = _hparams_experiment(tmp_path / "run")
    assert sorted(infos) == [("amp", False), ("batch_size", False), ("lr", True), ("seed", True)]
    assert metrics == ["final/test_error", "final/test_error_live"]  # in the given order
    with pytest.raises(ValueError, match=r"differing must be a list of names in hparams, got \['sed'\]"):
        log_hparams(tmp_path / "bad", {"seed": 1}, {"final/x": 1.0}, differing=["sed"])
    assert not (tmp_path / "bad").exists()


def test_log_run_hparams_marks_the_seeds_and_the_flags_changed_from_the_defaults(tmp_path):
    import argparse

    from ignite_igan.experiments.runs import Run
    from ignite_igan.logging import log_run_hparams, read_hparams

    args = argparse.Namespace(output_dir=str(tmp_path), seed=1, seed_data=1, device="cpu", threads=None, epochs=3,
                              resume=False, extend=False, no_progress=True, lr=0.1, batch_size=100, amp="off",
                              data_dir=tmp_path, decay_epochs=None)
    defaults = {"seed": 1, "seed_data": 1, "epochs": 300, "lr": 0.1, "batch_size": 50, "amp": "off",
                "data_dir": str(tmp_path), "decay_epochs": None}
    log_run_hparams(Run(args, "demo"), {"test_error": 0.2, "test_error_live": 0.1, "baseline_test_error": 0.3},
                    step=7, hparams={"labels": 100, "decay_epochs": 150}, defaults=defaults)  # resolved from None
    infos, metrics = _hparams_experiment(Run(args, "demo").tensorboard_dir)
    # the seeds always (they are what a series of runs varies), then what differs from the defaults
    assert sorted(name for name, differs in infos if differs) == ["batch_size", "epochs", "seed", "seed_data"]
    assert metrics == ["final/test_error", "final/test_error_live", "final/baseline_test_error", "final/wall_time_s"]
    hparams = read_hparams(Run(args, "demo").tensorboard_dir)
    assert {k: hparams[k] for k in ("seed", "seed_data", "labels", "epochs", "decay_epochs")} == \
        {"seed": 1, "seed_data": 1, "labels": 100, "epochs": 3, "decay_epochs": 150}
    with pytest.raises(TypeError, match="defaults must be a mapping of flags to values, got list"):
        log_run_hparams(Run(args, "demo"), {"x": 1.0}, step=0, defaults=["lr"])


def test_progress_without_a_terminal_prints_a_line_at_each_line_event_only():
    from ignite_igan.experiments.runs import attach_progress

    def lines(**kwargs):
        trainer = Engine(lambda engine, batch: {"loss": float(batch)})
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: setattr(e.state, "test_error", e.state.epoch / 10))
        stream = io.StringIO()
        attach_progress(trainer, ["loss"], state_attributes=["test_error"], stream=stream, **kwargs)
        trainer.run([1.0, 1.0], max_epochs=5)
        return [line.split("  ") for line in stream.getvalue().splitlines()]

    every = lines()
    assert [line[0] for line in every] == [f"epoch {k}/5" for k in range(1, 6)]
    evaluations = lines(line_event=Events.EPOCH_COMPLETED(every=2) | Events.COMPLETED)
    assert [line[:4] for line in evaluations] == [["epoch 2/5", "iteration 4", "loss 1", "test_error 0.2"],
                                                  ["epoch 4/5", "iteration 8", "loss 1", "test_error 0.4"],
                                                  ["epoch 5/5", "iteration 10", "loss 1", "test_error 0.5"]]
    assert all(line[-1].endswith(" s") for line in evaluations)
    assert lines(line_event=None) == []
