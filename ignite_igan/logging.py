"""One call that attaches the usual GAN monitoring to a trainer through Ignite's ``TensorboardLogger``, and one that
records a run's configuration and final numbers in TensorBoard's HParams dashboard.

Everything is logged against the trainer's iteration, so training losses, handler values, evaluation metrics and
image grids share one x-axis in TensorBoard. :func:`log_hparams` puts a run's configuration (experiment, seeds,
labels, learning rate, epochs, ...) beside its final metrics, so that the HParams dashboard lists runs side by side
and filters or sorts them by any of those values. Under ``ignite.distributed`` only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import numbers
import os
import re
import time
from pathlib import PurePath
from typing import Any, ContextManager, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers.base_logger import BaseHandler
from ignite.handlers.tensorboard_logger import GradsScalarHandler, TensorboardLogger, WeightsHistHandler
from ignite.handlers.utils import global_step_from_engine

from ignite_igan.metrics.extractors import _normalize_range
from ignite_igan.metrics.modes import evaluation_mode
from ignite_igan.metrics.protocol import published_protocols
from ignite_igan.validation import check_instance, check_int, check_mapping, describe

__all__ = [
    "attach_tensorboard",
    "custom_scalars_layout",
    "log_charts",
    "ImageGridHandler",
    "InactiveLogger",
    "output_scalars",
    "log_hparams",
    "hparams_from_config",
    "read_hparams",
    "log_run_hparams",
    "log_figure",
]


class InactiveLogger:
    """What :func:`attach_tensorboard` returns on processes other than rank 0: it writes nothing."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "InactiveLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def output_scalars(output: Any) -> Dict[str, float]:
    """The loggable scalars of a training step's output: numbers and one-element tensors.

    A dict is flattened one level (``{"loss_d": 0.7, "loss_g": 1.2}``); a bare number or scalar tensor becomes
    ``{"loss": value}``; anything else (images, vectors) is left out.

    Example:
        >>> output_scalars({"loss_d": torch.tensor(0.5), "step": 3, "images": torch.ones(2, 2)})
        {'loss_d': 0.5, 'step': 3.0}
    """
    items = {str(k): v for k, v in output.items()} if isinstance(output, Mapping) else {"loss": output}
    # One transfer for all the one-element tensors (outputs left on an accelerator): one wait, not one each.
    tensors = {k: v.detach().reshape(()).double() for k, v in items.items() if isinstance(v, Tensor) and v.numel() == 1}
    read = dict(zip(tensors, torch.stack(list(tensors.values())).tolist())) if tensors else {}
    values = {**{key: float(value) for key, value in items.items() if isinstance(value, numbers.Number)}, **read}
    return {key: values[key] for key in items if key in values}  # in the output's order


#: The values of each image range that the image grid shows as black and white.
_VALUE_RANGES = {"[-1,1]": (-1.0, 1.0), "[0,1]": (0.0, 1.0), "uint8": (0.0, 255.0)}


class ImageGridHandler(BaseHandler):
    """Logs a grid of the generator's images from fixed noise: one ``torchvision.utils.make_grid`` image.

    A log handler of Ignite's ``TensorboardLogger``: attach it with ``logger.attach(trainer, handler, event)``, or
    pass it as ``images=`` to :func:`attach_tensorboard`. The images are drawn without gradient and in
    ``mode`` (the generator's own mode is restored afterwards), mapped from ``image_range`` to [0, 1], and logged
    against the trainer's iteration; an event at an iteration already logged (``COMPLETED`` right after an
    every-k iteration) is skipped.

    Args:
        generator: the generator.
        fixed_noise: the noise of the grid; by default ``generator.sample_noise(num_images)`` drawn once with its
            own generator of seed 0 (the global random state is not used).
        image_range: range of the generator's output: ``"[-1,1]"``, ``"[0,1]"`` or ``"uint8"``.
        image_shape: ``(C, H, W)`` to reshape flat outputs (e.g. ``(1, 28, 28)`` for MNIST).
        num_images: images of the default noise.
        mode: the generator's mode while drawing the grid, ``"eval"`` or ``"train"`` (the reference's generators
            always use batch statistics).
        tag: the image's tag.

    Raises:
        TypeError: no ``fixed_noise`` and the generator has no ``sample_noise(n, generator=None, device=None)``.

    Example:
        >>> import tempfile
        >>> from ignite.engine import Engine, Events
        >>> from ignite.handlers.tensorboard_logger import TensorboardLogger
        >>> generator = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 4, 4)))
        >>> trainer = Engine(lambda engine, batch: None)
        >>> folder = tempfile.mkdtemp()
        >>> logger = TensorboardLogger(log_dir=folder)
        >>> _ = logger.attach(trainer, ImageGridHandler(generator, torch.randn(9, 2)), Events.EPOCH_COMPLETED)
        >>> _ = trainer.run([0, 1], max_epochs=2); logger.close()
        >>> from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        >>> events = EventAccumulator(folder); _ = events.Reload()
        >>> [image.step for image in events.Images("generated")]  # the trainer's iteration
        [2, 4]
    """

    def __init__(
        self,
        generator: nn.Module,
        fixed_noise: Optional[Tensor] = None,
        *,
        image_range: str = "[-1,1]",
        image_shape: Optional[Tuple[int, ...]] = None,
        num_images: int = 64,
        mode: str = "eval",
        tag: str = "generated",
    ) -> None:
        self.image_range = _normalize_range(image_range, argument="image_range")
        if fixed_noise is None:
            if not callable(getattr(generator, "sample_noise", None)):
                raise TypeError("pass fixed_noise: the generator has no sample_noise(n, generator=None, device=None)")
            fixed_noise = generator.sample_noise(
                num_images, generator=torch.Generator().manual_seed(0), device=torch.device("cpu")
            )
        self.generator = generator
        self.noise = fixed_noise
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.nrow = max(1, int(round(fixed_noise.shape[0] ** 0.5)))
        self.mode = mode
        self.tag = tag
        self._last_step: Optional[int] = None

    def __call__(self, engine: Engine, logger: TensorboardLogger, event_name: Any) -> None:
        from torchvision.utils import make_grid

        if engine.state.iteration == self._last_step:  # COMPLETED right after an every-k iteration
            return
        self._last_step = engine.state.iteration
        device = next((parameter.device for parameter in self.generator.parameters()), self.noise.device)
        with torch.no_grad(), evaluation_mode(self.generator, mode=self.mode):
            images = self.generator(self.noise.to(device)).detach().float().cpu()
        if self.image_shape is not None:
            images = images.reshape(images.shape[0], *self.image_shape)
        if images.dim() != 4:  # make_grid would take a 2-D batch for one image
            raise ValueError(
                f"generated images must have shape (N, C, H, W) for the image grid, got {tuple(images.shape)}; "
                "pass image_shape=(C, H, W) for flat outputs"
            )
        # make_grid clamps to the range and maps it to [0, 1]
        grid = make_grid(images, nrow=self.nrow, padding=2, normalize=True, value_range=_VALUE_RANGES[self.image_range])
        logger.writer.add_image(self.tag, grid, engine.state.iteration)


class _ProtocolTextHandler(BaseHandler):
    """Logs each metric's protocol card as TensorBoard text when it first appears and whenever it changes."""

    def __init__(self, tag: str, trainer: Engine) -> None:
        self.tag = tag
        self.trainer = trainer
        self._logged: Dict[str, str] = {}

    def __call__(self, engine: Engine, logger: TensorboardLogger, event_name: Any) -> None:
        for name, card in published_protocols(engine).items():
            if self._logged.get(name) != card.digest:
                logger.writer.add_text(f"{self.tag}/{name}/protocol", card.to_markdown(), self.trainer.state.iteration)
                self._logged[name] = card.digest


def custom_scalars_layout(charts: Mapping[str, Sequence[str]], category: str = "charts") -> Dict[str, Any]:
    """The layout of TensorBoard's Custom Scalars dashboard that draws each entry of ``charts`` as one chart, for
    ``SummaryWriter.add_custom_scalars`` (the dashboard reads a chart's tags as regular expressions matched at the
    start of a tag; here each matches its tag exactly, so ``test/error_live`` does not also draw
    ``test/error_live_count``).

    Args:
        charts: ``{title: [tag, ...]}``: the scalar tags drawn as the lines of each chart.
        category: the dashboard's section that holds the charts.

    Returns:
        ``{category: {title: ["Multiline", [pattern, ...]]}}``.

    Example:
        >>> custom_scalars_layout({"test error": ["test/error_averaged", "test/error_live"]})
        {'charts': {'test error': ['Multiline', ['^test/error_averaged$', '^test/error_live$']]}}
    """
    check_mapping("charts", charts, "a mapping of titles to lists of tags")
    layout: Dict[str, Any] = {}
    for title, tags in charts.items():
        if isinstance(tags, str) or not isinstance(tags, Sequence) or not tags \
                or not all(isinstance(tag, str) and tag for tag in tags):
            raise ValueError(f"charts[{title!r}] must be a non-empty list of scalar tags, got {tags!r}")
        layout[str(title)] = ["Multiline", [f"^{re.escape(tag)}$" for tag in tags]]
    return {category: layout}


def log_charts(logger: Union[TensorboardLogger, InactiveLogger], charts: Mapping[str, Sequence[str]],
                category: str = "charts") -> None:
    """Writes a layout of TensorBoard's Custom Scalars dashboard to ``logger``'s files: one chart per entry of
    ``charts``, with the listed scalar tags as its lines (e.g. both test errors on one chart; tags logged elsewhere,
    such as a baseline's, may be listed too). Nothing on a process that does not log (an :class:`InactiveLogger`).

    Args:
        logger: what :func:`attach_tensorboard` returned.
        charts: ``{title: [tag, ...]}``, each tag matched exactly (:func:`custom_scalars_layout`).
        category: the dashboard's section that holds the charts.

    Example:
        >>> import tempfile
        >>> logger = attach_tensorboard(tempfile.mkdtemp(), Engine(lambda engine, batch: None))
        >>> log_charts(logger, {"test error": ["test/error_averaged", "test/error_live"]})
        >>> logger.close()
    """
    layout = custom_scalars_layout(charts, category)  # checked on every process
    if isinstance(logger, TensorboardLogger):
        logger.writer.add_custom_scalars(layout)


def attach_tensorboard(
    log_dir: str,
    trainer: Engine,
    *,
    evaluators: Optional[Mapping[str, Union[Engine, Sequence[Engine]]]] = None,
    optimizers: Optional[Union[Optimizer, Sequence[Optimizer], Mapping[str, Optimizer]]] = None,
    state_attributes: Sequence[str] = (),
    log_every: int = 1,
    images: Optional[ImageGridHandler] = None,
    image_every: int = 500,
    models: Optional[Mapping[str, nn.Module]] = None,
    grad_norms: bool = False,
    weight_histograms: bool = False,
    histogram_every: int = 1,
    protocols: bool = True,
) -> Union[TensorboardLogger, InactiveLogger]:
    """Attaches TensorBoard logging of a GAN's training to ``trainer`` (and its evaluators) in one call.

    Logged, all against ``trainer.state.iteration``:

    - ``training/<key>``: every scalar of the step's output (a dict of losses and statistics, or a single loss),
      every ``log_every`` iterations;
    - ``training/<name>``: the listed ``engine.state`` attributes that handlers maintain (e.g. ``"real_target"``,
      ``"historical_penalty"``), skipped while not set;
    - ``<optimizer name>/lr/group_<i>``: the learning rates, every ``log_every`` iterations;
    - ``<evaluator name>/<metric>``: every metric of each evaluator whenever it completes a run (several evaluators
      may share a name, e.g. ``{"test": [averaged.engine, live.engine]}`` with metrics ``error_averaged`` and
      ``error_live``: ``test/error_averaged`` and ``test/error_live``);
    - ``<evaluator name>/<metric>/protocol`` (text): the protocol card of each metric that publishes one (the
      Inception Score and FID, :class:`~ignite_igan.metrics.Protocol`, from ``engine.state.protocols``), once,
      and again only if the card changes;
    - ``generated``: the :class:`ImageGridHandler` ``images`` every ``image_every`` iterations and at the end of
      training;
    - optionally ``<model name>/grads_norm/<parameter>`` (``grad_norms``, every ``log_every`` iterations) and weight
      histograms (``weight_histograms``, every ``histogram_every`` epochs, with the epoch as step) for each model in
      ``models``.

    Args:
        log_dir: the TensorBoard directory.
        trainer: the training engine.
        evaluators: ``{name: engine or [engines]}``; e.g.
            ``{"test": error_evaluator.engine, "samples": scorer.engine}``.
        optimizers: an optimizer, a list, or ``{name: optimizer}`` whose learning rates to log.
        state_attributes: names of ``trainer.state`` attributes to log.
        log_every: iterations between scalar logs.
        images: the image grid, e.g. ``ImageGridHandler(generator)`` (``None``: no images).
        image_every: iterations between image grids.
        models: ``{name: module}`` for gradient norms and weight histograms.
        grad_norms: log the L2 norm of every parameter's gradient.
        weight_histograms: log histograms of the weights.
        histogram_every: epochs between weight histograms.
        protocols: log the evaluators' protocol cards as text.

    Returns:
        The ``TensorboardLogger`` (call ``close()`` when training ends) on rank 0, an :class:`InactiveLogger` with a
        no-op ``close()`` elsewhere.

    Example:
        >>> logger = attach_tensorboard("runs/cifar", trainer, evaluators={"test": evaluator.engine},
        ...                             optimizers={"d": opt_d, "g": opt_g}, state_attributes=["real_target"],
        ...                             images=ImageGridHandler(generator), image_every=500)  # doctest: +SKIP
        >>> trainer.run(loader, max_epochs=10); logger.close()  # doctest: +SKIP
    """
    every = Events.ITERATION_COMPLETED(every=check_int("log_every", log_every, minimum=1))
    image_every = check_int("image_every", image_every, minimum=1)
    histogram_every = check_int("histogram_every", histogram_every, minimum=1)
    models = dict(models or {})
    evaluator_engines = [
        (name, check_instance(f"evaluators[{name!r}]", evaluator, Engine, "an Engine or a sequence of Engines"))
        for name, engines in (evaluators or {}).items()
        for evaluator in ([engines] if isinstance(engines, Engine) else engines)
    ]
    if (grad_norms or weight_histograms) and not models:
        raise ValueError("grad_norms and weight_histograms need models={name: module}")
    names = [state_attributes] if isinstance(state_attributes, str) else list(state_attributes)
    if idist.get_rank() != 0:
        return InactiveLogger()

    def training_scalars(output: Any) -> Dict[str, float]:
        # The step's scalars, then the handler values in trainer.state, skipped while not set (a technique that is
        # off never sets its attribute, and Ignite's OutputHandler(state_attributes=...) would warn about it).
        state = output_scalars({name: getattr(trainer.state, name, None) for name in names})
        return {**output_scalars(output), **state}

    logger = TensorboardLogger(log_dir=log_dir)
    iteration = global_step_from_engine(trainer, Events.ITERATION_COMPLETED)
    logger.attach_output_handler(
        trainer, every, tag="training", output_transform=training_scalars, global_step_transform=iteration
    )
    if optimizers is not None and not isinstance(optimizers, (Mapping, list, tuple)):
        optimizers = [optimizers]
    if isinstance(optimizers, (list, tuple)):
        optimizers = {f"optimizer{i}" if len(optimizers) > 1 else "optimizer": opt for i, opt in enumerate(optimizers)}
    for name, optimizer in (optimizers or {}).items():
        logger.attach_opt_params_handler(trainer, every, optimizer, param_name="lr", tag=name)
    for name, evaluator in evaluator_engines:
        logger.attach_output_handler(
            evaluator, Events.COMPLETED, tag=name, metric_names="all", global_step_transform=iteration
        )
        if protocols:
            logger.attach(evaluator, _ProtocolTextHandler(name, trainer), Events.COMPLETED)
    if images is not None:
        logger.attach(trainer, images, Events.ITERATION_COMPLETED(every=image_every) | Events.COMPLETED)
    for name, model in models.items():
        if grad_norms:
            logger.attach(trainer, GradsScalarHandler(model, reduction=torch.norm, tag=name), every)
        if weight_histograms:
            logger.attach(trainer, WeightsHistHandler(model, tag=name), Events.EPOCH_COMPLETED(every=histogram_every))
    return logger


#: The value types TensorBoard's HParams plugin stores (``bool`` is kept as a bool, not an int).
_HPARAM_TYPES = (bool, int, float, str)


def hparams_from_config(config: Mapping[str, Any]) -> Dict[str, Union[bool, int, float, str]]:
    """The entries of a run's configuration that the HParams dashboard can show: numbers, bools and strings as they
    are, paths as strings; ``None`` (a default left to the recipe) and containers are left out, since the dashboard
    has no column type for them.

    Args:
        config: e.g. ``vars(args)`` or :meth:`ignite_igan.experiments.runs.Run.configuration`.

    Returns:
        ``{name: value}`` in the order of ``config``.

    Example:
        >>> from pathlib import Path
        >>> hparams_from_config({"lr": 3e-3, "seed": 1, "baseline": True, "data_dir": Path("data"),
        ...                      "unlabeled_examples": None, "milestones": [1, 2]})
        {'lr': 0.003, 'seed': 1, 'baseline': True, 'data_dir': 'data'}
    """
    check_mapping("config", config, "a mapping of names to values", allow_empty=True)
    return {str(key): str(value) if isinstance(value, PurePath) else value
            for key, value in config.items() if isinstance(value, (PurePath, *_HPARAM_TYPES))}


def _summary_writer(target: Any) -> ContextManager[Any]:
    """A torch ``SummaryWriter`` for ``target`` as a context: one made here is closed on leaving it, one passed in
    (or held by Ignite's logger) is left open."""
    from torch.utils.tensorboard import SummaryWriter

    if isinstance(target, (str, os.PathLike)):
        return SummaryWriter(log_dir=os.fspath(target))
    writer = getattr(target, "writer", target)  # Ignite's TensorboardLogger holds its SummaryWriter as .writer
    if isinstance(writer, SummaryWriter):
        return contextlib.nullcontext(writer)
    raise TypeError("log_dir_or_writer must be a directory, a torch.utils.tensorboard.SummaryWriter or an Ignite "
                    f"TensorboardLogger, got {type(target).__name__}")


def log_hparams(
    log_dir_or_writer: Union[str, "os.PathLike[str]", Any],
    hparams: Mapping[str, Any],
    metrics: Mapping[str, Any],
    *,
    step: int = 0,
    differing: Sequence[str] = (),
) -> None:
    """Writes a run's configuration and final numbers to TensorBoard's HParams dashboard, in the run's own folder.

    The metrics are also written as scalars with the same tags at ``step`` (the dashboard reads a metric's value
    from the scalar of its tag in the same run). Unlike ``SummaryWriter.add_hparams``, which starts a new run in a
    time-stamped subfolder, everything goes into ``log_dir_or_writer`` itself, so the run's training curves, image
    grids and HParams row are one run in TensorBoard. On processes other than rank 0 this does nothing.

    Args:
        log_dir_or_writer: the run's TensorBoard folder, a ``SummaryWriter``, or the ``TensorboardLogger`` that
            :func:`attach_tensorboard` returned (its writer is used and left open).
        hparams: ``{name: value}`` with values bool, int, float, str or a path (see :func:`hparams_from_config`).
        metrics: ``{tag: number}``, e.g. ``{"final/test_error": 0.042}``; each must be a real number.
        step: the scalars' step (e.g. the run's last iteration).
        differing: names in ``hparams`` that set this run apart from others (its seeds, the flags it changed). The
            dashboard shows five columns at first, those it is told differ between runs first, then the others by
            name; without this the five would be the first names alphabetically, the same in every run.

    Example:
        >>> import tempfile
        >>> from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        >>> log_dir = tempfile.mkdtemp()
        >>> log_hparams(log_dir, {"experiment": "digits_ssl", "seed": 1, "lr": 3e-3},
        ...             {"final/test_error": 0.042}, step=2400)
        >>> events = EventAccumulator(log_dir); _ = events.Reload()
        >>> [(s.step, round(s.value, 3)) for s in events.Scalars("final/test_error")]
        [(2400, 0.042)]
        >>> read_hparams(log_dir)
        {'experiment': 'digits_ssl', 'lr': 0.003, 'seed': 1.0}
    """
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    check_mapping("hparams", hparams, "a mapping of names to values")
    check_mapping("metrics", metrics, "a mapping of tags to numbers")
    check_int("step", step, minimum=0)
    if isinstance(differing, str) or any(str(name) not in hparams for name in differing):
        raise ValueError(f"differing must be a list of names in hparams, got {differing!r}")
    values = hparams_from_config(hparams)
    for key, value in hparams.items():
        if str(key) not in values:  # None or a container: TensorBoard has no column type for it
            raise TypeError(f"hparams[{key!r}] must be a bool, int, float, str or path, got {describe(value)}")
    scalars: Dict[str, float] = {}
    for tag, value in metrics.items():
        value = value.item() if isinstance(value, Tensor) and value.numel() == 1 else value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"metrics[{tag!r}] must be a real number, got {describe(value)}")
        scalars[str(tag)] = float(value)
    if idist.get_rank() != 0:
        return
    with _summary_writer(log_dir_or_writer) as writer:
        # What SummaryWriter.add_hparams writes, in this writer's folder rather than a new time-stamped one: the
        # experiment, session start and session end summaries (they name the metrics; their values are the scalars).
        experiment, start, end = hparams_summaries(values, scalars)
        for summary in (_mark_differing(experiment, {str(name) for name in differing}), start, end):
            writer._get_file_writer().add_summary(summary, step)
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
        writer.flush()


def _mark_differing(experiment: Any, names: Any) -> Any:
    """The experiment summary of ``torch.utils.tensorboard.summary.hparams`` with ``names`` marked as differing
    between runs (TensorBoard computes this mark only when no run states the experiment, as each run here does)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    metadata = experiment.value[0].metadata.plugin_data
    data = plugin_data_pb2.HParamsPluginData.FromString(metadata.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in names
    metadata.content = data.SerializeToString()
    return experiment


def read_hparams(log_dir: Union[str, "os.PathLike[str]"]) -> Dict[str, Union[float, str, bool]]:
    """The hyperparameters that :func:`log_hparams` wrote into the event files of ``log_dir`` (numbers come back as
    floats: TensorBoard stores every number as a double).

    Args:
        log_dir: a run's TensorBoard folder (the event files directly in it, not in subfolders).

    Returns:
        ``{name: value}`` sorted by name; empty when the folder holds no HParams record.

    Example:
        >>> import tempfile
        >>> log_dir = tempfile.mkdtemp()
        >>> log_hparams(log_dir, {"experiment": "mixture", "epochs": 20}, {"final/modes": 8})
        >>> read_hparams(log_dir)["epochs"]
        20.0
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    if not isinstance(log_dir, (str, os.PathLike)) or not os.path.isdir(log_dir):
        raise ValueError(f"log_dir must be an existing directory, got {log_dir!r}")
    events = EventAccumulator(os.fspath(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    result: Dict[str, Union[float, str, bool]] = {}
    try:
        contents = events.PluginTagToContent("hparams")
    except KeyError:  # no summary of the HParams plugin in these event files
        contents = {}
    for content in contents.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            for name, value in data.session_start_info.hparams.items():
                kind = value.WhichOneof("kind")
                result[name] = getattr(value, kind) if kind else None
    return dict(sorted(result.items()))  # the protobuf map has no order of its own


def log_run_hparams(
    run: Any,
    metrics: Mapping[str, Any],
    *,
    step: int,
    hparams: Optional[Mapping[str, Any]] = None,
    defaults: Optional[Mapping[str, Any]] = None,
) -> None:
    """The HParams record of a recipe's run: :func:`log_hparams` into the run's TensorBoard folder with the
    experiment's name, every configuration flag TensorBoard can show (:func:`hparams_from_config` of
    :meth:`Run.configuration <ignite_igan.experiments.runs.Run.configuration>`), the epochs, and ``hparams``; the
    metrics are tagged ``final/<name>`` and ``final/wall_time_s`` (this process's seconds since
    :class:`~ignite_igan.experiments.runs.Run` was made, so a resumed run counts from its resume, as its report does)
    is added. The seeds (``seed``, ``seed_data``) and the flags given other values than ``defaults`` are the ones
    the dashboard shows first (``differing`` of :func:`log_hparams`).

    Args:
        run: the recipe's :class:`ignite_igan.experiments.runs.Run`.
        metrics: ``{name: number}``, the run's final numbers (e.g. ``{"test_error": 0.2, "iterations": 2400}``).
        step: the scalars' step, the run's last iteration.
        hparams: more hyperparameters (e.g. the number of labels), added to the configuration's.
        defaults: the recipe's defaults, ``{flag: value}`` (e.g. ``vars(parser.parse_args([]))``).

    Example:
        >>> import argparse, tempfile
        >>> from ignite_igan.experiments.runs import Run
        >>> args = argparse.Namespace(output_dir=tempfile.mkdtemp(), seed=1, device="cpu", threads=None, epochs=2,
        ...                           resume=False, extend=False, no_progress=True, lr=0.1)
        >>> run = Run(args, "demo")
        >>> log_run_hparams(run, {"test_error": 0.25}, step=10, hparams={"labels": 100}, defaults={"lr": 0.01})
        >>> hparams = read_hparams(run.tensorboard_dir)
        >>> hparams["experiment"], hparams["lr"], hparams["epochs"], hparams["labels"]
        ('demo', 0.1, 2.0, 100.0)
    """
    check_mapping("metrics", metrics, "a mapping of names to numbers", allow_empty=True)
    values = {"experiment": run.experiment, **hparams_from_config(run.configuration())}
    epochs = getattr(run.args, "epochs", None)
    if epochs is not None:  # a resumable flag (--extend may raise it), so not in the configuration
        values["epochs"] = epochs
    values.update(hparams or {})
    if defaults is not None:
        check_mapping("defaults", defaults, "a mapping of flags to values", allow_empty=True)
    # Flags compared as given (a default resolved later, e.g. from None, is no change), shown as resolved.
    given, defaults = vars(run.args), defaults or {}
    differing = [name for name in ("seed", "seed_data") if name in values]
    differing += [name for name in values if name not in differing and name in given and name in defaults
                  and _plain(given[name]) != _plain(defaults[name])]
    final = {f"final/{name}": value for name, value in metrics.items()}
    final["final/wall_time_s"] = time.time() - run.started
    log_hparams(run.tensorboard_dir, values, final, step=step, differing=differing)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, PurePath) else value


def log_figure(
    logger: Any, tag: str, figure: Any, step: int, path: Optional[Union[str, "os.PathLike[str]"]] = None, dpi: int = 100
) -> Optional[str]:
    """Adds a matplotlib ``figure`` to TensorBoard under ``tag`` at ``step`` (which closes it), saving it first to
    ``path`` (e.g. ``samples.png``, cropped to its content) if given; returns ``path`` as a string, or ``None``.

    Args:
        logger: an Ignite ``TensorboardLogger`` (e.g. of :func:`attach_tensorboard`) or a ``SummaryWriter``.
        tag: the figure's tag.
        figure: the ``matplotlib.figure.Figure``.
        step: the global step.
        path: where to save it as an image as well.
        dpi: the image's resolution.

    Example:
        >>> import tempfile, os
        >>> from ignite_igan.metrics import ring_mixture
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> folder = tempfile.mkdtemp()
        >>> figure = ring_mixture().plot(ring_mixture().sample(100))
        >>> with SummaryWriter(folder) as writer:
        ...     saved = log_figure(writer, "samples", figure, 10, path=os.path.join(folder, "samples.png"))
        >>> os.path.isfile(saved)
        True
    """
    if path is not None:
        figure.savefig(path, dpi=dpi, bbox_inches="tight")
    logger.add_figure(tag, figure, global_step=step)  # Ignite's TensorboardLogger passes it on to its writer
    return str(path) if path is not None else None
