#!/usr/bin/env python
"""Sample quality on scikit-learn's 8x8 digits: the paper's "our methods" and its ablations, offline in minutes.

The score is the Inception-Score protocol with a digits classifier as the network. Run
`python recipes/digits_samples.py --help` for the flags; the experiment itself is
:mod:`ignite_igan.experiments.sample_quality`.
"""
from ignite_igan.experiments.sample_quality import main

if __name__ == "__main__":
    main("digits")
