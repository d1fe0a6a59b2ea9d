#!/usr/bin/env python
"""Semi-supervised classification with a GAN (paper §5), the reference scripts' settings, read top to bottom.

``python recipes/semi_supervised.py EXPERIMENT [flags]``, or the thin scripts ``recipes/<EXPERIMENT>.py``:

=====================  =======================================================================  ==================
experiment             the reference script (spec §3) / data                                    paper
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
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import ignite.distributed as idist
import torch
import torch.nn.functional as torch_F
from ignite.engine import Events, create_supervised_trainer
from torch.utils.data import DataLoader, RandomSampler, Subset

from ignite_igan import models
from ignite_igan.experiments import cli
from ignite_igan.data import SemiSupervisedLoader, balanced_labeled_subset, dataset_labels, init_batch, unlabeled_pool
from ignite_igan.datasets import load_dataset_rank_zero_first
from ignite_igan.device_data import DeviceSemiSupervisedLoader, fits_on_device
from ignite_igan.engines import create_semi_supervised_trainer, outputs_on_device, outputs_to_floats
from ignite_igan.handlers import DataDependentInitialization, EvaluationAveraging
from ignite_igan.logging import ImageGridHandler, attach_tensorboard, log_run_hparams
from ignite_igan.metrics import ErrorEvaluator
from ignite_igan.optim import EpochLRScheduler, ReferenceAdam, linear_decay_factor
from ignite_igan.experiments.runs import Run, attach_nonfinite_guard, attach_progress
from ignite_igan.experiments.seeds import parse_seeds, seeds_command


@dataclass(frozen=True)
class Setting:
    """One reference script's configuration (spec §3, §4): the defaults of its recipe."""

    dataset: str
    generator: Callable
    discriminator: Callable
    epochs: int
    labels_per_class: int
    lr: float
    decay_epochs: int  # linear decay to 0 over the last N epochs (0: constant)
    generator_loss: str  # feature matching (its distance) or the minimax loss with 3 generator steps
    fm_distance: Optional[str]
    init_on_labeled: bool  # CIFAR/SVHN scripts: D's init batch is 500 labeled images; MNIST: the whole set
    init_generator: bool  # CIFAR/SVHN: the generator's weight-normalized output layer is initialized too
    ema_rate: float
    threads: Optional[int]  # CPU threads by default: 1 for the MLPs (see --help), torch's choice for the convnets
    image: tuple  # (shape of one sample, range of the generator's output) for TensorBoard's grids
    paper: Optional[str]


MNIST_IMAGE, CIFAR_IMAGE = ((1, 28, 28), "[0,1]"), ((3, 32, 32), "[-1,1]")
SETTINGS = {
    "mnist_ssl": Setting("mnist", models.mnist_generator, models.mnist_discriminator, 300, 10, 3e-3, 0,
                         "feature_matching", "mean_squared", False, False, 1e-4, 1, MNIST_IMAGE,
                         "93 ± 6.5 test errors of 10,000 with 100 labels"),
    "fashion_mnist_ssl": Setting("fashion_mnist", models.mnist_generator, models.mnist_discriminator, 300, 10, 3e-3,
                                 0, "feature_matching", "mean_squared", False, False, 1e-4, 1, MNIST_IMAGE, None),
    # 1,297 training images make 12 steps per epoch; ~2,400 steps are a quarter of the 1e-4 average's time
    # constant, so the average uses 1e-3.
    "digits_ssl": Setting("digits", models.digits_generator, models.digits_discriminator, 200, 10, 3e-3, 0,
                          "feature_matching", "mean_squared", False, False, 1e-3, 1, ((1, 8, 8), "[0,1]"), None),
    "cifar10_ssl": Setting("cifar10", models.cifar10_generator, models.cifar10_fm_discriminator, 1200, 400, 3e-4, 400,
                           "feature_matching", "mean_absolute", True, True, 1e-4, None, CIFAR_IMAGE,
                           "18.63 ± 2.32 % test error with 4,000 labels"),
    "svhn_ssl": Setting("svhn", models.svhn_generator, models.svhn_fm_discriminator, 900, 100, 3e-4, 300,
                        "feature_matching", "mean_absolute", True, True, 1e-4, None, CIFAR_IMAGE,
                        "8.11 ± 1.3 % test error with 1,000 labels"),
    "cifar10_ssl_md": Setting("cifar10", models.cifar10_generator, models.cifar10_md_discriminator, 1200, 400, 3e-4,
                              400, "minimax", None, True, True, 1e-4, None, CIFAR_IMAGE, None),
    "svhn_ssl_md": Setting("svhn", models.svhn_generator, models.svhn_md_discriminator, 900, 100, 3e-4, 300,
                           "minimax", None, True, True, 1e-4, None, CIFAR_IMAGE, None),
}
INIT_EXAMPLES, EVAL_BATCH = 500, 100  # spec §4.4; the reference evaluates in batches of 100 (minibatch features)
OUTPUTS = ["loss_labeled", "loss_unlabeled", "loss_generator", "train_error"]


def build_parser(name: str) -> argparse.ArgumentParser:
    s = SETTINGS[name]
    parser = cli.recipe_parser(
        f"{name}: semi-supervised {s.dataset} with a GAN" + (f"; paper: {s.paper}" if s.paper else ""),
        epochs=s.epochs, labels_per_class=s.labels_per_class, output_dir=f"runs/{name}", threads=s.threads,
        data_dir=None if s.dataset == "digits" else "data",
    )
    group = parser.add_argument_group(name)
    if s.dataset in ("cifar10", "svhn"):
        group.add_argument("--no-verify-checksums", action="store_true",
                           help="read the data files without torchvision's MD5 check (re-packed or cut-down copies)")
    group.add_argument("--lr", type=cli.positive_float, default=s.lr, help="learning rate of D and G")
    group.add_argument("--lr-decay-epochs", type=cli.nonnegative_int, default=s.decay_epochs,
                       help="decay the learning rate linearly to 0 over the last N epochs (0: constant)")
    group.add_argument("--generator-loss", choices=["feature_matching", "minimax"], default=s.generator_loss,
                       help="feature matching, or the minibatch-discrimination scripts' minimax loss (3 G steps)")
    group.add_argument("--feature-matching-distance", choices=["squared_l2", "mean_squared", "mean_absolute"],
                       default=s.fm_distance or "mean_absolute",
                       help="the paper's squared L2, or the code's mean squared (MNIST) / mean absolute (CIFAR, SVHN)")
    group.add_argument("--unlabeled-weight", type=cli.positive_float, default=1.0, help="weight of the unlabeled loss")
    group.add_argument("--unlabeled-examples", type=cli.positive_int, default=None,
                       help="a pool of N training images as the unlabeled data (labeled ones included, chosen with "
                       "--seed-data); default: the whole training set")
    group.add_argument("--ema-rate", type=cli.ema_rate, default=s.ema_rate,
                       help="weight of the new weights in each update of the evaluation average (the reference: 1e-4)")
    group.add_argument("--ema-reference", "--ema-reference-start", action="store_true",
                       help="the reference's average exactly: started at zero, no bias correction, averaging the "
                       "weights from before each step (early test errors are poor by construction)")
    group.add_argument("--init-examples", type=cli.init_examples, default=INIT_EXAMPLES,
                       help="examples of the data-dependent init batch")
    group.add_argument("--eval-every", type=cli.positive_int, default=1, help="epochs between test evaluations")
    group.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=name == "digits_ssl",
                       help="also train the discriminator on the labeled images alone and report its test error")
    group.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off", help="mixed precision")
    group.add_argument("--compile", action="store_true", help="torch.compile the models")
    group.add_argument("--cuda-graph", action="store_true",
                       help="capture the whole iteration (both players, both optimizers, the evaluation average) in "
                       "a CUDA graph: the same arithmetic to float rounding, one launch per iteration (CUDA only)")
    group.add_argument("--device-data", action=argparse.BooleanOptionalAction, default=None,
                       help="keep the training set on the device and draw the batches there (same batches as the "
                       "host loader); default: where it takes at most a quarter of the free memory")
    group.add_argument("--image-every", type=cli.positive_int, default=1000, help="iterations between image grids")
    group.add_argument("--seeds", type=parse_seeds, default=None,
                       help="train several seeds (e.g. 1-10): seed k runs as --seed k --seed-data k alone would, in "
                       "<output-dir>/seed<k>; prints each seed's test error and the mean ± std")
    group.add_argument("--jobs", type=cli.positive_int, default=None,
                       help="with --seeds: processes at a time (default: one per seed, up to one per CPU core)")
    return parser


def test_loader(test_set, args) -> DataLoader:
    # Each process scores every world_size-th image, without padding: the summed error counts are exact.
    shard = Subset(test_set, range(idist.get_rank(), len(test_set), idist.get_world_size()))
    # A DataLoader without a generator seeds each iteration from the global RNG, which the models' noise comes
    # from: evaluating would then shift the training run. Its own generator keeps --eval-every out of training.
    return DataLoader(shard, batch_size=EVAL_BATCH, shuffle=False, num_workers=args.num_workers,
                      generator=torch.Generator().manual_seed(0))


def train(local_rank: int, args: argparse.Namespace, name: str) -> Optional[dict]:
    s = SETTINGS[name]
    with Run(args, name) as run:  # the folder's lock is released however the run ends
        device = run.start()

        # Data: the training set, a balanced labeled subset, batches of labeled / unlabeled / unlabeled again.
        options = {"verify_checksums": False} if getattr(args, "no_verify_checksums", False) else {}
        root, download = getattr(args, "data_dir", None) or "data", getattr(args, "download", False)
        train_set = load_dataset_rank_zero_first(s.dataset, root, train=True, download=download, **options)
        test_set = load_dataset_rank_zero_first(s.dataset, root, train=False, download=download, **options)
        labeled = balanced_labeled_subset(dataset_labels(train_set), args.labels_per_class, seed=args.seed_data)
        pool = None if args.unlabeled_examples is None else unlabeled_pool(
            len(train_set), labeled, args.unlabeled_examples, seed=args.seed_data)
        on_device = fits_on_device(train_set, device) if args.device_data is None else args.device_data
        batches = dict(batch_size=args.batch_size, unlabeled_indices=pool, seed=args.seed,
                       generator_batch=args.generator_loss == "feature_matching")
        if on_device:  # the same batches, drawn on the device: no host copy and no wait for the device per step
            loader = DeviceSemiSupervisedLoader(train_set, labeled, device=device, num_classes=10, **batches)
        else:
            loader = SemiSupervisedLoader(train_set, labeled, num_workers=args.num_workers,
                                          pin_memory=device.type == "cuda", **batches)

        # Networks and optimizers; the data-dependent init runs when training starts, before data parallelism wraps.
        generator, discriminator = s.generator().to(device), s.discriminator().to(device)
        graph = args.cuda_graph  # the optimizers then keep their counts and learning rates on the device
        d_optimizer = ReferenceAdam(discriminator.parameters(), lr=args.lr, betas=(0.5, 0.999), capturable=graph)
        g_optimizer = ReferenceAdam(generator.parameters(), lr=args.lr, betas=(0.5, 0.999), capturable=graph)
        # The non-finite guard, attached first, stops training before a NaN reaches the average: the average need
        # not read every weight again at every update.
        averaging = EvaluationAveraging(discriminator, rate=args.ema_rate, bias_correction=not args.ema_reference,
                                        check_finite=False)
        # The init batch: 500 labeled images in the CIFAR/SVHN scripts, 500 of all (unlabeled) images in MNIST's.
        init_pool = labeled if s.init_on_labeled else pool
        available = len(train_set) if init_pool is None else len(init_pool)
        count = args.init_examples if s.init_on_labeled else min(args.init_examples, available)
        init_d = DataDependentInitialization(discriminator, init_batch(train_set, count, args.seed, indices=init_pool))
        noise = lambda: generator.sample_noise(args.batch_size, device=device)  # noqa: E731
        init_g = DataDependentInitialization(generator, noise) if s.init_generator else None

        trainer = create_semi_supervised_trainer(
            idist.auto_model(generator, sync_bn=False), idist.auto_model(discriminator, sync_bn=False),
            d_optimizer, g_optimizer, generator_loss=args.generator_loss,
            feature_matching_distance=args.feature_matching_distance,
            generator_steps=1 if args.generator_loss == "feature_matching" else 3,
            unlabeled_weight=args.unlabeled_weight, noise_fn=lambda n: generator.sample_noise(n, device=device),
            device=device, amp=False if args.amp == "off" else args.amp, compile=args.compile,
            # Outputs stay on the device until logged; labels were checked once by the device loader.
            output_transform=outputs_on_device if on_device else outputs_to_floats, check_labels=not on_device,
            # With a CUDA graph the average is part of the captured step (before it, for the reference's average).
            before_step=[averaging.step_update] if graph and args.ema_reference else [],
            after_step=[averaging.step_update] if graph and not args.ema_reference else [], cuda_graph=graph,
        )
        attach_nonfinite_guard(trainer)
        if init_g is not None:
            init_g.attach(trainer)  # STARTED handlers run in order: the generator first, then D, then the average
        init_d.attach(trainer)
        if not graph:
            averaging.attach(trainer, event=Events.ITERATION_STARTED if args.ema_reference else
                             Events.ITERATION_COMPLETED)
        if min(args.lr_decay_epochs, args.epochs) > 0:
            total, decay = args.epochs, min(args.lr_decay_epochs, args.epochs)
            EpochLRScheduler([d_optimizer, g_optimizer], lambda e: linear_decay_factor(e, total, decay)).attach(trainer)

        # The averaged discriminator's test error every --eval-every epochs and after the last one (once).
        evaluator = ErrorEvaluator(lambda: averaging.averaged_model, test_loader(test_set, args), name="error",
                                   device=device)
        when = Events.EPOCH_COMPLETED(event_filter=lambda e, epoch: epoch % args.eval_every == 0
                                      or epoch == e.state.max_epochs)
        evaluator.attach(trainer, when)
        # The live discriminator beside it, for TensorBoard only: is the average lagging? (the report stays averaged)
        live = ErrorEvaluator(discriminator, test_loader(test_set, args), name="error", device=device)
        trainer.add_event_handler(when, lambda engine: live.run())
        publish = lambda e: setattr(e.state, "test_error", evaluator.engine.state.metrics["error"])  # noqa: E731
        trainer.add_event_handler(when, publish)  # shown by the progress bar or line

        to_save = {"generator": generator, "discriminator": discriminator, "d_optimizer": d_optimizer,
                   "g_optimizer": g_optimizer, "trainer": trainer, "loader": loader, "evaluation_average": averaging,
                   "init_discriminator": init_d}
        if init_g is not None:
            to_save["init_generator"] = init_g
        logger = attach_tensorboard(
            str(run.tensorboard_dir), trainer, evaluators={"test": evaluator.engine, "test_live": live.engine},
            optimizers={"discriminator": d_optimizer, "generator": g_optimizer}, state_attributes=["ema_momentum"],
            # Logging reads the outputs from the device: rarely where that waits for it.
            log_every=10 if device.type == "cpu" else 100, image_every=args.image_every,
            images=ImageGridHandler(generator, image_range=s.image[1], image_shape=s.image[0],
                                    mode="train"),  # the reference's generators always use batch statistics
        )
        run.attach(trainer, to_save, OUTPUTS)
        epoch_length = min(len(loader), args.iterations_per_epoch or len(loader))
        try:
            if not run.training_done:
                trainer.run(loader, max_epochs=args.epochs, epoch_length=epoch_length)
        finally:
            logger.close()
        if not run.training_done:  # stopped before its last epoch (engine.terminate()): --resume continues it
            run.close()
            return None
        if run.phase == "training":
            metrics = evaluator.engine.state.metrics or evaluator.run()  # resumed after its last epoch: score once
            results = {"test_error": metrics["error"], "test_error_count": metrics["error_count"],
                       "test_examples": len(test_set), "labels": len(labeled),
                       "unlabeled_examples": len(train_set) if pool is None else len(pool),
                       "iterations": trainer.state.iteration, "epochs": trainer.state.epoch,
                       "final_train_outputs": outputs_to_floats(trainer.state.output)}
            if args.baseline:
                run.enter_phase("baseline", results)  # a run stopped in the baseline resumes there
        else:
            results = run.results
        if args.baseline:
            results.update(labeled_only_baseline(s, args, train_set, test_set, labeled, device, results["iterations"]))
        headline = [f"{name}: test error {100 * results['test_error']:.2f} % ({results['test_error_count']:,} of "
                    f"{results['test_examples']:,}) after {results['iterations']:,} iterations"]
        if args.baseline:
            headline.append(f"  labeled-only baseline  {100 * results['baseline_test_error']:.2f} %")
        headline.append(f"  paper        {s.paper or 'no number for this setting'}")
        final = {k: results[k] for k in ("test_error", "baseline_test_error", "iterations") if k in results}
        log_run_hparams(run, final, step=results["iterations"], hparams={"labels": results["labels"]})
        run.finish(results, extra={"paper": s.paper}, headline=headline)
        return results


def labeled_only_baseline(s: Setting, args, train_set, test_set, labeled, device, iterations: int) -> dict:
    """The same discriminator, noise, init, average and schedule on the labeled images alone, as many steps."""
    torch.manual_seed(args.seed + idist.get_rank())
    classifier = s.discriminator().to(device)
    optimizer = ReferenceAdam(classifier.parameters(), lr=args.lr, betas=(0.5, 0.999))
    labeled_set = Subset(train_set, labeled.tolist())
    sampler = RandomSampler(labeled_set, generator=torch.Generator().manual_seed(args.seed))
    loader = DataLoader(labeled_set, batch_size=min(args.batch_size, len(labeled_set)), sampler=sampler,
                        drop_last=True)
    trainer = create_supervised_trainer(classifier, optimizer, torch_F.cross_entropy, device=device)
    count = min(args.init_examples, len(labeled_set))  # the labeled images themselves, each once
    DataDependentInitialization(classifier, init_batch(labeled_set, count, args.seed)).attach(trainer)
    averaging = EvaluationAveraging(classifier, rate=args.ema_rate, bias_correction=not args.ema_reference)
    averaging.attach(trainer, event=Events.ITERATION_STARTED if args.ema_reference else Events.ITERATION_COMPLETED)
    if min(args.lr_decay_epochs, args.epochs) > 0:
        total, decay = args.epochs, min(args.lr_decay_epochs, args.epochs)
        EpochLRScheduler(optimizer, lambda e: linear_decay_factor(e, total, decay)).attach(trainer)
    if idist.get_rank() == 0 and not args.no_progress:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: setattr(e.state, "loss", e.state.output))
        attach_progress(trainer, [], state_attributes=["loss"], label="baseline epoch")
    trainer.run(loader, max_epochs=args.epochs, epoch_length=max(1, iterations // args.epochs))
    result = ErrorEvaluator(averaging.averaged_model, test_loader(test_set, args), name="error", device=device).run()
    return {"baseline_test_error": result["error"], "baseline_test_error_count": result["error_count"]}


def main(name: str, argv: Optional[Sequence[str]] = None) -> None:
    if name not in SETTINGS:
        raise ValueError(f"name must be one of {sorted(SETTINGS)}, got {name!r}")
    parser = build_parser(name)
    args = cli.parse_args(parser, argv)
    cli.check_data_dir(parser, args, SETTINGS[name].dataset)
    if args.seeds is not None:  # one process per seed, each this recipe alone, then the table
        seeds_command(parser, args, [sys.executable, __file__, name], list(sys.argv[1:] if argv is None else argv),
                      experiment=name, paper=SETTINGS[name].paper)
        return
    cli.launch_recipe(parser, args, train, name)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in SETTINGS:
        sys.exit(f"usage: {sys.argv[0]} EXPERIMENT [flags]; EXPERIMENT is one of {', '.join(SETTINGS)}")
    main(sys.argv[1], sys.argv[2:])
