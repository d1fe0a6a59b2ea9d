"""InceptionScore, its extractors, weights loading and generator scoring."""
import hashlib
import math
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from torch_fidelity import feature_extractor_inceptionv3 as tf_module
from torch_fidelity.metric_isc import isc_features_to_metric

from ignite_igan.metrics import (
    FID,
    TF_INCEPTION_SHA256,
    ClassifierExtractor,
    GeneratorEvaluator,
    ImageExtractor,
    InceptionScore,
    TFInceptionV3,
    TorchvisionInceptionV3,
    evaluation_mode,
    resolve_tf_inception_weights,
    score_generator,
    to_uint8,
)


# ---------------------------------------------------------------------------------------------------------------
# Helpers


class LookupExtractor(ImageExtractor):
    """Returns row i of a logit table for the image that encodes i in its first two pixels (i = 256 a + b)."""

    channels = 3

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table))
        self.num_logits = self.table.shape[1]

    def forward(self, images):
        assert images.dtype == torch.uint8
        index = images[:, 0, 0, 0].long() * 256 + images[:, 0, 0, 1].long()
        return self.table[index]


def encode(indices):
    """uint8 images (N, 3, 2, 2) that LookupExtractor maps to the given rows."""
    indices = torch.as_tensor(indices)
    images = torch.zeros(len(indices), 3, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = (indices // 256).to(torch.uint8)
    images[:, 0, 0, 1] = (indices % 256).to(torch.uint8)
    return images


def numpy_inception_score(logits, splits=10):
    """The original formula of inception_score/model.py, in NumPy: softmax, contiguous splits, mean of exp(KL)."""
    logits = np.asarray(logits, dtype=np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    preds = e / e.sum(axis=1, keepdims=True)
    n = preds.shape[0]
    scores = []
    for i in range(splits):
        part = preds[(i * n // splits) : ((i + 1) * n // splits), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        kl = np.mean(np.sum(kl, 1))
        scores.append(np.exp(kl))
    return np.mean(scores), np.std(scores)


def run_metric(metric, batches):
    engine = Engine(lambda engine, batch: batch)
    metric.attach(engine, "is")
    return engine.run(batches).metrics


def random_logits(n=503, k=17, seed=0, scale=3.0):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


# ---------------------------------------------------------------------------------------------------------------
# The formula and the protocol


def test_metric_matches_numpy_oracle_of_original_formula():
    logits = random_logits()
    metric = InceptionScore(extractor=LookupExtractor(logits), input_range="uint8")
    images = encode(torch.arange(len(logits)))
    metrics = run_metric(metric, list(images.split(64)))
    mean, std = numpy_inception_score(logits.numpy(), splits=10)
    assert metrics["is"] == pytest.approx(mean, rel=1e-12, abs=0)
    assert metrics["is_std"] == pytest.approx(std, rel=1e-9, abs=1e-14)


def test_metric_matches_torch_fidelity_without_shuffle_and_with_its_default_shuffle():
    logits = random_logits(n=1000, k=1008, seed=1)
    images = encode(torch.arange(len(logits)))
    ours = run_metric(InceptionScore(extractor=LookupExtractor(logits), input_range="uint8"), [images])
    theirs = isc_features_to_metric(logits.clone(), splits=10, shuffle=False)
    assert abs(ours["is"] - theirs["inception_score_mean"]) < 1e-9
    assert abs(ours["is_std"] - theirs["inception_score_std"]) < 1e-9

    shuffled = run_metric(
        InceptionScore(extractor=LookupExtractor(logits), input_range="uint8", shuffle=True, seed=2020), [images]
    )
    theirs_shuffled = isc_features_to_metric(logits.clone(), splits=10, shuffle=True, rng_seed=2020)
    assert abs(shuffled["is"] - theirs_shuffled["inception_score_mean"]) < 1e-9
    assert shuffled["is"] != ours["is"]  # the order matters for contiguous splits


def test_perfect_balanced_predictor_gives_k_and_identical_predictions_give_one():
    k = 10
    labels = torch.arange(100) % k  # every split of 10 holds each class once
    log_p = torch.full((100, k), -math.inf, dtype=torch.float64)
    log_p[torch.arange(100), labels] = 0.0
    metrics = run_metric(InceptionScore(extractor=LookupExtractor(log_p), input_range="uint8"), [encode(range(100))])
    assert metrics["is"] == pytest.approx(k, abs=1e-12)
    assert metrics["is_std"] == pytest.approx(0.0, abs=1e-12)

    same = torch.randn(1, k, dtype=torch.float64).repeat(100, 1)
    metrics = run_metric(InceptionScore(extractor=LookupExtractor(same), input_range="uint8"), [encode(range(100))])
    assert metrics["is"] == pytest.approx(1.0, abs=1e-12)


def test_score_does_not_depend_on_batch_size_or_extractor_chunking():
    logits = random_logits(n=300, k=12, seed=3)
    images = encode(torch.arange(300)).float() / 255.0  # through the float [0,1] path and back by rounding
    results = []
    for batch_size, chunk in ((300, None), (7, None), (64, 5), (1, None)):
        metric = InceptionScore(
            extractor=LookupExtractor(logits), input_range="[0,1]", extractor_batch_size=chunk
        )
        results.append(run_metric(metric, list(images.split(batch_size))))
    assert all(r == results[0] for r in results)
    assert results[0]["is"] == pytest.approx(numpy_inception_score(logits.numpy())[0], rel=1e-12)


def test_indices_restore_the_original_order_and_drop_repeats():
    logits = random_logits(n=200, k=9, seed=4)
    in_order = run_metric(InceptionScore(extractor=LookupExtractor(logits), input_range="uint8"), [encode(range(200))])
    permutation = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    repeated = torch.cat([permutation, permutation[:3]])  # DistributedSampler-style padding
    batches = [(encode(part), part) for part in repeated.split(33)]
    metrics = run_metric(InceptionScore(extractor=LookupExtractor(logits), input_range="uint8"), batches)
    assert metrics == in_order
    for wrong in (torch.arange(4.0), torch.arange(3)):  # float indices, one index short
        metric = InceptionScore(extractor=LookupExtractor(logits), input_range="uint8", splits=2)
        metric.update((encode(range(4)), wrong))
        with pytest.raises(ValueError, match="indices must be integers, one per image"):
            metric.compute()


def test_rounding_not_truncation_in_uint8_conversion():
    codes = torch.arange(256, dtype=torch.float64)
    # A value 0.6 of a level above k must become k + 1 (truncation would give k); 0.4 above must stay k.
    up = (codes[:-1] + 0.6) / 255.0
    down = (codes + 0.4).clamp(max=255) / 255.0
    assert torch.equal(to_uint8(up.float(), "[0,1]").long(), codes[:-1].long() + 1)
    assert torch.equal(to_uint8(down.float(), "[0,1]").long(), codes.long())
    assert torch.equal(to_uint8((up * 2 - 1).float(), "[-1,1]").long(), codes[:-1].long() + 1)
    assert to_uint8(torch.tensor([-1.0, 1.0]), "[-1, 1]").tolist() == [0, 255]
    exact = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(exact.float() / 255.0, "[0,1]"), exact)
    assert torch.equal(to_uint8(exact.float() / 127.5 - 1.0, "[-1,1]"), exact)


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.fixture
def small_metric():
    return InceptionScore(extractor=LookupExtractor(random_logits(n=50, k=5)), input_range="[-1,1]")


def test_bad_images_give_clear_errors(small_metric):
    with pytest.raises(ValueError, match=r"images must lie in \[-1, 1\].*input_range='\[-1,1\]'.*1\.5"):
        small_metric.update(torch.full((2, 3, 2, 2), 1.5))
    with pytest.raises(ValueError, match=r"images must have shape \(N, 3, H, W\).*\(2, 1, 2, 2\)"):
        small_metric.update(torch.zeros(2, 1, 2, 2))
    with pytest.raises(ValueError, match=r"images must have shape \(N, 3, H, W\).*\(3, 2, 2\)"):
        small_metric.update(torch.zeros(3, 2, 2))
    with pytest.raises(TypeError, match=r"images must be a torch.Tensor of floating point for input_range='\[-1,1\]', "
                                        r"got torch.uint8"):
        small_metric.update(torch.zeros(2, 3, 2, 2, dtype=torch.uint8))
    with pytest.raises(TypeError, match="images must be a torch.Tensor of floating point .*got list"):
        small_metric.update([torch.zeros(3, 2, 2)] * 3)
    with pytest.raises(ValueError, match=r"images must lie in \[-1, 1\] .*got values in \[nan, nan\]"):
        small_metric.update(torch.full((2, 3, 2, 2), float("nan")))
    uint8_metric = InceptionScore(extractor=LookupExtractor(random_logits(n=5, k=3)), input_range="uint8")
    with pytest.raises(TypeError, match="images must be a torch.Tensor of torch.uint8 for input_range='uint8', got "
                                        "torch.float32"):
        uint8_metric.update(torch.zeros(2, 3, 2, 2))
    with pytest.raises(ValueError, match=r"input_range must be one of .*got '0-255'"):
        InceptionScore(extractor=LookupExtractor(random_logits(n=5, k=3)), input_range="0-255")
    with pytest.raises(ValueError, match="splits must be >= 1, got 0"):
        InceptionScore(extractor=LookupExtractor(random_logits(n=5, k=3)), splits=0)


def test_fewer_samples_than_splits_is_an_error_not_nan(small_metric):
    small_metric.update(encode(range(5)).float() / 127.5 - 1.0)
    # The formula's own check (functional.inception_score) names the splits and the five samples.
    with pytest.raises(ValueError, match=r"splits=10 .*\(5, 5\)"):
        small_metric.compute()
    small_metric.reset()
    with pytest.raises(NotComputableError):
        small_metric.compute()


def test_plain_classifier_is_wrapped_and_sees_images_in_its_range():
    seen = []

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)
            self.dropout = nn.Dropout(0.5)

        def forward(self, x):
            seen.append((x.min().item(), x.max().item(), self.training))
            return self.linear(self.dropout(x.flatten(1)))

    net = Classifier().train()
    metric = InceptionScore(extractor=net, input_range="[-1,1]", splits=2)
    images = torch.tensor([-1.0, -0.5, 0.5, 1.0]).view(1, 1, 2, 2).repeat(6, 1, 1, 1)  # 1-channel is fine here
    metric.update(images)
    assert seen[-1][0] == pytest.approx(-1.0) and seen[-1][1] == pytest.approx(1.0)
    assert seen[-1][2] is False and net.training  # evaluated in eval mode, mode restored
    quantized = to_uint8(images, "[-1,1]").float() / 127.5 - 1.0
    with torch.no_grad():
        expected = numpy_inception_score(net.eval()(quantized).numpy(), splits=2)
    assert metric.compute()["mean"] == pytest.approx(expected[0], rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# The paper's network: weights file, hash, download, float64


def _random_tf_inception_state_dict(seed=0):
    """A state dict with the shapes of torch-fidelity's network (instantiated without weights), random values."""
    with mock.patch.object(tf_module, "load_state_dict_from_url", lambda *a, **k: {}), mock.patch.object(
        tf_module.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None
    ):
        torch.manual_seed(seed)
        net = tf_module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in net.state_dict().items():
        if not value.is_floating_point():
            state[key] = value.clone()
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=generator)
        elif key.endswith("running_mean") or key.endswith(".bias"):
            state[key] = 0.1 * torch.randn(value.shape, generator=generator)
        elif key.endswith("bn.weight"):
            state[key] = 1.0 + 0.1 * torch.randn(value.shape, generator=generator)
        else:
            state[key] = value + 0.01 * torch.randn(value.shape, generator=generator)
    return state


@pytest.fixture(scope="module")
def tf_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "weights-inception-2015-12-05-test.pth"
    torch.save(_random_tf_inception_state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tf_extractor(tf_weights):
    path, digest = tf_weights
    return TFInceptionV3(weights_path=path, sha256=digest)


@pytest.fixture(scope="module")
def tf_images():
    # Inception at 299x299 is slow on CPU: the network tests share these two images and their reference outputs.
    return torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def tf_reference(tf_weights, tf_images):
    """torch-fidelity's own network, loading the same file its own way, on the shared images."""
    reference = tf_module.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(tf_weights[0])
    )
    with torch.no_grad():
        pool, logits = reference(tf_images)
    return pool, logits


def test_tf_network_loads_through_the_checked_path_and_scores_like_torch_fidelity(
    tf_extractor, tf_images, tf_reference
):
    pool, logits = tf_reference
    seen_logits, seen_pool = [], []
    real_logits_and_features = tf_extractor.logits_and_features

    def spy(images):  # the metric takes logits and features from one pass
        out = real_logits_and_features(images)
        seen_logits.append(out[0])
        return out

    hook = tf_extractor.net.AvgPool.register_forward_hook(lambda m, a, out: seen_pool.append(out.flatten(1)))
    try:
        images = tf_images.double() / 127.5 - 1.0  # float [-1, 1] input that rounds back to exactly tf_images
        metric = InceptionScore(extractor=tf_extractor, input_range="[-1,1]", splits=1)
        with mock.patch.object(tf_extractor, "logits_and_features", spy):
            metrics = run_metric(metric, [images.float()])  # one batch, as the reference ran them
    finally:
        hook.remove()
    assert len(seen_logits) == 1 and len(seen_pool) == 1  # one network pass
    assert torch.equal(tf_extractor(tf_images), logits)  # forward() gives the same logits
    assert seen_logits[0].shape == (2, 1008) and seen_logits[0].dtype == torch.float32
    assert torch.equal(seen_logits[0], logits)  # torch-fidelity's "logits_unbiased"
    assert torch.equal(seen_pool[0], pool)  # and its "2048" features (FID's)
    theirs = isc_features_to_metric(logits, splits=1, shuffle=False)
    assert abs(metrics["is"] - theirs["inception_score_mean"]) < 1e-9
    assert metrics["is_std"] == 0.0
    assert not any(p.requires_grad for p in tf_extractor.parameters())
    assert not tf_extractor.train().training  # stays frozen in eval mode


def test_wrong_hash_is_refused_and_the_real_hash_is_the_default(tf_weights):
    path, digest = tf_weights
    wrong = "0" * 64
    with pytest.raises(ValueError, match=f"SHA-256 {digest}, expected {wrong}"):
        TFInceptionV3(weights_path=path, sha256=wrong)
    with pytest.raises(ValueError, match=f"expected {TF_INCEPTION_SHA256}"):
        TFInceptionV3(weights_path=path)  # the random file is not the real one
    with pytest.raises(FileNotFoundError, match="weights_path"):
        TFInceptionV3(weights_path=path.parent / "missing.pth")


def test_download_on_first_use_caches_and_checks(tf_weights, tmp_path):
    path, digest = tf_weights
    url = path.as_uri()  # file:// goes through the same urllib download as https://
    cache = tmp_path / "cache"
    resolved = resolve_tf_inception_weights(url=url, sha256=digest, cache_dir=cache, progress=False)
    assert resolved == cache / path.name and resolved.read_bytes() == path.read_bytes()
    # Cached now: no download needed, but the hash is still checked on every load.
    assert resolve_tf_inception_weights(url=url, sha256=digest, cache_dir=cache, download=False) == resolved
    with pytest.raises(RuntimeError, match="invalid hash value"):  # torch.hub's check, before the file is moved
        resolve_tf_inception_weights(url=url, sha256="f" * 64, cache_dir=tmp_path / "other", progress=False)
    assert not (tmp_path / "other" / path.name).exists()  # a file failing the check never lands in the cache
    with pytest.raises(RuntimeError, match="download=False.*weights_path="):
        resolve_tf_inception_weights(url=url, sha256=digest, cache_dir=tmp_path / "empty", download=False)
    with pytest.raises(RuntimeError, match="could not download.*weights_path="):
        resolve_tf_inception_weights(
            url=(tmp_path / "nowhere.pth").as_uri(), sha256=digest, cache_dir=tmp_path / "x", progress=False
        )
    with open(resolved, "r+b") as f:  # corrupt the cached copy
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="corrupt"):
        resolve_tf_inception_weights(url=url, sha256=digest, cache_dir=cache, download=False)


def test_without_sha256_a_download_is_checked_against_the_digest_prefix_its_name_carries(tmp_path):
    """torch.hub's convention, as torchvision's weights files (inception_v3_google-0cc3c7bd.pth) are checked."""
    data = b"weights"
    digest = hashlib.sha256(data).hexdigest()
    named, misnamed = tmp_path / f"w-{digest[:8]}.pth", tmp_path / "w-deadbeef.pth"
    for path in (named, misnamed):
        path.write_bytes(data)
    resolved = resolve_tf_inception_weights(url=named.as_uri(), sha256=None, cache_dir=tmp_path / "a", progress=False)
    assert resolved.read_bytes() == data
    with pytest.raises(RuntimeError, match="invalid hash value"):
        resolve_tf_inception_weights(url=misnamed.as_uri(), sha256=None, cache_dir=tmp_path / "b", progress=False)
    assert not (tmp_path / "b" / misnamed.name).exists()


def test_weights_are_loaded_with_weights_only(tf_weights):
    path, digest = tf_weights
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    with mock.patch.object(torch, "load", spy):
        TFInceptionV3(weights_path=path, sha256=digest)
    assert calls == [True]


def test_float64_option_really_runs_in_float64(tf_weights, tf_images, tf_reference):
    path, digest = tf_weights
    extractor64 = TFInceptionV3(weights_path=path, sha256=digest, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in extractor64.parameters())
    seen = []
    extractor64.net.Mixed_7c.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    logits64 = extractor64(tf_images[:1])
    assert seen == [torch.float64] and logits64.dtype == torch.float64
    logits32 = tf_reference[1][:1].double()
    assert torch.allclose(logits64, logits32, rtol=1e-3, atol=1e-3 * logits64.abs().max().item())
    assert not torch.equal(logits64, logits32)  # not float32 values in disguise
    with pytest.raises(ValueError, match=r"dtype must be one of \(torch.float32, torch.float64\), got torch.float16"):
        TFInceptionV3(weights_path=path, sha256=digest, dtype=torch.float16)


def test_torchvision_inception_default_weights_come_through_torchvision_s_cache(tmp_path, monkeypatch):
    """Without weights_path, torchvision's own loader reads its cache (torch.hub's checkpoints); nothing cached and
    download=False is a clear error, before any network access."""
    from torchvision.models import Inception_V3_Weights, inception_v3

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(RuntimeError, match=r"torchvision's Inception weights are not at .*download=False"):
        TorchvisionInceptionV3(download=False)
    torch.manual_seed(0)
    model = inception_v3(weights=None, aux_logits=True, init_weights=False)
    cached = tmp_path / "checkpoints" / Path(Inception_V3_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir()
    torch.save(model.state_dict(), cached)
    extractor = TorchvisionInceptionV3(download=False)
    assert extractor.weights_path == cached
    assert extractor.weights_sha256 == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert all(torch.equal(a, b) for a, b in zip(extractor.model.state_dict().values(), model.state_dict().values()))


def test_torchvision_inception_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    from torchvision.models import inception_v3

    model = inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path / "inception_v3.pth"
    torch.save(model.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="expected " + "1" * 64):
        TorchvisionInceptionV3(weights_path=path, sha256="1" * 64)
    extractor = TorchvisionInceptionV3(weights_path=path, sha256=digest)
    assert extractor.model.transform_input  # the ImageNet normalization below is undone inside, as its weights expect
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    logits = extractor(images)
    assert logits.shape == (1, 1000)
    x = torch.nn.functional.interpolate(images.float() / 255, size=(299, 299), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    model.eval()
    with torch.no_grad():
        expected = model((x - mean) / std)
    assert torch.allclose(logits, expected, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# FID through the same machinery


def test_fid_matches_the_frechet_formula_on_extractor_features():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    projection = torch.randn(12, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    net = nn.Flatten()
    extractor = ClassifierExtractor(
        net, input_range="[0,1]", num_features=4, features_fn=lambda module, x: module(x).double() @ projection
    )
    metric = FID(extractor=extractor, input_range="[0,1]")
    real = torch.rand(40, 3, 2, 2, generator=torch.Generator().manual_seed(6))
    fake = torch.rand(40, 3, 2, 2, generator=torch.Generator().manual_seed(7)) ** 2
    for r, f in zip(real.split(16), fake.split(16)):
        metric.update((r, f))
    value = metric.compute()

    def feats(x):
        return (to_uint8(x, "[0,1]").double() / 255).flatten(1) @ projection

    a, b = feats(real).numpy(), feats(fake).numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy_linalg.sqrtm(s1 @ s2).real)
    assert value == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Scoring a generator


class TinyGenerator(nn.Module):
    z_dim = 4

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3 * 2 * 2)
        self.bn = nn.BatchNorm1d(12)
        self.dropout = nn.Dropout(0.1)

    def sample_noise(self, n, generator=None, device=None):
        return torch.rand(n, self.z_dim, generator=generator, device=device)

    def forward(self, z):
        return torch.tanh(self.dropout(self.bn(self.linear(z)))).view(-1, 3, 2, 2)


def _code_extractor():
    """Maps an image to logits that depend on its pixels, for scoring tiny generators."""
    return ClassifierExtractor(nn.Sequential(nn.Flatten(), nn.Linear(12, 6)), input_range="[-1,1]")


def test_generator_scoring_restores_mode_buffers_and_is_reproducible():
    torch.manual_seed(0)
    generator = TinyGenerator().train()
    generator.dropout.eval()  # a mixed state must come back exactly
    buffers = {k: v.clone() for k, v in generator.state_dict().items()}
    flags = [m.training for m in generator.modules()]
    extractor = _code_extractor()
    results = []
    for mode, batch_size in (("eval", 100), ("eval", 7), ("train", 50)):
        metric = InceptionScore(extractor=extractor, input_range="[-1,1]", splits=5)
        scorer = GeneratorEvaluator(generator, {"is": metric}, n_samples=300, batch_size=batch_size, mode=mode)
        results.append(scorer.run())
        assert [m.training for m in generator.modules()] == flags
        assert all(torch.equal(v, generator.state_dict()[k]) for k, v in buffers.items())
    assert results[0] == results[1]  # eval mode: the batch size does not matter
    assert results[0] != results[2]  # batch statistics do change the samples
    assert set(results[0]) == {"is", "is_std"}


def test_generator_scoring_attaches_with_an_event_filter_and_uses_a_noise_fn():
    from ignite.engine import Events

    generator = TinyGenerator()
    calls = []

    def noise_fn(n, rng):
        calls.append(n)
        return torch.rand(n, 4, generator=rng)

    scorer = GeneratorEvaluator(
        generator,
        {"is": InceptionScore(extractor=_code_extractor(), splits=2)},
        n_samples=20,
        batch_size=10,
        noise_fn=noise_fn,
    )
    trainer = Engine(lambda engine, batch: None)
    scorer.attach(trainer, Events.EPOCH_COMPLETED(every=2))
    trainer.run([0], max_epochs=5)
    assert calls == [20, 20]
    assert "is" in scorer.engine.state.metrics


def test_score_generator_and_generator_errors():
    generator = TinyGenerator()
    result = score_generator(
        generator, InceptionScore(extractor=_code_extractor(), splits=2), n_samples=10, batch_size=5
    )
    assert set(result) == {"is", "is_std"}
    with pytest.raises(TypeError, match="sample_noise"):
        GeneratorEvaluator(nn.Linear(2, 2), {})
    with pytest.raises(ValueError, match="n_samples must be >= 1, got 0"):
        GeneratorEvaluator(generator, {}, n_samples=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU to move the generator between devices")
def test_generator_scoring_restores_device():
    generator = TinyGenerator()
    metric = InceptionScore(extractor=_code_extractor(), splits=2)
    GeneratorEvaluator(generator, {"is": metric}, n_samples=20, batch_size=10, device="cuda").run()
    assert all(p.device.type == "cpu" for p in generator.parameters())
    generator.cuda()
    with evaluation_mode(generator, device="cpu"):
        assert all(p.device.type == "cpu" for p in generator.parameters())
    assert all(p.device.type == "cuda" for p in generator.parameters())


def test_evaluation_mode_restores_on_error_and_leaves_device_alone_by_default():
    generator = TinyGenerator().train()
    with pytest.raises(RuntimeError, match="boom"):
        with evaluation_mode(generator):
            assert not generator.training
            raise RuntimeError("boom")
    assert generator.training and generator.bn.training
    with pytest.raises(ValueError, match=r"mode must be one of \('eval', 'train'\)"):
        with evaluation_mode(generator, mode="test"):
            pass


def test_fid_is_still_importable_from_where_it_used_to_live():
    from ignite_igan.metrics import inception

    assert inception.FID is FID
