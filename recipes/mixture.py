#!/usr/bin/env python
"""A GAN on the 2-D ring of 8 or grid of 25 Gaussians with a switch for each technique of the paper, top to bottom.

    python recipes/mixture.py --mixture ring                                # vanilla GAN
    python recipes/mixture.py --mixture grid --minibatch-discrimination
    python recipes/mixture.py --mixture ring --all-techniques --output-dir runs/ring-all

The data (:mod:`ignite_igan.metrics.mode_coverage`) are sampled afresh for every batch, so an epoch is
``--iterations-per-epoch`` iterations. The networks, the same in every setting, work in units of the mixture's
extent (``--data-scale``: ring 2, grid 4; :class:`~ignite_igan.models.MixtureGenerator`,
:class:`~ignite_igan.models.MixtureDiscriminator`). The minibatch layer keeps its init-time scale: the reference's
data-dependent init (``--minibatch-init data``) sets the kernels' length to the within-mode spread and blinds the
layer to a collapse a few modes wide (``batch_mean``: :func:`~ignite_igan.nn.minibatch_batch_mean_init`). G
minimizes the non-saturating ``-log D(G(z))`` unless feature matching is on; both players use the reference's Adam,
decaying linearly to 0 over the last half of the run. Mode coverage of 2,500 samples from fixed noise is scored
after every epoch; ``--output-dir`` gets ``samples.png``, TensorBoard logs, checkpoints and ``summary.json``. Every
setting's numbers: ``benchmarks/mode_coverage.py``, ``docs/RESULTS.md``.
"""
import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events, State
from torch import Tensor, nn

from ignite_igan.data import MixtureStream
from ignite_igan.engines import create_gan_trainer
from ignite_igan.experiments import cli
from ignite_igan.experiments.runs import Run, attach_nonfinite_guard
from ignite_igan.handlers import DataDependentInitialization, OneSidedLabelSmoothing, attach_historical_averaging
from ignite_igan.logging import attach_tensorboard, hparams_from_config, log_figure, log_run_hparams
from ignite_igan.metrics.mode_coverage import GaussianMixture2D, ModeCoverage, benchmark_mixture, mode_coverage
from ignite_igan.metrics.sampling import GeneratorEvaluator, generate_samples
from ignite_igan.models import MixtureDiscriminator, MixtureGenerator
from ignite_igan.optim import ReferenceAdam, linear_decay_scheduler
from ignite_igan.validation import check_fields, check_instance

MIXTURES = ("ring", "grid")
MINIBATCH_INITS = ("none", "data", "batch_mean")
GENERATOR_LOSSES = ("non_saturating", "minimax")
SWITCHES = ("minibatch_discrimination", "feature_matching", "label_smoothing", "historical_averaging")
OUTPUTS = ["loss_discriminator", "loss_generator", "D_x", "D_G_z"]


@dataclasses.dataclass(frozen=True)
class MixtureConfig:
    """Everything that defines a run (each field is the flag of the same name); checked when built. A study's
    settings state what differs: ``dataclasses.replace(MixtureConfig(), minibatch_discrimination=True)``."""

    mixture: str = "ring"  # ring of 8 or 5x5 grid of 25 Gaussians
    minibatch_discrimination: bool = False  # the four techniques' switches, all off: a vanilla GAN
    feature_matching: bool = False
    label_smoothing: bool = False
    historical_averaging: bool = False
    generator_loss: str = "non_saturating"  # ignored with feature_matching (which is the generator's loss)
    generator_steps: int = 1
    real_target: float = 0.9  # of one-sided label smoothing (the paper's example)
    historical_weight: float = 1e-2  # λ of historical averaging (the paper gives none)
    minibatch_kernels: int = 5  # B kernels of C dimensions each
    minibatch_kernel_dim: int = 3
    minibatch_init: str = "none"  # the layer's init-time scale ("data", the reference's init, blinds it: above)
    init_samples: int = 500  # real examples of the minibatch init ("data" or "batch_mean")
    data_scale: Optional[float] = None  # None: the mixture's largest absolute centre coordinate (see data_scale)
    z_dim: int = 16
    generator_hidden: int = 128  # G: 3 hidden layers of 128 units; D: 2 of 128
    generator_layers: int = 3
    discriminator_hidden: int = 128
    discriminator_layers: int = 2
    lr: float = 1e-3  # the reference's Adam (β1 = 0.5) for both players
    decay_epochs: int = 10  # the rates decay linearly to 0 over the last half of the run (the flag: epochs // 2)
    batch_size: int = 100  # at least 2 (the check below), in every setting: minibatch features compare examples
    epochs: int = 20
    iterations_per_epoch: int = 500  # the data are sampled afresh for every batch: this defines an epoch
    eval_samples: int = 2500  # scored after every epoch, from fixed noise
    eval_seed: int = 0
    seed: int = 1  # of the real data; the models and the noise use torch's global generator (seed it first)

    def __post_init__(self) -> None:
        check_fields(self, minimums=dict(init_samples=2, batch_size=2, decay_epochs=0, eval_seed=0, seed=0),
                     choices=dict(mixture=MIXTURES, generator_loss=GENERATOR_LOSSES, minibatch_init=MINIBATCH_INITS),
                     ranges=dict(real_target=(0.0, 1.0, False), historical_weight=(0.0, math.inf, True),
                                 lr=(0.0, math.inf, False), data_scale=(0.0, math.inf, False)))  # the other ints: >= 1
        # The rates decay over the last epochs of the run. Worded as the flags: the command line reports it as is.
        if self.decay_epochs > self.epochs:
            raise ValueError(f"--lr-decay-epochs must be <= --epochs ({self.epochs}), got {self.decay_epochs}")

    @property
    def techniques(self) -> list:
        """The names of the switches that are on."""
        return [name for name in SWITCHES if getattr(self, name)]


def data_scale(config: MixtureConfig, mixture: GaussianMixture2D) -> float:
    """``config.data_scale``, or by default the mixture's largest absolute centre coordinate (ring 2, grid 4)."""
    return float(config.data_scale) if config.data_scale is not None else float(mixture.centers.abs().max())


@dataclasses.dataclass
class MixtureExperiment:
    """The built parts of one run; ``to_save`` is what a checkpoint holds to resume exactly."""

    config: MixtureConfig
    mixture: GaussianMixture2D
    generator: nn.Module  # DistributedDataParallel-wrapped under several processes, like the discriminator
    discriminator: nn.Module
    d_optimizer: torch.optim.Optimizer
    g_optimizer: torch.optim.Optimizer
    trainer: Engine
    data: MixtureStream
    handlers: Dict[str, Any]
    to_save: Dict[str, Any]

    def run(self, epochs: Optional[int] = None) -> State:
        """Trains to ``epochs`` (default ``config.epochs``) epochs of ``config.iterations_per_epoch`` iterations."""
        epochs = self.config.epochs if epochs is None else epochs
        return self.trainer.run(self.data, max_epochs=epochs, epoch_length=self.config.iterations_per_epoch)

    def samples(self, num_samples: Optional[int] = None, seed: Optional[int] = None) -> Tensor:
        """Generated points ``(N, 2)`` on the CPU; the defaults are the per-epoch evaluation's samples."""
        return generate_samples(self.generator, self.config.eval_samples if num_samples is None else num_samples,
                                self.config.batch_size, self.config.eval_seed if seed is None else seed)

    def evaluate(self, num_samples: Optional[int] = None, seed: Optional[int] = None) -> Dict[str, Any]:
        """Mode coverage of :meth:`samples`, with the count of every mode."""
        return mode_coverage(self.samples(num_samples, seed), self.mixture.centers, self.mixture.std)

    def evaluator(self) -> GeneratorEvaluator:
        """The :class:`ModeCoverage` metric as ``"coverage"`` on the samples of :meth:`samples`."""
        return GeneratorEvaluator(getattr(self.generator, "module", self.generator),
                                  {"coverage": ModeCoverage(self.mixture.centers, self.mixture.std)},
                                  n_samples=self.config.eval_samples, batch_size=self.config.batch_size,
                                  seed=self.config.eval_seed)


def create_experiment(config: MixtureConfig, device: Optional[Union[str, torch.device]] = None) -> MixtureExperiment:
    """The networks, optimizers, data and trainer of ``config``, with the technique handlers attached. Seed torch
    first: the generator is built first, so a seed gives every setting the same generator (and data)."""
    check_instance("config", config, MixtureConfig, "a MixtureConfig")
    device = idist.device() if device is None else torch.device(device)
    mixture = benchmark_mixture(config.mixture)
    scale = data_scale(config, mixture)
    generator = MixtureGenerator(config.z_dim, config.generator_hidden, config.generator_layers, scale).to(device)
    kernels = config.minibatch_kernels if config.minibatch_discrimination else 0
    discriminator = MixtureDiscriminator(config.discriminator_hidden, config.discriminator_layers, kernels,
                                         config.minibatch_kernel_dim, scale).to(device)
    if idist.get_world_size() > 1:
        generator, discriminator = idist.auto_model(generator), idist.auto_model(discriminator)
    d_optimizer = ReferenceAdam(discriminator.parameters(), lr=config.lr, betas=(0.5, 0.999))
    g_optimizer = ReferenceAdam(generator.parameters(), lr=config.lr, betas=(0.5, 0.999))
    trainer = create_gan_trainer(
        generator, discriminator, d_optimizer, g_optimizer,
        generator_loss="feature_matching" if config.feature_matching else config.generator_loss,
        feature_matching_distance="squared_l2", generator_steps=config.generator_steps, device=device,
    )
    data = MixtureStream(mixture, config.batch_size, config.seed, rank=idist.get_rank())  # each process its own

    handlers: Dict[str, Any] = {}
    if config.minibatch_discrimination and config.minibatch_init != "none":
        init_x = next(iter(MixtureStream(mixture, config.init_samples, config.seed, stream=2)))
        if config.minibatch_init == "data":  # the reference's init, when training starts
            handlers["minibatch_init"] = DataDependentInitialization(discriminator, init_x)
            handlers["minibatch_init"].attach(trainer)
        else:  # mean pairwise distance 2 on what feeds the layer, now
            getattr(discriminator, "module", discriminator).init_minibatch_batch_mean(init_x.to(device))
    if config.label_smoothing:
        handlers["label_smoothing"] = OneSidedLabelSmoothing(real_target=config.real_target)
        handlers["label_smoothing"].attach(trainer)
    if config.historical_averaging:
        handlers.update(attach_historical_averaging(
            trainer, {"d": (discriminator, d_optimizer), "g": (generator, g_optimizer)}, config.historical_weight))
    if config.decay_epochs:
        linear_decay_scheduler([d_optimizer, g_optimizer], config.epochs, config.decay_epochs).attach(trainer)
    to_save = {"generator": generator, "discriminator": discriminator, "d_optimizer": d_optimizer,
               "g_optimizer": g_optimizer, "trainer": trainer, "data": data, **handlers}
    return MixtureExperiment(config, mixture, generator, discriminator, d_optimizer, g_optimizer, trainer, data,
                             handlers, to_save)


def describe(config: MixtureConfig, result: Dict[str, Any], separator: str) -> str:
    return (f"{config.mixture}: {', '.join(config.techniques) or 'vanilla'}{separator}modes {result['modes']} (any "
            f"{result['modes_any']}), high quality {100 * result['high_quality']:.1f}%, KL {result['kl']:.3f}")


def build_parser() -> cli.RecipeArgumentParser:
    """The recipe's flags, their defaults :class:`MixtureConfig`'s; ``--help`` lists them by group."""
    d = MixtureConfig()
    switches = ["--" + name.replace("_", "-") for name in SWITCHES]
    parser = cli.recipe_parser(
        "mixture: a GAN on a 2-D mixture of Gaussians, with a switch for each technique", epochs=d.epochs,
        labels_per_class=None, data_dir=None, batch_size=d.batch_size, output_dir="runs/mixture", threads=1,
        iterations_per_epoch=d.iterations_per_epoch, iterations_per_epoch_help="iterations per epoch (the data are "
        "sampled afresh for every batch, so this defines an epoch)",  # the MLPs run fastest on one thread
        main_flags=["--mixture"] + switches + ["--all-techniques"])
    parser.group("data").add_argument("--mixture", choices=MIXTURES, default=d.mixture,
                                      help="ring of 8 or 5x5 grid of 25 Gaussians")
    techniques = parser.group("techniques", "without a switch: a vanilla GAN")
    for flag, text in zip(switches, ("minibatch layer in the discriminator", "train the generator by feature matching",
                                     "one-sided label smoothing (see --real-target)", "historical averaging of both")):
        techniques.add_argument(flag, action="store_true", help=text)
    techniques.add_argument("--all-techniques", action="store_true", help="all four switches above")
    techniques.add_argument("--real-target", type=cli.fraction, default=d.real_target,
                            help="smoothed real target, below 1")
    techniques.add_argument("--historical-averaging-weight", "--historical-weight", dest="historical_weight",
                            type=cli.nonnegative_float, default=d.historical_weight,
                            help="λ of historical averaging (the paper gives none)")
    techniques.add_argument("--minibatch-init", choices=MINIBATCH_INITS, default=d.minibatch_init,
                            help="'none': the layer's init-time scale; 'data': the reference's init on --init-examples "
                            "real examples; 'batch_mean': mean pairwise distance 2")
    techniques.add_argument("--init-examples", "--init-samples", dest="init_samples", type=cli.init_examples,
                            default=d.init_samples, help="real examples of the --minibatch-init batch")
    networks = parser.group("networks")
    for name, text in (("minibatch_kernels", "B: minibatch kernels"), ("minibatch_kernel_dim", "C: dimensions per "
                       "kernel"), ("z_dim", "generator noise dimension"), ("generator_hidden", "G's hidden units"),
                       ("generator_layers", "G's hidden layers"), ("discriminator_hidden", "D's hidden units"),
                       ("discriminator_layers", "D's hidden layers")):
        networks.add_argument("--" + name.replace("_", "-"), type=cli.positive_int, default=getattr(d, name), help=text)
    networks.add_argument("--data-scale", type=cli.positive_float, default=d.data_scale,
                          help="networks work in units of this (D sees x/scale, G emits scale*output; default: the "
                          "mixture's extent)")
    training = parser.group("training")
    training.add_argument("--lr", type=cli.positive_float, default=d.lr, help="Adam learning rate of both players")
    training.add_argument("--lr-decay-epochs", "--decay-epochs", dest="decay_epochs", type=cli.nonnegative_int,
                          default=None, help="decay the learning rates linearly to 0 over the last N epochs (default: "
                          "half of --epochs)")
    training.add_argument("--generator-loss", choices=GENERATOR_LOSSES, default=None,
                          help=f"the generator's loss when feature matching is off (default: {d.generator_loss})")
    training.add_argument("--generator-steps", type=cli.positive_int, default=d.generator_steps,
                          help="G updates per D update")
    evaluation = parser.group("evaluation")
    evaluation.add_argument("--eval-samples", type=cli.positive_int, default=d.eval_samples,
                            help="samples scored per epoch")
    evaluation.add_argument("--eval-seed", type=cli.nonnegative_int, default=d.eval_seed,
                            help="seed of the evaluation noise")
    return parser


def config_from_args(args: argparse.Namespace) -> MixtureConfig:
    """The :class:`MixtureConfig` of parsed flags; a ValueError or TypeError names a bad or conflicting flag."""
    switches = {name: getattr(args, name) or args.all_techniques for name in SWITCHES}
    if switches["feature_matching"] and args.generator_loss is not None:
        raise ValueError(f"--generator-loss {args.generator_loss} conflicts with --feature-matching: feature matching "
                         "is the generator's loss; drop one of them")
    decay_epochs = args.epochs // 2 if args.decay_epochs is None else args.decay_epochs
    return cli.dataclass_from_args(MixtureConfig, args, **switches, decay_epochs=decay_epochs,
                                   generator_loss=args.generator_loss or MixtureConfig.generator_loss)


def train(local_rank: int, args: argparse.Namespace, config: MixtureConfig) -> None:
    """One process's run of ``config`` (:func:`config_from_args` of ``args``): build, train (or resume), then report:
    score, plot, ``summary.json``, the HParams row and the console's line."""
    with Run(args, "mixture") as run:  # the folder's lock is released however the run ends
        device = run.start()  # seeds torch with --seed + rank
        experiment = create_experiment(config, device=device)
        trainer = experiment.trainer
        attach_nonfinite_guard(trainer)  # no handler of create_experiment runs at ITERATION_COMPLETED

        # Mode coverage of the same samples after every epoch, before the checkpoint (a resume re-scores nothing).
        evaluator = experiment.evaluator()
        evaluator.attach(trainer, Events.EPOCH_COMPLETED, state_attributes={"modes": "coverage"})
        logger = attach_tensorboard(  # an attribute that is not set (its technique is off) is not logged
            str(run.tensorboard_dir), trainer, evaluators={"coverage": evaluator.engine}, log_every=10,
            optimizers={"d_optimizer": experiment.d_optimizer, "g_optimizer": experiment.g_optimizer},
            state_attributes=["real_target", "historical_penalty_d", "historical_penalty_g"],
        )
        run.attach(trainer, experiment.to_save, OUTPUTS, state_attributes=["modes"])
        with logger:  # closed however training ends
            if not run.training_done:
                experiment.run(config.epochs)
            if not run.training_done:  # stopped before its last epoch (engine.terminate()): --resume continues it
                return
            result = experiment.evaluate()
            plot_path = None
            if idist.get_rank() == 0:
                figure = experiment.mixture.plot(experiment.samples(), title=describe(config, result, "\n"))
                plot_path = log_figure(logger, "samples", figure, trainer.state.iteration,  # and closes it
                                       path=Path(args.output_dir) / "samples.png")
        iterations = trainer.state.iteration
        final = {key: result[key] for key in ("modes", "modes_any", "high_quality", "kl")}
        log_run_hparams(run, {**final, "iterations": iterations}, step=iterations,  # the resolved switches too
                        hparams=hparams_from_config(dataclasses.asdict(config)),
                        defaults=vars(build_parser().parse_args([])))
        run.finish({**final, "counts": result["counts"], "min_count": result["min_count"]},
                   extra={"techniques": config.techniques, "iterations": iterations, "scatter_plot": plot_path},
                   headline=[f"mixture {describe(config, result, ': ')}"])


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    try:
        config = config_from_args(args)  # every check before any process starts
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    cli.launch_recipe(parser, args, train, config)


if __name__ == "__main__":
    main(sys.argv[1:])
