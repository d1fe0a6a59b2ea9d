#!/usr/bin/env python
"""Semi-supervised Fashion-MNIST with a feature-matching GAN, the paper's MNIST setting.

Run `python recipes/fashion_mnist_ssl.py --help` for the flags.
"""
from ignite_igan.experiments.semi_supervised import main

if __name__ == "__main__":
    main("fashion_mnist")
