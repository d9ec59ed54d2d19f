"""Fully connected ReLU networks: ``mlp`` (hidden ``widths``) and LeNet-300-100 (widths (300, 100)).

Inputs of any shape [B, ...] are flattened to [B, d]. Initialization: ``weight_init``, see
:mod:`jaxprune.models.layers` (He normal, fan_in, zero biases; or PyTorch's nn.Linear default).
"""
from __future__ import annotations

import flax.linen as nn
import jax

from jaxprune.models.layers import dense_head


class MLP(nn.Module):
    """logits = W_L relu(... relu(W_1 vec(x) + b_1) ...) + b_L with hidden sizes ``widths``."""

    widths: tuple[int, ...]
    num_classes: int
    weight_init: str = "kaiming_normal"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # No train/eval difference; the argument keeps one signature across the zoo.
        return dense_head(x.reshape(x.shape[0], -1), self.widths, self.num_classes, self.weight_init)
