"""The protocol card, TF32 off by default, weights checked before training, and an acyclic metrics package."""
import ast
import dataclasses
import subprocess
import sys
from pathlib import Path
from unittest import mock
from urllib.error import URLError

import pytest
import torch
from torch import nn

from ignite.engine import Engine

import ignite_igan.metrics
from ignite_igan.metrics import (
    FID,
    RealImages,
    ClassifierExtractor,
    GeneratorEvaluator,
    ImageExtractor,
    InceptionScore,
    Protocol,
    published_protocols,
)
from ignite_igan.metrics import extractors as extractors_module

# ---------------------------------------------------------------------------------------------------------------
# 3. The card


class TinyGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.linear = nn.Linear(4, 12)

    def sample_noise(self, n, generator=None, device=None):
        return torch.rand(n, 4, generator=generator, device=device)

    def forward(self, z):
        return torch.tanh(self.linear(z)).view(-1, 3, 2, 2)


def make_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 4))


def features(net, x):
    return net[1](net[0](x))


def test_card_fields_string_equality_and_publication(tmp_path):
    net = make_net()
    extractor = ClassifierExtractor(net, "[-1,1]", features_fn=features)
    real = torch.rand(64, 3, 2, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    metrics = {
        "is": InceptionScore(extractor, splits=4),
        "is_shuffled": InceptionScore(extractor, splits=4, shuffle=True, seed=7),
        "fid": FID(extractor, real=RealImages(real, name="toy", split="train", cache_dir=tmp_path)),
    }
    scorer = GeneratorEvaluator(TinyGenerator(), metrics, n_samples=40, batch_size=20)
    result = scorer.run()
    assert all(type(v) is float for v in result.values())  # engine.state.metrics stays plain floats
    cards = published_protocols(scorer.engine)
    assert cards == scorer.protocols and set(cards) == {"is", "is_shuffled", "fid"}
    card = cards["is"]
    assert isinstance(card, Protocol) and card == metrics["is"].protocol
    expected = {
        "metric": "inception_score",
        "network": "ClassifierExtractor(Sequential, input [-1,1])",
        "output": "softmax over 4 logits",
        "resize": "none",
        "input_range": "[-1,1]",
        "rounding": "round to nearest (half to even) to uint8",
        "dtype": "float32",
        "allow_tf32": False,
        "n_samples": 40,
        "splits": 4,
        "split_order": "contiguous, in sample order",
        "shuffle_seed": None,
        "real_statistics": None,
    }
    assert {k: v for k, v in card.to_dict().items() if k != "weights_sha256"} == expected
    assert len(card.to_dict()["weights_sha256"]) == 64
    line = str(card)
    assert "\n" not in line and line.endswith(f"card {card.digest}") and len(card.digest) == 12
    assert "n=40" in line and "4 splits (contiguous, in sample order)" in line and "TF32 off" in line

    shuffled = cards["is_shuffled"]
    assert shuffled != card and shuffled.digest != card.digest
    assert card.differences(shuffled) == {
        "split_order": ("contiguous, in sample order", "contiguous, after a seeded shuffle"),
        "shuffle_seed": (None, 7),
    }
    assert "seed 7" in str(shuffled)

    fid = cards["fid"]
    assert fid.metric == "fid" and fid.n_samples == 40 and fid.splits is None
    key = metrics["fid"].real_statistics.key_digest
    assert fid.real_statistics == f"toy/train, 64 images, key {key}" and "real: toy/train" in str(fid)
    assert fid.output.startswith("features_fn ") and fid.output.endswith("(6 features)")
    assert hash(card) == hash(dataclasses.replace(card))  # frozen and hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.n_samples = 3
    # Another data set for the real statistics: another card.
    other = FID(extractor, real=RealImages(real[:32], name="toy", split="test", cache_dir=tmp_path))
    other.update(real)
    other.compute()
    assert other.protocol.differences(metrics["fid"].protocol).keys() == {"n_samples", "real_statistics"}


def test_card_of_the_paper_network_names_weights_and_resize(tmp_path):
    """The TF Inception's card, with random weights loaded through the checked path (no download)."""
    from tests.test_inception import _random_tf_inception_state_dict

    import hashlib

    path = tmp_path / "weights.pth"
    torch.save(_random_tf_inception_state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    network = extractors_module.TFInceptionV3(weights_path=path, sha256=None)  # trusted file: hash computed
    assert network.weights_sha256 == digest
    card = InceptionScore(network).protocol
    assert card.weights_sha256 == digest and card.output == "softmax over 1008 logits without bias (pool_3 @ W)"
    assert card.resize.startswith("TF1 bilinear to 299x299") and card.network.startswith("TFInceptionV3")
    assert card.n_samples is None and card.split_order == "contiguous, in sample order"
    fid_card = FID(network, real=(torch.zeros(2048), torch.eye(2048))).protocol
    assert fid_card.output == "2048 pool_3 features" and fid_card.weights_sha256 == digest
    assert FID(network, real=(torch.zeros(2048), torch.eye(2048)), allow_tf32=True).protocol.allow_tf32


# ---------------------------------------------------------------------------------------------------------------
# 4. Weights are resolved when the metric is built


@pytest.fixture
def offline(tmp_path):
    """An empty torch.hub directory and downloads that fail (as on a machine without internet)."""
    old = torch.hub._hub_dir  # None unless set_dir was called: then TORCH_HOME decides, and must again after
    torch.hub.set_dir(str(tmp_path / "hub"))
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise URLError("no network")

    try:
        with mock.patch.object(torch.hub, "download_url_to_file", no_network), mock.patch.object(
            extractors_module, "_SHARED_EXTRACTORS", extractors_module.weakref.WeakValueDictionary()
        ):
            yield calls
    finally:
        torch.hub._hub_dir = old


@pytest.mark.parametrize(
    "build",
    [
        lambda: InceptionScore(),
        lambda: FID(),
        lambda: FID(real=torch.zeros(4, 3, 8, 8)),
        lambda: InceptionScore(extractor="torchvision"),
        lambda: FID(extractor="torchvision", real=(torch.zeros(2048), torch.eye(2048))),
    ],
    ids=["is", "fid", "fid-real", "is-torchvision", "fid-torchvision"],
)
def test_missing_weights_fail_when_the_metric_is_built_before_any_training(offline, build):
    trainer = Engine(lambda engine, batch: pytest.fail("training started"))
    with pytest.raises(RuntimeError, match=r"could not download .*Inception weights.*weights_path="):
        metric = build()
        GeneratorEvaluator(TinyGenerator(), {"m": metric}, n_samples=10).attach(trainer)
        trainer.run([0], max_epochs=1)
    assert len(offline) == 1 and offline[0].startswith("https://")  # it tried, once, at construction


# ---------------------------------------------------------------------------------------------------------------
# 5. TF32


class FlagSpy(ImageExtractor):
    """Records the TF32 flags at the moment the network runs."""

    channels = 3
    num_features = 2
    resize = "none"

    def __init__(self, fail=False):
        super().__init__()
        self.seen = []
        self.fail = fail
        self.weights_sha256 = "0" * 64

    def _record(self):
        self.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        if self.fail:
            raise RuntimeError("boom")

    def forward(self, images):
        self._record()
        return images.float().flatten(1)[:, :3]

    def features(self, images):
        self._record()
        return images.float().flatten(1)[:, :2]


@pytest.fixture
def tf32_on():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_metrics_turn_tf32_off_around_the_network_and_restore_the_flags(tf32_on):
    images = torch.rand(6, 3, 2, 2)
    for allow, expected in ((False, (False, False)), (True, (True, True))):
        spy = FlagSpy()
        score = InceptionScore(spy, input_range="[0,1]", splits=1, allow_tf32=allow)
        fid = FID(spy, input_range="[0,1]", real=torch.rand(8, 3, 2, 2), allow_tf32=allow)
        fid.real_statistics
        score.update(images)
        fid.update(images.clone())
        assert spy.seen == [expected] * 3
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
        assert score.protocol.allow_tf32 is allow and fid.protocol.allow_tf32 is allow
    failing = InceptionScore(FlagSpy(fail=True), input_range="[0,1]", splits=1)
    with pytest.raises(RuntimeError, match="boom"):
        failing.update(images)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    with pytest.raises(TypeError, match=r"allow_tf32 must be a bool \(True or False\), got str 'no'"):
        InceptionScore(FlagSpy(), allow_tf32="no")


TF32_SCRIPT = """
import torch
from ignite_igan.metrics import tf32_mode

def flags():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())

{setup}
before = flags()
for allow in (False, True, False):
    with tf32_mode(allow):
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (allow, allow)
    assert flags() == before, (flags(), before)
if "set_float32_matmul_precision" not in {setup!r}:
    # a process that uses the legacy flags alone can keep using them afterwards (no API mix introduced)
    torch.backends.cuda.matmul.allow_tf32 = not torch.backends.cuda.matmul.allow_tf32
    flags()
print("ok")
"""


@pytest.mark.parametrize(
    "setup",
    [
        "torch.set_float32_matmul_precision('medium')",
        # A fresh interpreter each: the other starting states run with `pytest -m slow` (and in CI).
        pytest.param("pass", marks=pytest.mark.slow),
        pytest.param("torch.backends.cuda.matmul.allow_tf32 = True", marks=pytest.mark.slow),
        pytest.param("torch.backends.cudnn.allow_tf32 = False", marks=pytest.mark.slow),
        pytest.param("torch.set_float32_matmul_precision('high')", marks=pytest.mark.slow),
    ],
)
def test_tf32_mode_restores_exactly_including_the_matmul_precision(setup):
    # A fresh interpreter per starting state: PyTorch's TF32 flags are process-global.
    script = TF32_SCRIPT.format(setup=setup)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


NEW_API_SCRIPT = """
import torch
from ignite_igan.metrics import tf32_mode

backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)
torch.backends.cuda.matmul.fp32_precision = "tf32"
torch.backends.cudnn.conv.fp32_precision = "ieee"
try:
    torch.backends.cudnn.allow_tf32
except RuntimeError:
    pass
else:
    raise SystemExit("this PyTorch reads mixed flags; nothing to test")
before = [b.fp32_precision for b in backends]
for allow in (False, True):
    with tf32_mode(allow):
        inside = [b.fp32_precision for b in backends]
        assert inside == ["tf32" if allow else "ieee"] * 3, inside
    assert [b.fp32_precision for b in backends] == before
print("ok")
"""


@pytest.mark.slow
def test_tf32_mode_with_flags_set_through_the_fp32_precision_api():
    done = subprocess.run([sys.executable, "-c", NEW_API_SCRIPT], capture_output=True, text=True, timeout=300)
    if "nothing to test" in done.stderr:
        pytest.skip("this PyTorch version reads the legacy flags in any state")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------------
# 6. No import cycle in the metrics package

PACKAGE_DIR = Path(ignite_igan.metrics.__file__).parent
MODULES = sorted(f"ignite_igan.metrics.{p.stem}" for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__")


def _imports_of(path: Path):
    """Every ignite_igan.metrics module that ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "ignite_igan.metrics":
                found.update(f"ignite_igan.metrics.{alias.name}" for alias in node.names)
            elif node.module.startswith("ignite_igan.metrics."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ignite_igan.metrics."))
    return {name for name in found if name in MODULES}


def find_cycle(graph):
    """A list of module names forming an import cycle in ``graph`` ({module: imported modules}), or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target, path + [target])
                if found:
                    return found
        state[node] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return None


def test_the_import_graph_of_the_metrics_package_has_no_cycle():
    graph = {name: _imports_of(PACKAGE_DIR / f"{name.rsplit('.', 1)[1]}.py") for name in MODULES}
    assert graph["ignite_igan.metrics.modes"] == set() and graph["ignite_igan.metrics.protocol"] == set()
    assert "ignite_igan.metrics.sampling" not in graph["ignite_igan.metrics.extractors"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_check_finds_the_old_cycle(tmp_path):
    # The package before this change: extractors imported sampling (evaluation_mode), sampling imported inception
    # inside score_generator, and inception imported extractors.
    (tmp_path / "extractors.py").write_text("from ignite_igan.metrics.sampling import evaluation_mode\n")
    (tmp_path / "sampling.py").write_text("def f():\n    from ignite_igan.metrics.inception import InceptionScore\n")
    (tmp_path / "inception.py").write_text("from ignite_igan.metrics.extractors import to_uint8\n")
    old = {f"ignite_igan.metrics.{p.stem}": _imports_of(p) for p in tmp_path.glob("*.py")}
    assert find_cycle(old) == [
        "ignite_igan.metrics.extractors", "ignite_igan.metrics.sampling", "ignite_igan.metrics.inception",
        "ignite_igan.metrics.extractors",
    ]
    (tmp_path / "c.py").write_text("from ignite_igan.metrics import sampling, fid\nimport ignite_igan.metrics.modes\n")
    assert _imports_of(tmp_path / "c.py") == {
        "ignite_igan.metrics.sampling", "ignite_igan.metrics.fid", "ignite_igan.metrics.modes"
    }


FIRST_IMPORT_SCRIPT = """
import importlib, os, sys, traceback
import numpy, scipy.linalg, torch, torchvision, ignite.engine, ignite.metrics, ignite.distributed  # third-party only
assert not any(name.startswith("ignite_igan") for name in sys.modules)
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:  # a child with no ignite_igan module loaded: 'name' is the first one it imports
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed.append(name)
print("failed:", failed)
sys.exit(1 if failed else 0)
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_every_metrics_module_imports_first_in_a_fresh_interpreter():
    # One fresh interpreter loads the third-party libraries, then forks one child per module, so that each module
    # is the first of the package to be imported (where a cycle would break) without paying torch's import each time.
    names = MODULES + ["ignite_igan.metrics", "ignite_igan.logging"]
    done = subprocess.run(
        [sys.executable, "-c", FIRST_IMPORT_SCRIPT, *names], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-500:] + done.stderr[-3000:]
    assert "failed: []" in done.stdout
