#!/usr/bin/env python
"""Sample quality with the paper's techniques (paper §3-4, Table 3), read top to bottom.

``python recipes/sample_quality.py EXPERIMENT [flags]``, or ``recipes/cifar10_samples.py`` /
``recipes/digits_samples.py``. The default is the paper's "our methods" column of the Inception-score table
(docs/reference.md, The paper's numbers): every technique except feature matching and historical averaging. One switch
per column:

====================  =======================================  =================================================
paper column          switch                                   what changes
====================  =======================================  =================================================
Our methods           (none)                                   minibatch features in D, VBN in G, one-sided label
                                                               smoothing, the K+1 discriminator trained with the
                                                               labels
-VBN+BN               ``--batch-norm``                         G normalizes with batch statistics (the released
                                                               code)
-L+HA                 ``--no-labels --historical-averaging``   no class labels (one real-vs-fake logit),
                                                               historical averaging on both players
-LS                   ``--no-label-smoothing``                 the real target is 1
-L                    ``--no-labels``                          no class labels
-MBF                  ``--no-minibatch-discrimination``        no minibatch layer in D
====================  =======================================  =================================================

The rest is the reference's CIFAR-10 minibatch-discrimination script (docs/reference.md, CIFAR-10 and SVHN, minibatch
discrimination): its discriminator and generator, the saturating minimax generator loss with 3 generator steps, the
reference's Adam (β1 = 0.5), lr 3e-4 with ``min(3 - epoch/400, 1)`` over 1200 epochs, batches of 100, data-dependent
init on 500 training images. The Table-3 code was never released; where the released code is silent: label-smoothing
target 0.9 (the paper's example), class-loss weight 2 (the CIFAR script's relative weights of ``CE + 0.5 (BCE_real +
BCE_fake)``), a VBN reference batch of 100 noise vectors drawn once with ``--seed``, historical-averaging weight 1e-2.

On digits (no download) the MNIST networks scaled to 8x8, with a minibatch layer on the last hidden layer, are
scored with :class:`~ignite_igan.models.DigitsClassifier` in place of Inception.
"""
import argparse
from dataclasses import dataclass, replace
from functools import partial
from types import SimpleNamespace
from typing import Callable, Optional, Sequence

import ignite.distributed as idist
import torch

from ignite_igan import models
from ignite_igan.data import attach_epoch_order, epoch_loader, init_batch
from ignite_igan.datasets import load_dataset_rank_zero_first
from ignite_igan.engines import create_gan_trainer
from ignite_igan.experiments import cli
from ignite_igan.experiments.runs import History, Run, attach_nonfinite_guard
from ignite_igan.experiments.scoring import attach_periodic_score, evaluation_event, inception_report, score_network
from ignite_igan.handlers import (
    DataDependentInitialization, OneSidedLabelSmoothing, VirtualBatchReference, attach_historical_averaging,
)
from ignite_igan.logging import ImageGridHandler, attach_tensorboard, log_run_hparams
from ignite_igan.metrics import GeneratorEvaluator, InceptionScore
from ignite_igan.optim import ReferenceAdam, linear_decay_scheduler
from ignite_igan.validation import check_choice

REAL_TARGET, CLASS_WEIGHT, HISTORICAL_WEIGHT, INIT_EXAMPLES = 0.9, 2.0, 1e-2, 500

#: The paper's Inception-table columns (docs/reference.md, The paper's numbers) as switches, their names in the
#: paper, and Table 3's scores (CIFAR-10, 50,000 samples; "our_methods", "no_labels_historical_averaging" and
#: "real" verified in secondary sources, the others from one summary only).
ABLATIONS = {"our_methods": [], "batch_norm": ["--batch-norm"],
             "no_labels_historical_averaging": ["--no-labels", "--historical-averaging"],
             "no_label_smoothing": ["--no-label-smoothing"], "no_labels": ["--no-labels"],
             "no_minibatch_features": ["--no-minibatch-discrimination"]}
PAPER_COLUMNS = {"our_methods": "Our methods", "batch_norm": "-VBN+BN", "no_labels_historical_averaging": "-L+HA",
                 "no_label_smoothing": "-LS", "no_labels": "-L", "no_minibatch_features": "-MBF"}
PAPER_INCEPTION_SCORES = {"real": "11.24 ± .12", "our_methods": "8.09 ± .07", "batch_norm": "7.54",
                          "no_labels_historical_averaging": "6.86 ± .06", "no_label_smoothing": "6.83",
                          "no_labels": "4.36", "no_minibatch_features": "3.87"}


@dataclass(frozen=True)
class Setting:
    """One experiment's defaults, the CIFAR-10 minibatch-discrimination script's (docs/reference.md, CIFAR-10 and SVHN,
    minibatch discrimination); rows state what differs."""

    dataset: str = "cifar10"
    generator: Callable = models.cifar10_generator  # normalization="virtual" or "batch" -> generator
    discriminator: Callable = models.cifar10_md_discriminator  # (num_classes, minibatch_kernels=B) -> discriminator
    minibatch_kernels: int = 100  # B of the minibatch layer (0 with --no-minibatch-discrimination)
    epochs: int = 1200
    lr: float = 3e-4
    decay_epochs: int = 400  # the reference's min(3 - epoch/400, 1): linear decay to 0 over the last 400 epochs
    init_generator: bool = True  # the generator's weight-normalized output layer gets the data-dependent init too
    threads: Optional[int] = None  # CPU threads by default (None: torch's choice)
    image_shape: tuple = (3, 32, 32)  # one sample, for TensorBoard's grids
    image_range: str = "[-1,1]"  # of the generator's output and of the data
    score_samples: int = 50_000  # samples of each Inception score (the paper's)
    score_every: int = 20  # epochs between scores
    paper: Optional[str] = "Inception score 8.09 ± .07 on 50,000 samples (real data 11.24 ± .12)"


CIFAR10 = Setting()
# The MNIST networks scaled to 8x8; 32 minibatch kernels for the 64 features (the reference's 100 for 192, in
# proportion); the CIFAR schedule's shape at the MNIST scripts' rate 3e-3 (720 steps fit a CPU minute); one thread
# for the MLPs; scored by the digits classifier on 5,000 samples.
DIGITS = replace(CIFAR10, dataset="digits", generator=models.digits_generator,
                 discriminator=models.digits_discriminator, minibatch_kernels=32, epochs=60, lr=3e-3, decay_epochs=20,
                 init_generator=False, threads=1, image_shape=(1, 8, 8), image_range="[0,1]", score_samples=5_000,
                 score_every=10, paper=None)
SETTINGS = {"cifar10_samples": CIFAR10, "digits_samples": DIGITS}


def build_parser(name: str) -> cli.RecipeArgumentParser:
    """The experiment's flags, their defaults its row of :data:`SETTINGS`; ``--help`` lists them by group."""
    s = SETTINGS[name]
    parser = cli.recipe_parser(
        f"{name}: sample quality with the techniques of Salimans et al. (2016)" + (f"; paper: {s.paper}" if s.paper
                                                                                  else ""),
        epochs=s.epochs, labels_per_class=None, data_dir=None if s.dataset == "digits" else "data",
        output_dir=f"runs/{name}", threads=s.threads,
        main_flags=["--batch-norm", "--no-label-smoothing", "--no-labels", "--historical-averaging",
                    "--no-minibatch-discrimination"],
    )
    if s.dataset != "digits":
        parser.group("data").add_argument(
            "--no-verify-checksums", dest="verify_checksums", action="store_false",
            help="skip torchvision's MD5 check of the data files (re-packed or cut-down copies)")
    t = parser.group("techniques", "without a switch: the paper's 'our methods'; each switch is a column of the "
                     "paper's table")
    t.add_argument("--batch-norm", action="store_true", help="-VBN+BN: batch norm instead of VBN in the generator")
    t.add_argument("--no-label-smoothing", action="store_true", help="-LS: real target 1")
    t.add_argument("--real-target", type=cli.fraction, default=REAL_TARGET, help="the smoothed real target")
    t.add_argument("--no-labels", action="store_true", help="-L: no class labels, a single real-vs-fake logit")
    t.add_argument("--class-weight", type=cli.nonnegative_float, default=CLASS_WEIGHT,
                   help="weight of the class loss next to BCE(real) + BCE(fake)")
    t.add_argument("--historical-averaging", action="store_true", help="+HA on both players' costs")
    t.add_argument("--historical-averaging-weight", "--historical-weight", type=cli.positive_float,
                   default=HISTORICAL_WEIGHT, help="λ of historical averaging (the paper gives none)")
    t.add_argument("--no-minibatch-discrimination", "--no-minibatch-features", dest="no_minibatch_features",
                   action="store_true", help="-MBF (minibatch features): no minibatch layer in D")
    g = parser.group("training")
    g.add_argument("--lr", type=cli.positive_float, default=s.lr, help="learning rate of D and G")
    g.add_argument("--lr-decay-epochs", "--decay-epochs", type=cli.nonnegative_int, default=s.decay_epochs,
                   help="decay the learning rate linearly to 0 over the last N epochs (0: constant)")
    g.add_argument("--generator-loss", choices=["minimax", "non_saturating"], default="minimax",
                   help="the reference's saturating E[log(1 - D(G(z)))] or the non-saturating -E[log D(G(z))]")
    g.add_argument("--generator-steps", type=cli.positive_int, default=3, help="generator steps per D step")
    g.add_argument("--vbn-reference-size", type=cli.positive_int, default=None,
                   help="noise vectors in the fixed VBN reference batch (default: the batch size)")
    g.add_argument("--init-examples", type=cli.init_examples, default=INIT_EXAMPLES,
                   help="examples of the data-dependent init batch")
    speed = parser.group("device and speed")
    speed.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off", help="mixed precision")
    speed.add_argument("--compile", action="store_true", help="torch.compile the models")
    output = parser.group("output and resume")
    output.add_argument("--log-every", type=cli.positive_int, default=10, help="iterations between TensorBoard scalars")
    output.add_argument("--image-every", type=cli.positive_int, default=500,
                        help="iterations between image grids in TensorBoard")
    cli.add_score_arguments(parser, every=s.score_every, samples=s.score_samples, digits=s.dataset == "digits")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace, s: Setting) -> None:
    """Flags that contradict each other, refused before anything runs."""
    pairs = [(args.no_label_smoothing and args.real_target != REAL_TARGET, "--real-target", "--no-label-smoothing"),
             (args.no_labels and args.class_weight != CLASS_WEIGHT, "--class-weight", "--no-labels"),
             (args.batch_norm and args.vbn_reference_size is not None, "--vbn-reference-size", "--batch-norm")]
    for conflict, flag, other in pairs:
        if conflict:
            parser.error(f"{flag} has no effect with {other}; give one of them")
    if args.historical_averaging_weight != HISTORICAL_WEIGHT and not args.historical_averaging:
        parser.error("--historical-averaging-weight needs --historical-averaging")
    if args.batch_size < 2:
        parser.error(f"--batch-size: expected at least 2 (batch statistics, minibatch features), got {args.batch_size}")
    if args.is_every and args.is_samples < args.is_splits:
        parser.error(f"--is-samples: expected at least --is-splits={args.is_splits} samples, got {args.is_samples}")
    if args.is_every and args.batch_norm and args.is_samples % args.batch_size == 1:
        parser.error(f"--is-samples: {args.is_samples} leaves a last batch of one sample, which batch norm cannot "
                     f"normalize; use a count that is not 1 more than a multiple of --batch-size={args.batch_size}")
    cli.check_data_dir(parser, args, s.dataset)
    weights = getattr(args, "inception_weights", None) or getattr(args, "is_classifier", None)
    if args.is_every and weights is not None and not weights.is_file():
        parser.error(f"{'--is-classifier' if s.dataset == 'digits' else '--inception-weights'}: no such file "
                     f"{str(weights)!r}")


def build(s: Setting, args: argparse.Namespace, train_set, device: torch.device) -> SimpleNamespace:
    """The data loader, networks, optimizers, trainer and technique handlers of one process, attached in the order
    they must run, not run; ``techniques`` is what the switches resolve to, and what the parts are built from."""
    techniques = {"minibatch_features": not args.no_minibatch_features,
                  "generator_normalization": "batch" if args.batch_norm else "virtual",
                  "real_target": 1.0 if args.no_label_smoothing else args.real_target, "labels": not args.no_labels,
                  "historical_averaging_weight": args.historical_averaging_weight if args.historical_averaging else 0.0}
    conditional = techniques["labels"]
    # Every epoch's order is a function of (seed, epoch); the batch size is global, each process takes its share.
    loader = epoch_loader(train_set, args.batch_size, args.seed, args.num_workers, pin_memory=device.type == "cuda")
    generator = s.generator(normalization=techniques["generator_normalization"]).to(device)
    discriminator = s.discriminator(10 if conditional else 1, minibatch_kernels=s.minibatch_kernels
                                    if techniques["minibatch_features"] else 0).to(device)
    d_optimizer = ReferenceAdam(discriminator.parameters(), lr=args.lr, betas=(0.5, 0.999))
    g_optimizer = ReferenceAdam(generator.parameters(), lr=args.lr, betas=(0.5, 0.999))
    handlers = {}
    if not args.batch_norm:  # attached first: a VBN generator cannot run without its reference batch
        handlers["vbn_reference"] = VirtualBatchReference(generator, size=args.vbn_reference_size or args.batch_size,
                                                          seed=args.seed)
    if s.init_generator:
        handlers["init_generator"] = DataDependentInitialization(
            generator, partial(generator.sample_noise, loader.batch_size, device=device))
    count = min(args.init_examples, len(train_set))
    handlers["init_discriminator"] = DataDependentInitialization(discriminator, init_batch(train_set, count, args.seed))
    if not args.no_label_smoothing:
        handlers["label_smoothing"] = OneSidedLabelSmoothing(args.real_target)

    # The library's GAN trainer: one discriminator step, then the generator's steps; the guard, the epoch order and
    # the handlers above (label smoothing last), then historical averaging and the schedule, which join ``handlers``.
    trainer = create_gan_trainer(
        idist.auto_model(generator, sync_bn=False), idist.auto_model(discriminator, sync_bn=False),
        d_optimizer, g_optimizer, generator_loss=args.generator_loss, generator_steps=args.generator_steps,
        conditional=conditional, class_weight=args.class_weight if conditional else 0.0,
        noise_fn=generator.sample_noise, device=device,
        amp=False if args.amp == "off" else args.amp, compile=args.compile,
    )
    attach_nonfinite_guard(trainer)
    attach_epoch_order(trainer, loader)  # a fresh iterator over this epoch's permutation, also with short epochs
    for handler in handlers.values():
        handler.attach(trainer)
    if args.historical_averaging:
        players = {"d": (discriminator, d_optimizer), "g": (generator, g_optimizer)}
        handlers.update(attach_historical_averaging(trainer, players, args.historical_averaging_weight))
    decay = min(args.lr_decay_epochs, args.epochs)
    if decay > 0:
        handlers["lr_schedule"] = linear_decay_scheduler([d_optimizer, g_optimizer], args.epochs, decay)
        handlers["lr_schedule"].attach(trainer)
    to_save = {"generator": generator, "discriminator": discriminator, "d_optimizer": d_optimizer,
               "g_optimizer": g_optimizer, "trainer": trainer,
               **{key: h for key, h in handlers.items() if hasattr(h, "state_dict")}}
    for scaler in ("d_scaler", "g_scaler"):  # float16 loss scaling (--amp fp16) resumes with its scale
        if getattr(trainer.state, scaler, None) is not None:
            to_save[scaler] = getattr(trainer.state, scaler)
    return SimpleNamespace(generator=generator, discriminator=discriminator, d_optimizer=d_optimizer,
                           g_optimizer=g_optimizer, trainer=trainer, loader=loader, conditional=conditional,
                           handlers=handlers, to_save=to_save, techniques=techniques,
                           epoch_length=min(len(loader), args.iterations_per_epoch or len(loader)))


def train(local_rank: int, args: argparse.Namespace, name: str) -> None:
    """One process's run: build, train (or resume), then report."""
    s = SETTINGS[name]
    with Run(args, name) as run:  # the folder's lock is released however the run ends
        device = run.start()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the models' seed stays intact
            weights = getattr(args, "is_classifier", None) or getattr(args, "inception_weights", None)
            extractor, network = (score_network(getattr(args, "is_network", "digits"), weights, device, s.image_range)
                                  if args.is_every else (None, None))
        root = getattr(args, "data_dir", None) or "data"
        options = {} if s.dataset == "digits" else {"verify_checksums": args.verify_checksums}
        train_set = load_dataset_rank_zero_first(s.dataset, root, train=True, download=getattr(args, "download", False),
                                                 **options)
        experiment = build(s, args, train_set, device)
        trainer, history, scorer = experiment.trainer, History(), None
        if extractor is not None:  # the score every --is-every epochs and after the last (once), checkpointed
            metric = InceptionScore(extractor, input_range=s.image_range, splits=args.is_splits, device=device)
            scorer = GeneratorEvaluator(experiment.generator, {"is": metric}, n_samples=args.is_samples,
                                        batch_size=args.batch_size, seed=args.is_seed, mode="eval")
            experiment.to_save["score_history"] = attach_periodic_score(trainer, scorer, args.is_every, history)
            trainer.add_event_handler(evaluation_event(args.is_every),  # for the progress bar or line
                                      lambda engine: setattr(engine.state, "inception_score", history.last["is"]))
        # TensorBoard: the outputs, the scores, the learning rates, the techniques' state and image grids.
        logger = attach_tensorboard(
            str(run.tensorboard_dir), trainer, evaluators={"samples": scorer.engine} if scorer else None,
            optimizers={"discriminator": experiment.d_optimizer, "generator": experiment.g_optimizer},
            state_attributes=["real_target", "historical_penalty_d", "historical_penalty_g"], log_every=args.log_every,
            images=ImageGridHandler(experiment.generator, image_range=s.image_range, image_shape=s.image_shape),
            image_every=args.image_every,
        )
        outputs = ["loss_discriminator", "loss_generator", "D_x", "D_G_z"] + (["loss_labeled", "train_error"]
                                                                              if experiment.conditional else [])
        # Without a terminal, a line per score; a run that is not scored, a line at about every tenth of it.
        line_every = args.is_every if scorer is not None else max(1, round(args.epochs / 10))
        run.attach(trainer, experiment.to_save, outputs, state_attributes=["inception_score"],
                   progress_event=evaluation_event(line_every))
        with logger:  # closed however training ends
            if not run.training_done:
                trainer.run(experiment.loader, max_epochs=args.epochs, epoch_length=experiment.epoch_length)
        if not run.training_done:  # stopped before its last epoch (engine.terminate()): --resume continues it
            return  # (leaving the ``with`` releases the folder's lock)
        report(s, args, name, run, experiment, history, scorer, network)


def report(s: Setting, args: argparse.Namespace, name: str, run: Run, experiment: SimpleNamespace, history: History,
           scorer, network) -> None:
    """``summary.json``, the HParams row and the console's lines: iterations, the last score and its protocol."""
    trainer = experiment.trainer
    metrics = {"iterations": trainer.state.iteration, "epochs": trainer.state.epoch,
               "final_train_outputs": trainer.state.output, "techniques": experiment.techniques}
    headline = [f"{name}: {metrics['iterations']:,} iterations ({metrics['epochs']} epochs)"]
    final = {"iterations": metrics["iterations"]}
    if history.last is not None:  # the protocol card travels with the number (summary, TensorBoard, here)
        score, lines = inception_report(history, scorer, args.is_samples, args.is_splits, network)
        metrics.update(score)
        final.update(inception_score=score["inception_score"], inception_score_std=score["inception_score_std"])
        headline += lines
    headline.append(f"  paper        {s.paper or 'no number for this setting'}")
    log_run_hparams(run, final, step=metrics["iterations"], hparams=experiment.techniques,
                    defaults=vars(build_parser(name).parse_args([])))
    run.finish(metrics, extra={"paper": s.paper}, headline=headline)


def main(name: str, argv: Optional[Sequence[str]] = None) -> None:
    check_choice("name", name, SETTINGS)
    parser = build_parser(name)
    args = cli.parse_args(parser, argv)
    check_args(parser, args, SETTINGS[name])
    cli.launch_recipe(parser, args, train, name)


if __name__ == "__main__":
    from semi_supervised import experiment_command  # the EXPERIMENT argument of both files of several experiments

    experiment_command({key: s.dataset + (f"; paper: {s.paper}" if s.paper else "") for key, s in SETTINGS.items()},
                       main, width=16)
