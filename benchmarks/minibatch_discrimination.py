"""Forward+backward time and peak memory of minibatch discrimination: ours against the naive broadcast.

For each batch size N the script runs, in one process and alternating between the two, a
training step (forward, ``sum()`` of the output, backward into the input and every parameter) of

* ``ours``: :class:`ignite_igan.nn.MinibatchDiscrimination` (A=192, B=100, C=5 by default), whose features
  come from the memory-tiled ``ignite_igan._fast_paths.minibatch_features`` and never build an (N, N, B, C) tensor;
* ``naive``: the same layer, same parameters, with the features of the readable formula
  :func:`ignite_igan.functional.minibatch_features`, ``exp(-(|M[:, None] - M[None]|.sum(-1) + 1e6 I)).sum(1)``,
  which materializes (N, N, B, C) differences.

Before measuring, both are checked to give the same output and gradients.

Peak memory is the largest number of bytes allocated by PyTorch during the step above what was allocated before
it (inputs and parameters excluded, outputs, intermediates and gradients included):

* CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``.
* CPU: in a fresh subprocess per (implementation, N), the running total of CPU-allocator bytes that
  ``torch.profiler`` (``profile_memory=True``) records at every allocation and free; its maximum is the CPU
  analogue of ``max_memory_allocated``. As a cross-check that nothing bypasses the allocator (oneDNN scratch
  space, for instance), the same subprocess also reports the growth of the process's peak resident set
  (``VmHWM``, reset through ``/proc/self/clear_refs``) over a second, unprofiled step. ``tracemalloc`` cannot
  be used: it does not see PyTorch's allocations.

Naive configurations whose estimated peak (3 (N, N, B, C) tensors plus 4 (N, N, B) ones) exceeds
``--max-naive-bytes`` are skipped and marked as such in the table (N = 2048 needs ~25 GB in float32).

Run from the repository root::

    python benchmarks/minibatch_discrimination.py --device cpu --output benchmarks/results/cpu.json

The JSON holds every raw number; the Markdown table is printed and written next to it (same name, ``.md``).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from _harness import (  # first: it puts the repository root on sys.path (benchmarks/ is there already)
    alternating, command_line, device_info, format_times, load_average, load_note, select_device, synchronize,
    utc_now, write_results,
)
from ignite_igan.functional import minibatch_features
from ignite_igan.nn import MinibatchDiscrimination

IMPLEMENTATIONS = ("ours", "naive")


# --------------------------------------------------------------------------------------------------------------
# The two implementations, sharing one set of parameters
# --------------------------------------------------------------------------------------------------------------
def make_layer(in_features: int, num_kernels: int, kernel_dim: int) -> nn.Module:
    return MinibatchDiscrimination(in_features, num_kernels=num_kernels, kernel_dim=kernel_dim)


def naive_forward(layer: nn.Module, x: Tensor) -> Tensor:
    """The layer's computation with the readable formula: (N, N, B, C) differences, as in the Theano reference."""
    m = (x @ layer.projection().flatten(1)).view(-1, layer.num_kernels, layer.kernel_dim)
    return torch.cat([x, minibatch_features(m) + layer.bias], dim=1)


def step_function(impl: str, layer: nn.Module) -> Callable[[Tensor], None]:
    forward = layer if impl == "ours" else (lambda x: naive_forward(layer, x))

    def step(x: Tensor) -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        forward(x).sum().backward()

    return step


def setup(args: argparse.Namespace, n: int, device: torch.device):
    torch.manual_seed(args.seed)
    layer = make_layer(args.in_features, args.num_kernels, args.kernel_dim).to(device=device, dtype=args.dtype)
    x = torch.randn(n, args.in_features, device=device, dtype=args.dtype, requires_grad=True)
    return layer, x


def check_agreement(args: argparse.Namespace, device: torch.device, n: int = 64) -> float:
    """Both implementations compute the same output and gradients (float64); returns the largest difference."""
    layer, _ = setup(args, n, device)
    layer = layer.double()
    x = torch.randn(n, args.in_features, device=device, dtype=torch.float64, requires_grad=True)
    results = []
    for impl in IMPLEMENTATIONS:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        forward = layer if impl == "ours" else (lambda v: naive_forward(layer, v))
        out = forward(x)
        (out * torch.linspace(-1, 1, out.numel(), device=device, dtype=out.dtype).view_as(out)).sum().backward()
        results.append([out.detach().clone(), x.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    worst = 0.0
    for a, b in zip(*results):
        if not torch.allclose(a, b, rtol=1e-9, atol=1e-10):
            raise AssertionError("ours and naive disagree; the benchmark would compare different computations")
        worst = max(worst, float((a - b).abs().max()))
    return worst


# --------------------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------------------
def naive_bytes_estimate(n: int, args: argparse.Namespace) -> int:
    itemsize = torch.empty((), dtype=args.dtype).element_size()
    per_pair = args.num_kernels * itemsize
    return 3 * n * n * per_pair * args.kernel_dim + 4 * n * n * per_pair


def default_max_naive_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(0.8 * torch.cuda.get_device_properties(device).total_memory)
    return int(0.6 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _read_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def cpu_peak_in_this_process(impl: str, n: int, args: argparse.Namespace) -> Dict[str, Optional[int]]:
    """Run in the subprocess: profiler peak of allocated bytes, and peak-RSS growth of a second step."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device("cpu")
    warm_layer, warm_x = setup(args, 8, device)  # load kernels and thread pools before anything is measured
    step_function(impl, warm_layer)(warm_x)
    layer, x = setup(args, n, device)
    step = step_function(impl, layer)

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(x)
    with tempfile.TemporaryDirectory() as tmp:
        trace_path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(trace_path)
        with open(trace_path) as handle:
            events = json.load(handle)["traceEvents"]
    totals = [
        e["args"]["Total Allocated"]
        for e in events
        if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == 0
    ]
    if not totals:
        raise RuntimeError("the profiler recorded no CPU allocations")
    # The counter starts at 0 when profiling starts and only follows allocations made while it runs.
    profiler_peak = max(totals)

    rss_growth = None
    layer.zero_grad(set_to_none=True)
    x.grad = None
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        before = _read_status_kib("VmRSS")
        step(x)
        rss_growth = (_read_status_kib("VmHWM") - before) * 1024
    except OSError:
        pass
    return {"peak_bytes": int(profiler_peak), "peak_rss_growth_bytes": rss_growth}


def cpu_peak(impl: str, n: int, args: argparse.Namespace) -> Dict[str, Optional[int]]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_memory-worker",
        f"{impl}:{n}",
        "--in-features",
        str(args.in_features),
        "--num-kernels",
        str(args.num_kernels),
        "--kernel-dim",
        str(args.kernel_dim),
        "--dtype",
        args.dtype_name,
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"memory worker for {impl} N={n} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def cuda_peak(impl: str, n: int, args: argparse.Namespace, device: torch.device) -> Dict[str, Optional[int]]:
    layer, x = setup(args, n, device)
    step = step_function(impl, layer)
    step(x)  # warm-up
    layer.zero_grad(set_to_none=True)
    x.grad = None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step(x)
    synchronize(device)
    return {"peak_bytes": int(torch.cuda.max_memory_allocated(device) - before), "peak_rss_growth_bytes": None}


def time_alternating(
    n: int, impls: List[str], args: argparse.Namespace, device: torch.device
) -> Dict[str, List[float]]:
    """Times one step per implementation per round, alternating the order every round."""
    steps = {}
    for impl in impls:
        layer, x = setup(args, n, device)
        steps[impl] = functools.partial(step_function(impl, layer), x)
    return alternating(steps, args.repeats, warmup=args.warmup, device=device)[0]


# --------------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------------
def _fmt_bytes(value: Optional[int]) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value} B"


def markdown_table(report: dict) -> str:
    rows = [
        "| N | ours: time, median (min–max) | naive: time, median (min–max) | time ours/naive | ours: peak memory "
        "| naive: peak memory | memory ours/naive |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_n: Dict[int, Dict[str, dict]] = {}
    for entry in report["results"]:
        by_n.setdefault(entry["n"], {})[entry["impl"]] = entry
    show_rss = report["meta"]["device_type"] == "cpu"
    notes = []
    for n in sorted(by_n):
        ours, naive = by_n[n]["ours"], by_n[n]["naive"]
        ours_mem = _fmt_bytes(ours["peak_bytes"])
        if show_rss:
            ours_mem += f" (RSS +{_fmt_bytes(ours['peak_rss_growth_bytes'])})"
        if naive.get("skipped"):
            rows.append(
                f"| {n} | {format_times(ours['times_s'])} | skipped | – | {ours_mem} | "
                f"skipped (est. {_fmt_bytes(naive['estimated_bytes'])}) | – |"
            )
            notes.append(f"N={n}: naive skipped, {naive['skipped']}.")
            continue
        naive_mem = _fmt_bytes(naive["peak_bytes"])
        if show_rss:
            naive_mem += f" (RSS +{_fmt_bytes(naive['peak_rss_growth_bytes'])})"
        time_ratio = statistics.median(ours["times_s"]) / statistics.median(naive["times_s"])
        memory_ratio = ours["peak_bytes"] / naive["peak_bytes"]
        rows.append(
            f"| {n} | {format_times(ours['times_s'])} | {format_times(naive['times_s'])} | {time_ratio:.2f} | "
            f"{ours_mem} | {naive_mem} | {memory_ratio:.3f} |"
        )
    meta = report["meta"]
    header = (
        f"A={meta['in_features']}, B={meta['num_kernels']}, C={meta['kernel_dim']}, {meta['dtype']}, "
        f"{meta['repeats']} timed rounds after {meta['warmup']} warm-up, device: {meta['device']}; "
        f"layer: {meta['layer']}; "
        + load_note(meta["load_average_1_5_15min_at_start"][0], meta["load_average_1_5_15min_at_end"][0], False)
    )
    return "\n".join([header, "", *rows, *([""] + notes if notes else [])]) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time and peak memory of a MinibatchDiscrimination training step (forward+backward), ours "
        "against a naive broadcasting implementation of the same formula, alternating in one run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    parser.add_argument("--sizes", default="64,256,1024,2048", help="comma-separated batch sizes N")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per size (each times both)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per implementation and size")
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the raw numbers; the Markdown "
                        "table goes next to it with the suffix .md")
    parser.add_argument("--max-naive-bytes", type=float, default=None, help="skip the naive version where its "
                        "estimated peak exceeds this many bytes (default: 60%% of RAM on CPU, 80%% of the GPU's)")
    parser.add_argument("--in-features", type=int, default=192, help="A")
    parser.add_argument("--num-kernels", type=int, default=100, help="B")
    parser.add_argument("--kernel-dim", type=int, default=5, help="C")
    parser.add_argument("--dtype", dest="dtype_name", default="float32", choices=("float32", "float64"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--_memory-worker", dest="memory_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.sizes_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not args.sizes_list or min(args.sizes_list) < 2:
        parser.error(f"--sizes needs batch sizes >= 2, got {args.sizes!r}")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    args.dtype = getattr(torch, args.dtype_name)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    device = select_device(args.device, args.threads)
    if args.memory_worker:  # internal: one CPU memory measurement in a fresh process
        impl, n = args.memory_worker.split(":")
        print(json.dumps(cpu_peak_in_this_process(impl, int(n), args)))
        return 0

    max_naive = args.max_naive_bytes if args.max_naive_bytes is not None else default_max_naive_bytes(device)
    disagreement = check_agreement(args, device)
    meta = {
        "date": utc_now(),
        "command": command_line(__file__, argv),
        **device_info(device),
        "layer": "ignite_igan.nn.MinibatchDiscrimination",
        "in_features": args.in_features,
        "num_kernels": args.num_kernels,
        "kernel_dim": args.kernel_dim,
        "dtype": args.dtype_name,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "max_naive_bytes": int(max_naive),
        "memory_method": "torch.cuda.max_memory_allocated" if device.type == "cuda"
        else "torch.profiler peak of CPU-allocator bytes, one subprocess per configuration; RSS growth cross-check",
        "max_abs_difference_ours_vs_naive_float64_n64": disagreement,
    }
    meta["load_average_1_5_15min_at_start"] = load_average()
    results = []
    for n in args.sizes_list:
        estimate = naive_bytes_estimate(n, args)
        impls = ["ours"] if estimate > max_naive else list(IMPLEMENTATIONS)
        print(f"N={n}: timing {', '.join(impls)} ...", file=sys.stderr, flush=True)
        times = time_alternating(n, impls, args, device)
        for impl in IMPLEMENTATIONS:
            entry = {"n": n, "impl": impl, "estimated_bytes": estimate if impl == "naive" else None}
            if impl not in impls:
                entry["skipped"] = (
                    f"estimated peak {_fmt_bytes(estimate)} exceeds --max-naive-bytes {_fmt_bytes(int(max_naive))}"
                )
                results.append(entry)
                continue
            print(f"N={n}: peak memory of {impl} ...", file=sys.stderr, flush=True)
            memory = cuda_peak(impl, n, args, device) if device.type == "cuda" else cpu_peak(impl, n, args)
            entry.update(times_s=times[impl], median_s=statistics.median(times[impl]), **memory)
            results.append(entry)
    meta["load_average_1_5_15min_at_end"] = load_average()
    report = {"meta": meta, "results": results}
    table = markdown_table(report)
    print(table)
    write_results(report, args.output, table, extra=f"torch {meta['torch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
