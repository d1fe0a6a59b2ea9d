"""What every benchmark script shares, so that each script is its measurement and little else.

* **The machine** recorded with every result: :func:`cpu_model`, :func:`describe_device`, :func:`machine_info`,
  :func:`device_info`, :func:`load_average` and :func:`load_note` (the load of a shared machine, said in the
  Markdown), :func:`utc_now`, :func:`command_line`.
* **The timer**: :func:`select_device`, :func:`synchronize` and :func:`alternating`, which runs the compared methods
  in turn (A B C, C B A, ...), so that a noisy shared machine slows all of them alike; :func:`format_times` writes
  the median and range of the times.
* **The writer**: :func:`write_results`, the JSON of the raw numbers and the Markdown next to it.

Importing this module also puts the repository root on ``sys.path``, so that a script run from a checkout
(``python benchmarks/<script>.py``) imports ``ignite_igan`` without installing it.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo (Linux), else what the platform reports."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_device(device: torch.device) -> str:
    """The device in words: the GPU's name and its host, or the CPU with its logical CPUs and torch threads."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (host: {cpu_model()}, {os.cpu_count()} logical CPUs)"
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch thread(s)"


def machine_info() -> Dict[str, Any]:
    """The CPU-only scripts' description of the machine: ``cpu``, ``logical_cpus``, ``torch``, ``python``."""
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version()}


def device_info(device: torch.device) -> Dict[str, Any]:
    """The device scripts' description: ``device``, ``device_type``, ``torch``, ``python``, ``torch_threads``."""
    return {"device": describe_device(device), "device_type": device.type, "torch": torch.__version__,
            "python": platform.python_version(), "torch_threads": torch.get_num_threads()}


def load_average() -> List[float]:
    """The 1-, 5- and 15-minute load averages of the machine (other jobs make times noisy)."""
    return list(os.getloadavg())


def load_note(start: float, end: float, shared: bool) -> str:
    """One Markdown sentence on the 1-min load average at the start and end, and, if ``shared``, what it means."""
    note = " (the machine was shared with other jobs: compare ratios, not absolute times)." if shared else "."
    return f"1-min load average {start:.1f} at the start and {end:.1f} at the end{note}"


def utc_now(fmt: Optional[str] = None) -> str:
    """The time now in UTC: ISO 8601 to the second, or formatted by ``strftime(fmt)``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="seconds") if fmt is None else now.strftime(fmt)


def command_line(script: str, argv: Optional[Sequence[str]] = None) -> str:
    """The command that reruns ``script`` (its ``__file__``) from the repository root; ``argv``: sys.argv[1:]."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python", os.path.relpath(script, ROOT), *map(shlex.quote, args)])


def select_device(name: str, threads: int = 0) -> torch.device:
    """The device ``name``, refused if it is CUDA and none is available; ``threads > 0`` sets torch's CPU threads."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if threads > 0:
        torch.set_num_threads(threads)
    return device


def synchronize(device: Optional[torch.device]) -> None:
    """Waits for the device's queued work, so that a timer measures the work and not its launch."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def alternating(
    runs: Mapping[str, Callable[[], Any]],
    repeats: int,
    *,
    warmup: int = 0,
    device: Optional[torch.device] = None,
    mirror: bool = True,
    before: Optional[Callable[[str, int], None]] = None,
    progress: bool = False,
) -> Tuple[Dict[str, List[float]], Dict[str, List[Any]]]:
    """Times every run once per round, for ``repeats`` rounds, the runs in turn.

    Args:
        runs: the callables to compare, by name, in the order of the first round.
        repeats: timed rounds.
        warmup: untimed calls of each run first.
        device: synchronized before and after each timed call (CUDA), so that the time is the device's work.
        mirror: reverse the order every other round (A B C, C B A, ...); else always A B C.
        before: called untimed as ``before(name, round_index)`` before each timed call (restore a state, ...).
        progress: print each time to stderr.

    Returns:
        The seconds of each call and the values the calls returned, by name, in round order.
    """
    names = list(runs)
    for name in names:
        for _ in range(warmup):
            runs[name]()
    seconds: Dict[str, List[float]] = {name: [] for name in names}
    values: Dict[str, List[Any]] = {name: [] for name in names}
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 or not mirror else reversed(names):
            if before is not None:
                before(name, round_index)
            synchronize(device)
            start = time.perf_counter()
            value = runs[name]()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
            values[name].append(value)
            if progress:
                print(f"round {round_index + 1}/{repeats} {name}: {seconds[name][-1]:.3f} s", file=sys.stderr,
                      flush=True)
    return seconds, values


def format_times(values: Sequence[float], unit: str = "ms", digits: int = 1) -> str:
    """``median unit (min–max)`` of times in seconds, shown in ``unit`` (s, ms or µs), e.g. ``9.2 ms (4.7–9.5)``."""
    scale = {"s": 1.0, "ms": 1e3, "µs": 1e6}[unit]
    mid, low, high = (f"{v * scale:.{digits}f}" for v in (statistics.median(values), min(values), max(values)))
    return f"{mid} {unit} ({low}–{high})"


def write_results(
    report: Dict[str, Any],
    output: Optional[Path],
    markdown: str,
    *,
    header: bool = True,
    extra: str = "",
    indent: int = 2,
) -> None:
    """Writes ``report`` as JSON to ``output`` and ``markdown`` next to it (same name, ``.md``); nothing if None.

    Args:
        report: the raw numbers; its ``command`` and ``date`` (in ``report["meta"]`` if there is one) head the
            Markdown.
        output: the JSON file; its folder is created.
        markdown: the tables.
        header: start the Markdown with ``Command:`` and ``Date:`` lines (and ``extra``, e.g. versions).
        extra: a third header line.
        indent: the JSON's indentation.
    """
    if output is None:
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=indent) + "\n")
    if header:
        meta = report.get("meta", report)
        lines = [f"Command: `{meta['command']}`", f"Date: {meta['date']}"] + ([extra] if extra else [])
        markdown = "  \n".join(lines) + "\n\n" + markdown
    output.with_suffix(".md").write_text(markdown)
