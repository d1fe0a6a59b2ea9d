"""Where one training iteration of the MNIST-network semi-supervised step spends its time.

The setting is the Fashion-MNIST recipe's (the paper's MNIST networks): :func:`~ignite_igan.models.mnist_generator`
and :func:`~ignite_igan.models.mnist_discriminator` after data-dependent init on 500 training images,
:class:`~ignite_igan.optim.ReferenceAdam` (lr 3e-3, betas (0.5, 0.999)) for both players,
:func:`~ignite_igan.engines.create_semi_supervised_trainer` with mean-squared feature matching, batches of 100
labeled / 100 unlabeled / 100 unlabeled from a :class:`~ignite_igan.data.SemiSupervisedLoader` (10 labels per
class), and the recipe's :class:`~ignite_igan.handlers.EvaluationAveraging` (rate 1e-4) after every iteration. The
data is real Fashion-MNIST (``--data-dir``), or random images of the same shapes when that folder does not exist
(``--synthetic`` forces it), so that a machine without the data set can run the script.

**Profile.** Each variant is built, run ``--warmup`` iterations, then ``--iterations`` iterations under
:mod:`torch.profiler` (one ``trainer.run``; the window is a ``record_function`` from the end of the last warm-up
iteration to the end of the last profiled one). Every operation's *self* time (its time minus its children's) goes
to one category:

* ``data``: anything under the loader's ``next()`` (annotated ``data``);
* ``optimizer``: anything under ``Optimizer.step`` / ``Optimizer.zero_grad`` (torch annotates both);
* ``evaluation_average``: anything under the evaluation average's update (annotated ``evaluation_average``);
* ``matmul``: matrix products and convolutions (``mm``, ``addmm``, ``linear``, ``conv*``, ...), forward and backward;
* ``elementwise``: every other ``aten::`` operation that computes (pointwise maps, reductions, random draws), and
  the fused kernels of compiled code;
* ``other_ops``: layout and memory operations (views, ``empty``, ``copy_``, ``cat``, ...) and the operations'
  framing (autograd's ``evaluate_function`` nodes, gradient accumulation, compiled-region wrappers);
* ``gaps``: wall time inside the window covered by no operation at all: Python (the step's own code, Ignite's event
  loop, module calls, argument checks) and the profiler's own cost.

``gaps`` is measured independently, as the window minus the union of its operations' intervals, so ``sum of the
categories == window`` is a check of the attribution, not a definition. Per iteration it also counts the
operations: ``top_level_ops`` (``aten::`` calls not inside another ``aten::`` call: what the Python code issues)
and ``all_ops`` (every ``aten::`` call, children included); on CUDA, kernel launches (``cudaLaunchKernel`` and
friends) and the device's kernels, and the device's busy time per category.

**Speed** (``--speed-rounds``, 0 to skip): each variant's bare step, ``trainer.run`` over the loader without the
evaluation average (what ``benchmarks/fashion_mnist_ssl.py --stage speed`` times), timed for
``--speed-iterations`` iterations per round, alternating with a replay of the step's own matrix products
(shapes recorded from one eager iteration, counted by ``FlopCounterMode``) in the same rounds. The fraction of the
matrix-product rate is ``replay time / step time`` per iteration, medians over the rounds.

Variants (``--variants``, comma-separated) are entries of :data:`VARIANTS`, ``name -> builder(context) -> Built``;
``eager`` is the trainer exactly as the recipe builds it; ``compile_models`` is its ``compile=True``;
``compile_models_eager_rng`` the same with Inductor's ``fallback_random`` (the noise from torch's generator: the
eager stream, and on the CPU about ten times faster than Inductor's own); ``compile_all`` adds a compiled
ReferenceAdam update. Since ``compile=True`` keeps eager's random numbers on the CPU by default, the two compiled
variants are the same there (``docs/results/profile_step.json`` was measured before that change). To compare a change, add a builder and run both in one command. From the repository root::

    python benchmarks/profile_step.py --variants eager --threads 1 --output docs/results/profile_step.json
    python benchmarks/profile_step.py --variants eager --device cuda --output docs/results/profile_step_cuda.json
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch

from _harness import (  # noqa: E402
    ROOT, alternating, command_line, device_info, load_average, load_note, select_device, synchronize, utc_now,
    write_results,
)

CATEGORIES = ("matmul", "elementwise", "optimizer", "evaluation_average", "data", "other_ops", "gaps")
DATA_LABEL, AVERAGE_LABEL, WINDOW_LABEL = "data", "evaluation_average", "profile_window"
MATMUL_OPS = {
    "mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "linear", "mv", "addmv", "dot", "vdot", "einsum",
    "convolution", "_convolution", "convolution_backward", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d", "mkldnn_convolution", "_mkldnn_convolution", "cudnn_convolution",
    "cudnn_convolution_transpose", "_slow_conv2d_forward", "_slow_conv2d_backward", "slow_conv_transpose2d",
    "_scaled_mm", "_addmm_activation",
}
LAYOUT_OPS = {
    "view", "_reshape_alias", "reshape", "t", "transpose", "permute", "expand", "expand_as", "as_strided", "empty",
    "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "ones", "ones_like",
    "new_zeros", "new_ones", "full", "full_like", "copy_", "_to_copy", "to", "clone", "contiguous", "cat", "stack",
    "detach", "detach_", "alias", "select", "slice", "unsqueeze", "squeeze", "flatten", "unbind", "split", "chunk",
    "narrow", "resize_", "item", "_local_scalar_dense", "lift_fresh", "set_", "_unsafe_view", "unsafe_view",
    "view_as", "result_type", "is_nonzero", "numpy_T", "unflatten", "split_with_sizes", "as_strided_",
    "_has_compatible_shallow_copy_type", "is_same_size", "pin_memory", "_pin_memory", "record_stream",
}
KERNEL_LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx",
                   "cudaLaunchCooperativeKernel", "cudaGraphLaunch")


# --------------------------------------------------------------------------------------------------------------
# The step and its variants
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Context:
    """What every variant builder gets: the data, the device, the seed and the setting's numbers."""

    train_set: Any
    labeled: torch.Tensor
    init_images: torch.Tensor
    device: torch.device
    seed: int = 1
    batch_size: int = 100
    lr: float = 3e-3
    ema_rate: float = 1e-4
    data_name: str = "synthetic"


@dataclass
class Built:
    """A variant ready to run: its trainer, the iterable it reads, and one update of its evaluation average."""

    trainer: Any  # ignite.engine.Engine
    data: Iterable[Any]
    average: Optional[Callable[[Any], None]] = None  # engine -> None, called after every iteration when profiled
    models: Dict[str, torch.nn.Module] = field(default_factory=dict)
    optimizers: Dict[str, Any] = field(default_factory=dict)
    note: str = ""


def _recipe_parts(ctx: Context):
    """Models (initialized from data, as the recipe's first iteration does), optimizers and loader, on ctx.device."""
    from ignite_igan.data import SemiSupervisedLoader
    from ignite_igan.models import mnist_discriminator, mnist_generator
    from ignite_igan.nn import data_dependent_init
    from ignite_igan.optim import ReferenceAdam

    torch.manual_seed(ctx.seed)
    generator, discriminator = mnist_generator().to(ctx.device), mnist_discriminator().to(ctx.device)
    data_dependent_init(discriminator, ctx.init_images.to(ctx.device))
    d_opt = ReferenceAdam(discriminator.parameters(), lr=ctx.lr, betas=(0.5, 0.999))
    g_opt = ReferenceAdam(generator.parameters(), lr=ctx.lr, betas=(0.5, 0.999))
    loader = SemiSupervisedLoader(ctx.train_set, ctx.labeled, batch_size=ctx.batch_size, seed=ctx.seed,
                                  pin_memory=ctx.device.type == "cuda")
    return generator, discriminator, d_opt, g_opt, loader


def _recipe_trainer(ctx: Context, **trainer_options: Any) -> Built:
    """The recipe's trainer (``create_semi_supervised_trainer``) and evaluation average, with extra trainer options."""
    from ignite_igan.engines import create_semi_supervised_trainer
    from ignite_igan.handlers import EvaluationAveraging

    generator, discriminator, d_opt, g_opt, loader = _recipe_parts(ctx)
    trainer = create_semi_supervised_trainer(
        generator, discriminator, d_opt, g_opt, feature_matching_distance="mean_squared",
        noise_fn=lambda n: generator.sample_noise(n, device=ctx.device), device=ctx.device, **trainer_options,
    )
    averaging = EvaluationAveraging(discriminator, rate=ctx.ema_rate)
    return Built(trainer, loader, averaging, {"generator": generator, "discriminator": discriminator},
                 {"generator": g_opt, "discriminator": d_opt})


def build_eager(ctx: Context) -> Built:
    """Today's trainer exactly as ``recipes/semi_supervised.py`` builds it (float32, eager)."""
    return _recipe_trainer(ctx)


def build_compile_models(ctx: Context) -> Built:
    """The trainer's ``compile=True``: the models' forward passes through ``torch.compile`` (default options)."""
    return _recipe_trainer(ctx, compile=True)


def build_compile_models_eager_rng(ctx: Context) -> Built:
    """``compile_models`` with Inductor's ``fallback_random``: the noise layers draw from torch's own generator.

    Inductor otherwise replaces ``randn_like`` by its own generator, a different stream, and on the CPU a much slower
    one (the compiled step was 1.7x slower than eager mainly because of it).
    """
    return _recipe_trainer(ctx, compile={"options": {"fallback_random": True}})


def _compiled_adam_update():
    """ReferenceAdam's update of one parameter list as one compiled function (one fused loop per parameter).

    The step count enters as a 0-d tensor, so that the bias corrections do not recompile the function each step.
    """

    def update(params, grads, exp_avgs, exp_avg_sqs, step, lr: float, beta1: float, beta2: float, eps: float):
        bias_correction1 = 1.0 - beta1**step
        bias_correction2 = 1.0 - beta2**step
        for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
            m.mul_(beta1).add_(g, alpha=1.0 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
            p.addcdiv_(m, ((v / bias_correction2) + eps).sqrt(), value=-lr / bias_correction1)

    return torch.compile(update, options={"fallback_random": True})


class CompiledUpdateAdam:
    """Wraps a ReferenceAdam so that ``step()`` runs :func:`_compiled_adam_update` (benchmark-only experiment)."""

    @staticmethod
    def install(optimizer: Any) -> None:
        update = _compiled_adam_update()
        step_tensor = torch.zeros((), dtype=torch.float64)

        @torch.no_grad()
        def step(closure=None):
            with torch.profiler.record_function("Optimizer.step#CompiledUpdateAdam.step"):
                run_step()

        def run_step():
            group = optimizer.param_groups[0]
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                state = optimizer.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
            step_tensor.fill_(optimizer.state[params[0]]["step"])
            beta1, beta2 = group["betas"]
            update(params, [p.grad for p in params], [optimizer.state[p]["exp_avg"] for p in params],
                   [optimizer.state[p]["exp_avg_sq"] for p in params], step_tensor, group["lr"], beta1, beta2,
                   group["eps"])

        optimizer.step = step


def build_compile_all(ctx: Context) -> Built:
    """``compile_models_eager_rng`` and both optimizers' updates compiled (:class:`CompiledUpdateAdam`)."""
    built = build_compile_models_eager_rng(ctx)
    for optimizer in built.optimizers.values():
        CompiledUpdateAdam.install(optimizer)
    return built


#: name -> builder(Context) -> Built. Add an entry to profile another version of the step beside ``eager``.
VARIANTS: Dict[str, Callable[[Context], Built]] = {
    "eager": build_eager,
    "compile_models": build_compile_models,
    "compile_models_eager_rng": build_compile_models_eager_rng,
    "compile_all": build_compile_all,
}


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------
def make_context(data_dir: Optional[Path], device: torch.device, seed: int = 1, batch_size: int = 100,
                 synthetic_size: int = 2000, init_examples: int = 500) -> Context:
    """Fashion-MNIST from ``data_dir`` if it exists, else ``synthetic_size`` random 784-pixel images in [0, 1)."""
    from ignite_igan.data import balanced_labeled_subset, dataset_labels, init_batch

    if data_dir is not None and Path(data_dir).is_dir():
        from ignite_igan.datasets import load_dataset

        train_set, name = load_dataset("fashion_mnist", data_dir, train=True), "fashion_mnist"
    else:
        generator = torch.Generator().manual_seed(seed)
        images = torch.rand(synthetic_size, 784, generator=generator)
        labels = torch.arange(synthetic_size) % 10
        train_set, name = torch.utils.data.TensorDataset(images, labels), "synthetic"
    labeled = balanced_labeled_subset(dataset_labels(train_set), 10, seed=seed)
    init_images = init_batch(train_set, min(init_examples, len(train_set)), seed)
    return Context(train_set, labeled, init_images, device, seed=seed, batch_size=batch_size, data_name=name)


class _Annotated:
    """Iterates ``data`` with every ``next()`` inside ``record_function(DATA_LABEL)``."""

    def __init__(self, data: Iterable[Any]) -> None:
        self.data = data

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self.data)
        while True:
            with torch.profiler.record_function(DATA_LABEL):
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
            yield batch


# --------------------------------------------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------------------------------------------
def _op_name(name: str) -> Optional[str]:
    return name[len("aten::"):] if name.startswith("aten::") else None


def _category_of_op(name: str) -> str:
    op = _op_name(name)
    if op is None:
        return "elementwise" if "cpp_fused" in name or "triton_" in name else "other_ops"
    if op in MATMUL_OPS or "conv" in op:
        return "matmul"
    return "other_ops" if op in LAYOUT_OPS else "elementwise"


def _enclosing(event: Any) -> Optional[str]:
    """The annotated category (data, optimizer, evaluation average) an event is inside, if any."""
    node = event
    while node is not None:
        name = node.name
        if name == DATA_LABEL:
            return "data"
        if name == AVERAGE_LABEL:
            return "evaluation_average"
        if name.startswith("Optimizer.step#") or name.startswith("Optimizer.zero_grad#"):
            return "optimizer"
        node = node.cpu_parent
    return None


def _union_length(intervals: List[Tuple[float, float]]) -> float:
    total, end = 0.0, -float("inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def _in_window(event: Any, window: Any) -> bool:
    node = event.cpu_parent
    while node is not None:
        if node is window:
            return True
        node = node.cpu_parent
    return False


def summarize_profile(events: Sequence[Any], iterations: int) -> Dict[str, Any]:
    """Per-iteration times (ms) by category and operation counts of the events inside the profile window."""
    from torch.autograd import DeviceType

    windows = [e for e in events if e.name == WINDOW_LABEL and e.device_type == DeviceType.CPU]
    if len(windows) != 1:
        raise RuntimeError(f"expected one profile window, found {len(windows)}")
    window = windows[0]
    start, end = window.time_range.start, window.time_range.end
    cpu = [e for e in events if e.device_type == DeviceType.CPU and e is not window and _in_window(e, window)]
    seconds = {name: 0.0 for name in CATEGORIES}
    for event in cpu:
        category = _enclosing(event) or _category_of_op(event.name)
        seconds[category] += event.self_cpu_time_total * 1e-6
    top = [e for e in cpu if e.cpu_parent is window]
    covered = _union_length([(e.time_range.start, e.time_range.end) for e in top])
    seconds["gaps"] = (end - start - covered) * 1e-6
    wall = (end - start) * 1e-6

    def is_aten_top(e: Any) -> bool:
        node = e.cpu_parent
        while node is not None and node is not window:
            if node.name.startswith("aten::"):
                return False
            node = node.cpu_parent
        return True

    aten = [e for e in cpu if e.name.startswith("aten::")]
    result: Dict[str, Any] = {
        "iterations": iterations,
        "wall_ms": 1e3 * wall / iterations,
        "ms": {k: 1e3 * v / iterations for k, v in seconds.items()},
        "top_level_ops": sum(map(is_aten_top, aten)) / iterations,
        "all_ops": len(aten) / iterations,
    }
    result["categories_sum_ms"] = sum(result["ms"].values())
    launches = [e for e in cpu if e.name in KERNEL_LAUNCHES]
    device_events = [e for e in events if e.device_type == DeviceType.CUDA and start <= e.time_range.start <= end]
    if launches or device_events:
        result["kernel_launches"] = len(launches) / iterations
        result["device_kernels"] = len(device_events) / iterations
        busy = _union_length([(e.time_range.start, e.time_range.end) for e in device_events])
        result["device_busy_ms"] = 1e-3 * busy / iterations
        by_category = {name: 0.0 for name in CATEGORIES if name != "gaps"}
        for event in cpu:
            device_self = getattr(event, "self_device_time_total", 0.0)
            if device_self:
                by_category[_enclosing(event) or _category_of_op(event.name)] += device_self
        result["device_ms"] = {k: 1e-3 * v / iterations for k, v in by_category.items()}
    return result


def profile_variant(built: Built, warmup: int, iterations: int, device: torch.device) -> Dict[str, Any]:
    """Runs ``warmup`` iterations, then profiles ``iterations`` (data, step and evaluation average) in one run."""
    from ignite.engine import Events
    from torch.profiler import ProfilerActivity, profile, record_function

    trainer = built.trainer
    if built.average is not None:
        average = built.average

        def averaged(engine: Any) -> None:
            with record_function(AVERAGE_LABEL):
                average(engine)

        handle = trainer.add_event_handler(Events.ITERATION_COMPLETED, averaged)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof = profile(activities=activities)
    marks: Dict[str, Any] = {}

    def start(engine: Any) -> None:
        synchronize(device)
        prof.start()
        marks["window"] = record_function(WINDOW_LABEL).__enter__()
        marks["start"] = time.perf_counter()

    def stop(engine: Any) -> None:
        synchronize(device)
        marks["wall"] = time.perf_counter() - marks["start"]
        marks["window"].__exit__(None, None, None)
        prof.stop()

    handles = [trainer.add_event_handler(Events.ITERATION_COMPLETED(once=warmup), start),
               trainer.add_event_handler(Events.ITERATION_COMPLETED(once=warmup + iterations), stop)]
    try:
        trainer.run(_Annotated(built.data), max_epochs=1, epoch_length=warmup + iterations)
    finally:
        for h in handles + ([handle] if built.average is not None else []):
            h.remove()
    summary = summarize_profile(prof.events(), iterations)
    summary["perf_counter_ms"] = 1e3 * marks["wall"] / iterations
    summary["top_ops"] = _top_ops(prof.events(), iterations)
    return summary


def _top_ops(events: Sequence[Any], iterations: int, count: int = 15) -> List[Dict[str, Any]]:
    """The ``aten::`` operations with the largest self time, per iteration, with their category."""
    totals: Dict[str, List[float]] = {}
    for e in events:
        if e.name.startswith("aten::"):
            entry = totals.setdefault(e.name, [0.0, 0])
            entry[0] += e.self_cpu_time_total
            entry[1] += 1
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])[:count]
    return [{"op": name, "self_ms": 1e-3 * t / iterations, "calls": n / iterations, "category": _category_of_op(name)}
            for name, (t, n) in ranked]


# --------------------------------------------------------------------------------------------------------------
# Speed: the bare step against the replay of its own matrix products
# --------------------------------------------------------------------------------------------------------------
def step_matmuls(built: Built) -> Tuple[int, List[Tuple[str, Tuple[Tuple[int, ...], ...]]]]:
    """FLOPs (FlopCounterMode) and the ``mm``/``addmm``/``bmm`` operand shapes of one iteration of ``built``."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    shapes: List[Tuple[str, Tuple[Tuple[int, ...], ...]]] = []

    class Shapes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket).split(".")[-1]
            if name in ("mm", "addmm", "bmm"):
                shapes.append((name, tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))))
            return func(*args, **(kwargs or {}))

    trainer, batches = built.trainer, iter(built.data)
    trainer._process_function(trainer, next(batches))
    batch = next(batches)
    with FlopCounterMode(display=False) as counter, Shapes():
        trainer._process_function(trainer, batch)
    return int(counter.get_total_flops()), shapes


def matmul_replay(shapes: Sequence[Tuple[str, Tuple[Tuple[int, ...], ...]]],
                  device: torch.device) -> Callable[[], None]:
    """A callable that runs the recorded products once each, on fresh operands of the same shapes."""
    operands = []
    for name, dims in shapes:
        if name == "addmm":
            dims = dims[1:]
        operands.append((torch.randn(*dims[0][-2:], device=device), torch.randn(*dims[1][-2:], device=device)))

    def replay() -> None:
        for a, b in operands:
            a.mm(b)

    return replay


def run_speed(ctx: Context, names: Sequence[str], rounds: int, iterations: int, warmup: int) -> Dict[str, Any]:
    """Alternating rounds of each variant's bare step (``iterations`` per round) and the replay of its matmuls."""
    built = {name: VARIANTS[name](ctx) for name in names}
    flops, shapes = step_matmuls(VARIANTS["eager"](ctx))
    replay = matmul_replay(shapes, ctx.device)

    def step_run(name: str) -> Callable[[], None]:
        return lambda: built[name].trainer.run(built[name].data, max_epochs=1, epoch_length=iterations)

    runs: Dict[str, Callable[[], Any]] = {name: step_run(name) for name in names}

    def replays() -> None:
        for _ in range(iterations):
            replay()

    runs["matmul_replay"] = replays
    for name in names:  # first-call costs (compilation) outside the timed rounds
        built[name].trainer.run(built[name].data, max_epochs=1, epoch_length=warmup)
    seconds, _ = alternating(runs, rounds, warmup=1, device=ctx.device)
    per_iteration = {name: [s / iterations for s in values] for name, values in seconds.items()}
    replay_s = statistics.median(per_iteration["matmul_replay"])
    result: Dict[str, Any] = {"flops_per_iteration": flops, "matmul_count": len(shapes), "rounds": rounds,
                              "iterations_per_round": iterations, "seconds_per_iteration": per_iteration,
                              "matmul_replay_ms": 1e3 * replay_s, "variants": {}}
    for name in names:
        step_s = statistics.median(per_iteration[name])
        paired = [r / s for r, s in zip(per_iteration["matmul_replay"], per_iteration[name])]
        result["variants"][name] = {
            "step_ms": 1e3 * step_s, "fraction_of_matmul_rate": replay_s / step_s,
            "paired_fraction_median": statistics.median(paired), "achieved_gflops": flops / step_s / 1e9,
            # Interference from other jobs only ever slows a run down: the fastest rounds are the least disturbed.
            "fraction_of_fastest": min(per_iteration["matmul_replay"]) / min(per_iteration[name]),
            "fastest_step_ms": 1e3 * min(per_iteration[name]),
        }
    result["matmul_replay_gflops"] = flops / replay_s / 1e9
    return result


# --------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------
def markdown(report: Dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [f"Device: {meta['device']['device']}; torch {meta['device']['torch']}; data: {meta['data']}, "
             f"batches of {meta['batch_size']}; "
             f"{meta['iterations']} profiled iterations after {meta['warmup']} warm-up iterations.", "",
             "Milliseconds per iteration (data, both players' steps, the evaluation average), by category "
             "(self time of the operations; gaps: time covered by no operation). The variants are profiled one after "
             "another, not alternating: on a shared machine compare the shares within a column.", ""]
    names = list(report["profiles"])
    if not names:
        lines = lines[:1]
    else:
        lines += ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key in CATEGORIES if names else ():
        lines.append(f"| {key} | " + " | ".join(f"{report['profiles'][n]['ms'][key]:.2f}" for n in names) + " |")
    rows = [("sum of categories", "categories_sum_ms", ".2f"), ("profiled window", "wall_ms", ".2f"),
            ("wall clock (perf_counter)", "perf_counter_ms", ".2f"), ("top-level aten ops", "top_level_ops", ".0f"),
            ("all aten ops (with children)", "all_ops", ".0f")]
    if any("kernel_launches" in p for p in report["profiles"].values()):
        rows += [("kernel launches", "kernel_launches", ".0f"), ("device kernels", "device_kernels", ".0f"),
                 ("device busy (ms)", "device_busy_ms", ".2f")]
    for label, key, fmt in rows if names else ():
        lines.append(f"| {label} | " + " | ".join(
            format(report["profiles"][n][key], fmt) if key in report["profiles"][n] else "—" for n in names) + " |")
    speed = report.get("speed")
    if speed:
        lines += ["", f"Speed of the bare step (`trainer.run` over the loader, no evaluation average), "
                  f"{speed['rounds']} alternating rounds of {speed['iterations_per_round']} iterations, medians; "
                  f"one iteration is {speed['flops_per_iteration'] / 1e9:.2f} GFLOP in {speed['matmul_count']} "
                  f"matrix products, whose replay alone takes {speed['matmul_replay_ms']:.1f} ms "
                  f"({speed['matmul_replay_gflops']:.1f} GFLOP/s):", "",
                  "| variant | ms per iteration | GFLOP/s | fraction of the matmul rate | paired median | fastest "
                  "rounds: ms | fastest rounds: fraction |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, v in speed["variants"].items():
            lines.append(f"| {name} | {v['step_ms']:.1f} | {v['achieved_gflops']:.1f} | "
                         f"{100 * v['fraction_of_matmul_rate']:.1f} % | {100 * v['paired_fraction_median']:.1f} % | "
                         f"{v['fastest_step_ms']:.1f} | {100 * v['fraction_of_fastest']:.1f} % |")
        lines += ["", "Fraction of the matmul rate: the replay's median time per iteration over the step's (paired "
                  "median: of the per-round ratios; fastest rounds: the fastest replay round over the step's fastest "
                  "round, the least disturbed by other jobs)."]
    lines += ["", load_note(meta["load_average_start"][0], meta["load_average_end"][0], True)]
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--variants", default="eager", help=f"comma-separated, of {sorted(VARIANTS)}")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "fashion-mnist",
                        help="the folder holding FashionMNIST/raw/; random images of the same shape if it is absent")
    parser.add_argument("--synthetic", action="store_true", help="random images even if --data-dir exists")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations before the profile")
    parser.add_argument("--iterations", type=int, default=20, help="profiled iterations (0: no profile)")
    parser.add_argument("--speed-rounds", type=int, default=0, help="alternating rounds of the speed part (0: skip)")
    parser.add_argument("--speed-iterations", type=int, default=10, help="iterations per round of the speed part")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--synthetic-size", type=int, default=2000, help="random images when there is no data set")
    parser.add_argument("--output", type=Path, default=None, help="JSON results (Markdown next to it)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    device = select_device(args.device, args.threads)
    load_start = load_average()
    ctx = make_context(None if args.synthetic else args.data_dir, device, seed=args.seed, batch_size=args.batch_size,
                       synthetic_size=args.synthetic_size)
    report: Dict[str, Any] = {"profiles": {}, "meta": {}}
    for name in names if args.iterations > 0 else ():
        built = VARIANTS[name](ctx)
        report["profiles"][name] = profile_variant(built, args.warmup, args.iterations, device)
        print(name, {k: round(v, 2) for k, v in report["profiles"][name]["ms"].items()}, flush=True)
    if args.speed_rounds > 0:
        report["speed"] = run_speed(ctx, names, args.speed_rounds, args.speed_iterations, args.warmup)
    report["meta"] = dict(command=command_line(__file__, argv), date=utc_now(), device=device_info(device),
                          data=ctx.data_name, batch_size=args.batch_size, warmup=args.warmup,
                          iterations=args.iterations,
                          load_average_start=load_start, load_average_end=load_average())
    text = markdown(report)
    print(text)
    write_results(report, args.output, text)
    return report


if __name__ == "__main__":
    main()
