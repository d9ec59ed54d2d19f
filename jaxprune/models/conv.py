"""Plain (non-residual) convolutional networks: Conv-2/4/6 and CIFAR VGG-11/16/19.

Both are a *plan* of 3x3 convolutions (an int: that many filters, then ReLU) and width-2 max pools
(``POOL``), followed by a ReLU Dense head.

* Conv-2/4/6 (Frankle & Carbin 2019): plan 64-64-pool[-128-128-pool[-256-256-pool]], no normalization;
  the features are flattened and go through Dense 256-256-classes.
* VGG (Synaptic-Flow ``lottery_vgg`` ``*_bn``, from OpenLTH): conv → BatchNorm → ReLU, conv biases kept;
  global average pooling, then one Dense layer 512 → classes. On 32x32 inputs the last feature map is
  2x2, where the reference's ``AvgPool2d(2)`` is exactly global average pooling; using the global mean
  also lets 28x28 images and 1-D signals of length 40 through.

Initialization: see :mod:`jaxprune.models.layers` (He normal, fan_in; zero biases; BN scale 1, bias 0).
"""
from __future__ import annotations

import flax.linen as nn
import jax

from jaxprune.models.layers import batch_norm, conv, dense_head, global_avg_pool, max_pool, spatial_input

POOL = "M"
CONV2_PLAN = (64, 64, POOL)
CONV4_PLAN = CONV2_PLAN + (128, 128, POOL)
CONV6_PLAN = CONV4_PLAN + (256, 256, POOL)
CONV_HIDDEN = (256, 256)
VGG_PLANS = {
    11: (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512),
    16: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512),
    19: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512),
}


class ConvNet(nn.Module):
    """``plan`` of [conv 3x3 → (BatchNorm) → ReLU] and max pools, then flatten or global mean, then a Dense head.

    Inputs: images [B, H, W, C] or 1-D signals [B, L] (read as [B, L, 1], 1-D convolutions).
    """

    plan: tuple[int | str, ...]
    hidden: tuple[int, ...]
    num_classes: int
    use_batch_norm: bool
    global_pool: bool

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = spatial_input(x)
        for spec in self.plan:
            if spec == POOL:
                x = max_pool(x)
                continue
            x = conv(spec, x.ndim - 2)(x)
            if self.use_batch_norm:
                x = batch_norm(train)(x)
            x = nn.relu(x)
        x = global_avg_pool(x) if self.global_pool else x.reshape(x.shape[0], -1)
        return dense_head(x, self.hidden, self.num_classes)


def conv_n(plan: tuple[int | str, ...], num_classes: int) -> ConvNet:
    """Frankle & Carbin's Conv-2/4/6 for a plan above: no BatchNorm, flatten, Dense 256-256-classes."""
    return ConvNet(plan, CONV_HIDDEN, num_classes, use_batch_norm=False, global_pool=False)


def vgg(depth: int, num_classes: int) -> ConvNet:
    """CIFAR VGG-``depth`` (11, 16 or 19) with BatchNorm, global average pooling and one Dense layer."""
    return ConvNet(VGG_PLANS[depth], (), num_classes, use_batch_norm=True, global_pool=True)
