#!/usr/bin/env python
"""A GAN on the 2-D ring of 8 or grid of 25 Gaussians, with a switch for each technique of the paper.

An epoch is ``--iterations-per-epoch`` iterations (500 by default) of freshly sampled data. The run scores mode
coverage (modes with >= 20 of 2,500 samples, modes with any, high-quality share, KL of the mode histogram) after
every epoch, and writes ``samples.png`` (a scatter plot over the modes), TensorBoard logs, checkpoints and
``summary.json`` into ``--output-dir``. The experiment is :mod:`ignite_igan.experiments.mixture`.

Examples::

    python recipes/mixture.py --mixture ring                                # vanilla GAN
    python recipes/mixture.py --mixture grid --minibatch-discrimination
    python recipes/mixture.py --mixture ring --all-techniques --output-dir runs/ring-all
    tensorboard --logdir runs/mixture
"""
import sys
from typing import Optional, Sequence

from ignite_igan import cli
from ignite_igan.experiments import mixture


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = cli.recipe_parser(
        "mixture: a GAN on a 2-D mixture of Gaussians, with a switch for each technique",
        epochs=mixture.MixtureConfig.epochs,
        labels_per_class=None,
        data_dir=None,
        output_dir="runs/mixture",
        threads=1,  # these MLPs run faster on one thread than on two
        iterations_per_epoch=mixture.MixtureConfig.iterations_per_epoch,
        iterations_per_epoch_help="iterations per epoch (the data are sampled afresh for every batch, so this "
        "defines an epoch)",
    )
    mixture.add_arguments(parser)
    args = cli.parse_args(parser, argv)
    mixture.config_from_args(args, parser)  # every check before any process starts
    try:
        cli.launch(mixture.run, args)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
