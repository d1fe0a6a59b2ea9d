"""Cost of virtual batch norm in a CIFAR-10 generator step.

One **generator step** is: draw ``B`` noise vectors, ``x = G(z)``, a loss (``mean(x²)``: any scalar works, the cost
is the network's), ``backward``, one :class:`~ignite_igan.optim.ReferenceAdam` step. The generator is
:class:`~ignite_igan.models.CIFARGenerator` (100 -> 512x4x4 -> 256x8x8 -> 128x16x16 -> 3x32x32), once with the
released code's batch norm (``normalization="batch"``) and once with virtual batch norm (``"virtual"``) and a fixed
reference batch of ``R`` noise vectors. Our VBN generator runs ``[reference; live]`` through the network in one pass
(statistics from the current weights, gradients through them, as the reference's ImageNet code), so a VBN step
processes ``R + B`` rows where a batch-norm step processes ``B``.

Timed in one process, alternating the order every round (each configuration after its own untimed warm-up):

* ``BN step (B)`` and ``VBN step (B, R)`` for every ``R`` in ``--reference-sizes``: the comparison asked for;
* ``BN step (B + R)``: a batch-norm step on as many rows as the VBN step, which separates the cost of the extra rows
  from the cost of VBN's own arithmetic;
* ``forward (R)``: one forward pass of the reference batch alone through the batch-norm generator, without autograd
  (the yardstick of the issue: the reference-batch pass should cost no more than one extra forward of it), and
  ``forward+backward (R)``: the same rows with autograd and a backward pass;
* sampling (``torch.no_grad`` forward of ``B`` samples) with each generator, what the Inception Score pays.

The table reports medians, the ratio VBN/BN, and the extra time of the VBN step over the BN step in units of
``forward (R)`` and of ``forward+backward (R)``.

Run from the repository root::

    python benchmarks/virtual_batch_norm.py --output docs/results/virtual_batch_norm.json

The paper's batch is 100 (``--batch-size 100 --reference-sizes 16,100``); on a slow CPU the default is 32. The JSON
holds every raw time; the Markdown table is printed and written next to it (same name, ``.md``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from _harness import (  # first: it puts the repository root on sys.path (benchmarks/ is there already)
    alternating, command_line, device_info, format_times, load_average, load_note, select_device, utc_now,
    write_results,
)
from ignite_igan.models import CIFARGenerator, cifar10_generator
from ignite_igan.nn import data_dependent_init
from ignite_igan.optim import ReferenceAdam


def build(normalization: str, reference_size: Optional[int], args: argparse.Namespace, device: torch.device):
    torch.manual_seed(args.seed)
    generator = cifar10_generator(normalization).to(device)
    if normalization == "virtual":
        generator.set_reference(generator.sample_noise(reference_size, device=device))
    data_dependent_init(generator, generator.sample_noise(max(args.batch_size, 2), device=device))
    optimizer = ReferenceAdam(generator.parameters(), lr=3e-4, betas=(0.5, 0.999))
    return generator, optimizer


def step_fn(
    generator: CIFARGenerator, optimizer: ReferenceAdam, batch: int, device: torch.device
) -> Callable[[], None]:
    def step() -> None:
        x = generator(generator.sample_noise(batch, device=device))
        loss = x.square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def forward_fn(generator: CIFARGenerator, rows: int, device: torch.device, backward: bool) -> Callable[[], None]:
    def run() -> None:
        if backward:
            generator.zero_grad(set_to_none=True)
            generator(generator.sample_noise(rows, device=device)).square().mean().backward()
        else:
            with torch.no_grad():
                generator(generator.sample_noise(rows, device=device))

    return run


def configurations(args: argparse.Namespace, device: torch.device) -> Dict[str, Callable[[], None]]:
    b = args.batch_size
    configs: Dict[str, Callable[[], None]] = {}
    bn, bn_opt = build("batch", None, args, device)
    configs[f"BN step (B={b})"] = step_fn(bn, bn_opt, b, device)
    configs[f"BN sampling (B={b})"] = forward_fn(bn, b, device, backward=False)
    for r in args.reference_sizes_list:
        vbn, vbn_opt = build("virtual", r, args, device)
        configs[f"VBN step (B={b}, R={r})"] = step_fn(vbn, vbn_opt, b, device)
        configs[f"BN step (B={b + r})"] = step_fn(bn, bn_opt, b + r, device)
        configs[f"forward (R={r})"] = forward_fn(bn, r, device, backward=False)
        configs[f"forward+backward (R={r})"] = forward_fn(bn, r, device, backward=True)
        configs[f"VBN sampling (B={b}, R={r})"] = forward_fn(vbn, b, device, backward=False)
    return configs


def analysis(times: Dict[str, List[float]], args: argparse.Namespace) -> List[dict]:
    b = args.batch_size
    med = {name: statistics.median(values) for name, values in times.items()}
    rows = []
    for r in args.reference_sizes_list:
        bn, vbn = med[f"BN step (B={b})"], med[f"VBN step (B={b}, R={r})"]
        extra = vbn - bn
        rows.append({
            "batch_size": b,
            "reference_size": r,
            "bn_step_s": bn,
            "vbn_step_s": vbn,
            "vbn_over_bn": vbn / bn,
            "bn_step_same_rows_s": med[f"BN step (B={b + r})"],
            "vbn_over_bn_same_rows": vbn / med[f"BN step (B={b + r})"],
            "extra_s": extra,
            "forward_reference_s": med[f"forward (R={r})"],
            "forward_backward_reference_s": med[f"forward+backward (R={r})"],
            "extra_in_forwards_of_reference": extra / med[f"forward (R={r})"],
            "extra_in_forward_backwards_of_reference": extra / med[f"forward+backward (R={r})"],
            "bn_sampling_s": med[f"BN sampling (B={b})"],
            "vbn_sampling_s": med[f"VBN sampling (B={b}, R={r})"],
            "sampling_vbn_over_bn": med[f"VBN sampling (B={b}, R={r})"] / med[f"BN sampling (B={b})"],
        })
    return rows


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = [
        f"CIFAR-10 generator, {meta['dtype']}, device: {meta['device']}; {meta['repeats']} alternating rounds after "
        f"{meta['warmup']} warm-up run(s) each; "
        + load_note(meta["load_average_start"][0], meta["load_average_end"][0], meta["device_type"] == "cpu"),
        "",
        "| configuration | time, median (min–max) |",
        "|---|---:|",
    ]
    for name, values in report["times_s"].items():
        lines.append(f"| {name} | {format_times(values)} |")
    lines += [
        "",
        "| B | R | VBN step / BN step | VBN step / BN step on B+R rows | extra time of the VBN step "
        "| extra / forward (R) | extra / forward+backward (R) | sampling VBN / BN |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["analysis"]:
        lines.append(
            f"| {row['batch_size']} | {row['reference_size']} | {row['vbn_over_bn']:.2f} | "
            f"{row['vbn_over_bn_same_rows']:.2f} | {row['extra_s'] * 1e3:.1f} ms | "
            f"{row['extra_in_forwards_of_reference']:.2f} | {row['extra_in_forward_backwards_of_reference']:.2f} | "
            f"{row['sampling_vbn_over_bn']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time of a CIFAR-10 generator step (forward, backward, ReferenceAdam) with virtual batch norm "
        "against the same generator with batch norm, and the cost of one extra forward of the reference batch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda")
    parser.add_argument("--batch-size", type=int, default=32, help="live batch B (the paper's is 100)")
    parser.add_argument("--reference-sizes", default="16,32", help="comma-separated reference batch sizes R (the "
                        "ImageNet code used 16; our sample-quality recipe uses R = B)")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (each times every configuration)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--flush-denormal", action=argparse.BooleanOptionalAction, default=True,
                        help="torch.set_flush_denormal on the CPU, as the recipes do")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the raw numbers; the Markdown "
                        "table goes next to it with the suffix .md")
    args = parser.parse_args(argv)
    try:
        args.reference_sizes_list = [int(v) for v in args.reference_sizes.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--reference-sizes must be comma-separated integers, got {args.reference_sizes!r}")
    if not args.reference_sizes_list or min(args.reference_sizes_list) < 1:
        parser.error(f"--reference-sizes needs sizes >= 1, got {args.reference_sizes!r}")
    if args.batch_size < 2:
        parser.error(f"--batch-size must be >= 2 (batch norm needs batch statistics), got {args.batch_size}")
    if args.repeats < 1 or args.warmup < 0 or args.threads < 0:
        parser.error("--repeats must be >= 1, --warmup and --threads >= 0")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    device = select_device(args.device, args.threads)
    if device.type == "cpu":
        torch.set_flush_denormal(args.flush_denormal)
    meta = {
        "date": utc_now(),
        "command": command_line(__file__, argv),
        **device_info(device),
        "flush_denormal": bool(args.flush_denormal) if device.type == "cpu" else None,
        "dtype": "float32",
        "batch_size": args.batch_size,
        "reference_sizes": args.reference_sizes_list,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "loss": "mean(G(z)^2)",
        "load_average_start": load_average(),
    }
    configs = configurations(args, device)
    print(f"timing {len(configs)} configurations, {args.repeats} rounds ...", file=sys.stderr, flush=True)
    times, _ = alternating(configs, args.repeats, warmup=args.warmup, device=device)
    meta["load_average_end"] = load_average()
    report = {"meta": meta, "times_s": times, "analysis": analysis(times, args)}
    table = markdown(report)
    print(table)
    write_results(report, args.output, table, extra=f"torch {meta['torch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
