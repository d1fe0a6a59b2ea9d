#!/usr/bin/env python
"""The digits_ssl experiment of recipes/semi_supervised.py; `--help` lists the flags."""
from semi_supervised import main

if __name__ == "__main__":
    main("digits_ssl")  # the flags: sys.argv[1:]
