#!/usr/bin/env python
"""The cifar10_samples experiment of recipes/sample_quality.py; `--help` lists the flags."""
from sample_quality import main

if __name__ == "__main__":
    main("cifar10_samples")  # the flags: sys.argv[1:]
