"""``--seeds``: the text a user types, read as the seeds it names, each once, within NumPy's seed range."""
import argparse

import pytest

from ignite_igan.experiments.cli import MAX_SEED
from ignite_igan.experiments.seeds import parse_seeds, without_flags


@pytest.mark.parametrize("text, seeds", [
    ("1-3,7", [1, 2, 3, 7]),
    (" 2 , 4-5", [2, 4, 5]),
    ("0", [0]),
    (f"{MAX_SEED - 1}-{MAX_SEED}", [MAX_SEED - 1, MAX_SEED]),
])
def test_seeds_and_ranges_are_read_in_order(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "3-1", "1,1", "1-3,2", "-1", "1-2-3", "x", "1.5", f"{MAX_SEED + 1}",
                                  f"0-{2**32}"])
def test_anything_else_is_refused_naming_the_form(text):
    # f"0-{2**32}": refused before a list of four billion seeds is built.
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected seeds such as 1-10 or 1,3,5-7 \(integers in "
                                                         rf"\[0, {MAX_SEED}\], each once\), got '"):
        parse_seeds(text)


def test_per_seed_flags_are_dropped_from_the_command():
    argv = ["--epochs", "5", "--seeds=1-3", "--jobs", "2", "--seed", "4", "--lr", "0.1"]
    assert without_flags(argv, ("--seeds", "--jobs", "--seed")) == ["--epochs", "5", "--lr", "0.1"]
