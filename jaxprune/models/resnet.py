"""CIFAR residual networks: ResNet-20 (He et al. 2016, as OpenLTH / Synaptic-Flow ``lottery_resnet``) and
ResNet-18 (BasicBlock [2, 2, 2, 2], as Synaptic-Flow's CIFAR/TinyImageNet ``resnet18``).

Both are: 3x3 stem conv → BN → ReLU (no max pool), stages of basic blocks, global average pooling, one
Dense layer. A basic block computes

    y = relu( BN(conv3x3(relu(BN(conv3x3_s(x))))) + shortcut(x) ),

where the first conv of a stage's first block has stride s = 2 (except in the first stage) and
shortcut(x) = BN(conv1x1_s(x)) when the stride or the width changes, else x. Convolutions have no bias.

* resnet20: stem 16, stages (16, 3), (32, 3), (64, 3) — 0.27M parameters on CIFAR-10.
* resnet18: stem 64, stages (64, 2), (128, 2), (256, 2), (512, 2) — 11.2M parameters on CIFAR-10.

Initialization: see :mod:`jaxprune.models.layers` (He normal, fan_in, for every conv and the Dense layer;
zero biases; BN scale 1, bias 0). The Synaptic-Flow ResNet-18 uses fan_out for its convs and PyTorch's
default init for its last layer; we use fan_in throughout, as in ResNet-20, for one rule across the zoo.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from jaxprune.models.layers import batch_norm, conv, dense_head, global_avg_pool, spatial_input

RESNET20_STAGES = ((16, 3), (32, 3), (64, 3))
RESNET18_STAGES = ((64, 2), (128, 2), (256, 2), (512, 2))


class BasicBlock(nn.Module):
    """relu(BN(conv(relu(BN(conv_stride(x))))) + shortcut(x)), shortcut a 1x1 conv + BN on shape change."""

    features: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        num_spatial = x.ndim - 2
        y = conv(self.features, num_spatial, stride=self.stride, use_bias=False)(x)
        y = nn.relu(batch_norm(train)(y))
        y = batch_norm(train)(conv(self.features, num_spatial, use_bias=False)(y))
        if self.stride != 1 or x.shape[-1] != self.features:
            x = conv(self.features, num_spatial, kernel=1, stride=self.stride, use_bias=False)(x)
            x = batch_norm(train)(x)
        return nn.relu(y + x)


class ResNet(nn.Module):
    """Stem conv of ``stem`` filters, then ``stages`` = ((width, num_blocks), ...), global mean, Dense.

    Inputs: images [B, H, W, C] or 1-D signals [B, L] (read as [B, L, 1], 1-D convolutions).
    """

    stem: int
    stages: tuple[tuple[int, int], ...]
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = spatial_input(x)
        x = nn.relu(batch_norm(train)(conv(self.stem, x.ndim - 2, use_bias=False)(x)))
        for stage, (width, num_blocks) in enumerate(self.stages):
            for block in range(num_blocks):
                x = BasicBlock(width, stride=2 if stage > 0 and block == 0 else 1)(x, train)
        return dense_head(global_avg_pool(x), (), self.num_classes)
