"""The compiled MNIST-network step on the CPU against the exact eager step (issue 15, goal 4)."""
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow
def test_compiled_models_with_eager_rng_follow_the_eager_step():
    """``compile={"options": {"fallback_random": True}}``: the models' forward passes through Inductor, the noise
    from torch's own generator (the same stream as eager). 20 iterations of the MNIST networks on small random data
    end equal to the eager run within float rounding."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import profile_step
    finally:
        sys.path.remove(str(BENCHMARKS))
    torch._dynamo.reset()
    ctx = profile_step.make_context(None, torch.device("cpu"), batch_size=20, synthetic_size=200, init_examples=50)

    def run(**options):
        built = profile_step._recipe_trainer(ctx, **options)
        torch.manual_seed(5)
        built.trainer.run(built.data, max_epochs=1, epoch_length=20)
        return built

    eager = run()
    compiled = run(compile={"options": {"fallback_random": True}})
    for name in ("generator", "discriminator"):
        for (key, a), b in zip(eager.models[name].named_parameters(), compiled.models[name].parameters()):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.detach().abs().max()), msg=key)
    for key, value in eager.trainer.state.output.items():
        assert compiled.trainer.state.output[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
