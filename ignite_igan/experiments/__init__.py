"""The paper's experiments assembled from the package's parts; the scripts in ``recipes/`` call these.

- :mod:`ignite_igan.experiments.runner`: seeds, device, progress bar, checkpoints and the summary every run shares.
- :mod:`ignite_igan.experiments.semi_supervised`: K+1-class semi-supervised training (MNIST, CIFAR-10, SVHN, digits).
- :mod:`ignite_igan.experiments.sample_quality`: CIFAR-10 sample quality and the Inception-table ablations.
- :mod:`ignite_igan.experiments.mixture`: the 2-D Gaussian mixtures with a switch per technique.
"""
