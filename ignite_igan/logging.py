"""One call that attaches the usual GAN monitoring to a trainer through Ignite's ``TensorboardLogger``.

Everything is logged against the trainer's iteration, so training losses, handler values, evaluation metrics and
image grids share one x-axis in TensorBoard. Under ``ignite.distributed`` only rank 0 writes.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers.base_logger import BaseHandler
from ignite.handlers.tensorboard_logger import (
    GradsScalarHandler,
    OptimizerParamsHandler,
    OutputHandler,
    TensorboardLogger,
    WeightsHistHandler,
)
from ignite.handlers.utils import global_step_from_engine

from ignite_igan.metrics.extractors import _normalize_range
from ignite_igan.metrics.modes import evaluation_mode
from ignite_igan.metrics.protocol import published_protocols

__all__ = ["attach_tensorboard", "InactiveLogger", "output_scalars"]


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
    """

    def scalar(value: Any) -> Optional[float]:
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, numbers.Number):
            return float(value)
        if isinstance(value, Tensor) and value.numel() == 1:
            return float(value.detach().reshape(()).item())
        return None

    if isinstance(output, Mapping):
        # One transfer for all the one-element tensors (outputs left on an accelerator): one wait, not one each.
        tensors = {str(k): v for k, v in output.items() if isinstance(v, Tensor) and v.numel() == 1}
        read = {}
        if tensors:
            stacked = torch.stack([v.detach().reshape(()).double() for v in tensors.values()]).tolist()
            read = dict(zip(tensors, stacked))
        items = {str(k): read[str(k)] if str(k) in read else scalar(v) for k, v in output.items()}
        return {k: v for k, v in items.items() if v is not None}
    value = scalar(output)
    return {} if value is None else {"loss": value}


class _StateAttributesHandler(BaseHandler):
    """Logs numeric attributes of ``engine.state`` (handler values), skipping ones not set yet."""

    def __init__(self, names: Sequence[str], tag: str) -> None:
        self.names = list(names)
        self.tag = tag

    def __call__(self, engine: Engine, logger: TensorboardLogger, event_name: Any) -> None:
        step = engine.state.iteration
        for name in self.names:
            value = output_scalars({name: getattr(engine.state, name, None)})
            for key, v in value.items():
                logger.writer.add_scalar(f"{self.tag}/{key}", v, step)


class _ImageGridHandler(BaseHandler):
    """Generates images from fixed noise and logs them as one ``make_grid`` image."""

    def __init__(
        self,
        generator: nn.Module,
        noise: Tensor,
        tag: str,
        image_range: str,
        image_shape: Optional[Tuple[int, ...]],
        nrow: int,
        mode: str,
    ) -> None:
        self.generator = generator
        self.noise = noise
        self.tag = tag
        self.image_range = image_range
        self.image_shape = image_shape
        self.nrow = nrow
        self.mode = mode
        self._last_step: Optional[int] = None

    def __call__(self, engine: Engine, logger: TensorboardLogger, event_name: Any) -> None:
        from torchvision.utils import make_grid

        if engine.state.iteration == self._last_step:  # COMPLETED right after an every-k iteration
            return
        self._last_step = engine.state.iteration

        parameter = next(self.generator.parameters(), None)
        device = parameter.device if parameter is not None else self.noise.device
        with torch.no_grad(), evaluation_mode(self.generator, mode=self.mode):
            images = self.generator(self.noise.to(device))
        images = images.detach().float().cpu()
        if self.image_shape is not None:
            images = images.reshape(images.shape[0], *self.image_shape)
        if images.dim() != 4:
            raise ValueError(
                f"generated images must have shape (N, C, H, W) for the image grid, got {tuple(images.shape)}; "
                "pass image_shape=(C, H, W) for flat outputs"
            )
        if self.image_range == "[-1,1]":
            images = (images + 1) / 2
        elif self.image_range == "uint8":
            images = images / 255.0
        grid = make_grid(images.clamp(0, 1), nrow=self.nrow, padding=2)
        logger.writer.add_image(self.tag, grid, engine.state.iteration)


class _ProtocolTextHandler(BaseHandler):
    """Logs each metric's protocol card as TensorBoard text when it first appears and whenever it changes."""

    def __init__(self, tag: str, trainer: Engine) -> None:
        self.tag = tag
        self.trainer = trainer
        self._logged: Dict[str, str] = {}

    def __call__(self, engine: Engine, logger: TensorboardLogger, event_name: Any) -> None:
        for name, card in published_protocols(engine).items():
            if self._logged.get(name) == card.digest:
                continue
            logger.writer.add_text(f"{self.tag}/{name}/protocol", card.to_markdown(), self.trainer.state.iteration)
            self._logged[name] = card.digest


def _named(items: Any, kind: str, default_prefix: str) -> Dict[str, Any]:
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    if isinstance(items, (list, tuple)):
        return {f"{default_prefix}{i}" if len(items) > 1 else default_prefix: item for i, item in enumerate(items)}
    return {default_prefix: items}


def attach_tensorboard(
    log_dir: str,
    trainer: Engine,
    *,
    evaluators: Optional[Mapping[str, Engine]] = None,
    optimizers: Optional[Union[Optimizer, Sequence[Optimizer], Mapping[str, Optimizer]]] = None,
    state_attributes: Sequence[str] = (),
    log_every: int = 1,
    generator: Optional[nn.Module] = None,
    fixed_noise: Optional[Tensor] = None,
    image_every: int = 500,
    image_range: str = "[-1,1]",
    image_shape: Optional[Tuple[int, ...]] = None,
    num_images: int = 64,
    generator_mode: str = "eval",
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
    - ``<evaluator name>/<metric>``: every metric of each evaluator whenever it completes a run;
    - ``<evaluator name>/<metric>/protocol`` (text): the protocol card of each metric that publishes one (the
      Inception Score and FID, :class:`~ignite_igan.metrics.Protocol`, from ``engine.state.protocols``), once,
      and again only if the card changes;
    - ``generated``: a ``make_grid`` of the generator's images from ``fixed_noise`` every ``image_every`` iterations
      and at the end of training;
    - optionally ``<model name>/grads_norm/<parameter>`` (``grad_norms``, every ``log_every`` iterations) and weight
      histograms (``weight_histograms``, every ``histogram_every`` epochs, with the epoch as step) for each model in
      ``models``.

    Args:
        log_dir: the TensorBoard directory.
        trainer: the training engine.
        evaluators: ``{name: engine}``; e.g. ``{"test": error_evaluator.engine, "samples": scorer.engine}``.
        optimizers: an optimizer, a list, or ``{name: optimizer}`` whose learning rates to log.
        state_attributes: names of ``trainer.state`` attributes to log.
        log_every: iterations between scalar logs.
        generator: the generator for the image grid (``None``: no images).
        fixed_noise: the noise for the grid; default ``generator.sample_noise(num_images)`` drawn once with seed 0.
        image_every: iterations between image grids.
        image_range: range of the generator's output: ``"[-1,1]"``, ``"[0,1]"`` or ``"uint8"``.
        image_shape: ``(C, H, W)`` to reshape flat outputs (e.g. ``(1, 28, 28)`` for MNIST).
        num_images: images in the default grid.
        generator_mode: the generator's mode while drawing the grid (``"eval"`` or ``"train"``); restored afterwards.
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
        ...                             generator=generator, image_every=500)  # doctest: +SKIP
        >>> trainer.run(loader, max_epochs=10); logger.close()  # doctest: +SKIP
    """
    for name, value in (("log_every", log_every), ("image_every", image_every), ("histogram_every", histogram_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    image_range = _normalize_range(image_range, argument="image_range")
    if isinstance(state_attributes, str):
        state_attributes = [state_attributes]
    models = dict(models or {})
    if (grad_norms or weight_histograms) and not models:
        raise ValueError("grad_norms and weight_histograms need models={name: module}")
    if generator is not None and fixed_noise is None:
        if not callable(getattr(generator, "sample_noise", None)):
            raise TypeError("pass fixed_noise: the generator has no sample_noise(n, generator=None, device=None)")
        fixed_noise = generator.sample_noise(
            num_images, generator=torch.Generator().manual_seed(0), device=torch.device("cpu")
        )

    if idist.get_rank() != 0:
        return InactiveLogger()

    logger = TensorboardLogger(log_dir=log_dir)
    every = Events.ITERATION_COMPLETED(every=log_every)
    logger.attach(
        trainer,
        log_handler=OutputHandler(
            tag="training",
            output_transform=output_scalars,
            global_step_transform=lambda engine, event: engine.state.iteration,
        ),
        event_name=every,
    )
    if state_attributes:
        logger.attach(trainer, _StateAttributesHandler(state_attributes, tag="training"), every)
    for name, optimizer in _named(optimizers, "optimizer", "optimizer").items():
        logger.attach(trainer, OptimizerParamsHandler(optimizer, param_name="lr", tag=name), every)
    for name, evaluator in (evaluators or {}).items():
        logger.attach(
            evaluator,
            log_handler=OutputHandler(
                tag=name,
                metric_names="all",
                global_step_transform=global_step_from_engine(trainer, Events.ITERATION_COMPLETED),
            ),
            event_name=Events.COMPLETED,
        )
        if protocols:
            logger.attach(evaluator, _ProtocolTextHandler(name, trainer), Events.COMPLETED)
    if generator is not None:
        images = _ImageGridHandler(
            generator,
            fixed_noise,
            tag="generated",
            image_range=image_range,
            image_shape=tuple(image_shape) if image_shape is not None else None,
            nrow=max(1, int(round(fixed_noise.shape[0] ** 0.5))),
            mode=generator_mode,
        )
        logger.attach(trainer, images, Events.ITERATION_COMPLETED(every=image_every) | Events.COMPLETED)
    for name, model in models.items():
        if grad_norms:
            logger.attach(trainer, GradsScalarHandler(model, reduction=torch.norm, tag=name), every)
        if weight_histograms:
            logger.attach(trainer, WeightsHistHandler(model, tag=name), Events.EPOCH_COMPLETED(every=histogram_every))
    return logger
