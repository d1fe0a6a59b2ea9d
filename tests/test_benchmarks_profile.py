"""The profile benchmark (benchmarks/profile_step.py) on tiny synthetic data: the attribution adds up."""
import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def profile_step():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("profile_step")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def context(profile_step):
    return profile_step.make_context(None, torch.device("cpu"), batch_size=20, synthetic_size=200, init_examples=50)


def test_categories_add_up_to_the_wall_time(profile_step, context):
    result = profile_step.profile_variant(profile_step.VARIANTS["eager"](context), warmup=1, iterations=2,
                                          device=torch.device("cpu"))
    ms = result["ms"]
    assert set(ms) == set(profile_step.CATEGORIES)
    assert all(value >= 0 for value in ms.values()), ms
    # Every part of the iteration is seen: products, pointwise work, both optimizers, the average, the loader.
    for key in ("matmul", "elementwise", "optimizer", "evaluation_average", "data", "other_ops"):
        assert ms[key] > 0, (key, ms)
    # The gaps are measured as the window minus the union of the operations' intervals, the categories from the
    # operations' self times: they must meet at the window's length, and the window at the wall clock.
    assert result["categories_sum_ms"] == pytest.approx(result["wall_ms"], rel=0.02)
    assert result["wall_ms"] == pytest.approx(result["perf_counter_ms"], rel=0.2)
    assert 100 < result["top_level_ops"] < result["all_ops"]
    assert "kernel_launches" not in result  # CPU only


def test_operation_categories(profile_step):
    assert profile_step._category_of_op("aten::addmm") == "matmul"
    assert profile_step._category_of_op("aten::convolution_backward") == "matmul"
    assert profile_step._category_of_op("aten::normal_") == "elementwise"
    assert profile_step._category_of_op("aten::view") == "other_ops"
    assert profile_step._category_of_op("autograd::engine::evaluate_function: MmBackward0") == "other_ops"
    assert profile_step._category_of_op("graph_0_cpp_fused_add_relu_0") == "elementwise"


def test_union_length(profile_step):
    assert profile_step._union_length([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == 4


def test_main_with_an_added_variant(profile_step, tmp_path, monkeypatch):
    built = []

    def build_twice(ctx):  # the extension point: any builder returning a Built
        built.append(ctx.batch_size)
        return profile_step.build_eager(ctx)

    monkeypatch.setitem(profile_step.VARIANTS, "eager_again", build_twice)
    output = tmp_path / "profile.json"
    report = profile_step.main(["--synthetic", "--synthetic-size", "200", "--batch-size", "20", "--warmup", "1",
                                "--iterations", "2", "--variants", "eager,eager_again", "--output", str(output)])
    assert built == [20]
    assert set(report["profiles"]) == {"eager", "eager_again"}
    assert json.loads(output.read_text())["meta"]["data"] == "synthetic"
    assert "| matmul |" in output.with_suffix(".md").read_text()
    with pytest.raises(SystemExit):
        profile_step.main(["--synthetic", "--variants", "no_such_variant"])


def test_speed_part(profile_step, context):
    result = profile_step.run_speed(context, ["eager"], rounds=2, iterations=1, warmup=1)
    assert result["flops_per_iteration"] > 0 and result["matmul_count"] > 0
    eager = result["variants"]["eager"]
    assert 0 < eager["fraction_of_matmul_rate"] < 1.5 and 0 < eager["fraction_of_fastest"] < 1.5
    assert len(result["seconds_per_iteration"]["eager"]) == 2
