"""Semi-supervised classification with a feature-matching GAN (paper §5), assembled from the package's parts.

:data:`SETTINGS` holds the reference's configuration for each data set (spec §3-4); :func:`train` runs one
process of an experiment from parsed command-line arguments; :func:`main` is what ``recipes/*_ssl.py`` call.

One run, in order:

1. Seeds and device (:func:`~ignite_igan.experiments.runner.prepare_run`).
2. The data set through torchvision (or scikit-learn's digits), scaled as the reference scales it; a balanced
   labeled subset chosen with ``--seed-data`` (:func:`~ignite_igan.data.balanced_labeled_subset`); batches of
   labeled, unlabeled and a second unlabeled stream (:class:`~ignite_igan.data.SemiSupervisedLoader`).
3. The paper's networks (:mod:`ignite_igan.models`), the reference's Adam (β1 = 0.5, ε inside the root) for both
   players, and :func:`~ignite_igan.engines.create_semi_supervised_trainer`.
4. Handlers: data-dependent initialization of the discriminator on 500 training examples (and of the generator on
   one batch of noise for CIFAR-10/SVHN) at the start, the evaluation average of the discriminator (rate 1e-4
   per step), the learning-rate schedule, the test error of the averaged discriminator every epoch, TensorBoard,
   progress bar, checkpoints.
5. With ``--baseline`` (the default for digits), the same discriminator trained on the labeled examples alone, for
   the same number of steps and evaluated the same way, so the summary shows what the unlabeled data and the GAN
   add.
"""
from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import ignite.distributed as idist
import torch
import torch.nn.functional as torch_F
from ignite.engine import Engine, Events
from torch import nn
from torch.utils.data import DataLoader, Subset

from ignite_igan import cli, models
from ignite_igan.data import SemiSupervisedLoader, balanced_labeled_subset, dataset_labels, unlabeled_pool
from ignite_igan.datasets import DatasetNotFoundError, load_dataset
from ignite_igan.engines import create_semi_supervised_trainer
from ignite_igan.experiments.runner import (
    attach_run_handlers,
    prepare_run,
    tensorboard_dir,
    write_summary,
)
from ignite_igan.handlers import DataDependentInitialization, EvaluationAveraging
from ignite_igan.logging import attach_tensorboard
from ignite_igan.metrics import ErrorEvaluator
from ignite_igan.optim import EpochLRScheduler, ReferenceAdam, linear_decay_factor

__all__ = ["SemiSupervisedSetting", "SETTINGS", "build_parser", "train", "main"]


@dataclass(frozen=True)
class SemiSupervisedSetting:
    """The reference's configuration of one semi-supervised experiment (spec §3, §4).

    Attributes:
        dataset: name for :func:`ignite_igan.datasets.load_dataset`.
        generator: builds the generator.
        discriminator: builds the K-class discriminator.
        epochs: training epochs.
        labels_per_class: labeled examples per class.
        lr: base learning rate of both players.
        decay_epochs: the learning rate decays linearly to 0 over the last ``decay_epochs`` epochs (0: constant).
        feature_matching_distance: the reference code's distance for this data set.
        init_generator: whether the generator also gets the data-dependent initialization (CIFAR-10/SVHN).
        ema_rate: rate of the evaluation average per step (the reference's 1e-4).
        image_shape: shape of one sample for TensorBoard's image grid.
        image_range: range of the generator's output.
        paper: the paper's result for the default setting, for the README and the summary.
    """

    dataset: str
    generator: Callable[[], nn.Module]
    discriminator: Callable[[], nn.Module]
    epochs: int
    labels_per_class: int
    lr: float
    decay_epochs: int
    feature_matching_distance: str
    init_generator: bool
    ema_rate: float
    image_shape: Tuple[int, int, int]
    image_range: str
    paper: Optional[str]


SETTINGS: Dict[str, SemiSupervisedSetting] = {
    # spec §3.1: constant 3e-3 for 300 epochs, mean squared feature matching, no generator init.
    "mnist": SemiSupervisedSetting(
        "mnist", models.mnist_generator, models.mnist_discriminator, 300, 10, 3e-3, 0, "mean_squared", False,
        1e-4, (1, 28, 28), "[0,1]", "93 ± 6.5 test errors of 10,000 with 100 labels",
    ),
    # The MNIST setting unchanged (networks, noise, lr, 100 labels, batches, averaging) on Fashion-MNIST, whose
    # files and scaling are MNIST's. The paper has no number for it.
    "fashion_mnist": SemiSupervisedSetting(
        "fashion_mnist", models.mnist_generator, models.mnist_discriminator, 300, 10, 3e-3, 0, "mean_squared",
        False, 1e-4, (1, 28, 28), "[0,1]", None,
    ),
    # spec §3.2: 1200 epochs, the last 400 decaying linearly, mean absolute feature matching.
    "cifar10": SemiSupervisedSetting(
        "cifar10", models.cifar10_generator, models.cifar10_fm_discriminator, 1200, 400, 3e-4, 400,
        "mean_absolute", True, 1e-4, (3, 32, 32), "[-1,1]", "18.63 ± 2.32 % test error with 4,000 labels",
    ),
    # spec §3.4: the narrower discriminator, 900 epochs, the last 300 decaying.
    "svhn": SemiSupervisedSetting(
        "svhn", models.svhn_generator, models.svhn_fm_discriminator, 900, 100, 3e-4, 300, "mean_absolute",
        True, 1e-4, (3, 32, 32), "[-1,1]", "8.11 ± 1.3 % test error with 1,000 labels",
    ),
    # The MNIST setting scaled to scikit-learn's 8x8 digits (1,297 training images, 12 steps per epoch). The run
    # is ~2,400 steps, a quarter of the reference's averaging time constant, so the average uses rate 1e-3.
    "digits": SemiSupervisedSetting(
        "digits", models.digits_generator, models.digits_discriminator, 200, 10, 3e-3, 0, "mean_squared", False,
        1e-3, (1, 8, 8), "[0,1]", None,
    ),
}

INIT_EXAMPLES = 500  # the reference's data-dependent init batch (spec §4.4)
EVAL_BATCH_SIZE = 100  # the reference evaluates in batches of 100 (matters with minibatch features)


def build_parser(name: str) -> argparse.ArgumentParser:
    """The recipe's command line: the shared flags plus this experiment's switches, defaulting to the paper."""
    setting = SETTINGS[name]
    description = f"{name}_ssl: semi-supervised {name} with a feature-matching GAN (Salimans et al., 2016)"
    if setting.paper:
        description += f"; paper: {setting.paper}"
    parser = cli.recipe_parser(
        description,
        epochs=setting.epochs,
        labels_per_class=setting.labels_per_class,
        data_dir=None if name == "digits" else "data",
        output_dir=f"runs/{name}_ssl",
        threads=1 if name == "digits" else None,
    )
    group = parser.add_argument_group(f"{name}_ssl")
    if name in ("cifar10", "svhn"):
        group.add_argument(
            "--no-verify-checksums",
            action="store_true",
            help="read the data files without torchvision's MD5 check (for re-packed or cut-down copies)",
        )
    group.add_argument("--lr", type=cli.positive_float, default=setting.lr, help="learning rate of D and G")
    group.add_argument(
        "--lr-decay-epochs",
        type=cli.nonnegative_int,
        default=setting.decay_epochs,
        help="decay the learning rate linearly to 0 over the last N epochs (0: constant)",
    )
    group.add_argument(
        "--generator-loss",
        choices=["feature_matching", "minimax"],
        default="feature_matching",
        help="feature matching (the paper's choice for classification) or the minibatch-discrimination scripts' loss",
    )
    group.add_argument(
        "--feature-matching-distance",
        choices=["squared_l2", "mean_squared", "mean_absolute"],
        default=setting.feature_matching_distance,
        help="the paper's squared L2, or the reference code's mean squared (MNIST) / mean absolute (CIFAR, SVHN)",
    )
    group.add_argument("--unlabeled-weight", type=float, default=1.0, help="weight of the unlabeled loss")
    group.add_argument("--ema-rate", type=cli.fraction, default=setting.ema_rate, help="evaluation average rate per step")
    group.add_argument(
        "--ema-reference-start",
        action="store_true",
        help="start the average at zero without bias correction, exactly as the reference (early errors are poor)",
    )
    group.add_argument(
        "--unlabeled-examples",
        type=cli.positive_int,
        default=None,
        help="use a pool of N training images as the unlabeled data (the labeled ones included; chosen with "
        "--seed-data); default: the whole training set, as the paper",
    )
    group.add_argument("--init-examples", type=cli.positive_int, default=INIT_EXAMPLES, help="data-dependent init batch")
    group.add_argument("--eval-every", type=cli.positive_int, default=1, help="epochs between test evaluations")
    group.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=name == "digits",
        help="also train the discriminator on the labeled examples alone and report its test error",
    )
    group.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off", help="mixed precision")
    group.add_argument("--compile", action="store_true", help="torch.compile the models")
    group.add_argument("--image-every", type=cli.positive_int, default=1000, help="iterations between image grids")
    return parser


def _load(name: str, args: argparse.Namespace, train: bool):
    root = getattr(args, "data_dir", None) or "data"
    # One process downloads; the others wait for it, then read the files.
    if idist.get_rank() > 0:
        idist.barrier()
    try:
        options = {"verify_checksums": False} if getattr(args, "no_verify_checksums", False) else {}
        dataset = load_dataset(name, root, train=train, download=getattr(args, "download", False), **options)
    finally:
        if idist.get_rank() == 0:
            idist.barrier()
    return dataset


def _test_loader(test_set, args: argparse.Namespace) -> DataLoader:
    # Each process scores every world_size-th test image, without padding, so the error counts that the metric
    # sums over processes are exact.
    shard = Subset(test_set, range(idist.get_rank(), len(test_set), idist.get_world_size()))
    return DataLoader(shard, batch_size=EVAL_BATCH_SIZE, shuffle=False, num_workers=args.num_workers)


def _init_batch(train_set, count: int, seed: int) -> torch.Tensor:
    # The reference initializes on the first 500 examples of the permuted training set (spec §3.1, §4.4).
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_set), generator=generator)[: min(count, len(train_set))]
    return torch.stack([train_set[i][0] for i in order.tolist()])


def train(local_rank: int, args: argparse.Namespace, name: str) -> Dict[str, Any]:
    """One process of a semi-supervised run; returns the final metrics (on every process)."""
    del local_rank  # the device comes from ignite.distributed
    started = time.time()
    setting = SETTINGS[name]
    device = prepare_run(args)

    train_set = _load(setting.dataset, args, train=True)
    test_set = _load(setting.dataset, args, train=False)
    labeled = balanced_labeled_subset(dataset_labels(train_set), args.labels_per_class, seed=args.seed_data)
    pool = None
    if getattr(args, "unlabeled_examples", None) is not None:
        pool = unlabeled_pool(len(train_set), labeled, args.unlabeled_examples, seed=args.seed_data)
    loader = SemiSupervisedLoader(
        train_set,
        labeled,
        batch_size=args.batch_size,
        unlabeled_indices=pool,
        seed=args.seed,
        generator_batch=args.generator_loss == "feature_matching",
        num_workers=args.num_workers,
        pin_memory=device.type == "cuda",
    )

    generator = setting.generator().to(device)
    discriminator = setting.discriminator().to(device)
    d_optimizer = ReferenceAdam(discriminator.parameters(), lr=args.lr, betas=(0.5, 0.999))
    g_optimizer = ReferenceAdam(generator.parameters(), lr=args.lr, betas=(0.5, 0.999))
    init_source = train_set if pool is None else Subset(train_set, pool.tolist())
    init_d = DataDependentInitialization(discriminator, _init_batch(init_source, args.init_examples, args.seed))
    init_g = DataDependentInitialization(
        generator, lambda: generator.sample_noise(args.batch_size, device=device)
    ) if setting.init_generator else None
    # Initialize before wrapping for data parallelism, so that every process starts from rank 0's weights.
    generator_ddp = idist.auto_model(generator, sync_bn=False)
    discriminator_ddp = idist.auto_model(discriminator, sync_bn=False)

    trainer = create_semi_supervised_trainer(
        generator_ddp,
        discriminator_ddp,
        d_optimizer,
        g_optimizer,
        generator_loss=args.generator_loss,
        feature_matching_distance=args.feature_matching_distance,
        generator_steps=1 if args.generator_loss == "feature_matching" else 3,
        unlabeled_weight=args.unlabeled_weight,
        noise_fn=lambda n: generator.sample_noise(n, device=device),
        device=device,
        amp=False if args.amp == "off" else args.amp,
        compile=args.compile,
    )
    # Handlers on STARTED run in the order attached: initialize the generator first (the discriminator's init
    # does not need it), then the discriminator, then the evaluation average copies the initialized weights.
    if init_g is not None:
        init_g.attach(trainer)
    init_d.attach(trainer)
    averaging = EvaluationAveraging(discriminator, rate=args.ema_rate, bias_correction=not args.ema_reference_start)
    averaging.attach(trainer)
    decay = min(args.lr_decay_epochs, args.epochs)
    if decay > 0:
        total = args.epochs
        EpochLRScheduler([d_optimizer, g_optimizer], lambda epoch: linear_decay_factor(epoch, total, decay)).attach(
            trainer
        )
    evaluator = ErrorEvaluator(lambda: averaging.averaged_model, _test_loader(test_set, args), name="error", device=device)
    evaluator.attach(trainer, Events.EPOCH_COMPLETED(every=args.eval_every) | Events.COMPLETED)

    to_save = {
        "generator": generator,
        "discriminator": discriminator,
        "d_optimizer": d_optimizer,
        "g_optimizer": g_optimizer,
        "trainer": trainer,
        "loader": loader,
        "evaluation_average": averaging,
        "init_discriminator": init_d,
    }
    if init_g is not None:
        to_save["init_generator"] = init_g
    logger = attach_tensorboard(
        str(tensorboard_dir(args)),
        trainer,
        evaluators={"test": evaluator.engine},
        optimizers={"discriminator": d_optimizer, "generator": g_optimizer},
        state_attributes=["ema_momentum"],
        log_every=10,
        generator=generator,
        image_every=args.image_every,
        image_range=setting.image_range,
        image_shape=setting.image_shape,
        generator_mode="train",  # the reference's generators always normalize with batch statistics
    )
    resumed = attach_run_handlers(
        trainer, args, to_save, output_names=["loss_labeled", "loss_unlabeled", "loss_generator", "train_error"]
    )
    trainer.run(loader, max_epochs=args.epochs, epoch_length=_epoch_length(loader, args))
    logger.close()

    metrics: Dict[str, Any] = {
        "test_error": evaluator.engine.state.metrics["error"],
        "test_error_count": evaluator.engine.state.metrics["error_count"],
        "test_examples": len(test_set),
        "labels": int(len(labeled)),
        "unlabeled_examples": len(train_set) if pool is None else int(len(pool)),
        "iterations": trainer.state.iteration,
        "final_train_outputs": trainer.state.output,
    }
    if args.baseline:
        metrics.update(_labeled_only_baseline(setting, args, train_set, test_set, labeled, device, trainer.state.iteration))
    write_summary(
        args,
        metrics,
        started,
        extra={"experiment": f"{name}_ssl", "paper": setting.paper, "resumed_from": str(resumed) if resumed else None},
    )
    return metrics


def _epoch_length(loader: SemiSupervisedLoader, args: argparse.Namespace) -> int:
    return min(len(loader), args.iterations_per_epoch) if args.iterations_per_epoch else len(loader)


def _labeled_only_baseline(
    setting: SemiSupervisedSetting,
    args: argparse.Namespace,
    train_set,
    test_set,
    labeled: torch.Tensor,
    device: torch.device,
    iterations: int,
) -> Dict[str, Any]:
    """The same discriminator and optimizer, trained on the labeled examples alone for the same number of steps.

    Cross-entropy on the K classes, the same noise and dropout, the same data-dependent init and evaluation
    average; only the unlabeled data and the generator are missing.
    """
    torch.manual_seed(args.seed + idist.get_rank())
    classifier = setting.discriminator().to(device)
    optimizer = ReferenceAdam(classifier.parameters(), lr=args.lr, betas=(0.5, 0.999))
    labeled_set = Subset(train_set, labeled.tolist())
    batch = min(args.batch_size, len(labeled_set))
    sampler = torch.utils.data.RandomSampler(
        labeled_set, replacement=False, generator=torch.Generator().manual_seed(args.seed)
    )
    loader = DataLoader(labeled_set, batch_size=batch, sampler=sampler, drop_last=True)

    def step(engine: Engine, data: Any) -> float:
        x, y = data[0].to(device), data[1].to(device)
        classifier.train()
        loss = torch_F.cross_entropy(classifier(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer = Engine(step)
    # Initialized on the labeled examples: this baseline never sees an unlabeled one.
    DataDependentInitialization(classifier, _init_batch(labeled_set, args.init_examples, args.seed)).attach(trainer)
    averaging = EvaluationAveraging(classifier, rate=args.ema_rate, bias_correction=not args.ema_reference_start)
    averaging.attach(trainer)
    decay = min(args.lr_decay_epochs, args.epochs)
    if decay > 0:
        total = args.epochs
        EpochLRScheduler(optimizer, lambda epoch: linear_decay_factor(epoch, total, decay)).attach(trainer)
    steps_per_epoch = max(1, iterations // args.epochs)
    trainer.run(loader, max_epochs=args.epochs, epoch_length=steps_per_epoch)
    evaluator = ErrorEvaluator(averaging.averaged_model, _test_loader(test_set, args), name="error", device=device)
    result = evaluator.run()
    return {"baseline_test_error": result["error"], "baseline_test_error_count": result["error_count"]}


def main(name: str, argv: Optional[Sequence[str]] = None) -> None:
    """Parses the command line and runs the experiment ``name`` (a key of :data:`SETTINGS`)."""
    if name not in SETTINGS:
        raise ValueError(f"name must be one of {sorted(SETTINGS)}, got {name!r}")
    parser = build_parser(name)
    args = cli.parse_args(parser, argv)
    if getattr(args, "data_dir", None) is not None and not args.download and not args.data_dir.is_dir():
        parser.error(
            f"--data-dir: {str(args.data_dir)!r} does not exist; pass --download to fetch {name} with "
            "torchvision, or point --data-dir at a copy"
        )
    try:
        cli.launch(train, args, name)
    except (DatasetNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
