"""The digits GAN's iteration budget: at which number of epochs (if any) does it beat LabelSpreading?

Reads the JSON of a long ``benchmarks/digits_ssl.py`` run (its GAN runs keep the test error after every epoch) and
tabulates, per seed, the GAN's test error after each budget against the CV-selected LabelSpreading of the same
labeled subset. The learning rate and the averaging rate of the digits recipe are constant, so the error after E
epochs of a long run is exactly what a run of ``--epochs E`` reports (its final epoch, not a best epoch). Run from
the repository root::

    python benchmarks/digits_ssl.py --labels 100 --seeds 1 2 3 --workers 1 --recipe-args="--epochs 2000" \\
        --output docs/results/digits_budget_runs.json
    python benchmarks/digits_budget.py docs/results/digits_budget_runs.json --output docs/results/digits_budget.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from _harness import command_line, utc_now, write_results

BUDGETS = (50, 100, 200, 400, 600, 1000, 1500, 2000)
STEPS_PER_EPOCH = 12  # 1,297 training digits in batches of 100


def budget_table(runs: Dict[str, Any], budgets: Sequence[int]) -> Dict[str, Any]:
    gans = {r["seed"]: r for r in runs["gan"]}
    spreading = {r["seed"]: r for r in runs["label_spreading"]}
    seeds = sorted(set(gans) & set(spreading))
    seconds_per_epoch = statistics.fmean(gans[s]["seconds"] / gans[s]["epochs"] for s in seeds) if seeds else None
    rows = []
    for budget in budgets:
        errors = {s: gans[s]["test_error_by_epoch"][budget - 1] for s in seeds
                  if len(gans[s]["test_error_by_epoch"]) >= budget}
        if len(errors) != len(seeds) or not seeds:
            continue
        wins = sum(errors[s] < spreading[s]["selected"]["test_error"] for s in seeds)
        rows.append({"epochs": budget, "iterations": budget * STEPS_PER_EPOCH, "gan": errors,
                     "gan_mean": statistics.fmean(errors.values()), "wins": wins})
    first = {}
    for s in seeds:
        below = [e + 1 for e, err in enumerate(gans[s]["test_error_by_epoch"])
                 if err < spreading[s]["selected"]["test_error"]]
        first[s] = below[0] if below else None
    return {"seeds": seeds, "label_spreading": {s: spreading[s]["selected"]["test_error"] for s in seeds},
            "labeled_only_at_end": {s: gans[s]["baseline_test_error"] for s in seeds}, "rows": rows,
            "first_epoch_below_label_spreading": first, "seconds_per_epoch_with_baseline": seconds_per_epoch}


def markdown(table: Dict[str, Any], source: str, command: str) -> str:
    seeds = table["seeds"]
    ls = table["label_spreading"]
    lines = [f"Command: `{command}` (runs: `{source}`)  ", f"Date: {utc_now()}", "",
             "Test error (%) on the 500 digits test images, 100 labels, the GAN's averaged discriminator after the "
             "last epoch of each budget, against LabelSpreading (CV-selected on the labeled images) of the same "
             "labeled subset:", "",
             "| epochs | iterations | " + " | ".join(f"GAN seed {s}" for s in seeds) + " | GAN mean | beats "
             "LabelSpreading |", "|---:|---:|" + "---:|" * len(seeds) + "---:|---|"]
    for row in table["rows"]:
        lines.append(f"| {row['epochs']:,} | {row['iterations']:,} | "
                     + " | ".join(f"{100 * row['gan'][s]:.1f}" for s in seeds)
                     + f" | {100 * row['gan_mean']:.2f} | {row['wins']}/{len(seeds)} seeds |")
    lines.append("| LabelSpreading | | " + " | ".join(f"{100 * ls[s]:.1f}" for s in seeds)
                 + f" | {100 * statistics.fmean(ls.values()):.2f} | |")
    first = ", ".join(f"seed {s}: {'epoch ' + str(e) if e else 'never'}"
                      for s, e in table["first_epoch_below_label_spreading"].items())
    lines += ["", f"First epoch at which the GAN is below LabelSpreading: {first}. One epoch (12 iterations) with "
              f"the labeled-only baseline took {table['seconds_per_epoch_with_baseline']:.2f} s on one thread of the "
              "shared machine."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, help="the JSON of benchmarks/digits_ssl.py with long GAN runs")
    parser.add_argument("--output", type=Path, default=None, help="JSON of the table; Markdown next to it")
    args = parser.parse_args(argv)
    runs = json.loads(args.runs.read_text())["runs"]
    table = budget_table(runs, BUDGETS)
    text = markdown(table, str(args.runs), command_line(__file__, sys.argv[1:] if argv is None else argv))
    print(text)
    write_results(table, args.output, text, header=False)


if __name__ == "__main__":
    main()
