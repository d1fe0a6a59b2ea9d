#!/usr/bin/env python
"""The fashion_mnist_ssl experiment of recipes/semi_supervised.py; `--help` lists the flags."""
import sys

from semi_supervised import main

if __name__ == "__main__":
    main("fashion_mnist_ssl", sys.argv[1:])
