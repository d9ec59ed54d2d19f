"""The model zoo: Flax linen classifiers from Synaptic-Flow / OpenLTH, built by name with :func:`create`.

Every model maps x [B, ...] to logits [B, num_classes] via ``model.apply(variables, x, train=...)``;
models with BatchNorm keep running statistics in the ``batch_stats`` collection (pass
``mutable=['batch_stats']`` when ``train=True``). Conv models take images [B, H, W, C] or 1-D signals [B, L].
Dense and Conv weights are the only leaves named ``kernel``, so ``masks.prunable`` selects exactly them.
Initialization: He normal (fan_in) kernels, zero biases; see :mod:`jaxprune.models.layers`.
"""
from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from jaxprune.errors import ConfigError
from jaxprune.models.conv import CONV2_PLAN, CONV4_PLAN, CONV6_PLAN, conv_n, vgg
from jaxprune.models.mlp import MLP
from jaxprune.models.resnet import RESNET18_STAGES, RESNET20_STAGES, ResNet

_BUILDERS: dict[str, Callable[[int, tuple[int, ...]], nn.Module]] = {
    "mlp": lambda num_classes, widths: MLP(tuple(widths), num_classes),
    "lenet300_100": lambda num_classes, _: MLP((300, 100), num_classes),
    "conv2": lambda num_classes, _: conv_n(CONV2_PLAN, num_classes),
    "conv4": lambda num_classes, _: conv_n(CONV4_PLAN, num_classes),
    "conv6": lambda num_classes, _: conv_n(CONV6_PLAN, num_classes),
    "vgg11": lambda num_classes, _: vgg(11, num_classes),
    "vgg16": lambda num_classes, _: vgg(16, num_classes),
    "vgg19": lambda num_classes, _: vgg(19, num_classes),
    "resnet18": lambda num_classes, _: ResNet(64, RESNET18_STAGES, num_classes),
    "resnet20": lambda num_classes, _: ResNet(16, RESNET20_STAGES, num_classes),
}
NAMES: tuple[str, ...] = tuple(_BUILDERS)
DENSE_ONLY: tuple[str, ...] = ("mlp", "lenet300_100")  # the models whose every kernel is a Dense one


def create(name: str, num_classes: int, *, widths: tuple[int, ...] = (200, 200)) -> nn.Module:
    """The model ``name`` (one of :data:`NAMES`) with ``num_classes`` outputs; ``widths`` only for 'mlp'."""
    if name not in _BUILDERS:
        raise ConfigError(f"model={name!r} is unknown; allowed: {', '.join(NAMES)}")
    if num_classes < 1:
        raise ConfigError(f"num_classes={num_classes!r} must be a positive integer")
    if name == "mlp" and any(width < 1 for width in widths):
        raise ConfigError(f"widths={tuple(widths)!r} must be positive integers (hidden layer sizes of 'mlp')")
    return _BUILDERS[name](num_classes, widths)
