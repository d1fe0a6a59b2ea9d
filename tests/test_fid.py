"""FID against real data: in a GeneratorEvaluator, cached real statistics, precomputed statistics, user classifiers.

The oracle is NumPy/SciPy: features computed in NumPy from the uint8-rounded images, ``np.cov`` and the usual
``tr(sqrtm(Σ1 Σ2))`` formula with ``scipy.linalg.sqrtm``.
"""
import warnings
import weakref
from unittest import mock

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from ignite.engine import Engine, Events
from ignite.exceptions import NotComputableError
from ignite.handlers import Checkpoint

from ignite_igan.functional import frechet_distance
from ignite_igan.metrics import (
    FID,
    ClassifierExtractor,
    FeatureStatistics,
    GeneratorEvaluator,
    ImageExtractor,
    InceptionScore,
    RealImages,
    SharedPass,
)
from ignite_igan.metrics import extractors as extractors_module

D_IN, D_FEAT = 12, 6


def make_net(seed=0):
    """A float64 classifier: Flatten -> Linear(12, 6) -> Tanh -> Linear(6, 4); features = the first Linear."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(D_IN, D_FEAT), nn.Tanh(), nn.Linear(D_FEAT, 4)).double()


def first_layer(net, x):
    return net[1](net[0](x))


def numpy_features(net, images, input_range="[-1,1]"):
    """The oracle's features: round to uint8 in NumPy, back to the range, then x @ W.T + b in float64."""
    x = np.asarray(images, dtype=np.float64)
    if input_range == "[-1,1]":
        q = np.rint((x + 1.0) * 127.5) / 255.0 * 2.0 - 1.0
    else:
        q = np.rint(x * 255.0) / 255.0
    w = net[1].weight.detach().numpy()
    b = net[1].bias.detach().numpy()
    return q.reshape(len(q), -1) @ w.T + b


def scipy_fid(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


class TinyGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.linear = nn.Linear(4, D_IN)

    def sample_noise(self, n, generator=None, device=None):
        return torch.rand(n, 4, generator=generator, device=device)

    def forward(self, z):
        return torch.tanh(self.linear(z)).view(-1, 3, 2, 2)


def real_images(n=400, seed=2):
    return torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


class LabeledImages(Dataset):
    """A map-style data set of (image, label) pairs, as torchvision's are."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % 10


def generated_images(generator, n, batch_size, seed=0):
    """What GeneratorEvaluator generates: the same seeded noise, in batches."""
    z = generator.sample_noise(n, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return torch.cat([generator(part) for part in z.split(batch_size)])


# ---------------------------------------------------------------------------------------------------------------
# 1. FID against real data, in the loop


def test_fid_against_a_dataset_in_a_generator_evaluator_every_epoch_matches_scipy(tmp_path):
    net, generator = make_net(), TinyGenerator()
    real = real_images()
    extractor = ClassifierExtractor(net, input_range="[-1,1]", features_fn=first_layer)
    fid = FID(extractor, real=RealImages(LabeledImages(real), name="toy", split="train", cache_dir=tmp_path,
                                         batch_size=64))
    scorer = GeneratorEvaluator(
        generator, {"is": InceptionScore(extractor, splits=2), "fid": fid}, n_samples=300, batch_size=50
    )
    trainer = Engine(lambda engine, batch: None)
    history = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: history.append(scorer.run()))
    trainer.run([0], max_epochs=2)

    fake = generated_images(generator, 300, 50)
    expected = scipy_fid(numpy_features(net, real.numpy()), numpy_features(net, fake.double().numpy()))
    assert len(history) == 2 and history[0] == history[1]  # scored every epoch, on the same samples
    assert history[0]["fid"] == pytest.approx(expected, rel=1e-9)
    assert all(type(value) is float for value in history[0].values())  # plain floats for bars and checkpoints
    assert Checkpoint.get_default_score_fn("fid", -1.0)(scorer.engine) == pytest.approx(-expected, rel=1e-9)
    assert set(scorer.protocols) == {"is", "fid"} and scorer.protocols["fid"].n_samples == 300


def test_fid_of_real_data_against_itself_is_zero_and_dataloader_equals_dataset(tmp_path):
    net = make_net()
    real = real_images(200)
    from_dataset = FID(net, features_fn=first_layer, real=real)
    from_loader = FID(net, features_fn=first_layer, real=DataLoader(TensorDataset(real, torch.zeros(200)), batch_size=33))
    assert torch.allclose(from_dataset.real_statistics.sigma, from_loader.real_statistics.sigma, rtol=1e-12, atol=0)
    for batch in real.split(64):
        from_dataset.update(batch)
    assert from_dataset.compute() == pytest.approx(0.0, abs=1e-9)


def test_real_samples_takes_the_first_images_of_a_loader_and_of_a_dataset():
    net = make_net()
    real = real_images(300)
    expected = FeatureStatistics.from_features(torch.from_numpy(numpy_features(net, real[:130].numpy())))
    for source in (real, LabeledImages(real), DataLoader(TensorDataset(real), batch_size=40)):
        fid = FID(net, features_fn=first_layer, real=RealImages(source, samples=130))
        stats = fid.real_statistics
        assert stats.count == 130
        assert torch.allclose(stats.mu, expected.mu, rtol=1e-12) and torch.allclose(stats.sigma, expected.sigma, rtol=1e-10)


def test_fid_computes_real_statistics_when_attached_not_at_the_first_evaluation():
    net = make_net()
    calls = []
    fid = FID(net, features_fn=lambda net, x: calls.append(len(x)) or first_layer(net, x),
              real=RealImages(real_images(100), batch_size=100))
    assert calls == []  # building is cheap
    fid.attach(Engine(lambda engine, batch: batch), "fid")
    assert calls == [100]  # the real pass ran at attach, before any run


# ---------------------------------------------------------------------------------------------------------------
# The cache of real statistics


class RowCounter:
    """Counts the images that reach the classifier's first layer (a real pass shows up as rows)."""

    def __init__(self, net):
        self.images = 0
        net[1].register_forward_hook(lambda module, args, out: self._add(args[0].shape[0]))

    def _add(self, n):
        self.images += n


def doubled(net, x):
    return 2.0 * first_layer(net, x)


def _fid(tmp_path, net, features=first_layer, real=None, allow_tf32=False, extractor_batch_size=None, **options):
    options = dict(dict(name="toy", split="train", cache_dir=tmp_path), **options)
    real = RealImages(real_images() if real is None else real, **options)
    return FID(net, features_fn=features, real=real, allow_tf32=allow_tf32, extractor_batch_size=extractor_batch_size)


def test_cache_is_written_once_reloaded_on_the_same_key_and_recomputed_on_any_change(tmp_path):
    net = make_net()
    counter = RowCounter(net)
    first = _fid(tmp_path, net)
    stats = first.real_statistics
    assert counter.images == 400 and first.cache_path().is_file()
    assert first.cache_path().name.startswith("fid_toy_train_")

    again = _fid(tmp_path, net)
    loaded = again.real_statistics
    assert counter.images == 400  # loaded, not recomputed
    assert torch.equal(loaded.mu, stats.mu) and torch.equal(loaded.sigma, stats.sigma) and loaded.count == 400
    assert loaded.key == first.real_key()
    assert again.protocol.real_statistics == first.protocol.real_statistics  # the card names the same key

    changes = {
        "split": dict(split="test"),
        "name": dict(name="other"),
        "samples": dict(samples=399),
        "input_range": dict(input_range="[0,1]", real=(real_images() + 1) / 2),
        "allow_tf32": dict(allow_tf32=True),
        "batch_size": dict(batch_size=7),
        "extractor_batch_size": dict(extractor_batch_size=5),
        "features_fn": dict(features=doubled),
    }
    paths = {first.cache_path()}
    for name, change in changes.items():
        before = counter.images
        changed = _fid(tmp_path, net, **change)
        changed.real_statistics
        assert counter.images > before, f"{name} did not invalidate the cache"
        paths.add(changed.cache_path())
    assert len(paths) == len(changes) + 1

    # Other weights of the same architecture are other statistics too; the same weights in a new module are not.
    other_weights = make_net(seed=5)
    other_counter = RowCounter(other_weights)
    _fid(tmp_path, other_weights).real_statistics
    assert other_counter.images == 400
    same_weights = make_net(seed=0)
    same_counter = RowCounter(same_weights)
    _fid(tmp_path, same_weights).real_statistics
    assert same_counter.images == 0


def test_a_cache_file_with_another_key_is_never_used(tmp_path):
    net = make_net()
    counter = RowCounter(net)
    fid = _fid(tmp_path, net)
    path = fid.cache_path()
    key = dict(fid.real_key(), n_images=12345)  # a file whose stored key is not ours, under our file name
    FeatureStatistics(torch.zeros(D_FEAT), torch.eye(D_FEAT), 12345, key=key).save(path)
    stats = _fid(tmp_path, net).real_statistics
    assert counter.images == 400 and stats.count == 400 and not torch.equal(stats.sigma, torch.eye(D_FEAT).double())
    path.write_bytes(b"not a zip file")
    with pytest.warns(RuntimeWarning, match="unreadable cache file"):
        _fid(tmp_path, net).real_statistics
    assert counter.images == 800


def test_statistics_are_recomputed_when_the_classifier_changes_after_the_first_use(tmp_path):
    net = make_net()
    counter = RowCounter(net)
    fid = _fid(tmp_path, net)
    fid.update(real_images(50, seed=9))
    first = fid.compute()
    with torch.no_grad():
        net[1].weight.mul_(1.5)
    fid.reset()
    fid.update(real_images(50, seed=9))
    second = fid.compute()
    assert counter.images == 2 * 400 + 2 * 50  # the real pass ran again: the stale statistics were not used
    fake = numpy_features(net, real_images(50, seed=9).numpy())
    assert second == pytest.approx(scipy_fid(numpy_features(net, real_images().numpy()), fake), rel=1e-9)
    assert second != pytest.approx(first)


def test_real_name_is_needed_for_caching_and_the_default_cache_dir(tmp_path, monkeypatch):
    net = make_net()
    with pytest.raises(ValueError, match="split and cache_dir need name"):
        FID(net, features_fn=first_layer, real=RealImages(real_images(), cache_dir=tmp_path))
    assert FID(net, features_fn=first_layer, real=real_images()).cache_path() is None  # no name, no cache
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # another test may have called torch.hub.set_dir
    fid = FID(net, features_fn=first_layer, real=RealImages(real_images(), name="toy"))
    assert fid.cache_path().parent == tmp_path / "torch_home" / "ignite_igan" / "fid_statistics"


# ---------------------------------------------------------------------------------------------------------------
# Precomputed statistics


def test_precomputed_statistics_npz_tensors_and_mapping_give_the_same_fid(tmp_path):
    net = make_net()
    real = numpy_features(net, real_images().numpy())
    mu, sigma = real.mean(0), np.cov(real, rowvar=False)
    path = tmp_path / "pytorch_fid_style.npz"
    np.savez(path, mu=mu, sigma=sigma)  # the layout pytorch-fid writes
    fake_images = real_images(120, seed=4) * 0.5
    expected = scipy_fid(real, numpy_features(net, fake_images.numpy()))
    cards = []
    for source in (str(path), path, (torch.from_numpy(mu), torch.from_numpy(sigma)), {"mu": mu, "sigma": sigma},
                   FeatureStatistics(mu, sigma)):
        fid = FID(net, features_fn=first_layer, real=source)
        fid.update(fake_images)
        assert fid.compute() == pytest.approx(expected, rel=1e-9)
        cards.append(fid.protocol)
    assert "pytorch_fid_style.npz" in cards[0].real_statistics and cards[0] == cards[1]
    assert cards[2].real_statistics == cards[3].real_statistics  # same values, same key
    with pytest.raises(ValueError, match=r"real statistics have 5 features, but the extractor gives 6"):
        FID(ClassifierExtractor(net, "[-1,1]", num_features=6, features_fn=first_layer),
            real=(torch.zeros(5), torch.eye(5)))
    with pytest.raises(ValueError, match="must hold arrays 'mu' and 'sigma'"):
        np.savez(tmp_path / "bad.npz", mean=mu)
        FID(net, features_fn=first_layer, real=tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FID(net, features_fn=first_layer, real=tmp_path / "missing.npz")
    fid = FID(net, features_fn=first_layer, real=(torch.zeros(4), torch.eye(4)))  # D unknown until the first batch
    fid.update(fake_images)
    with pytest.raises(ValueError, match="the real statistics have 4 features, the generated images 6"):
        fid.compute()


def test_the_constructors_of_the_real_side_agree_with_the_forms_real_takes_and_the_numpy_oracle(tmp_path):
    net = make_net()
    extractor = ClassifierExtractor(net, "[-1,1]", features_fn=first_layer)
    real = real_images(150)
    oracle = numpy_features(net, real.numpy())
    computed = FeatureStatistics.from_images(RealImages(real, batch_size=40), extractor)
    assert computed.count == 150 and computed.key == FID(extractor, real=RealImages(real, batch_size=40)).real_key()
    np.testing.assert_allclose(computed.mu.numpy(), oracle.mean(0), rtol=1e-12)
    np.testing.assert_allclose(computed.sigma.numpy(), np.cov(oracle, rowvar=False), rtol=1e-10)
    from_bare_data = FID(extractor, real=real).real_statistics  # a tensor is read as RealImages(real)
    assert torch.equal(FeatureStatistics.from_images(real, extractor).sigma, from_bare_data.sigma)
    mu, sigma = oracle.mean(0), np.cov(oracle, rowvar=False)
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)
    for given, constructed in (
        (FID(extractor, real=tmp_path / "stats.npz"), FeatureStatistics.from_file(tmp_path / "stats.npz")),
        (FID(extractor, real=(mu, sigma)), FeatureStatistics.from_arrays(mu, sigma)),
    ):
        assert given.real_statistics.key == constructed.key and torch.equal(given.real_statistics.mu, constructed.mu)
    with pytest.raises(ValueError, match=r"a \.npz file of statistics"):
        FeatureStatistics.from_file(tmp_path / "stats.txt")
    with pytest.raises(TypeError, match=r"wrap a classifier as ClassifierExtractor"):
        SharedPass(net)


def test_saved_statistics_are_readable_by_numpy_like_pytorch_fid(tmp_path):
    stats = FeatureStatistics.from_features(torch.randn(50, 3, dtype=torch.float64), key={"a": 1}, source="x")
    path = stats.save(tmp_path / "s.npz")
    with np.load(path) as data:  # what pytorch-fid's loader does
        assert np.array_equal(data["mu"], stats.mu.numpy()) and np.array_equal(data["sigma"], stats.sigma.numpy())
    back = FeatureStatistics.load(path)
    assert back.key == {"a": 1} and back.count == 50 and back.source == "x"
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------------------------------------------------------
# (real, fake) pairs, as before; the distance is ours


def test_pairs_still_work_with_unequal_sizes_and_use_our_frechet_distance():
    net = make_net()
    real, fake = real_images(90, seed=6), real_images(70, seed=7) ** 3
    fid = FID(net, features_fn=first_layer)
    with mock.patch("ignite.metrics.gan.fid.fid_score", side_effect=AssertionError("Ignite's fid_score was used")):
        for r, f in zip(real.split(30), fake.split(25)):
            fid.update((r, f))
        value = fid.compute()
    a, b = numpy_features(net, real.numpy()), numpy_features(net, fake.numpy())
    assert value == pytest.approx(scipy_fid(a, b), rel=1e-9)
    ours = frechet_distance(torch.from_numpy(a.mean(0)), torch.from_numpy(np.cov(a, rowvar=False)),
                            torch.from_numpy(b.mean(0)), torch.from_numpy(np.cov(b, rowvar=False)))
    assert value == pytest.approx(ours, rel=1e-11)
    assert "pairs" in fid.protocol.real_statistics and "90 images" in fid.protocol.real_statistics


# ---------------------------------------------------------------------------------------------------------------
# 2. A user classifier


def test_fid_with_a_user_classifier_both_ways_and_the_error_without_features():
    net = make_net()
    with pytest.raises(ValueError, match=r"FID needs image features.*features_fn=lambda net, x: "):
        FID(extractor=net)
    with pytest.raises(ValueError, match=r"ClassifierExtractor\(Sequential\) was built without features_fn"):
        FID(extractor=ClassifierExtractor(net))
    with pytest.raises(TypeError, match="features_fn is for a plain classifier"):
        FID(extractor=ClassifierExtractor(net), features_fn=first_layer)
    with pytest.raises(NotImplementedError, match="features_fn=lambda net, x"):
        ClassifierExtractor(net).features(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))

    real, fake = real_images(100), real_images(60, seed=8)
    values = []
    for metric in (
        FID(extractor=net, features_fn=first_layer, real=real),
        FID(extractor=ClassifierExtractor(net, "[-1,1]", features_fn=first_layer), real=real),
    ):
        metric.update(fake)
        values.append(metric.compute())
    assert values[0] == values[1]
    assert values[0] == pytest.approx(
        scipy_fid(numpy_features(net, real.numpy()), numpy_features(net, fake.numpy())), rel=1e-9
    )
    with pytest.raises(ValueError, match=r"features_fn returned features of shape \(100, 6\) for N=100 images, but "
                                         r"num_features=5"):
        FID(ClassifierExtractor(net, "[-1,1]", num_features=5, features_fn=first_layer), real=real).real_statistics


# ---------------------------------------------------------------------------------------------------------------
# One network pass per batch for IS and FID


class OnePass(ImageExtractor):
    """A stand-in for TFInceptionV3: logits and features from one (counted) pass."""

    single_pass = True
    num_features = 5
    num_logits = 7

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.passes = []
        torch.manual_seed(3)
        self.w = nn.Parameter(torch.randn(12, 5, dtype=torch.float64), requires_grad=False)
        self.v = nn.Parameter(torch.randn(5, 7, dtype=torch.float64), requires_grad=False)
        self.weights_sha256 = "f" * 64

    def logits_and_features(self, images):
        self.passes.append(images.shape[0])
        features = images.double().flatten(1) / 255 @ self.w
        return features @ self.v, features

    def features(self, images):
        return self.logits_and_features(images)[1]

    def forward(self, images):
        return self.logits_and_features(images)[0]


def test_inception_score_and_fid_given_one_shared_pass_run_the_default_network_once_per_batch():
    generator = TinyGenerator()
    with mock.patch.object(extractors_module, "TFInceptionV3", OnePass), mock.patch.object(
        extractors_module, "_SHARED_EXTRACTORS", weakref.WeakValueDictionary()
    ):
        shared = SharedPass()
        score = InceptionScore(shared, splits=2)
        fid = FID(shared, real=real_images(80))
        assert InceptionScore().extractor is fid.extractor  # named networks are shared (the module, not the pass)
    assert score.extractor is fid.extractor
    network = score.extractor
    assert network.passes == []  # building the metrics runs nothing
    scorer = GeneratorEvaluator(generator, {"is": score, "fid": fid}, n_samples=90, batch_size=30)
    assert network.passes == [80]  # the real statistics, when attached
    network.passes.clear()
    result = scorer.run()
    assert network.passes == [30, 30, 30]  # one pass per generated batch for both metrics
    fake = generated_images(generator, 90, 30)
    uint8 = torch.round((fake.double() + 1) * 127.5)
    features = (uint8.flatten(1) / 255 @ network.w).numpy()
    real_features = (torch.round((real_images(80) + 1) * 127.5).flatten(1) / 255 @ network.w).numpy()
    assert result["fid"] == pytest.approx(scipy_fid(real_features, features), rel=1e-9)


def test_a_modified_or_different_batch_is_not_taken_from_the_shared_pass():
    extractor = OnePass()
    shared = SharedPass(extractor)
    score = InceptionScore(shared, splits=1, input_range="[-1,1]")
    fid = FID(shared, real=real_images(20))
    fid.real_statistics
    extractor.passes.clear()
    batch = real_images(10, seed=3)
    score.update(batch)
    fid.update(batch)
    assert extractor.passes == [10]
    batch.mul_(0.5)  # in place: the version counter changes
    fid.update(batch)
    fid.update(batch.clone())  # equal values, another tensor
    assert extractor.passes == [10, 10, 10]


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_fid_errors_name_the_argument():
    net = make_net()
    real = real_images(50)
    fid = FID(net, features_fn=first_layer, real=real)
    with pytest.raises(TypeError, match=r"images must be a torch.Tensor of floating point .*got tuple"):
        fid.update((real, real))
    with pytest.raises(ValueError, match=r"images must lie in \[-1, 1\]"):
        fid.update(real * 3)
    with pytest.raises(NotComputableError):
        fid.compute()
    fid.update(real[:1])
    with pytest.raises(ValueError, match="at least 2 generated images for a covariance, got 1"):
        fid.compute()
    paired = FID(net, features_fn=first_layer)
    with pytest.raises(TypeError, match=r"FID without real= takes \(real, fake\) pairs"):
        paired.update(real)
    with pytest.raises(ValueError, match=r"real images must lie in \[0, 1\]"):
        FID(net, features_fn=first_layer, real=RealImages(real, input_range="[0,1]")).real_statistics
    with pytest.raises(ValueError, match="samples=51, but the real data has only 50 images"):
        FID(net, features_fn=first_layer, real=RealImages(real, samples=51)).real_statistics
    with pytest.raises(ValueError, match="shuffling DataLoader and samples=10"):
        FID(net, features_fn=first_layer, real=RealImages(DataLoader(TensorDataset(real), shuffle=True), samples=10))
    sampler = DistributedSampler(TensorDataset(real), num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="DistributedSampler"):
        FID(net, features_fn=first_layer, real=DataLoader(TensorDataset(real), sampler=sampler))
    with pytest.raises(TypeError, match="real must be a DataLoader, a Dataset"):
        FID(net, features_fn=first_layer, real=3)
    with pytest.raises(ValueError, match=r"real as a tuple or list must be \(mu, sigma\), got 3 items; stack"):
        FID(net, features_fn=first_layer, real=(1, 2, 3))
    with pytest.raises(ValueError, match="samples must be >= 1 or None, got 0"):
        FID(net, features_fn=first_layer, real=RealImages(real, samples=0))
    nan_net = make_net()
    with torch.no_grad():
        nan_net[1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or inf features for the real images"):
        FID(nan_net, features_fn=first_layer, real=real).real_statistics


# ---------------------------------------------------------------------------------------------------------------
# The distance itself (independent oracles: a closed form, and SciPy's sqrtm)


@pytest.mark.parametrize("singular", ["none", "sigma1", "sigma2", "both"])
def test_frechet_distance_against_a_closed_form_at_a_few_hundred_dimensions(singular):
    # Commuting covariances S_i = Q diag(a_i) Qᵀ: FID = ||Δμ||² + Σ(√a − √b)² exactly. Zeroed eigenvalues make a
    # covariance singular (fewer samples than features), the case where square roots of rounding errors hurt.
    d = 300
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a = np.arange(1, d + 1) ** -1.2
    b = 1.3 * np.arange(1, d + 1) ** -1.1
    if singular in ("sigma1", "both"):
        a[d // 2:] = 0.0
    if singular in ("sigma2", "both"):
        b[: d // 3] = 0.0
    mu1, mu2 = rng.standard_normal(d) * 0.01, rng.standard_normal(d) * 0.01
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    exact = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    ours = frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), mu2, s2)
    assert ours == pytest.approx(exact, rel=1e-11)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(exact, rel=1e-11)  # symmetric
    scipy_value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
                        - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))
    # At least as close as SciPy's sqrtm, up to float64 rounding (both are ~1e-14 off; which is closer depends on the BLAS).
    assert abs(ours - exact) <= abs(scipy_value - exact) + 1e-13 * exact


def test_frechet_distance_matches_scipy_on_non_commuting_covariances():
    d = 200
    rng = np.random.default_rng(1)
    s = []
    for scale in (1.0, 1.4):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        s.append((q * (scale * np.arange(1, d + 1) ** -1.1)) @ q.T)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    covmean = scipy.linalg.sqrtm(s[0] @ s[1]).real
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(s[0]) + np.trace(s[1]) - 2 * np.trace(covmean))
    assert frechet_distance(mu1, s[0], mu2, s[1]) == pytest.approx(expected, rel=1e-10)


def test_covariance_keeps_its_digits_when_features_have_a_large_offset():
    # Features 1e4 + O(1e-3): Σffᵀ − nμμᵀ would cancel 14 of float64's 16 digits; centred batches do not.
    net = make_net()
    offset = lambda net, x: 1e4 + 1e-3 * first_layer(net, x)  # noqa: E731
    real, fake = real_images(300), real_images(200, seed=11) * 0.7
    fid = FID(net, features_fn=offset, real=RealImages(real, batch_size=37))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not PSD" warning from rounding either
        for batch in fake.split(23):
            fid.update(batch)
        value = fid.compute()
    a = 1e4 + 1e-3 * numpy_features(net, real.numpy())
    b = 1e4 + 1e-3 * numpy_features(net, fake.numpy())
    assert torch.allclose(fid.real_statistics.sigma, torch.from_numpy(np.cov(a, rowvar=False)), rtol=1e-7, atol=0)
    assert value == pytest.approx(scipy_fid(a - 1e4, b - 1e4), rel=1e-6)


class Scale:
    def __init__(self, k):
        self.k = k

    def __call__(self, net, x):
        return self.k * x


@pytest.mark.slow
def test_callable_fingerprint_is_deterministic_across_processes_and_sees_what_changes():
    import functools
    import os
    import subprocess
    import sys

    from ignite_igan.metrics import callable_fingerprint

    script = (
        "from ignite_igan.metrics import callable_fingerprint\n"
        "def features(net, x):\n"
        "    return x if 'a' in {'a', 'b', 'c', 'd'} else -x\n"
        "print(callable_fingerprint(features))\n"
    )
    printed = {
        subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONHASHSEED=str(seed)),
                       capture_output=True, text=True, timeout=300).stdout
        for seed in (1, 2)
    }
    assert len(printed) == 1 and "features sha256:" in printed.pop()  # set constants hash in a fixed order

    def recursive():
        def g(net, x):
            return g(net, x)
        return g

    assert callable_fingerprint(recursive()) == callable_fingerprint(recursive())  # terminates, and is stable
    scale = functools.partial(lambda net, x, k: k * x)
    assert callable_fingerprint(functools.partial(scale, k=2)) != callable_fingerprint(functools.partial(scale, k=3))
    assert callable_fingerprint(lambda net, x: x + 1) != callable_fingerprint(lambda net, x: x + 2)
    # the constants of a function nested in the code, and an object's attributes, are in the key too
    assert callable_fingerprint(lambda net, x: (lambda y: y + 1)(x)) != callable_fingerprint(
        lambda net, x: (lambda y: y + 2)(x))
    assert callable_fingerprint(Scale(2)) != callable_fingerprint(Scale(3))



# --- added by tests: the statistics cache is written atomically, also when the disk fills mid-write ---


def test_statistics_that_fail_to_save_midway_leave_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    import errno
    import os

    from ignite_igan.metrics.fid import FeatureStatistics

    path = tmp_path / "real.npz"
    FeatureStatistics(np.zeros(3), np.eye(3), count=10).save(path)
    old = path.read_bytes()
    real_savez = np.savez

    def savez_then_full(f, **arrays):
        real_savez(f, **arrays)
        f.truncate(len(old) // 2)  # half of a file on disk, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_full)
    with pytest.raises(OSError, match="No space left on device"):
        FeatureStatistics(np.ones(3), 2 * np.eye(3), count=20).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["real.npz"]
    loaded = FeatureStatistics.load(path)
    assert loaded.count == 10 and torch.equal(loaded.mu, torch.zeros(3, dtype=loaded.mu.dtype))
