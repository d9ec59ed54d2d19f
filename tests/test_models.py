"""Tests for the model zoo: shapes on 1-D signals and images, hand-computed parameter counts, the
prunable kernels, He-normal init, the MLP forward against a float64 definition and BatchNorm semantics."""
from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import masks, models
from jaxprune.errors import ConfigError

NUM_CLASSES = 10
BATCH = 2
SIGNAL = (BATCH, 40)  # MNIST-1D
CIFAR = (BATCH, 32, 32, 3)
MNIST = (BATCH, 28, 28, 1)
BIG = ("vgg16", "vgg19", "resnet18")  # shapes only, via jax.eval_shape
BN_MODELS = ("vgg11", "vgg16", "vgg19", "resnet18", "resnet20")
# Dense + Conv layers, counted from the architectures:
PRUNABLE_LAYERS = {
    "mlp": 3,  # 2 hidden + output
    "lenet300_100": 3,
    "conv2": 2 + 3,  # convs + Dense 256-256-classes
    "conv4": 4 + 3,
    "conv6": 6 + 3,
    "vgg11": 8 + 1,  # convs + one Dense
    "vgg16": 13 + 1,
    "vgg19": 16 + 1,
    "resnet18": 1 + 8 * 2 + 3 + 1,  # stem + 8 blocks x 2 convs + 3 downsampling shortcuts + Dense
    "resnet20": 1 + 9 * 2 + 2 + 1,  # stem + 9 blocks x 2 convs + 2 downsampling shortcuts + Dense
}


def variable_shapes(name: str, shape: tuple[int, ...], **kwargs):
    return jax.eval_shape(models.create(name, NUM_CLASSES, **kwargs).init, jax.random.key(0), jnp.zeros(shape))


def num_params(name: str, shape: tuple[int, ...], **kwargs) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variable_shapes(name, shape, **kwargs)["params"]))


@functools.cache
def signal_variables(name: str):
    """Variables of ``name`` initialized on the default input [B, 40]; cached, as init dominates the runtime."""
    return jax.jit(models.create(name, NUM_CLASSES).init)(jax.random.key(0), jnp.zeros(SIGNAL))


def test_names_are_the_public_list():
    assert models.NAMES == (
        "mlp", "lenet300_100", "conv2", "conv4", "conv6", "vgg11", "vgg16", "vgg19", "resnet18", "resnet20"
    )


@pytest.mark.parametrize("name", models.NAMES)
def test_logits_shape_on_signals_and_images(name):
    """Small models run one forward on the default input [B, 40]; image shapes are traced only."""
    model = models.create(name, NUM_CLASSES)
    shapes = [SIGNAL, CIFAR] + ([MNIST] if name in ("mlp", "lenet300_100", "conv2", "conv4", "conv6") else [])
    for shape in shapes:
        logits = jax.eval_shape(model.apply, variable_shapes(name, shape), jnp.zeros(shape))
        assert logits.shape == (BATCH, NUM_CLASSES), (name, shape)
    if name not in BIG:
        logits = model.apply(signal_variables(name), jax.random.normal(jax.random.key(1), SIGNAL))
        assert logits.shape == (BATCH, NUM_CLASSES) and np.all(np.isfinite(logits))


@pytest.mark.parametrize("name", models.NAMES)
def test_prunable_is_exactly_the_dense_and_conv_kernels(name):
    params = variable_shapes(name, CIFAR)["params"]
    names = masks.prunable_names(params)
    assert len(names) == PRUNABLE_LAYERS[name]
    assert all(re.fullmatch(r"(.*/)?(Dense|Conv)_\d+/kernel", n) for n in names), names
    # Every Dense/Conv module has its kernel marked, and nothing else is called `kernel`.
    all_paths = [masks.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    assert [p for p in all_paths if p.endswith("/kernel")] == names


@pytest.mark.parametrize("name", ["conv2", "resnet20"])
def test_signals_use_1d_convolutions(name):
    params = variable_shapes(name, SIGNAL)["params"]
    conv_kernels = [k for n, k in zip(masks.prunable_names(params), masks.prunable_leaves(params, params))
                    if "Conv" in n]
    assert conv_kernels and all(k.ndim == 3 for k in conv_kernels)  # (width, C_in, C_out)
    assert params["Conv_0"]["kernel"].shape == (3, 1, 64 if name == "conv2" else 16)  # first layer, one channel


def test_parameter_counts_match_hand_computation():
    # mlp 40 -> 200 -> 200 -> 10: (40*200 + 200) + (200*200 + 200) + (200*10 + 10) = 8200 + 40200 + 2010.
    assert num_params("mlp", SIGNAL) == 50_410
    # widths are honoured: 40 -> 7 -> 10: 40*7 + 7 + 7*10 + 10 = 367.
    assert num_params("mlp", SIGNAL, widths=(7,)) == 367
    # LeNet-300-100 on 784 inputs: (784*300 + 300) + (300*100 + 100) + (100*10 + 10) = 235500 + 30100 + 1010.
    assert num_params("lenet300_100", MNIST) == 266_610
    # ResNet-20 on CIFAR (3x3 kernels, no conv biases, BN has scale + bias = 2C):
    #   stem 3*9*16 + BN 32                                                    =     464
    #   stage 1: 3 blocks x (2 * 16*9*16 + 2*32)                               =  14,016
    #   stage 2: (16*9*32 + 32*9*32 + 16*32 + 3*64) + 2 x (2*32*9*32 + 2*64)   =  51,648
    #   stage 3: (32*9*64 + 64*9*64 + 32*64 + 3*128) + 2 x (2*64*9*64 + 2*128) = 205,696
    #   Dense 64*10 + 10                                                       =     650
    assert num_params("resnet20", CIFAR) == 464 + 14_016 + 51_648 + 205_696 + 650 == 272_474


def test_mlp_forward_matches_float64_definition():
    x = jax.random.normal(jax.random.key(2), (3, 5, 8))  # flattened to [3, 40]
    variables = signal_variables("mlp")
    logits = models.create("mlp", NUM_CLASSES).apply(variables, x)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    h = np.asarray(x, np.float64).reshape(3, 40)
    for layer in ("Dense_0", "Dense_1"):
        h = np.maximum(h @ p[layer]["kernel"] + p[layer]["bias"], 0.0)
    expected = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["conv2", "mlp"])
def test_init_is_untruncated_he_normal_with_zero_biases(name):
    params = signal_variables(name)["params"]
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if masks.path_name(path).endswith("bias"):
            assert np.all(np.asarray(leaf) == 0)
    kernel = np.asarray(params["Dense_1"]["kernel"] if name == "mlp" else params["Conv_1"]["kernel"])
    std = np.sqrt(2.0 / np.prod(kernel.shape[:-1]))  # fan_in = prod(kernel_size) * C_in
    z = kernel / std
    assert abs(z.std() - 1.0) < 0.03 and abs(z.mean()) < 0.03
    # N(0, 1) puts 4.55% of its mass beyond 2 sigma; a truncated normal (Flax he_normal) puts none.
    assert abs(np.mean(np.abs(z) > 2.0) - 0.0455) < 0.01


@pytest.mark.parametrize("name", BN_MODELS)
def test_bn_models_keep_batch_stats(name):
    variables = variable_shapes(name, SIGNAL)
    assert set(variables) == {"params", "batch_stats"}


def test_train_updates_batch_stats_with_momentum_0_9():
    """First BN of ResNet-20 sees y = conv(x) (no bias): new mean = 0.1 E[y], new var = 0.9 + 0.1 Var[y]."""
    model = models.create("resnet20", NUM_CLASSES)
    x = jax.random.normal(jax.random.key(4), (4, 40))
    variables = signal_variables("resnet20")
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    w = np.asarray(variables["params"]["Conv_0"]["kernel"], np.float64)  # (3, 1, 16)
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1)))
    y = sum(padded[:, k:k + 40, None] * w[k, 0] for k in range(3))  # (4, 40, 16)
    stats = updates["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], 0.1 * y.mean(axis=(0, 1)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * y.var(axis=(0, 1)), rtol=1e-4, atol=1e-6)


def test_vgg_train_changes_every_batch_stat_and_eval_is_per_example():
    model = models.create("vgg11", NUM_CLASSES)
    x = jax.random.normal(jax.random.key(6), (4, 40))
    variables = signal_variables("vgg11")
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    changed = jax.tree.map(lambda a, b: bool(np.all(a != b)), variables["batch_stats"], updates["batch_stats"])
    assert all(jax.tree.leaves(changed)) and len(jax.tree.leaves(changed)) == 2 * 8  # mean, var per BN
    # Eval mode uses running averages: an example's logits do not depend on the rest of the batch;
    # train mode normalizes with batch statistics, so they do.
    x_other = x.at[1:].set(jax.random.normal(jax.random.key(8), (3, 40)))
    eval_logits = lambda x: model.apply(variables, x)[0]
    train_logits = lambda x: model.apply(variables, x, train=True, mutable=["batch_stats"])[0][0]
    np.testing.assert_allclose(eval_logits(x), eval_logits(x_other), rtol=1e-5, atol=1e-6)
    assert not np.allclose(train_logits(x), train_logits(x_other), atol=1e-4)


def test_unknown_name_raises_config_error_listing_names():
    with pytest.raises(ConfigError, match="resnet20") as info:
        models.create("resnet50", NUM_CLASSES)
    assert "resnet50" in str(info.value) and all(n in str(info.value) for n in models.NAMES)


def test_nonpositive_sizes_raise_config_error():
    with pytest.raises(ConfigError, match="num_classes"):
        models.create("mlp", 0)
    with pytest.raises(ConfigError, match="widths"):
        models.create("mlp", NUM_CLASSES, widths=(200, 0))
