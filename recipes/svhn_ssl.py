#!/usr/bin/env python
"""Semi-supervised svhn with a feature-matching GAN, the paper's setting by default.

Run `python recipes/svhn_ssl.py --help` for the flags; the experiment itself is
:mod:`ignite_igan.experiments.semi_supervised`.
"""
from ignite_igan.experiments.semi_supervised import main

if __name__ == "__main__":
    main("svhn")
