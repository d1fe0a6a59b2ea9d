#!/usr/bin/env python
"""The cifar10_ssl experiment of recipes/semi_supervised.py; `--help` lists the flags."""
from semi_supervised import main

if __name__ == "__main__":
    main("cifar10_ssl")  # the flags: sys.argv[1:]
