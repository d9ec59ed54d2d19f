"""Layer builders shared by every model in the zoo.

Initialization, ``weight_init``:

* ``'kaiming_normal'`` (default; Synaptic-Flow's VGG and ResNet models and OpenLTH, which call PyTorch's
  ``kaiming_normal_`` with its defaults): every Dense and Conv kernel is drawn i.i.d. from N(0, 2 / fan_in), an
  *untruncated* normal (Flax's ``he_normal`` truncates, so it is not used), fan_in = Π kernel_size · C_in; biases
  are 0. This keeps the second moment of the pre-activations constant through ReLU layers (He et al. 2015).
* ``'torch_default'`` (Dense layers only): PyTorch's own ``nn.Linear`` initialization, kernel AND bias i.i.d.
  U(−1/√fan_in, 1/√fan_in) (``kaiming_uniform_`` with a = √5 gives exactly this bound for the kernel). Synaptic-Flow's
  MLPs (``Models/mlp.py``: ``fc``, whose ``layers.Linear`` subclasses ``nn.Linear`` and never re-initializes) keep
  it, so No Free Prune's MLP experiments, run with Synaptic-Flow's code, started from it; their variance
  1/(3 fan_in) is 6 times smaller than kaiming_normal's. BatchNorm starts at scale 1, bias 0, and
follows PyTorch's running averages: r ← 0.9 r + 0.1 batch statistic (Flax ``momentum=0.9``), ε = 1e-5;
the batch variance in the running average is the biased one (Flax), where PyTorch uses the unbiased one.

Convolutions work on any number of spatial axes: kernel and pooling sizes are tuples of length
``x.ndim - 2``, so the same recipe runs on images [B, H, W, C] and on 1-D signals [B, L, C].
Padding is symmetric, k // 2 on each side (PyTorch ``padding=1`` for 3x3), so a stride-2 layer maps a
length n to ⌈n / 2⌉ with the same alignment as the reference implementations.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
WEIGHT_INITS = ("kaiming_normal", "torch_default")


def spatial_input(x: jax.Array) -> jax.Array:
    """A 1-D signal [B, L] becomes [B, L, 1] (one channel); images [B, H, W, C] pass through."""
    return x[..., None] if x.ndim == 2 else x


def conv(features: int, num_spatial: int, *, kernel: int = 3, stride: int = 1, use_bias: bool = True) -> nn.Conv:
    """A k^num_spatial convolution with He-normal kernel, zero bias and symmetric padding k // 2."""
    return nn.Conv(
        features,
        kernel_size=(kernel,) * num_spatial,
        strides=(stride,) * num_spatial,
        padding=[(kernel // 2, kernel // 2)] * num_spatial,
        use_bias=use_bias,
        kernel_init=KERNEL_INIT,
    )


def batch_norm(train: bool) -> nn.BatchNorm:
    """BatchNorm over all but the channel axis; batch statistics when training, running averages otherwise."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)


def max_pool(x: jax.Array) -> jax.Array:
    """Non-overlapping max pool of width 2 on every spatial axis (floor of odd lengths)."""
    window = (2,) * (x.ndim - 2)
    return nn.max_pool(x, window, strides=window)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """[B, *spatial, C] -> [B, C]: the mean over the spatial axes."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def uniform_fan_in(fan_in: int):
    """The initializer of PyTorch's ``nn.Linear`` (kernel and bias): i.i.d. U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / fan_in ** 0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def dense(features: int, fan_in: int, weight_init: str = "kaiming_normal") -> nn.Dense:
    """A Dense layer initialized by ``weight_init`` (module docstring); ``fan_in`` is its input width."""
    if weight_init == "torch_default":
        return nn.Dense(features, kernel_init=uniform_fan_in(fan_in), bias_init=uniform_fan_in(fan_in))
    return nn.Dense(features, kernel_init=KERNEL_INIT)


def dense_head(x: jax.Array, widths: Sequence[int], num_classes: int, weight_init: str = "kaiming_normal"
               ) -> jax.Array:
    """f(x) = W_L relu(... relu(W_1 x + b_1) ...) + b_L: ReLU Dense layers of ``widths``, then the logits.

    Call inside a compact method: the Dense layers become children of the calling module.
    """
    for width in widths:
        x = nn.relu(dense(width, x.shape[-1], weight_init)(x))
    return dense(num_classes, x.shape[-1], weight_init)(x)
