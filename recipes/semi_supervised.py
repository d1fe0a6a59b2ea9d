#!/usr/bin/env python
"""Semi-supervised classification with a GAN (paper §5), the reference scripts' settings, read top to bottom.

``python recipes/semi_supervised.py EXPERIMENT [flags]``, or the thin scripts ``recipes/<EXPERIMENT>.py``:

=====================  =======================================================================  ==================
experiment             the reference script (docs/reference.md, The experiment scripts) / data  paper
=====================  =======================================================================  ==================
``mnist_ssl``          ``train_mnist_feature_matching.py``                                      93 ± 6.5 errors
``fashion_mnist_ssl``  the MNIST script's setting on Fashion-MNIST                              —
``digits_ssl``         the MNIST setting scaled to scikit-learn's 8x8 digits (no download)      —
``cifar10_ssl``        ``train_cifar_feature_matching.py``                                      18.63 ± 2.32 %
``svhn_ssl``           ``train_svhn_feature_matching.py``                                       8.11 ± 1.3 %
``cifar10_ssl_md``     ``train_cifar_minibatch_discrimination.py``                              —
``svhn_ssl_md``        ``train_svhn_minibatch_discrimination.py``                               —
=====================  =======================================================================  ==================

One run: the data set and a balanced labeled subset (``--seed-data``); the networks; the reference's Adam for both
players; the trainer (one discriminator step on labeled, unlabeled and generated batches, then the generator's
feature-matching or minimax steps); the data-dependent init; the evaluation average of the discriminator; the
learning-rate schedule; the averaged discriminator's test error after every ``--eval-every`` epochs and after the
last; TensorBoard; checkpoints and resume (:class:`ignite_igan.experiments.runs.Run`); with ``--baseline`` the same
discriminator trained on the labeled images alone for as many steps; ``summary.json`` and a short report.
"""
import argparse
import sys
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Mapping, Optional, Sequence

import ignite.distributed as idist
import torch
import torch.nn.functional as torch_F
from ignite.engine import Events, create_supervised_trainer
from ignite.handlers.tensorboard_logger import TensorboardLogger
from ignite.handlers.utils import global_step_from_engine
from torch.utils.data import DataLoader, RandomSampler, Subset

from ignite_igan import models
from ignite_igan.data import SemiSupervisedLoader, balanced_labeled_subset, dataset_labels, init_batch, unlabeled_pool
from ignite_igan.datasets import load_dataset_rank_zero_first
from ignite_igan.device_data import DeviceSemiSupervisedLoader, fits_on_device
from ignite_igan.engines import create_semi_supervised_trainer, outputs_on_device, outputs_to_floats
from ignite_igan.experiments import cli
from ignite_igan.experiments.runs import Run, attach_nonfinite_guard, attach_progress
from ignite_igan.experiments.scoring import evaluation_event
from ignite_igan.experiments.seeds import check_seed_flags, parse_seeds, seeds_command
from ignite_igan.handlers import DataDependentInitialization, EvaluationAveraging
from ignite_igan.logging import ImageGridHandler, InactiveLogger, attach_tensorboard, log_charts, log_run_hparams
from ignite_igan.metrics import ErrorEvaluator
from ignite_igan.optim import ReferenceAdam, linear_decay_scheduler
from ignite_igan.validation import check_choice


@dataclass(frozen=True)
class Setting:
    """One reference script's configuration (docs/reference.md, The experiment scripts): the defaults of its recipe's
    flags and its networks.

    The defaults are the MNIST script's (``train_mnist_feature_matching.py``); every other row states what differs.
    """

    dataset: str = "mnist"
    generator: Callable = models.mnist_generator
    discriminator: Callable = models.mnist_discriminator
    epochs: int = 300
    labels_per_class: int = 10
    lr: float = 3e-3
    decay_epochs: int = 0  # linear decay to 0 over the last N epochs (0: constant)
    generator_loss: str = "feature_matching"  # or the minibatch-discrimination scripts' minimax loss (3 G steps)
    fm_distance: str = "mean_squared"  # of feature matching: the code's mean squared (MNIST), mean absolute (others)
    init_on_labeled: bool = False  # D's init batch: 500 of all (unlabeled) images; CIFAR/SVHN: 500 labeled ones
    init_generator: bool = False  # CIFAR/SVHN: the generator's weight-normalized output layer is initialized too
    ema_rate: float = 1e-4  # weight of the new weights in each update of the evaluation average
    threads: Optional[int] = 1  # CPU threads by default: 1 for the MLPs (see --help), None (torch's) for convnets
    image_shape: tuple = (1, 28, 28)  # one sample, for TensorBoard's grids
    image_range: str = "[0,1]"  # of the generator's output
    baseline: bool = False  # also train D on the labeled images alone (--baseline)
    paper: Optional[str] = "93 ± 6.5 test errors of 10,000 with 100 labels"


MNIST = Setting()
FASHION_MNIST = replace(MNIST, dataset="fashion_mnist", paper=None)  # the MNIST script on Fashion-MNIST
# 1,297 training images make 12 steps per epoch; ~2,400 steps are a quarter of the 1e-4 average's time constant, so
# the average uses 1e-3. At this size the labeled-only baseline, the GAN's comparison, is cheap: on by default.
DIGITS = replace(MNIST, dataset="digits", generator=models.digits_generator, discriminator=models.digits_discriminator,
                 epochs=200, ema_rate=1e-3, image_shape=(1, 8, 8), baseline=True, paper=None)
# train_cifar_feature_matching.py: convnets, 4,000 labels, a slower rate decayed over the last third, mean absolute
# feature matching, the init on labeled images and of the generator's output layer.
CIFAR10 = replace(MNIST, dataset="cifar10", generator=models.cifar10_generator,
                  discriminator=models.cifar10_fm_discriminator, epochs=1200, labels_per_class=400, lr=3e-4,
                  decay_epochs=400, fm_distance="mean_absolute", init_on_labeled=True, init_generator=True,
                  threads=None, image_shape=(3, 32, 32), image_range="[-1,1]",
                  paper="18.63 ± 2.32 % test error with 4,000 labels")
# train_svhn_feature_matching.py: the CIFAR script with SVHN's networks, 1,000 labels, 900 epochs.
SVHN = replace(CIFAR10, dataset="svhn", generator=models.svhn_generator, discriminator=models.svhn_fm_discriminator,
               epochs=900, labels_per_class=100, decay_epochs=300, paper="8.11 ± 1.3 % test error with 1,000 labels")
# The minibatch-discrimination scripts: their discriminators and the minimax generator loss; the paper gives no number.
CIFAR10_MD = replace(CIFAR10, discriminator=models.cifar10_md_discriminator, generator_loss="minimax", paper=None)
SVHN_MD = replace(SVHN, discriminator=models.svhn_md_discriminator, generator_loss="minimax", paper=None)
SETTINGS = {"mnist_ssl": MNIST, "fashion_mnist_ssl": FASHION_MNIST, "digits_ssl": DIGITS, "cifar10_ssl": CIFAR10,
            "svhn_ssl": SVHN, "cifar10_ssl_md": CIFAR10_MD, "svhn_ssl_md": SVHN_MD}
INIT_EXAMPLES, EVAL_BATCH = 500, 100  # docs/reference.md, Data-dependent initialization; evaluated in 100s
OUTPUTS = ["loss_labeled", "loss_unlabeled", "loss_generator", "train_error"]
# The test errors' TensorBoard tags, drawn on one chart: the evaluation-averaged discriminator (the reported one), the
# discriminator being trained, and the labeled-only baseline's averaged copy (--baseline).
TEST_ERROR_CHART = "test error"
TEST_ERROR_TAGS = ["test/error_averaged", "test/error_live", "test/error_baseline"]


def build_parser(name: str) -> cli.RecipeArgumentParser:
    """The experiment's flags, their defaults its row of :data:`SETTINGS`; ``--help`` lists them by group."""
    s = SETTINGS[name]
    parser = cli.recipe_parser(
        f"{name}: semi-supervised {s.dataset} with a GAN" + (f"; paper: {s.paper}" if s.paper else ""),
        epochs=s.epochs, labels_per_class=s.labels_per_class, output_dir=f"runs/{name}", threads=s.threads,
        data_dir=None if s.dataset == "digits" else "data", main_flags=["--baseline", "--seeds"],
    )
    data, training, evaluation = parser.group("data"), parser.group("training"), parser.group("evaluation")
    if s.dataset in ("cifar10", "svhn"):
        data.add_argument("--no-verify-checksums", action="store_true",
                          help="read the data files without torchvision's MD5 check (re-packed or cut-down copies)")
    data.add_argument("--unlabeled-examples", type=cli.positive_int, default=None,
                      help="a pool of N training images as the unlabeled data (labeled ones included, chosen with "
                      "--seed-data; default: the whole training set)")
    training.add_argument("--lr", type=cli.positive_float, default=s.lr, help="learning rate of D and G")
    training.add_argument("--lr-decay-epochs", "--decay-epochs", type=cli.nonnegative_int, default=s.decay_epochs,
                          help="decay the learning rate linearly to 0 over the last N epochs (0: constant)")
    training.add_argument("--generator-loss", choices=["feature_matching", "minimax"], default=s.generator_loss,
                          help="feature matching, or the minibatch-discrimination scripts' minimax loss (3 G steps)")
    training.add_argument("--feature-matching-distance", choices=["squared_l2", "mean_squared", "mean_absolute"],
                          default=s.fm_distance, help="the paper's squared L2, or the code's mean squared (MNIST) / "
                          "mean absolute (CIFAR, SVHN)")
    training.add_argument("--unlabeled-weight", type=cli.positive_float, default=1.0,
                          help="weight of the unlabeled loss")
    training.add_argument("--init-examples", type=cli.init_examples, default=INIT_EXAMPLES,
                          help="examples of the data-dependent init batch")
    evaluation.add_argument("--eval-every", type=cli.positive_int, default=1, help="epochs between test evaluations")
    evaluation.add_argument("--ema-rate", type=cli.ema_rate, default=s.ema_rate,
                            help="weight of the new weights in each update of the evaluation average (the reference: "
                            "1e-4)")
    evaluation.add_argument("--ema-reference", "--ema-reference-start", action="store_true",
                            help="the reference's average exactly: started at zero, no bias correction, averaging the "
                            "weights from before each step (early test errors are poor by construction)")
    evaluation.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=s.baseline,
                            help="also train the discriminator on the labeled images alone, as many steps, scored on "
                            "the test set at the GAN's evaluations (a curve in TensorBoard), and report its error")
    seeds = parser.group("several seeds")
    seeds.add_argument("--seeds", type=parse_seeds, default=None, metavar="SEEDS",
                       help="train several seeds (e.g. 1-10 or 1,3,5): seed k runs as --seed k --seed-data k alone "
                       "would, in <output-dir>/seed<k>; prints each seed's test error and the mean ± std")
    seeds.add_argument("--jobs", type=cli.positive_int, default=None,
                       help="with --seeds: processes at a time (default: one per seed, up to one per CPU core)")
    parser.group("output and resume").add_argument("--image-every", type=cli.positive_int, default=1000,
                                                   help="iterations between image grids in TensorBoard")
    speed = parser.group("device and speed")
    speed.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off", help="mixed precision")
    speed.add_argument("--compile", action="store_true", help="torch.compile the models")
    speed.add_argument("--cuda-graph", action="store_true",
                       help="capture the whole iteration (both players, both optimizers, the evaluation average) in "
                       "a CUDA graph: the same arithmetic to float rounding, one launch per iteration (CUDA only)")
    speed.add_argument("--device-data", action=argparse.BooleanOptionalAction, default=None,
                       help="keep the training set on the device and draw the batches there (same batches as the "
                       "host loader; default: where it takes at most a quarter of the free memory)")
    return parser


def test_loader(test_set, args) -> DataLoader:
    # Each process scores every world_size-th image, without padding: the summed error counts are exact.
    shard = Subset(test_set, range(idist.get_rank(), len(test_set), idist.get_world_size()))
    # A DataLoader without a generator seeds each iteration from the global RNG, which the models' noise comes
    # from: evaluating would then shift the training run. Its own generator keeps --eval-every out of training.
    return DataLoader(shard, batch_size=EVAL_BATCH, shuffle=False, num_workers=args.num_workers,
                      generator=torch.Generator().manual_seed(0))


def load_data(s: Setting, args: argparse.Namespace) -> SimpleNamespace:
    """The training and test sets, the balanced labeled subset and the unlabeled pool (None: the whole set)."""
    options = {"verify_checksums": False} if getattr(args, "no_verify_checksums", False) else {}
    root, download = getattr(args, "data_dir", None) or "data", getattr(args, "download", False)
    train_set = load_dataset_rank_zero_first(s.dataset, root, train=True, download=download, **options)
    test_set = load_dataset_rank_zero_first(s.dataset, root, train=False, download=download, **options)
    labeled = balanced_labeled_subset(dataset_labels(train_set), args.labels_per_class, seed=args.seed_data)
    pool = None if args.unlabeled_examples is None else unlabeled_pool(
        len(train_set), labeled, args.unlabeled_examples, seed=args.seed_data)
    return SimpleNamespace(train_set=train_set, test_set=test_set, labeled=labeled, pool=pool)


def fast_path(args: argparse.Namespace, train_set, device: torch.device) -> SimpleNamespace:
    """The run's speed choices, made here once; each computes what the plain path computes (the graph: to float
    rounding)."""
    # The training set on the device, the batches drawn there (the host loader's batches): no host copy and no
    # wait for the device per step. By default where it takes at most a quarter of the free memory.
    device_data = fits_on_device(train_set, device) if args.device_data is None else args.device_data
    # The whole iteration in one CUDA graph; the optimizers then keep their counts and rates on the device.
    graph = args.cuda_graph
    # Where the evaluation average updates: before the step for the reference's average (of the weights from
    # before each step), after it for ours; inside the captured step with a graph, else an event handler.
    before = args.ema_reference
    average_event = None if graph else Events.ITERATION_STARTED if before else Events.ITERATION_COMPLETED
    # With device data the outputs stay on the device until logged (its loader checked the labels once); logging
    # reads them from the device, rarely where that waits for it.
    return SimpleNamespace(device_data=device_data, cuda_graph=graph, average_before_step=graph and before,
                           average_after_step=graph and not before, average_event=average_event,
                           output_transform=outputs_on_device if device_data else outputs_to_floats,
                           check_labels=not device_data, log_every=10 if device.type == "cpu" else 100)


def build(s: Setting, args: argparse.Namespace, data: SimpleNamespace, fast: SimpleNamespace,
          device: torch.device) -> SimpleNamespace:
    """The loader, networks, optimizers, evaluation average and inits of one process, in the order of the random
    draws, then the library's trainer (one discriminator step on labeled, unlabeled and generated batches, then the
    generator's steps) with its handlers attached in the order they must run; ``to_save`` is what resumes it."""
    batches = dict(batch_size=args.batch_size, unlabeled_indices=data.pool, seed=args.seed,
                   generator_batch=args.generator_loss == "feature_matching")
    if fast.device_data:
        loader = DeviceSemiSupervisedLoader(data.train_set, data.labeled, device=device, num_classes=10, **batches)
    else:
        loader = SemiSupervisedLoader(data.train_set, data.labeled, num_workers=args.num_workers,
                                      pin_memory=device.type == "cuda", **batches)
    # Networks and optimizers; the data-dependent init runs when training starts, before data parallelism wraps.
    generator, discriminator = s.generator().to(device), s.discriminator().to(device)
    d_optimizer = ReferenceAdam(discriminator.parameters(), lr=args.lr, betas=(0.5, 0.999), capturable=fast.cuda_graph)
    g_optimizer = ReferenceAdam(generator.parameters(), lr=args.lr, betas=(0.5, 0.999), capturable=fast.cuda_graph)
    # The non-finite guard, attached first, stops training before a NaN reaches the average: the average need
    # not read every weight again at every update.
    averaging = EvaluationAveraging(discriminator, rate=args.ema_rate, bias_correction=not args.ema_reference,
                                    check_finite=False)
    # The init batch: 500 labeled images in the CIFAR/SVHN scripts, 500 of all (unlabeled) images in MNIST's.
    init_pool = data.labeled if s.init_on_labeled else data.pool
    available = len(data.train_set) if init_pool is None else len(init_pool)
    count = args.init_examples if s.init_on_labeled else min(args.init_examples, available)
    init_d = DataDependentInitialization(discriminator, init_batch(data.train_set, count, args.seed, indices=init_pool))
    noise = partial(generator.sample_noise, args.batch_size, device=device)
    init_g = DataDependentInitialization(generator, noise) if s.init_generator else None

    trainer = create_semi_supervised_trainer(
        idist.auto_model(generator, sync_bn=False), idist.auto_model(discriminator, sync_bn=False),
        d_optimizer, g_optimizer, generator_loss=args.generator_loss,
        feature_matching_distance=args.feature_matching_distance,
        generator_steps=1 if args.generator_loss == "feature_matching" else 3,
        unlabeled_weight=args.unlabeled_weight, noise_fn=generator.sample_noise,
        device=device, amp=False if args.amp == "off" else args.amp, compile=args.compile,
        output_transform=fast.output_transform, check_labels=fast.check_labels, cuda_graph=fast.cuda_graph,
        before_step=[averaging.step_update] if fast.average_before_step else [],
        after_step=[averaging.step_update] if fast.average_after_step else [],
    )
    attach_nonfinite_guard(trainer)
    to_save = {"generator": generator, "discriminator": discriminator, "d_optimizer": d_optimizer,
               "g_optimizer": g_optimizer, "trainer": trainer, "loader": loader, "evaluation_average": averaging,
               "init_discriminator": init_d}
    if init_g is not None:
        init_g.attach(trainer)  # STARTED handlers run in order: the generator first, then D, then the average
        to_save["init_generator"] = init_g
    init_d.attach(trainer)
    if fast.average_event is not None:
        averaging.attach(trainer, event=fast.average_event)
    decay = min(args.lr_decay_epochs, args.epochs)
    if decay > 0:
        linear_decay_scheduler([d_optimizer, g_optimizer], args.epochs, decay).attach(trainer)
    return SimpleNamespace(loader=loader, generator=generator, discriminator=discriminator, d_optimizer=d_optimizer,
                           g_optimizer=g_optimizer, averaging=averaging, trainer=trainer, to_save=to_save)


def train(local_rank: int, args: argparse.Namespace, name: str) -> Optional[dict]:
    """One process's run: build, train (or resume), then report; None where it stopped before its last epoch."""
    s = SETTINGS[name]
    with Run(args, name) as run:  # the folder's lock is released however the run ends
        device = run.start()
        data = load_data(s, args)
        fast = fast_path(args, data.train_set, device)
        parts = build(s, args, data, fast, device)
        trainer = parts.trainer

        # The averaged discriminator's test error every --eval-every epochs and after the last one (once): the
        # reported one, as the reference's; the live discriminator's beside it (is the average lagging?).
        when = evaluation_event(args.eval_every)
        averaged = ErrorEvaluator(lambda: parts.averaging.averaged_model, test_loader(data.test_set, args),
                                  name="error_averaged", device=device)
        averaged.attach(trainer, when)
        live = ErrorEvaluator(parts.discriminator, test_loader(data.test_set, args), name="error_live", device=device)
        trainer.add_event_handler(when, live.run)

        def publish(engine) -> None:  # shown by the progress bar or line
            engine.state.test_error = averaged.engine.state.metrics["error_averaged"]
            engine.state.test_error_live = live.engine.state.metrics["error_live"]

        trainer.add_event_handler(when, publish)
        # TensorBoard: the outputs, both test errors (test/error_averaged, test/error_live, and the baseline's
        # test/error_baseline on one chart), the learning rates, the average's momentum and image grids.
        logger = attach_tensorboard(
            str(run.tensorboard_dir), trainer, evaluators={"test": [averaged.engine, live.engine]},
            optimizers={"discriminator": parts.d_optimizer, "generator": parts.g_optimizer},
            state_attributes=["ema_momentum"], log_every=fast.log_every, image_every=args.image_every,
            images=ImageGridHandler(parts.generator, image_range=s.image_range, image_shape=s.image_shape,
                                    mode="train"),  # the reference's generators always use batch statistics
        )
        log_charts(logger, {TEST_ERROR_CHART: TEST_ERROR_TAGS if args.baseline else TEST_ERROR_TAGS[:2]})
        # Without a terminal, a line per evaluation with both errors.
        run.attach(trainer, parts.to_save, OUTPUTS, state_attributes=["test_error", "test_error_live"],
                   progress_event=when)
        epoch_length = min(len(parts.loader), args.iterations_per_epoch or len(parts.loader))
        with logger:  # closed however training ends
            if not run.training_done:
                trainer.run(parts.loader, max_epochs=args.epochs, epoch_length=epoch_length)
        if not run.training_done:  # stopped before its last epoch (engine.terminate()): --resume continues it
            return None  # (leaving the ``with`` releases the folder's lock)
        return report(s, args, name, run, trainer, data, [averaged, live], device)


def report(s: Setting, args, name: str, run: Run, trainer, data: SimpleNamespace,
           evaluators: Sequence[ErrorEvaluator], device) -> dict:
    """The results (with the labeled-only baseline), ``summary.json``, the HParams row and the console's lines.

    ``evaluators`` score the averaged discriminator and the discriminator itself (named ``error_averaged`` and
    ``error_live``, as :func:`train` makes them).
    """
    if run.phase == "training":
        results = {}
        for key, scorer in zip(("test_error", "test_error_live"), evaluators):
            metrics = scorer.engine.state.metrics or scorer.run()  # resumed after its last epoch: score once
            results.update({key: metrics[scorer.name], key + "_count": metrics[scorer.name + "_count"]})
        results.update({"test_examples": len(data.test_set), "labels": len(data.labeled),
                        "unlabeled_examples": len(data.train_set) if data.pool is None else len(data.pool),
                        "iterations": trainer.state.iteration, "epochs": trainer.state.epoch,
                        # None: resumed after the last epoch from a checkpoint that predates the saved output
                        "final_train_outputs": None if trainer.state.output is None
                        else outputs_to_floats(trainer.state.output)})
        if args.baseline:
            run.enter_phase("baseline", results)  # a run stopped in the baseline resumes there
    else:
        results = run.results
    examples = results["test_examples"]

    def line(label: str, key: str, what: str) -> str:  # an error of the report, below the first
        return f"  {label:12} {100 * results[key]:.2f} % ({results[key + '_count']:,} of {examples:,}), {what}"

    headline = [f"{name}: test error {100 * results['test_error']:.2f} % ({results['test_error_count']:,} of "
                f"{examples:,}) after {results['iterations']:,} iterations, the averaged discriminator"]
    if "test_error_live" in results:  # (a record of an older version holds none)
        headline.append(line("live", "test_error_live", "the discriminator as trained"))
    if args.baseline:
        results.update(labeled_only_baseline(s, args, data, device, results["iterations"], log_dir=run.tensorboard_dir))
        headline.append(line("baseline", "baseline_test_error",
                             f"the same discriminator on the {results['labels']:,} labeled images alone"))
    headline.append(f"  paper        {s.paper or 'no number for this setting'}")
    final = {key: results[key] for key in ("test_error", "test_error_live", "baseline_test_error", "iterations")
             if key in results}
    log_run_hparams(run, final, step=results["iterations"], hparams={"labels": results["labels"]},
                    defaults=vars(build_parser(name).parse_args([])))
    run.finish(results, extra={"paper": s.paper}, headline=headline)
    return results


def labeled_only_baseline(s: Setting, args, data: SimpleNamespace, device, iterations: int,
                          log_dir: Optional[Path] = None) -> dict:
    """The same discriminator, noise, init, average and schedule on the labeled images alone, as many steps.

    Its averaged copy is scored at the GAN's evaluation epochs (the same iterations: as many per epoch), into
    TensorBoard's ``test/error_baseline`` in ``log_dir`` (rank 0) beside the GAN's curves; the last score is the
    result. Progress: a bar on a terminal, else a line at about every tenth of the run (at an evaluation).
    """
    torch.manual_seed(args.seed + idist.get_rank())
    classifier = s.discriminator().to(device)
    optimizer = ReferenceAdam(classifier.parameters(), lr=args.lr, betas=(0.5, 0.999))
    labeled_set = Subset(data.train_set, data.labeled.tolist())
    sampler = RandomSampler(labeled_set, generator=torch.Generator().manual_seed(args.seed))
    loader = DataLoader(labeled_set, batch_size=min(args.batch_size, len(labeled_set)), sampler=sampler,
                        drop_last=True)
    trainer = create_supervised_trainer(classifier, optimizer, torch_F.cross_entropy, device=device)
    count = min(args.init_examples, len(labeled_set))  # the labeled images themselves, each once
    DataDependentInitialization(classifier, init_batch(labeled_set, count, args.seed)).attach(trainer)
    averaging = EvaluationAveraging(classifier, rate=args.ema_rate, bias_correction=not args.ema_reference)
    averaging.attach(trainer, event=Events.ITERATION_STARTED if args.ema_reference else Events.ITERATION_COMPLETED)
    decay = min(args.lr_decay_epochs, args.epochs)
    if decay > 0:
        linear_decay_scheduler(optimizer, args.epochs, decay).attach(trainer)
    evaluator = ErrorEvaluator(lambda: averaging.averaged_model, test_loader(data.test_set, args),
                               name="error_baseline", device=device)
    evaluator.attach(trainer, evaluation_event(args.eval_every))
    logger = InactiveLogger()
    if log_dir is not None and idist.get_rank() == 0:
        logger = TensorboardLogger(log_dir=str(log_dir))
        logger.attach_output_handler(evaluator.engine, Events.COMPLETED, tag="test", metric_names="all",
                                     global_step_transform=global_step_from_engine(trainer,
                                                                                   Events.ITERATION_COMPLETED))
    if idist.get_rank() == 0 and not args.no_progress:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: setattr(e.state, "loss", e.state.output))
        trainer.add_event_handler(evaluation_event(args.eval_every), lambda e: setattr(
            e.state, "test_error", evaluator.engine.state.metrics["error_baseline"]))
        # Lines at evaluations, about ten of them: the baseline is the comparison, not the run to watch.
        every = args.eval_every * max(1, round(args.epochs / 10 / args.eval_every))
        print(f"labeled-only baseline: the discriminator on the {len(labeled_set):,} labeled images alone, "
              f"{args.epochs} epochs", file=sys.stderr, flush=True)
        attach_progress(trainer, [], state_attributes=["loss", "test_error"], label="baseline epoch",
                        line_event=evaluation_event(every))
    with logger:
        trainer.run(loader, max_epochs=args.epochs, epoch_length=max(1, iterations // args.epochs))
    result = evaluator.engine.state.metrics  # after the last epoch
    return {"baseline_test_error": result["error_baseline"],
            "baseline_test_error_count": result["error_baseline_count"]}


def main(name: str, argv: Optional[Sequence[str]] = None) -> None:
    check_choice("name", name, SETTINGS)
    parser = build_parser(name)
    args = cli.parse_args(parser, argv)
    cli.check_data_dir(parser, args, SETTINGS[name].dataset)
    argv = list(sys.argv[1:] if argv is None else argv)
    check_seed_flags(parser, args, argv)  # --seed with --seeds, --jobs without it: refused, not dropped
    if args.seeds is not None:  # one process per seed, each this recipe alone, then the table
        seeds_command(parser, args, [sys.executable, __file__, name], argv, experiment=name,
                      paper=SETTINGS[name].paper, checkpoint_bytes=checkpoint_bytes(SETTINGS[name]))
        return
    cli.launch_recipe(parser, args, train, name)


def checkpoint_bytes(s: Setting) -> int:
    """About how large one checkpoint of ``s`` is, for the disk estimate of ``--seeds``: both networks, the two
    moments of each one's Adam, and the discriminator's evaluation average."""
    def size(module: torch.nn.Module) -> int:
        return sum(t.numel() * t.element_size() for t in module.state_dict().values())

    return 3 * size(s.generator()) + 4 * size(s.discriminator())


def experiment_command(descriptions: Mapping[str, str], main: Callable[[str, Sequence[str]], None], width: int) -> None:
    """The command line of a file of several experiments (this one, ``sample_quality.py``): ``EXPERIMENT [flags]``.

    Without an experiment, or with an unknown one, it exits with the usage (the experiments and ``descriptions``,
    the names padded to ``width``); with ``-h``/``--help`` it prints the usage and exits 0; else it runs ``main``.
    """
    program = sys.argv[0]
    usage = "\n".join([f"usage: {program} EXPERIMENT [flags]  (or recipes/EXPERIMENT.py [flags])", "",
                        "EXPERIMENT is one of:"]
                       + [f"  {key:{width}} {text}" for key, text in descriptions.items()]
                       + ["", f"an experiment's flags: {program} EXPERIMENT --help"])
    if sys.argv[1:2] in (["-h"], ["--help"]):  # asked for help: the usage, and success
        print(usage)
        sys.exit(0)
    if len(sys.argv) < 2 or sys.argv[1] not in descriptions:
        sys.exit(usage if len(sys.argv) < 2 else f"{program}: unknown experiment {sys.argv[1]!r}\n{usage}")
    sys.argv[0] = f"{program} {sys.argv[1]}"  # argparse names the program after it: a usage line to copy
    main(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    experiment_command({key: f"{s.dataset}, " + ("minibatch discrimination" if s.generator_loss == "minimax"
                                                 else "feature matching") + (f"; paper: {s.paper}" if s.paper else "")
                        for key, s in SETTINGS.items()}, main, width=18)
