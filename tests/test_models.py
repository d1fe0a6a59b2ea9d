"""Tests of ignite_igan.models: the paper's networks layer for layer (spec §3.1-§3.5), shapes, init, errors."""
import numpy as np
import pytest
import torch
from torch import nn

from ignite_igan import models
from ignite_igan.models import (
    CIFARDiscriminator,
    CIFARGenerator,
    MNISTDiscriminator,
    MNISTGenerator,
    cifar10_fm_discriminator,
    cifar10_generator,
    cifar10_md_discriminator,
    digits_discriminator,
    digits_generator,
    mnist_discriminator,
    mnist_generator,
    svhn_fm_discriminator,
    svhn_generator,
    svhn_md_discriminator,
)
from ignite_igan.nn import (
    GaussianNoise,
    MinibatchDiscrimination,
    ScaleFreeBatchNorm,
    VirtualBatchNorm,
    WeightNormConv2d,
    WeightNormConvTranspose2d,
    WeightNormLinear,
    data_dependent_init,
)

WN_TYPES = (WeightNormLinear, WeightNormConv2d, WeightNormConvTranspose2d)

DISCRIMINATORS = {
    "mnist": (mnist_discriminator, (784,), 250),
    "digits": (digits_discriminator, (64,), 64),
    "cifar10_fm": (cifar10_fm_discriminator, (3, 32, 32), 192),
    "cifar10_md": (cifar10_md_discriminator, (3, 32, 32), 192),
    "svhn_fm": (svhn_fm_discriminator, (3, 32, 32), 128),
    "svhn_md": (svhn_md_discriminator, (3, 32, 32), 192),
    "mnist_minibatch": (lambda: mnist_discriminator_with_minibatch(100), (784,), 250),
    "digits_minibatch": (lambda: digits_discriminator(minibatch_kernels=32), (64,), 64),
    "cifar10_mbf": (lambda: cifar10_md_discriminator(minibatch_kernels=0), (3, 32, 32), 192),
}


def mnist_discriminator_with_minibatch(kernels, kernel_dim=5):
    return MNISTDiscriminator(minibatch_kernels=kernels, minibatch_kernel_dim=kernel_dim)


def virtual_generator(reference_size=16, widths=(512, 256, 128)):
    gen = CIFARGenerator(normalization="virtual", widths=widths)
    gen.set_reference(gen.sample_noise(reference_size))
    return gen


def virtual_digits_generator(reference_size=16):
    gen = digits_generator(normalization="virtual")
    gen.set_reference(gen.sample_noise(reference_size))
    return gen


#: The two generators with virtual batch norm, small, without a reference yet: (make, output shape).
VIRTUAL_GENERATORS = {
    "cifar": (lambda: CIFARGenerator(normalization="virtual", widths=(32, 16, 8)), (3, 32, 32)),
    "mnist": (lambda: MNISTGenerator(hidden=(40, 30), out_features=20, normalization="virtual"), (20,)),
}


# ----------------------------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(DISCRIMINATORS))
def test_discriminator_shapes_for_batch_sizes_1_7_100(name):
    make, in_shape, feature_dim = DISCRIMINATORS[name]
    disc = make()
    assert disc.feature_dim == feature_dim
    for n in (1, 7, 100):
        # Images of 16x16 (any side >= 9 is valid) keep the batch of 100 cheap; what is tested is the batch size.
        shape = in_shape if n < 100 or len(in_shape) == 1 else (3, 16, 16)
        x = torch.rand(n, *shape)
        with torch.no_grad():
            logits, features = disc(x, return_features=True)
            if n < 100:
                assert disc(x).shape == (n, 10)
        assert logits.shape == (n, 10) and features.shape == (n, feature_dim)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "make, out_shape",
    [(mnist_generator, (784,)), (digits_generator, (64,)), (cifar10_generator, (3, 32, 32))],
)
def test_batch_norm_generator_shapes_and_batch_of_one(make, out_shape):
    gen = make()
    for n in (7, 100):
        with torch.no_grad():
            assert gen(gen.sample_noise(n)).shape == (n, *out_shape)
    # A batch of one has no batch statistics (spec §1.6: the generator always normalizes with its own batch):
    # every sample would be the same image, so it is refused with a clear message.
    with pytest.raises(ValueError, match=r"at least 2 values per channel.*batch of one"):
        gen(gen.sample_noise(1))


def test_virtual_generator_shapes_for_batch_sizes_1_7_100():
    gen = virtual_generator()
    for n in (1, 7, 100):
        with torch.no_grad():
            out = gen(gen.sample_noise(n))
        assert out.shape == (n, 3, 32, 32)
        assert out.abs().max() < 1


@pytest.mark.parametrize("make", [lambda: MNISTGenerator(normalization="virtual"), virtual_digits_generator])
def test_virtual_mnist_generators_shapes_for_batch_sizes_1_7_100(make):
    gen = make()
    if gen.reference_noise.shape[0] == 0:
        gen.set_reference(gen.sample_noise(16))
    for n in (1, 7, 100):
        with torch.no_grad():
            out = gen(gen.sample_noise(n))
        assert out.shape == (n, gen.out_features)
        assert (out > 0).all() and (out < 1).all()  # sigmoid


def test_generators_draw_their_initial_weights_layer_by_layer_as_the_reference_builds_them():
    # Virtual batch norm draws its gains, so building all the dense layers first would change every weight after
    # the first: the networks must equal the layers built by hand in the reference's order.
    torch.manual_seed(0)
    gen = MNISTGenerator(z_dim=5, hidden=(7, 6, 4), out_features=3, normalization="virtual")
    torch.manual_seed(0)
    by_hand = []
    for a, b in [(5, 7), (7, 6), (6, 4)]:
        by_hand.append(nn.Linear(a, b, bias=False))
        nn.init.xavier_uniform_(by_hand[-1].weight)
        by_hand.append(VirtualBatchNorm(b))
    by_hand.append(WeightNormLinear(4, 3, train_scale=True, eps=1e-6, data_init=False))
    nn.init.xavier_uniform_(by_hand[-1].weight)
    expected = [p for module in by_hand for p in module.parameters()]
    got = [p for pair in zip(gen.dense, gen.norms) for m in pair for p in m.parameters()] + list(gen.output.parameters())
    assert len(got) == len(expected) and all(torch.equal(g, e) for g, e in zip(got, expected))

    torch.manual_seed(1)
    cifar = CIFARGenerator(z_dim=4, normalization="virtual", widths=(8, 6, 4, 2))
    torch.manual_seed(1)
    dense, dense_norm = nn.Linear(4, 8 * 16, bias=False), VirtualBatchNorm(8 * 16)
    pairs = [(nn.ConvTranspose2d(a, b, 5, stride=2, padding=2, output_padding=1, bias=False), VirtualBatchNorm(b))
             for a, b in [(8, 6), (6, 4), (4, 2)]]
    with torch.no_grad():
        for layer in [dense] + [deconv for deconv, _ in pairs]:
            layer.weight.normal_(0.0, 0.05)
    expected = [dense.weight, *dense_norm.parameters()] + [p for pair in pairs for m in pair for p in m.parameters()]
    got = [cifar.dense.weight, *cifar.dense_norm.parameters()]
    got += [p for pair in zip(cifar.deconvs, cifar.norms) for m in pair for p in m.parameters()]
    assert len(got) == len(expected) and all(torch.equal(g, e) for g, e in zip(got, expected))


def test_svhn_generator_is_the_cifar_generator():
    cifar, svhn = cifar10_generator(), svhn_generator("virtual")
    assert type(svhn) is CIFARGenerator and svhn.normalization == "virtual"
    assert {k: v.shape for k, v in cifar.state_dict().items()} == {
        k: v.shape for k, v in svhn_generator().state_dict().items()
    }


def test_output_ranges():
    gen = mnist_generator()
    x = gen(gen.sample_noise(10))
    assert (x > 0).all() and (x < 1).all()
    gen = cifar10_generator()
    x = gen(gen.sample_noise(10))
    assert (x > -1).all() and (x < 1).all()


def test_mnist_discriminator_accepts_images_and_flattens():
    disc = mnist_discriminator().eval()
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(disc(x), disc(x.flatten(1)))


# ----------------------------------------------------------------------------------------------------------------
# Layer-for-layer structure (spec §3.1-§3.5)
# ----------------------------------------------------------------------------------------------------------------
def conv_specs(disc):
    return [
        (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
        for m in disc.trunk.modules()
        if isinstance(m, WeightNormConv2d)
    ]


@pytest.mark.parametrize(
    "make, w1, w2, corruption, kernels",
    [
        (cifar10_fm_discriminator, 96, 192, nn.Dropout, 0),
        (cifar10_md_discriminator, 96, 192, GaussianNoise, 100),
        (svhn_fm_discriminator, 64, 128, nn.Dropout, 0),
        (svhn_md_discriminator, 96, 192, GaussianNoise, 100),
        (lambda: cifar10_md_discriminator(minibatch_kernels=0), 96, 192, GaussianNoise, 0),  # the -MBF column
        (lambda: svhn_md_discriminator(minibatch_kernels=0), 96, 192, GaussianNoise, 0),
    ],
)
def test_cifar_svhn_discriminators_layer_for_layer(make, w1, w2, corruption, kernels):
    disc = make()
    assert conv_specs(disc) == [
        (3, w1, 3, 1, 1), (w1, w1, 3, 1, 1), (w1, w1, 3, 2, 1),
        (w1, w2, 3, 1, 1), (w2, w2, 3, 1, 1), (w2, w2, 3, 2, 1),
        (w2, w2, 3, 1, 0), (w2, w2, 1, 1, 0), (w2, w2, 1, 1, 0),
    ]
    trunk = list(disc.trunk)
    assert isinstance(trunk[0], corruption)
    level = trunk[0].p if corruption is nn.Dropout else trunk[0].sigma
    assert level == 0.2
    assert [i for i, m in enumerate(trunk) if isinstance(m, nn.Dropout) and m.p == 0.5] == [4, 8]
    leaky = [m for m in disc.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == 9 and all(m.negative_slope == 0.2 for m in leaky)
    assert isinstance(trunk[-2], nn.AdaptiveAvgPool2d)  # global mean pool (spec §1.7)
    if kernels:
        mbd = disc.minibatch
        assert (mbd.in_features, mbd.num_kernels, mbd.kernel_dim) == (w2, 100, 5)
        assert disc.classifier.in_features == w2 + 100
    else:
        assert disc.minibatch is None and disc.classifier.in_features == w2
    assert disc.classifier.out_features == 10 and disc.classifier.init_scale == 0.1
    for m in disc.modules():
        if isinstance(m, WN_TYPES):
            assert m.eps == 1e-6 and m.weight_std == 0.05
            assert m.init_scale == (0.1 if m is disc.classifier else 1.0)


def test_mnist_discriminator_layer_for_layer():
    disc = mnist_discriminator()
    dense = [m for m in disc.modules() if isinstance(m, WeightNormLinear)]
    assert [(m.in_features, m.out_features) for m in dense] == [
        (784, 1000), (1000, 500), (500, 250), (250, 250), (250, 250), (250, 10)
    ]
    # The MNIST-only nn.DenseLayer (spec §1.8): theta ~ N(0, 0.1), no epsilon, init std 1 everywhere.
    assert all(m.eps == 0.0 and m.weight_std == 0.1 and m.init_scale == 1.0 for m in dense)
    assert disc.input_noise.sigma == 0.3
    assert [m.sigma for m in disc.hidden_noise] == [0.5] * 5
    assert all(isinstance(block[1], nn.ReLU) for block in disc.blocks)
    assert not any(isinstance(m, (nn.Dropout, nn.LeakyReLU)) for m in disc.modules())


def test_mnist_discriminator_features_are_last_relu_before_its_noise():
    disc = mnist_discriminator().train()
    captured = {}
    disc.blocks[-1].register_forward_hook(lambda m, i, o: captured.setdefault("relu", o))
    torch.manual_seed(3)
    _, features = disc(torch.rand(5, 784), return_features=True)
    assert torch.equal(features, captured["relu"])
    assert (features >= 0).all()  # a ReLU output, before the N(0, 0.5) noise


def test_mnist_generator_layer_for_layer():
    gen = mnist_generator()
    assert [type(m) for m in gen.children()] == [nn.ModuleList, nn.ModuleList, WeightNormLinear]
    assert [(m.in_features, m.out_features, m.bias) for m in gen.dense] == [(100, 500, None), (500, 500, None)]
    assert all(type(m) is nn.Linear for m in gen.dense)
    assert [(type(m), m.num_features, m.eps) for m in gen.norms] == [(ScaleFreeBatchNorm, 500, 1e-6)] * 2
    out = gen.output
    assert (out.in_features, out.out_features, out.eps, out.train_scale, out.data_init) == (500, 784, 1e-6, True, False)
    # Glorot-uniform directions: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
    bound = (6 / (500 + 784)) ** 0.5
    assert out.weight.abs().max() <= bound and out.weight.abs().max() > 0.95 * bound
    bound = (6 / (100 + 500)) ** 0.5
    assert gen.dense[0].weight.abs().max() <= bound and gen.dense[0].weight.abs().max() > 0.95 * bound


def test_mnist_generator_computes_dense_norm_softplus_then_sigmoid():
    # The forward pass, written out from spec §3.1 with the layers' parameters: softplus after each batch norm
    # (batch statistics, no scale, beta), sigmoid after the weight-normalized output layer.
    gen = MNISTGenerator(hidden=(6, 5), out_features=4).double()
    with torch.no_grad():
        for norm in gen.norms:
            norm.bias.normal_()
    z = gen.sample_noise(9).numpy()
    h = z
    for dense, norm in zip(gen.dense, gen.norms):
        a = h @ dense.weight.detach().numpy().T
        a = (a - a.mean(axis=0)) / np.sqrt(a.var(axis=0) + norm.eps) + norm.bias.detach().numpy()
        h = np.log1p(np.exp(a))
    v = gen.output.weight.detach().numpy()
    w = v / np.sqrt((v**2).sum(axis=1, keepdims=True) + 1e-6) * gen.output.scale.detach().numpy()[:, None]
    expected = 1 / (1 + np.exp(-(h @ w.T + gen.output.bias.detach().numpy())))
    with torch.no_grad():
        np.testing.assert_allclose(gen(torch.from_numpy(z)).numpy(), expected, rtol=1e-10)


def test_digits_networks_are_the_mnist_networks_scaled():
    gen, disc = digits_generator(), digits_discriminator()
    assert isinstance(gen, MNISTGenerator) and isinstance(disc, MNISTDiscriminator)
    assert (gen.z_dim, gen.hidden, gen.out_features) == (100, (128, 128), 64)
    assert (disc.in_features, disc.hidden) == (64, (256, 128, 64, 64, 64))
    assert disc.input_noise.sigma == 0.3 and disc.hidden_noise[0].sigma == 0.5
    assert gen.normalization == "batch" and disc.minibatch is None


def test_virtual_mnist_generator_layer_for_layer():
    # The batch-norm generator's layers with VirtualBatchNorm in place of each ScaleFreeBatchNorm (paper §3.4).
    gen = digits_generator(normalization="virtual")
    assert [(m.in_features, m.out_features, m.bias) for m in gen.dense] == [(100, 128, None), (128, 128, None)]
    assert [(type(m), m.num_features, m.eps) for m in gen.norms] == [(VirtualBatchNorm, 128, 1e-5)] * 2
    out = gen.output
    assert (out.in_features, out.out_features, out.eps, out.train_scale, out.data_init) == (128, 64, 1e-6, True, False)
    bound = (6 / (100 + 128)) ** 0.5  # Glorot-uniform, as with batch norm
    assert gen.dense[0].weight.abs().max() <= bound and gen.dense[0].weight.abs().max() > 0.95 * bound
    assert gen.normalization == "virtual" and gen.reference_noise.shape == (0, 100)
    # The batch-norm generator's parameters (the norms' beta included), plus the norms' gamma and the reference.
    batch_keys = set(digits_generator().state_dict())
    assert set(gen.state_dict()) - batch_keys == {"norms.0.weight", "norms.1.weight", "reference_noise"}
    assert batch_keys < set(gen.state_dict())


@pytest.mark.parametrize("make, hidden", [
    (lambda: digits_discriminator(minibatch_kernels=32), (256, 128, 64, 64, 64)),
    (lambda: mnist_discriminator_with_minibatch(100, 5), (1000, 500, 250, 250, 250)),
    (lambda: mnist_discriminator_with_minibatch(7, 3), (1000, 500, 250, 250, 250)),
])
def test_mnist_discriminator_with_minibatch_layer_for_layer(make, hidden):
    disc = make()
    mbd = disc.minibatch
    assert isinstance(mbd, MinibatchDiscrimination) and mbd.in_features == hidden[-1]
    kernels = mbd.num_kernels
    # The output layer reads the last hidden layer's (noisy) output and the minibatch features.
    assert (disc.classifier.in_features, disc.classifier.out_features) == (hidden[-1] + kernels, 10)
    dense = [m for m in disc.modules() if isinstance(m, WeightNormLinear)]
    assert [(m.in_features, m.out_features) for m in dense[:-1]] == list(zip((disc.in_features,) + hidden, hidden))
    assert all(m.eps == 0.0 and m.weight_std == 0.1 and m.init_scale == 1.0 for m in dense)
    assert disc.feature_dim == hidden[-1]
    assert [m for m in disc.modules() if isinstance(m, MinibatchDiscrimination)] == [mbd]
    assert digits_discriminator(minibatch_kernels=32).minibatch.kernel_dim == 5


def test_mnist_minibatch_wiring_in_training_mode():
    # Captured in one noisy pass: the minibatch layer reads the last ReLU output (the feature-matching features,
    # before their noise), and the output layer reads [that layer's noisy output, the minibatch features].
    disc = digits_discriminator(minibatch_kernels=8).train()
    captured = {}
    disc.blocks[-1].register_forward_hook(lambda m, i, o: captured.setdefault("relu", o))
    disc.hidden_noise[-1].register_forward_hook(lambda m, i, o: captured.setdefault("noisy", o))
    disc.minibatch.register_forward_hook(lambda m, i, o: captured.update(mbd_in=i[0], mbd_out=o))
    disc.classifier.register_forward_pre_hook(lambda m, i: captured.setdefault("classifier_in", i[0]))
    torch.manual_seed(4)
    _, features = disc(torch.rand(6, 64), return_features=True)
    assert torch.equal(captured["mbd_in"], captured["relu"]) and torch.equal(features, captured["relu"])
    assert not torch.equal(captured["noisy"], captured["relu"])  # the noise is on
    expected = torch.cat([captured["noisy"], captured["mbd_out"][:, 64:]], dim=1)
    assert torch.equal(captured["classifier_in"], expected)


def np_minibatch_features(x, theta, log_weight_scale, bias):
    """Spec §1.5 from the layer's parameters: T = theta exp(lws) / ||theta||_A, M = x T, o = sum_{j != i} exp(-d)."""
    t = theta * np.exp(log_weight_scale)[None] / np.sqrt((theta**2).sum(axis=0, keepdims=True))
    m = np.einsum("na,abc->nbc", x, t)
    d = np.abs(m[:, None] - m[None]).sum(axis=3) + 1e6 * np.eye(len(x))[:, :, None]
    return np.exp(-d).sum(axis=1) + bias


def test_mnist_minibatch_features_match_the_formula_and_depend_on_the_batch():
    disc = digits_discriminator(minibatch_kernels=8).double().eval()  # eval: no noise
    mbd = disc.minibatch
    torch.manual_seed(5)
    x = torch.rand(12, 64, dtype=torch.float64)
    data_dependent_init(disc, x)  # live features: nearest-neighbour distances put at 2 (spec §1.5)
    captured = {}
    disc.classifier.register_forward_pre_hook(lambda m, i: captured.update(classifier_in=i[0]))
    disc.blocks[-1].register_forward_hook(lambda m, i, o: captured.update(relu=o))
    with torch.no_grad():
        logits = disc(x)
    params = [p.detach().numpy() for p in (mbd.theta, mbd.log_weight_scale, mbd.bias)]
    expected = np_minibatch_features(captured["relu"].numpy(), *params)
    np.testing.assert_allclose(captured["classifier_in"][:, 64:].numpy(), expected, rtol=1e-10, atol=1e-12)
    # Alive: the features spread over the batch, and an example's logits change with the rest of its batch.
    assert (captured["classifier_in"][:, 64:].std(dim=0) > 1e-3).all()
    with torch.no_grad():
        alone_in_other_batch = disc(torch.cat([x[:1], torch.rand(11, 64, dtype=torch.float64)]))
    assert not torch.allclose(logits[0], alone_in_other_batch[0], rtol=1e-3, atol=1e-4)
    without = digits_discriminator().double().eval()  # control: no minibatch layer, no batch dependence
    with torch.no_grad():
        torch.testing.assert_close(without(x)[:1], without(torch.cat([x[:1], x[5:]]))[:1])


def test_mnist_minibatch_parameters_get_gradients():
    disc = digits_discriminator(minibatch_kernels=8)
    data_dependent_init(disc, torch.rand(40, 64))
    disc(torch.rand(10, 64)).logsumexp(dim=1).mean().backward()
    for name in ("theta", "log_weight_scale", "bias"):
        grad = getattr(disc.minibatch, name).grad
        assert grad is not None and grad.abs().max() > 0, name
    assert disc.classifier.weight.grad[:, 64:].abs().max() > 0  # the output layer uses the minibatch features


@pytest.mark.parametrize("normalization, norm_type", [("batch", ScaleFreeBatchNorm), ("virtual", VirtualBatchNorm)])
def test_cifar_generator_layer_for_layer(normalization, norm_type):
    gen = cifar10_generator(normalization=normalization)
    assert (gen.dense.in_features, gen.dense.out_features, gen.dense.bias) == (100, 8192, None)
    assert isinstance(gen.dense_norm, norm_type) and gen.dense_norm.num_features == 8192  # per unit
    assert [(d.in_channels, d.out_channels, d.kernel_size, d.stride, d.padding, d.output_padding, d.bias)
            for d in gen.deconvs] == [(512, 256, (5, 5), (2, 2), (2, 2), (1, 1), None),
                                      (256, 128, (5, 5), (2, 2), (2, 2), (1, 1), None)]
    assert [n.num_features for n in gen.norms] == [256, 128] and all(isinstance(n, norm_type) for n in gen.norms)
    for layer in (gen.dense, *gen.deconvs):
        assert abs(layer.weight.std().item() - 0.05) < 0.003
    out = gen.output
    assert isinstance(out, WeightNormConvTranspose2d)
    assert (out.in_channels, out.out_channels, out.stride, out.padding, out.output_padding) == (128, 3, (2, 2), (2, 2), (1, 1))
    assert out.train_scale and out.init_scale == 0.1
    if normalization == "batch":
        assert gen.dense_norm.eps == 1e-6
    else:
        assert gen.dense_norm.eps == 1e-5


# ----------------------------------------------------------------------------------------------------------------
# Trainable vs frozen gains (spec §0.1)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, expected",
    [
        (mnist_discriminator, ["classifier"]),
        (cifar10_fm_discriminator, ["classifier"]),
        (cifar10_md_discriminator, ["classifier"]),
        (svhn_fm_discriminator, ["classifier"]),
        (svhn_md_discriminator, ["classifier"]),
        (mnist_generator, ["output"]),
        (cifar10_generator, ["output"]),
        (lambda: digits_generator(normalization="virtual"), ["output"]),
        (lambda: digits_discriminator(minibatch_kernels=8), ["classifier"]),
    ],
)
def test_only_output_layers_train_their_gain(make, expected):
    model = make()
    assert list(model.trainable_scale_layers()) == expected
    wn = [m for m in model.modules() if isinstance(m, WN_TYPES)]
    assert len(wn) >= 1
    for m in wn:
        assert m.scale.requires_grad == (m in model.trainable_scale_layers().values())


# ----------------------------------------------------------------------------------------------------------------
# Data-dependent init of whole models (spec §4.4)
# ----------------------------------------------------------------------------------------------------------------
def preactivations(model, *inputs, seed):
    """Each weight-norm layer's output (the pre-activation) in a train-mode pass with a fixed noise seed."""
    captured = []
    hooks = [m.register_forward_hook(lambda mod, i, o: captured.append((mod, o)))
             for m in model.modules() if isinstance(m, WN_TYPES)]
    torch.manual_seed(seed)
    with torch.no_grad():
        model.train()(*inputs)
    for h in hooks:
        h.remove()
    return captured


def assert_normalized(captured, expected_count):
    assert len(captured) == expected_count
    for layer, t in captured:
        dims = (0,) if t.dim() == 2 else (0, 2, 3)
        std = t.std(dim=dims, unbiased=False)
        assert t.mean(dim=dims).abs().max() < 1e-4 * layer.init_scale + 1e-5, type(layer).__name__
        torch.testing.assert_close(std, torch.full_like(std, layer.init_scale), rtol=1e-3, atol=0)


@pytest.mark.parametrize("make, in_shape, count", [
    (mnist_discriminator, (784,), 6),
    (lambda: mnist_discriminator_with_minibatch(20), (784,), 6),
    (lambda: digits_discriminator(minibatch_kernels=32), (64,), 6),
    (cifar10_fm_discriminator, (3, 12, 12), 10),
    (svhn_md_discriminator, (3, 12, 12), 10),
    (lambda: cifar10_md_discriminator(minibatch_kernels=0), (3, 12, 12), 10),
])
def test_data_dependent_init_normalizes_every_layer_of_a_discriminator(make, in_shape, count):
    disc = make().double()
    x = torch.rand(32, *in_shape, dtype=torch.float64) * 2 - 1
    torch.manual_seed(11)
    data_dependent_init(disc, x)
    # Same batch, same noise/dropout masks: every layer's pre-activations are now zero-mean with std init_scale.
    assert_normalized(preactivations(disc, x, seed=11), count)
    if getattr(disc, "minibatch", None) is not None:
        captured = {}
        disc.minibatch.register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
        torch.manual_seed(11)
        with torch.no_grad():
            disc(x)
        o = captured["o"][:, disc.minibatch.in_features:]
        assert o.mean(0).abs().max() < 1e-8  # minibatch features centred on the init batch (spec §1.5)
        assert (disc.minibatch.log_weight_scale != 0).all() and (disc.minibatch.bias != -1).all()


@pytest.mark.parametrize("normalization", ["batch", "virtual"])
def test_data_dependent_init_of_the_cifar_generator(normalization):
    # Narrower than the paper's (512, 256, 128) to keep the float64 pass fast; the init logic is the same.
    gen = CIFARGenerator(normalization=normalization, widths=(64, 32, 16)).double()
    if normalization == "virtual":
        gen.set_reference(gen.sample_noise(10))
    z = gen.sample_noise(30)
    data_dependent_init(gen, z)
    # The output layer's pre-tanh activations have std 0.1: initial images are near-constant grey (spec §7.11).
    (layer, t), = preactivations(gen, z, seed=0)
    assert layer is gen.output and t.shape[0] == 30 + (10 if normalization == "virtual" else 0)
    assert_normalized([(layer, t)], 1)


@pytest.mark.parametrize("normalization", ["batch", "virtual"])
def test_data_dependent_init_leaves_the_mnist_generator_unchanged(normalization):
    gen = MNISTGenerator(normalization=normalization)
    if normalization == "virtual":
        gen.set_reference(gen.sample_noise(10))
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    with warnings_as_errors():
        out = data_dependent_init(gen, gen.sample_noise(20))
    assert out.shape == (20, 784)
    assert all(torch.equal(v, before[k]) for k, v in gen.state_dict().items())


class warnings_as_errors:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# ----------------------------------------------------------------------------------------------------------------
# Generators: noise and the virtual-batch-norm reference
# ----------------------------------------------------------------------------------------------------------------
def test_sample_noise_is_uniform_01_reproducible_and_follows_dtype():
    gen = cifar10_generator()
    z = gen.sample_noise(5000)
    assert z.shape == (5000, 100) and z.dtype == torch.float32
    assert z.min() >= 0 and z.max() < 1 and abs(z.mean().item() - 0.5) < 0.01
    a = gen.sample_noise(3, generator=torch.Generator().manual_seed(5))
    b = gen.sample_noise(3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert mnist_generator().double().sample_noise(2).dtype == torch.float64
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        gen.sample_noise(0)


Z_REF = r"z_ref must be a non-empty floating-point \(R, z_dim=100\) batch, "


def test_virtual_generator_needs_a_reference():
    gen = cifar10_generator(normalization="virtual")
    with pytest.raises(RuntimeError, match=r"no reference batch yet: call set_reference"):
        gen(gen.sample_noise(4))
    with pytest.raises(ValueError, match=r"set_reference needs normalization='virtual', got .*'batch'"):
        cifar10_generator().set_reference(torch.rand(4, 100))
    with pytest.raises(ValueError, match=Z_REF + r"got torch.float32 of shape \(4, 10\)"):
        gen.set_reference(torch.rand(4, 10))
    with pytest.raises(ValueError, match=Z_REF + r"got torch.float32 of shape \(0, 100\)"):
        gen.set_reference(torch.rand(0, 100))
    with pytest.raises(ValueError, match=Z_REF + r"got torch.int64 of shape \(4, 100\)"):
        gen.set_reference(torch.ones(4, 100, dtype=torch.int64))
    with pytest.raises(ValueError, match=Z_REF + r"got list \[0.5\]"):
        gen.set_reference([0.5])


def test_virtual_generator_samples_are_independent_of_their_batch():
    gen = virtual_generator(8, widths=(32, 16, 8)).double()
    z = gen.sample_noise(6)
    with torch.no_grad():
        together = gen(z)
        alone = torch.cat([gen(z[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-12)


def test_batch_norm_generator_samples_depend_on_their_batch():
    gen = CIFARGenerator(widths=(32, 16, 8)).double()
    z = gen.sample_noise(6)
    with torch.no_grad():
        assert not torch.allclose(gen(z)[:3], gen(z[:3]))  # faithful: batch statistics, as the reference


def test_virtual_generator_reference_gets_gradients_through_statistics():
    gen = virtual_generator(8, widths=(32, 16, 8))
    gen(gen.sample_noise(4)).sum().backward()
    assert gen.dense.weight.grad is not None
    # The reference rows feed the statistics: changing the reference changes the live output.
    z = gen.sample_noise(4)
    with torch.no_grad():
        before = gen(z)
        gen.set_reference(gen.sample_noise(8))
        assert not torch.allclose(before, gen(z))


@pytest.mark.parametrize("name", list(VIRTUAL_GENERATORS))
def test_virtual_generators_share_the_reference_machinery(name):
    make, _ = VIRTUAL_GENERATORS[name]
    gen = make()
    assert isinstance(gen, models._Generator)
    assert type(gen).set_reference is models._Generator.set_reference
    assert type(gen)._load_from_state_dict is models._Generator._load_from_state_dict


@pytest.mark.parametrize("name", list(VIRTUAL_GENERATORS))
def test_virtual_generators_need_a_reference(name):
    make, _ = VIRTUAL_GENERATORS[name]
    gen = make()
    with pytest.raises(RuntimeError, match=r"no reference batch yet: call set_reference"):
        gen(gen.sample_noise(4))
    with pytest.raises(ValueError, match=Z_REF + r"got torch.float32 of shape \(4, 10\)"):
        gen.set_reference(torch.rand(4, 10))
    with pytest.raises(ValueError, match=r"set_reference needs normalization='virtual', got .*'batch'"):
        digits_generator().set_reference(torch.rand(4, 100))


@pytest.mark.parametrize("name", list(VIRTUAL_GENERATORS))
def test_virtual_generators_samples_are_independent_of_their_batch(name):
    make, _ = VIRTUAL_GENERATORS[name]
    gen = make().double()
    gen.set_reference(gen.sample_noise(8))
    z = gen.sample_noise(6)
    with torch.no_grad():
        together = gen(z)
        alone = torch.cat([gen(z[i : i + 1]) for i in range(6)])
        other_batch = gen(torch.cat([z[:2], gen.sample_noise(9)]))[:2]
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(together[:2], other_batch, rtol=1e-10, atol=1e-12)


def test_mnist_virtual_generator_depends_on_its_reference_and_trains_through_it():
    gen = MNISTGenerator(hidden=(40, 30), out_features=20, normalization="virtual")
    gen.set_reference(gen.sample_noise(8))
    gen(gen.sample_noise(4)).sum().backward()
    assert gen.dense[0].weight.grad.abs().max() > 0 and gen.norms[0].weight.grad.abs().max() > 0
    z = gen.sample_noise(4)
    with torch.no_grad():
        before = gen(z)
        gen.set_reference(gen.sample_noise(8))
        assert not torch.allclose(before, gen(z))
    batch = MNISTGenerator(hidden=(40, 30), out_features=20).double()  # control: batch norm depends on the batch
    z = batch.sample_noise(6)
    with torch.no_grad():
        assert not torch.allclose(batch(z)[:3], batch(z[:3]))


@pytest.mark.parametrize("name", list(VIRTUAL_GENERATORS))
def test_virtual_generators_reference_round_trips_through_state_dict(name):
    make, out_shape = VIRTUAL_GENERATORS[name]
    gen = make()
    gen.set_reference(gen.sample_noise(12))  # the fresh model's buffer is (0, 100): resized on load
    state = gen.state_dict()
    assert state["reference_noise"].shape == (12, 100)
    fresh = make()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.reference_noise, gen.reference_noise, rtol=0, atol=0)
    z = gen.sample_noise(3)
    with torch.no_grad():
        out = fresh(z)
        torch.testing.assert_close(out, gen(z))
    assert out.shape == (3, *out_shape)
    assert make().double().reference_noise.dtype == torch.float64


def test_virtual_generator_reference_survives_state_dict_round_trip():
    gen = virtual_generator(12, widths=(32, 16, 8))
    state = gen.state_dict()
    assert state["reference_noise"].shape == (12, 100)
    fresh = CIFARGenerator(normalization="virtual", widths=(32, 16, 8))
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.reference_noise, gen.reference_noise)
    z = gen.sample_noise(3)
    with torch.no_grad():
        torch.testing.assert_close(fresh(z), gen(z))
    assert cifar10_generator(normalization="virtual").double().to(torch.float64).reference_noise.dtype == torch.float64


# ----------------------------------------------------------------------------------------------------------------
# Bad input and arguments
# ----------------------------------------------------------------------------------------------------------------
CIFAR_X = r"x must be a non-empty floating-point batch \(N, C=3, H, W\) with H, W >= 9 .*got torch\."
MNIST_X = r"x must be a non-empty batch \(N, in_features=784\) or \(N, \.\.\.\) flattening to it, got shape "
Z = r"z must be a non-empty batch \(N, z_dim=100\), "


@pytest.mark.parametrize(
    "make, x, error, pattern",
    [
        (cifar10_fm_discriminator, torch.rand(2, 32, 32), ValueError, CIFAR_X + r"float32 of shape \(2, 32, 32\)"),
        # The channel count is left to the first convolution, whose error names both counts.
        (cifar10_fm_discriminator, torch.rand(2, 1, 32, 32), (ValueError, RuntimeError), r"have 3 channels.* got 1"),
        (cifar10_md_discriminator, torch.rand(0, 3, 32, 32), ValueError, CIFAR_X + r"float32 of shape \(0, 3, 32, 32"),
        (cifar10_fm_discriminator, torch.rand(2, 3, 8, 8), ValueError, CIFAR_X + r"float32 of shape \(2, 3, 8, 8\)"),
        (cifar10_fm_discriminator, torch.zeros(2, 3, 32, 32, dtype=torch.uint8), ValueError, CIFAR_X + r"uint8"),
        # The MNIST discriminator leaves to its layers what their errors name: the width, a 1-D x, integer pixels.
        (mnist_discriminator, torch.rand(2, 700), RuntimeError, r"mat1 and mat2 shapes cannot be multiplied \(2x700 and 784x1000\)"),
        (mnist_discriminator, torch.rand(784), IndexError, r"Dimension out of range"),
        (mnist_discriminator, torch.rand(0, 784), ValueError, MNIST_X + r"\(0, 784\)"),
        (mnist_discriminator, torch.zeros(2, 784, dtype=torch.uint8), TypeError, r"input must be a floating-point tensor, got dtype torch.uint8"),
        (mnist_generator, torch.rand(4, 50), ValueError, Z + r"got shape \(4, 50\)"),
        (mnist_generator, torch.rand(4, 100, 1), ValueError, Z + r"got shape \(4, 100, 1\)"),
        (mnist_generator, torch.rand(100), ValueError, Z + r"got shape \(100,\)"),
        (cifar10_generator, torch.rand(0, 100), ValueError, Z + r"got shape \(0, 100\)"),
        (cifar10_generator, "noise", AttributeError, r"'str' object has no attribute 'dim'"),
    ],
)
def test_bad_input(make, x, error, pattern):
    with pytest.raises(error, match=pattern):
        make()(x)


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda: CIFARGenerator(normalization="layer"), ValueError, r"normalization must be one of \('batch', 'virtual'\), got 'layer'"),
        (lambda: CIFARDiscriminator(input_corruption="blur"), ValueError, r"input_corruption must be one of \('dropout', 'noise'\), got 'blur'"),
        (lambda: CIFARDiscriminator(widths=(96,)), ValueError, r"widths must have 2 entries, got 1"),
        (lambda: CIFARDiscriminator(dropout=1.0), ValueError, r"dropout must be in \[0, 1\), got 1.0"),
        (lambda: CIFARDiscriminator(minibatch_kernels=-1), ValueError, r"minibatch_kernels must be >= 0.*got -1"),
        (lambda: MNISTDiscriminator(minibatch_kernels=-2), ValueError, r"minibatch_kernels must be >= 0.*got -2"),
        (lambda: digits_discriminator(minibatch_kernels=2.5), TypeError, r"minibatch_kernels must be an int, got float"),
        (lambda: MNISTDiscriminator(minibatch_kernels=3, minibatch_kernel_dim=0), ValueError, r"kernel_dim must be >= 1, got 0"),
        (lambda: MNISTGenerator(normalization="layer"), ValueError, r"normalization must be one of \('batch', 'virtual'\), got 'layer'"),
        (lambda: digits_generator(normalization=None), ValueError, r"normalization must be one of .*got None"),
        (lambda: MNISTDiscriminator(hidden=()), ValueError, r"hidden must have at least one entry, got 0"),
        (lambda: MNISTDiscriminator(hidden=(10, 0)), ValueError, r"hidden\[1\] must be >= 1, got 0"),
        (lambda: MNISTGenerator(z_dim=1.5), TypeError, r"z_dim must be an int, got float"),
        (lambda: MNISTDiscriminator(input_noise=-1), ValueError, r"sigma must be (a finite number )?>= 0, got -1"),
        # Sizes that a layer takes under the same name are checked by that layer.
        (lambda: MNISTDiscriminator(in_features=0), ValueError, r"in_features must be >= 1, got 0"),
        (lambda: MNISTGenerator(out_features=0), ValueError, r"out_features must be >= 1, got 0"),
        (lambda: CIFARDiscriminator(in_channels=0), ValueError, r"in_channels must be >= 1, got 0"),
        (lambda: CIFARGenerator(out_channels=0), ValueError, r"out_channels must be >= 1, got 0"),
        (lambda: CIFARDiscriminator(num_classes=0), ValueError, r"num_classes must be >= 1, got 0"),
        (lambda: CIFARDiscriminator(input_corruption_level=1.0), ValueError, r"input_corruption_level must be in \[0, 1\)"),
        (lambda: CIFARGenerator(widths=(8, "4")), TypeError, r"widths\[1\] must be an int, got str '4'"),
        (lambda: CIFARGenerator(z_dim=4).sample_noise(2.0), TypeError, r"n must be an int, got float 2.0"),
    ],
)
def test_bad_constructor_arguments(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_public_api():
    for name in models.__all__:
        assert hasattr(models, name)


def test_sizes_are_python_ints_whatever_kind_of_integer_was_passed():
    gen = MNISTGenerator(z_dim=np.int64(4), hidden=np.int64(7), out_features=np.int32(3))
    assert gen.hidden == (7, 7) and all(type(h) is int for h in gen.hidden)
    assert type(gen.z_dim) is int and type(gen.out_features) is int
    cifar = CIFARGenerator(z_dim=4, out_channels=np.int64(1), widths=[np.int64(8), 4, 2])
    assert cifar.widths == (8, 4, 2) and all(type(w) is int for w in cifar.widths) and type(cifar.out_channels) is int
    with pytest.raises(TypeError, match=r"widths must be a sequence of ints, got str '96'"):
        CIFARDiscriminator(widths="96")
    with pytest.raises(TypeError, match=r"hidden must be a sequence of ints, got float 2.5"):
        MNISTGenerator(hidden=2.5)


@pytest.mark.parametrize("widths", [(8, 4), (8, 6, 4)])
def test_cifar_generator_image_size_is_the_side_it_generates(widths):
    gen = CIFARGenerator(normalization="batch", widths=widths)
    assert gen(gen.sample_noise(2)).shape[-1] == gen.image_size == 4 * 2 ** len(widths)
