#!/usr/bin/env python
"""CIFAR-10 sample quality with the paper's techniques ("our methods"); one switch per Inception-table ablation.

Run `python recipes/cifar10_samples.py --help` for the flags; the experiment itself is
:mod:`ignite_igan.experiments.sample_quality`.
"""
from ignite_igan.experiments.sample_quality import main

if __name__ == "__main__":
    main("cifar10")
