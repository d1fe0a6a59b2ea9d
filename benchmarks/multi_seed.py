"""Wall time of a recipe's seeds in one command, side by side against one after another.

    python benchmarks/multi_seed.py --recipe digits_ssl --seeds 1-3 --jobs 1,2,3 \\
        --output docs/results/multi_seed_cpu.json

Runs ``recipes/<recipe>.py --seeds <seeds> --jobs J`` for each J in ``--jobs`` (``--jobs 1`` is the seeds one after
another, through the same command), each into a fresh folder, and reports the wall time of each and its ratio to
``--jobs 1``, with every seed's test error (which must not depend on J: each seed's run is the run it gets alone).
Extra arguments after ``--`` go to the recipe.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from _harness import ROOT, command_line, load_average, machine_info, utc_now, write_results


def run(recipe: str, seeds: str, jobs: int, extra: List[str], folder: Path) -> Dict[str, Any]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), "--seeds", seeds, "--jobs",
                             str(jobs), "--output-dir", str(folder), "--no-progress", *extra],
                            capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{recipe} --jobs {jobs} failed:\n{result.stdout}\n{result.stderr}")
    table = json.loads((folder / "seeds.json").read_text())
    return {"jobs": jobs, "wall_s": wall,
            "test_error": {seed: m["test_error"] for seed, m in table["per_seed"].items()},
            "mean": table["test_error"]["mean"], "std": table["test_error"]["std"]}


def markdown(report: Dict[str, Any]) -> str:
    lines = [f"# {report['recipe']}, seeds {report['seeds']}: one command, J processes at a time", "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['logical_cpus']} logical CPUs; "
             f"load average {report['load_start'][0]:.1f} at the start, {report['load_end'][0]:.1f} at the end.", "",
             "| jobs J | wall time | vs. one after another | test error per seed | mean ± std |", "|---|---|---|---|---|"]
    base = next(r["wall_s"] for r in report["results"] if r["jobs"] == 1)
    for r in report["results"]:
        errors = ", ".join(f"{100 * e:.1f} %" for e in r["test_error"].values())
        lines.append(f"| {r['jobs']} | {r['wall_s']:.0f} s | {r['wall_s'] / base:.2f}x | {errors} | "
                     f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f} % |")
    same = len({json.dumps(r["test_error"], sort_keys=True) for r in report["results"]}) == 1
    lines += ["", "Every seed's test error is the same whatever J: " + ("yes." if same else "**no**.")]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="digits_ssl")
    parser.add_argument("--seeds", default="1-3")
    parser.add_argument("--jobs", default="1,2,3", help="comma-separated process counts; 1 is required")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(own)
    jobs = [int(j) for j in args.jobs.split(",")]
    if 1 not in jobs:
        parser.error("--jobs must include 1 (the seeds one after another, the reference of the ratios)")
    report: Dict[str, Any] = {"command": command_line(__file__, argv), "date": utc_now(), "recipe": args.recipe,
                              "seeds": args.seeds, "extra": extra, "machine": machine_info(),
                              "load_start": load_average(), "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        for j in jobs:
            report["results"].append(run(args.recipe, args.seeds, j, extra, Path(tmp) / f"jobs{j}"))
            print(report["results"][-1], flush=True)
    report["load_end"] = load_average()
    write_results(report, args.output, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
