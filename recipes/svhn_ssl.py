#!/usr/bin/env python
"""The svhn_ssl experiment of recipes/semi_supervised.py; `--help` lists the flags."""
import sys

from semi_supervised import main

if __name__ == "__main__":
    main("svhn_ssl", sys.argv[1:])
